//! The kept history: records fold into the state (the header, each snapshot into the
//! latest readings, the decimated histories and the progress rate), and the snapshots kept for
//! `e`, which writes them as a figure.

use super::*;

/// Most rows the layer x time picture and the histories keep; past it, every second row is
/// dropped, so the whole run stays in view at half the time resolution.
pub const HISTORY_CAP: usize = 1024;

/// Online snapshots kept for `e` (converged ones are all kept).
pub const EXPORT_ONLINE_CAP: usize = 256;

/// Snapshots the progress rate is measured over.
const RATE_WINDOW: usize = 16;

/// A list that keeps at most `cap` entries: when full, every second one is dropped, so the kept
/// entries stay evenly spaced over the whole run (at `stride`), plus always the newest.
#[derive(Debug, Clone, PartialEq)]
pub struct Decimating<T> {
    items: Vec<T>,
    index: Vec<usize>,
    cap: usize,
    /// Spacing, in pushes, of the kept entries (doubles at each thinning).
    pub stride: usize,
    pushed: usize,
}

impl<T> Decimating<T> {
    /// Empty, keeping at most `cap` (at least 3).
    pub fn new(cap: usize) -> Self {
        Self {
            items: Vec::new(),
            index: Vec::new(),
            cap: cap.max(3),
            stride: 1,
            pushed: 0,
        }
    }

    /// Adds one entry.
    pub fn push(&mut self, item: T) {
        // The newest is always kept; drop the previous newest if it is off the stride.
        if self.index.last().is_some_and(|i| i % self.stride != 0) {
            self.items.pop();
            self.index.pop();
        }
        self.items.push(item);
        self.index.push(self.pushed);
        self.pushed += 1;
        if self.items.len() > self.cap {
            self.stride *= 2;
            let stride = self.stride;
            let last = self.pushed - 1;
            let mut keep = self.index.iter().map(|i| i % stride == 0 || *i == last);
            self.items.retain(|_| keep.next().unwrap_or(false));
            self.index.retain(|i| i % stride == 0 || *i == last);
        }
    }

    /// The kept entries, oldest first.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Number kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The snapshots `e` draws from, numbered in arrival order.
pub(super) struct Kept {
    pub(super) converged: Vec<(usize, Snapshot)>,
    pub(super) online: Decimating<(usize, Snapshot)>,
    pub(super) next: usize,
}

impl Kept {
    pub(super) fn new() -> Self {
        Self {
            converged: Vec::new(),
            online: Decimating::new(EXPORT_ONLINE_CAP),
            next: 0,
        }
    }
}

impl App {
    /// Forgets the run's data (not the view settings): the log being followed started again.
    pub fn reset_data(&mut self) {
        self.info = None;
        self.taps.clear();
        self.layout = None;
        self.latest = None;
        self.mean = None;
        self.history = Decimating::new(HISTORY_CAP);
        self.model = Decimating::new(HISTORY_CAP);
        self.state = RunState::Starting;
        self.rate = None;
        self.elapsed_s = 0.0;
        self.rate_points.clear();
        self.kept = Kept::new();
        self.alerts.clear();
        self.watch = None;
        self.travel = None;
    }

    /// The run as a log of the snapshots kept for export.
    pub fn kept_log(&self) -> Option<crate::runlog::RunLog> {
        let info = self.info.as_ref()?;
        Some(crate::runlog::RunLog {
            header: info.header.clone(),
            records: self
                .kept_sorted()
                .into_iter()
                .map(|(_, s)| Record::Snapshot(s.clone()))
                .collect(),
            warnings: Vec::new(),
        })
    }

    /// Writes the focused pane's figure (layer x time on the heatmap pane, else the per-layer
    /// error curve) into `export_dir`, as SVG and as PNG; returns the SVG file written (the PNG
    /// is beside it).
    pub fn export_figure(&self) -> anyhow::Result<std::path::PathBuf> {
        let log = self
            .kept_log()
            .ok_or_else(|| anyhow::anyhow!("nothing to export yet"))?;
        let figure = if self.focus == Pane::Heatmap {
            crate::export::Figure::Heatmap
        } else {
            crate::export::Figure::Curve
        };
        let plot = crate::export::plot(&log, figure, &[])?;
        let step = self.latest.as_ref().map_or(0, |s| s.step);
        let stem = format!(
            "probescope-{}-step{step}-{}",
            log.header.preset,
            figure.name()
        );
        let svg = free_path(&self.export_dir, &stem);
        crate::export::svg_file(&plot, &svg)?;
        crate::export::png_file(&plot, &svg.with_extension("png"))?;
        Ok(svg)
    }

    /// Folds a record in.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Run(h) => self.start(h),
            Record::Snapshot(s) => self.snapshot(s),
            Record::Summary(_) => {}
            Record::End(e) => {
                self.elapsed_s = e.elapsed_s;
                self.state = match e.status {
                    EndStatus::Finished => RunState::Finished,
                    EndStatus::Stopped => RunState::Stopped,
                    EndStatus::Failed => RunState::Failed(
                        e.message.clone().unwrap_or_else(|| "the run failed".into()),
                    ),
                };
                self.confirm_quit = false;
            }
        }
    }

    /// A failure outside the records (the worker died without an end line).
    pub fn fail(&mut self, message: String) {
        if self.state.active() {
            self.state = RunState::Failed(message);
        }
        self.confirm_quit = false;
    }

    pub(super) fn start(&mut self, h: &RunHeader) {
        let g = &h.graph;
        let shapes = g.shapes().unwrap_or_default();
        self.taps = h.probes.iter().map(|p| tap_meta(g, &shapes, p)).collect();
        let classes = g.classes.max(2);
        let total = h.total_steps.map(|n| ("steps".to_string(), n)).or_else(|| {
            ["steps", "datasets"].iter().find_map(|k| {
                h.params.get(*k).and_then(|v| match v {
                    crate::params::ParamValue::Int(n) => Some((k.to_string(), *n)),
                    _ => None,
                })
            })
        });
        self.info = Some(RunInfo {
            header: h.clone(),
            classes,
            chance: 1.0 - 1.0 / classes as f64,
            total,
        });
        self.layout = Some(Layout::new(g, &self.taps));
        self.watch = Some(crate::alerts::Watch::new(h));
        self.selected = self.selected.min(self.taps.len().saturating_sub(1));
        if self.state == RunState::Starting {
            self.state = RunState::Running;
        }
    }

    pub(super) fn snapshot(&mut self, s: &Snapshot) {
        let n = self.taps.len();
        let seq = self.kept.next;
        self.kept.next += 1;
        if s.kind == SnapshotKind::Converged {
            self.kept.converged.push((seq, s.clone()));
        } else {
            self.kept.online.push((seq, s.clone()));
        }
        let mut row = Row {
            step: s.step,
            label: s.label.clone(),
            kind: s.kind,
            train: vec![f32::NAN; n],
            val: vec![f32::NAN; n],
            test: vec![f32::NAN; n],
        };
        for (i, r) in s.probes.iter().enumerate().take(n) {
            row.train[i] = r.reading.train_error as f32;
            row.val[i] = r.reading.val_error.map_or(f32::NAN, |v| v as f32);
            row.test[i] = r.reading.test_error.map_or(f32::NAN, |v| v as f32);
        }
        self.history.push(row);
        if let Some(m) = &s.model {
            self.model.push(ModelPoint {
                step: s.step,
                metrics: m.into(),
            });
        }
        if s.dataset.is_some() {
            let (tr, te, k) = self
                .mean
                .get_or_insert_with(|| (vec![0.0; n], vec![0.0; n], 0));
            for (i, r) in s.probes.iter().enumerate().take(n) {
                tr[i] += r.reading.train_error;
                te[i] += r.reading.test_error.unwrap_or(f64::NAN);
            }
            *k += 1;
        }
        // Progress rate over the last few snapshots (several may arrive at once): datasets per
        // second for dataset presets, else steps per second.
        let unit = match s.dataset {
            Some(d) => d as u64 + 1,
            None => s.step,
        };
        self.rate_points.push_back((unit, s.elapsed_s));
        while self.rate_points.len() > RATE_WINDOW {
            self.rate_points.pop_front();
        }
        if let (Some(&(u0, t0)), Some(&(u1, t1))) =
            (self.rate_points.front(), self.rate_points.back())
        {
            if u1 > u0 && t1 - t0 > 0.0 {
                self.rate = Some((u1 - u0) as f64 / (t1 - t0));
            }
        }
        self.elapsed_s = s.elapsed_s;
        if let Some(w) = &mut self.watch {
            self.alerts = w.push(s);
        }
        self.latest = Some(s.clone());
    }

    /// The kept snapshots (converged and online) with their arrival numbers, in arrival order.
    pub(super) fn kept_sorted(&self) -> Vec<&(usize, Snapshot)> {
        let k = &self.kept;
        let mut all: Vec<&(usize, Snapshot)> = k.converged.iter().chain(k.online.items()).collect();
        all.sort_by_key(|(i, _)| *i);
        all
    }

    /// The kept snapshot with arrival number `seq`.
    pub(super) fn kept_snapshot(&self, seq: usize) -> Option<&Snapshot> {
        let k = &self.kept;
        k.converged
            .iter()
            .chain(k.online.items())
            .find(|(i, _)| *i == seq)
            .map(|(_, s)| s)
    }
}
