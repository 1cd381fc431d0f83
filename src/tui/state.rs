//! The UI's state and its pure updates: records fold in, keys move the selection. Nothing here
//! draws or touches the terminal, so all of it is unit-tested.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keys::Keymap;

use crate::graph::{Graph, Op};
use crate::probe::ProbeSpec;
use crate::runlog::{EndStatus, ModelMetrics, Record, RunHeader, Snapshot, SnapshotKind};

use super::diagram::Layout;
use super::theme::{ColorDepth, Theme};

/// Most rows the layer x time picture and the histories keep; past it, every second row is
/// dropped, so the whole run stays in view at half the time resolution.
pub const HISTORY_CAP: usize = 1024;
/// Online snapshots kept for `e` (converged ones are all kept).
pub const EXPORT_ONLINE_CAP: usize = 256;

/// Snapshots the progress rate is measured over.
const RATE_WINDOW: usize = 16;

/// The panes, in the order Tab cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Probe error bars.
    Bars,
    /// The model graph coloured by probe error.
    Diagram,
    /// Layer x time.
    Heatmap,
    /// Model loss and error.
    Chart,
    /// The selected tap.
    Inspector,
}

/// Which series the bars show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarsMode {
    /// Train and test side by side.
    Both,
    /// Train error only.
    Train,
    /// Test error only (train where a reading has no test split).
    Test,
    /// Selectivity: control error less train error (runs with `selectivity=on`).
    Selectivity,
}

/// Where the run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for the header.
    Starting,
    /// Working.
    Running,
    /// Paused by the user.
    Paused,
    /// Done.
    Finished,
    /// Stopped by the user.
    Stopped,
    /// Failed, with the reason.
    Failed(String),
}

impl RunState {
    /// Whether the worker is still at it.
    pub fn active(&self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Paused)
    }
}

/// A probe as the UI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TapMeta {
    /// Probe name.
    pub name: String,
    /// The node it reads.
    pub tap: String,
    /// Index of that node in the graph.
    pub node: usize,
    /// Node kind ("linear", "activation", ...).
    pub kind: String,
    /// The node's per-sample shape.
    pub shape: Vec<usize>,
    /// Features of the node.
    pub features: usize,
    /// Features the probe reads (fewer for a random subset).
    pub width: usize,
    /// Whether dead units mean something here (ReLU family).
    pub can_die: bool,
}

/// One snapshot in the layer x time picture: per-probe errors (NaN where missing).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Model step.
    pub step: u64,
    /// Snapshot label.
    pub label: String,
    /// Converged or online.
    pub kind: SnapshotKind,
    /// Train error per probe.
    pub train: Vec<f32>,
    /// Validation error per probe.
    pub val: Vec<f32>,
    /// Test error per probe.
    pub test: Vec<f32>,
}

impl Row {
    /// The error the colours show: test where there is one, else train.
    pub fn shown(&self, i: usize) -> f32 {
        let t = self.test.get(i).copied().unwrap_or(f32::NAN);
        if t.is_nan() {
            self.train.get(i).copied().unwrap_or(f32::NAN)
        } else {
            t
        }
    }
}

/// The model's figures at one snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPoint {
    /// Model step.
    pub step: u64,
    /// Its metrics.
    pub metrics: ModelMetricsCopy,
}

/// [`ModelMetrics`] as plain numbers (NaN where missing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelMetricsCopy {
    /// Training loss.
    pub loss: f64,
    /// Training error.
    pub train_error: f64,
    /// Test error.
    pub test_error: f64,
}

impl From<&ModelMetrics> for ModelMetricsCopy {
    fn from(m: &ModelMetrics) -> Self {
        Self {
            loss: m.loss,
            train_error: m.train_error.unwrap_or(f64::NAN),
            test_error: m.test_error.unwrap_or(f64::NAN),
        }
    }
}

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

/// What the runner must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Pause (true) or resume (false) the worker.
    Pause(bool),
    /// Ask the worker for a converged snapshot now.
    SnapshotNow,
    /// Leave the UI (stopping the worker if it still runs).
    Quit,
}

/// An action a key can trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Previous tap.
    Left,
    /// Next tap.
    Right,
    /// Up: the branch above in the diagram, ten taps back elsewhere.
    Up,
    /// Down: the branch below in the diagram, ten taps on elsewhere.
    Down,
    /// First tap.
    First,
    /// Last tap.
    Last,
    /// Show or hide the inspector.
    Inspector,
    /// Focus the next pane.
    NextPane,
    /// Focus the previous pane.
    PrevPane,
    /// Pause or resume training.
    Pause,
    /// Converged snapshot now.
    Snapshot,
    /// Next theme.
    Theme,
    /// Write the focused figure as SVG.
    Export,
    /// Train / test / both bars.
    BarsMode,
    /// Help overlay.
    Help,
    /// Quit (asks first while the run is active).
    Quit,
    /// Replay: one snapshot back.
    StepBack,
    /// Replay: one snapshot on.
    StepForward,
    /// Replay: ten snapshots back.
    JumpBack,
    /// Replay: ten snapshots on.
    JumpForward,
    /// Replay: the first snapshot.
    TimelineStart,
    /// Replay: the last snapshot.
    TimelineEnd,
    /// Replay: play faster.
    Faster,
    /// Replay: play slower.
    Slower,
    /// Compare: errors or differences from the base run.
    Diff,
    /// Compare: the next run becomes the base.
    Base,
    /// Compare: converged snapshots only, or every snapshot.
    Readings,
    /// Open the `/` prompt: show only the taps whose name contains what is typed.
    Find,
    /// Back to the newest snapshot after looking back.
    Live,
    /// The transfer matrix in place of the layer x time picture.
    Transfer,
}

/// Playback speeds of a replay, in snapshots per second.
pub const SPEEDS: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0];

/// A replay's timeline: every record of a run log and how many of its snapshots are shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The header and every record, in order.
    pub records: Vec<Record>,
    /// Number of snapshots in the log.
    pub snapshots: usize,
    /// Snapshots shown (1 ..= snapshots; 0 when the log has none).
    pub cursor: usize,
    /// Whether it plays.
    pub playing: bool,
    /// Index into [`SPEEDS`].
    pub speed: usize,
    /// Fraction of a snapshot accumulated while playing.
    pub carry: f64,
}

/// The run as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The header.
    pub header: RunHeader,
    /// Classes of the task.
    pub classes: usize,
    /// Error of always guessing: 1 - 1/K.
    pub chance: f64,
    /// Total of the run's unit of progress (datasets, steps), where the parameters say.
    pub total: Option<(String, u64)>,
}

/// What the layer x time pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BottomView {
    /// Probe error per snapshot and tap.
    LayerTime,
    /// The transfer matrix of a converged snapshot (`transfer=on`).
    Transfer,
    /// Per converged snapshot and tap: how much worse the previous snapshot's probe does on
    /// these features than this snapshot's own probe (`transfer=on`).
    Drift,
}

/// What makes a probe's reading not to be trusted blindly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFlag {
    /// The newest converged fit stopped at its iteration limit.
    NotConverged,
    /// Its validation error is past its best (by more than [`PAST_BEST`]).
    PastBest,
    /// Test error well above train error (more than [`OVERFIT_GAP`], and half the train error).
    Overfits,
    /// The newest converged reading is older than a tenth of the run (or 1,000 steps).
    Stale,
    /// The reading is NaN.
    NaN,
}

impl HealthFlag {
    /// A few words for the inspector.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotConverged => "not converged",
            Self::PastBest => "past its best",
            Self::Overfits => "overfits",
            Self::Stale => "stale",
            Self::NaN => "NaN",
        }
    }
}

/// Validation error this far above its best is "past its best".
pub const PAST_BEST: f64 = 0.01;
/// Test less train error above this (and above half the train error) "overfits".
pub const OVERFIT_GAP: f64 = 0.03;

/// A probe's health: the flags and the figures behind them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    /// What is wrong (empty: nothing).
    pub flags: Vec<HealthFlag>,
    /// Least validation error over the converged snapshots kept, and its step.
    pub best_val: Option<(f64, u64)>,
    /// The newest converged snapshot's validation error.
    pub last_val: Option<f64>,
    /// Test (or validation) less train error of the newest converged reading.
    pub gap: Option<f64>,
    /// Steps between the newest converged reading and the newest snapshot.
    pub age: Option<u64>,
}

/// The snapshots `e` draws from, numbered in arrival order.
struct Kept {
    converged: Vec<(usize, Snapshot)>,
    online: Decimating<(usize, Snapshot)>,
    next: usize,
}

impl Kept {
    fn new() -> Self {
        Self {
            converged: Vec::new(),
            online: Decimating::new(EXPORT_ONLINE_CAP),
            next: 0,
        }
    }
}

/// Everything the UI shows.
pub struct App {
    /// The run, once its header arrived.
    pub info: Option<RunInfo>,
    /// The probes.
    pub taps: Vec<TapMeta>,
    /// The diagram's layout (from the graph).
    pub layout: Option<Layout>,
    /// The newest snapshot.
    pub latest: Option<Snapshot>,
    /// Running mean over datasets (train, test, count), for presets that repeat over datasets.
    pub mean: Option<(Vec<f64>, Vec<f64>, usize)>,
    /// One row per snapshot (bounded).
    pub history: Decimating<Row>,
    /// The model's figures per snapshot (bounded).
    pub model: Decimating<ModelPoint>,
    /// Where the run is.
    pub state: RunState,
    /// The selected probe.
    pub selected: usize,
    /// The focused pane.
    pub focus: Pane,
    /// Whether the inspector shows.
    pub inspector: bool,
    /// Whether the help overlay shows.
    pub help: bool,
    /// Whether the quit question shows.
    pub confirm_quit: bool,
    /// Which bars.
    pub bars: BarsMode,
    /// The themes `t` cycles through, and the current one.
    pub themes: Vec<Theme>,
    /// Index into `themes`.
    pub theme: usize,
    /// The worker's last progress line.
    pub progress: String,
    /// A short message for the status bar (e.g. "snapshot requested").
    pub flash: Option<String>,
    /// Steps (or datasets) per second, from the last two snapshots.
    pub rate: Option<f64>,
    /// Seconds since the start, from the newest snapshot or end.
    pub elapsed_s: f64,
    /// Resident memory of the process running the run, in bytes (live runs; refreshed by the UI
    /// loop once a second).
    pub rss: Option<u64>,
    /// Seconds since `rss` was refreshed.
    pub rss_age_s: f64,
    /// Whether the UI should close.
    pub quit: bool,
    /// Whether this UI can steer the run (false when watching a log).
    pub can_steer: bool,
    /// What the terminal can show.
    pub depth: ColorDepth,
    /// The key table.
    pub keymap: Keymap,
    /// A replay's timeline (`probescope replay`).
    pub timeline: Option<Timeline>,
    /// Watching a log another process writes (`probescope attach`).
    pub attached: bool,
    /// Where `e` writes figures (the working directory).
    pub export_dir: std::path::PathBuf,
    /// Looking back in a live run: the arrival number of the kept snapshot shown instead of the
    /// newest (training goes on; `L` returns to live).
    pub travel: Option<usize>,
    /// What the layer x time pane shows (`x` cycles).
    pub bottom: BottomView,
    /// The `/` filter on tap names (None: every tap).
    pub filter: Option<String>,
    /// Whether the `/` prompt takes the keys.
    pub searching: bool,
    /// The findings that hold at the newest snapshot ([`crate::alerts`]).
    pub alerts: Vec<crate::alerts::Alert>,
    watch: Option<crate::alerts::Watch>,
    /// The snapshots `e` draws from: every converged one, online ones thinned (with their order).
    kept: Kept,
    rate_points: std::collections::VecDeque<(u64, f64)>,
}

impl App {
    /// A fresh UI state with `themes` (the first is current).
    pub fn new(themes: Vec<Theme>) -> Self {
        assert!(!themes.is_empty(), "at least one theme");
        Self {
            info: None,
            taps: Vec::new(),
            layout: None,
            latest: None,
            mean: None,
            history: Decimating::new(HISTORY_CAP),
            model: Decimating::new(HISTORY_CAP),
            state: RunState::Starting,
            selected: 0,
            focus: Pane::Bars,
            inspector: true,
            help: false,
            confirm_quit: false,
            bars: BarsMode::Both,
            themes,
            theme: 0,
            progress: String::new(),
            flash: None,
            rate: None,
            elapsed_s: 0.0,
            rss: None,
            rss_age_s: 0.0,
            quit: false,
            can_steer: true,
            depth: ColorDepth::TrueColor,
            keymap: Keymap::default(),
            timeline: None,
            attached: false,
            export_dir: std::path::PathBuf::from("."),
            travel: None,
            bottom: BottomView::LayerTime,
            filter: None,
            searching: false,
            alerts: Vec::new(),
            watch: None,
            kept: Kept::new(),
            rate_points: Default::default(),
        }
    }

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

    /// A replay of `records` (the header first), read-only, shown at its last snapshot.
    pub fn replay(&mut self, records: Vec<Record>) {
        let snapshots = records
            .iter()
            .filter(|r| matches!(r, Record::Snapshot(_)))
            .count();
        self.can_steer = false;
        self.keymap = Keymap::for_mode(&self.keymap, super::keys::KeyMode::Replay);
        self.timeline = Some(Timeline {
            records,
            snapshots,
            cursor: 0,
            playing: false,
            speed: 3,
            carry: 0.0,
        });
        self.seek(snapshots);
    }

    /// Shows the replay at `cursor` snapshots (clamped to 1 ..= the number of snapshots): the
    /// state is rebuilt from the log's start, so it is exactly what the live view showed then.
    pub fn seek(&mut self, cursor: usize) {
        let Some(t) = self.timeline.take() else {
            return;
        };
        let cursor = cursor.clamp(t.snapshots.min(1), t.snapshots);
        self.reset_data();
        let mut seen = 0;
        for r in &t.records {
            if let Record::Snapshot(_) = r {
                if seen == cursor {
                    break;
                }
                seen += 1;
            }
            // The end line belongs to the last snapshot only.
            if matches!(r, Record::End(_)) && cursor < t.snapshots {
                continue;
            }
            self.apply(r);
        }
        if cursor < t.snapshots && self.state.active() {
            self.state = RunState::Paused;
        } else if self.state.active() {
            self.state = RunState::Failed(
                "the log ends without an end line: the run was killed, or it is still going \
                 (probescope attach follows a running one)"
                    .into(),
            );
        }
        self.timeline = Some(Timeline { cursor, ..t });
    }

    /// Advances a playing replay by `dt` seconds; whether anything changed.
    pub fn on_tick(&mut self, dt: f64) -> bool {
        let Some(t) = &mut self.timeline else {
            return false;
        };
        if !t.playing {
            return false;
        }
        t.carry += dt * SPEEDS[t.speed];
        let steps = t.carry.floor() as usize;
        if steps == 0 {
            return false;
        }
        t.carry -= steps as f64;
        let next = (t.cursor + steps).min(t.snapshots);
        if next >= t.snapshots {
            t.playing = false;
        }
        self.seek(next);
        true
    }

    /// The current theme.
    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme]
    }

    /// The run's graph, once known.
    pub fn graph(&self) -> Option<&Graph> {
        self.info.as_ref().map(|i| &i.header.graph)
    }

    /// Whether the run trains a model (it has a `steps` parameter), so a converged snapshot can
    /// be asked for between steps.
    pub fn trains(&self) -> bool {
        self.info.as_ref().is_some_and(|i| {
            i.header.total_steps.is_some() || i.header.params.contains_key("steps")
        })
    }

    /// Chance error (0.5 before the header).
    pub fn chance(&self) -> f64 {
        self.info.as_ref().map_or(0.5, |i| i.chance)
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

    fn start(&mut self, h: &RunHeader) {
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

    fn snapshot(&mut self, s: &Snapshot) {
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
    fn kept_sorted(&self) -> Vec<&(usize, Snapshot)> {
        let k = &self.kept;
        let mut all: Vec<&(usize, Snapshot)> = k.converged.iter().chain(k.online.items()).collect();
        all.sort_by_key(|(i, _)| *i);
        all
    }

    /// The kept snapshot with arrival number `seq`.
    fn kept_snapshot(&self, seq: usize) -> Option<&Snapshot> {
        let k = &self.kept;
        k.converged
            .iter()
            .chain(k.online.items())
            .find(|(i, _)| *i == seq)
            .map(|(_, s)| s)
    }

    /// The snapshot the bars, the diagram and the inspector show: the one looked back at, or
    /// the newest.
    pub fn shown(&self) -> Option<&Snapshot> {
        self.travel
            .and_then(|t| self.kept_snapshot(t))
            .or(self.latest.as_ref())
    }

    /// Looks back `delta` kept snapshots from where the view is (negative: back); past the
    /// newest, the view is live again.
    pub fn travel_by(&mut self, delta: i64) {
        let order: Vec<usize> = self.kept_sorted().iter().map(|(i, _)| *i).collect();
        if order.is_empty() {
            return;
        }
        let at = match self.travel {
            Some(t) => order
                .iter()
                .position(|&s| s >= t)
                .unwrap_or(order.len() - 1) as i64,
            None => order.len() as i64 - 1,
        };
        let to = at + delta;
        self.travel = if to >= order.len() as i64 - 1 && delta > 0 {
            None
        } else {
            Some(order[to.clamp(0, order.len() as i64 - 1) as usize])
        };
    }

    /// The bars' values for probe `i`: (train, test), NaN where missing. A running mean over
    /// datasets where the preset repeats over datasets, else the newest snapshot (or the one
    /// looked back at).
    pub fn bar_values(&self, i: usize) -> (f64, f64) {
        if let (Some((tr, te, k)), None) = (&self.mean, self.travel) {
            let k = *k as f64;
            return (tr[i] / k, te[i] / k);
        }
        match self.shown() {
            Some(s) => s.probes.get(i).map_or((f64::NAN, f64::NAN), |r| {
                (
                    r.reading.train_error,
                    r.reading.test_error.unwrap_or(f64::NAN),
                )
            }),
            None => (f64::NAN, f64::NAN),
        }
    }

    /// The transfer matrix to show (`transfer=on`): the label of its snapshot and its rows (the
    /// snapshot looked back at if it has one, else the newest converged one that has one).
    pub fn transfer_matrix(&self) -> Option<(String, Vec<Vec<Option<f64>>>)> {
        let rows = |s: &Snapshot| -> Option<Vec<Vec<Option<f64>>>> {
            s.probes
                .iter()
                .map(|p| p.reading.transfer.clone())
                .collect::<Option<Vec<_>>>()
        };
        let travelled = self
            .travel
            .and_then(|_| self.shown())
            .and_then(|s| Some((s, rows(s)?)));
        let (s, m) = travelled.or_else(|| {
            self.kept
                .converged
                .iter()
                .rev()
                .find_map(|(_, s)| Some((s, rows(s)?)))
        })?;
        Some((s.label.clone(), m))
    }

    /// The drift picture: per converged snapshot with drift readings, its step and per tap the
    /// previous probe's error on its features less its own probe's (NaN where unknown).
    pub fn drift_rows(&self) -> Vec<(u64, Vec<f64>)> {
        self.kept
            .converged
            .iter()
            .filter(|(_, s)| s.probes.iter().any(|p| p.reading.drift_error.is_some()))
            .map(|(_, s)| {
                let v = s
                    .probes
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let own = p
                            .reading
                            .transfer
                            .as_ref()
                            .and_then(|r| r.get(i).copied().flatten());
                        match (p.reading.drift_error, own) {
                            (Some(d), Some(o)) => d - o,
                            _ => f64::NAN,
                        }
                    })
                    .collect();
                (s.step, v)
            })
            .collect()
    }

    /// Whether the run fits control twins (`selectivity=on`).
    pub fn has_selectivity(&self) -> bool {
        self.kept
            .converged
            .iter()
            .any(|(_, s)| s.probes.iter().any(|p| p.reading.control_error.is_some()))
    }

    /// Probe `i`'s selectivity (control error less train error) and control error, NaN where
    /// unknown: the mean over datasets where the preset repeats over datasets, else the newest
    /// converged snapshot (or the one looked back at, if converged).
    pub fn selectivity(&self, i: usize) -> (f64, f64) {
        let of = |s: &Snapshot| {
            s.probes.get(i).and_then(|p| {
                let c = p.reading.control_error?;
                Some((c - p.reading.train_error, c))
            })
        };
        if self.mean.is_some() && self.travel.is_none() {
            let v: Vec<(f64, f64)> = self
                .kept
                .converged
                .iter()
                .filter(|(_, s)| s.dataset.is_some())
                .filter_map(|(_, s)| of(s))
                .collect();
            if v.is_empty() {
                return (f64::NAN, f64::NAN);
            }
            let k = v.len() as f64;
            return (
                v.iter().map(|x| x.0).sum::<f64>() / k,
                v.iter().map(|x| x.1).sum::<f64>() / k,
            );
        }
        let travelled = self.shown().filter(|s| s.kind == SnapshotKind::Converged);
        travelled
            .or(self.kept.converged.last().map(|(_, s)| s))
            .and_then(of)
            .unwrap_or((f64::NAN, f64::NAN))
    }

    /// Probe `i`'s health, from the converged snapshots kept and the newest snapshot.
    pub fn health(&self, i: usize) -> Health {
        let mut h = Health::default();
        let latest = self.latest.as_ref().and_then(|s| s.probes.get(i));
        if latest.is_some_and(|r| r.reading.train_error.is_nan()) {
            h.flags.push(HealthFlag::NaN);
        }
        let conv = &self.kept.converged;
        let Some((_, last)) = conv.last() else {
            return h;
        };
        let Some(r) = last.probes.get(i) else {
            return h;
        };
        if !r.reading.converged {
            h.flags.push(HealthFlag::NotConverged);
        }
        let held_out = r.reading.test_error.or(r.reading.val_error);
        if let Some(t) = held_out {
            let gap = t - r.reading.train_error;
            h.gap = Some(gap);
            if gap > OVERFIT_GAP && gap > 0.5 * r.reading.train_error {
                h.flags.push(HealthFlag::Overfits);
            }
        }
        // Best against last validation error, and age, only along a training run (not across
        // the datasets of a repeated experiment).
        if self.mean.is_none() {
            h.last_val = r.reading.val_error;
            h.best_val = conv
                .iter()
                .filter_map(|(_, s)| {
                    let v = s.probes.get(i)?.reading.val_error?;
                    v.is_finite().then_some((v, s.step))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let (Some((best, _)), Some(last)) = (h.best_val, h.last_val) {
                if last > best + PAST_BEST {
                    h.flags.push(HealthFlag::PastBest);
                }
            }
            if let Some(now) = &self.latest {
                let age = now.step.saturating_sub(last.step);
                h.age = Some(age);
                let total = self
                    .info
                    .as_ref()
                    .and_then(|i| i.total.as_ref())
                    .filter(|(unit, _)| unit == "steps")
                    .map(|(_, n)| *n);
                let limit = total.map_or(1000, |t| (t / 10).max(1));
                if self.trains() && age > limit {
                    h.flags.push(HealthFlag::Stale);
                }
            }
        }
        h
    }

    /// The error that colours probe `i` (test where there is one, else train), as a fraction of
    /// chance: 0 perfect, 1 chance or worse.
    pub fn level(&self, i: usize) -> f64 {
        let (tr, te) = self.bar_values(i);
        let e = if te.is_nan() { tr } else { te };
        e / self.chance()
    }

    /// What the bars' title says they show.
    pub fn bars_source(&self) -> String {
        if let (Some((_, _, k)), None) = (&self.mean, self.travel) {
            return format!("mean of {k} dataset{}", if *k == 1 { "" } else { "s" });
        }
        let back = if self.travel.is_some() { "⏪ " } else { "" };
        match self.shown() {
            Some(s) => format!(
                "{back}{} {}",
                match s.kind {
                    SnapshotKind::Converged => "converged",
                    SnapshotKind::Online => "online",
                },
                s.label
            ),
            None => "waiting for the first snapshot".into(),
        }
    }

    /// Handles a key; returns what the runner must do.
    pub fn key(&mut self, key: KeyEvent) -> Option<Effect> {
        if self.searching {
            self.search_key(key);
            return None;
        }
        let action = self.keymap.action(&key);
        if self.help {
            self.help = false;
            return None;
        }
        // Esc clears a filter before it means quit.
        if key.code == KeyCode::Esc && self.filter.is_some() && !self.confirm_quit {
            self.filter = None;
            return None;
        }
        if self.confirm_quit {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') | KeyCode::Enter => {
                    self.quit = true;
                    Some(Effect::Quit)
                }
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.quit = true;
                    Some(Effect::Quit)
                }
                _ => {
                    self.confirm_quit = false;
                    None
                }
            };
        }
        self.flash = None;
        self.act(action?)
    }

    /// Does `action`.
    pub fn act(&mut self, action: Action) -> Option<Effect> {
        let n = self.taps.len();
        match action {
            Action::Left => self.select_by(-1),
            Action::Right => self.select_by(1),
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                let lane_move = (self.focus == Pane::Diagram)
                    .then(|| {
                        self.layout
                            .as_ref()
                            .and_then(|l| l.neighbour_lane(self.selected, down))
                    })
                    .flatten();
                match lane_move {
                    Some(i) => self.selected = i,
                    None => self.select_by(if down { 10 } else { -10 }),
                }
            }
            Action::First => self.selected = self.visible().first().copied().unwrap_or(0),
            Action::Last => {
                self.selected = self
                    .visible()
                    .last()
                    .copied()
                    .unwrap_or(n.saturating_sub(1))
            }
            Action::Find => {
                self.searching = true;
                self.filter = Some(String::new());
            }
            Action::Transfer => {
                self.bottom = match self.bottom {
                    BottomView::LayerTime => BottomView::Transfer,
                    BottomView::Transfer => BottomView::Drift,
                    BottomView::Drift => BottomView::LayerTime,
                };
                if self.bottom != BottomView::LayerTime && self.transfer_matrix().is_none() {
                    self.flash = Some(
                        "no transfer matrix in this run: --set transfer=on records one".into(),
                    );
                }
            }
            Action::Live => {
                if self.timeline.is_some() {
                    let end = self.timeline.as_ref().map_or(0, |t| t.snapshots);
                    self.seek(end);
                } else {
                    self.travel = None;
                    self.flash = Some("live".into());
                }
            }
            Action::Inspector => self.inspector = !self.inspector,
            Action::NextPane | Action::PrevPane => {
                let mut panes = vec![Pane::Bars, Pane::Diagram, Pane::Heatmap, Pane::Chart];
                if self.inspector {
                    panes.push(Pane::Inspector);
                }
                let at = panes.iter().position(|p| *p == self.focus).unwrap_or(0);
                let len = panes.len();
                let next = if action == Action::NextPane {
                    (at + 1) % len
                } else {
                    (at + len - 1) % len
                };
                self.focus = panes[next];
            }
            Action::Pause if self.timeline.is_some() => {
                let t = self.timeline.as_mut().expect("checked");
                if !t.playing && t.cursor >= t.snapshots {
                    // At the end: play from the start.
                    self.seek(1);
                }
                let t = self.timeline.as_mut().expect("checked");
                t.playing = !t.playing;
                t.carry = 0.0;
            }
            Action::StepBack
            | Action::StepForward
            | Action::JumpBack
            | Action::JumpForward
            | Action::TimelineStart
            | Action::TimelineEnd => {
                let Some(t) = &self.timeline else {
                    // A live run: look back through the kept snapshots while it goes on.
                    match action {
                        Action::StepBack => self.travel_by(-1),
                        Action::StepForward => self.travel_by(1),
                        Action::JumpBack => self.travel_by(-10),
                        Action::JumpForward => self.travel_by(10),
                        _ => {}
                    }
                    self.flash = self.travel.is_none().then(|| "live".to_string());
                    return None;
                };
                let c = t.cursor as i64;
                let to = match action {
                    Action::StepBack => c - 1,
                    Action::StepForward => c + 1,
                    Action::JumpBack => c - 10,
                    Action::JumpForward => c + 10,
                    Action::TimelineStart => 1,
                    _ => t.snapshots as i64,
                };
                if let Some(t) = &mut self.timeline {
                    t.playing = false;
                }
                self.seek(to.max(0) as usize);
            }
            Action::Faster | Action::Slower => {
                if let Some(t) = &mut self.timeline {
                    t.speed = if action == Action::Faster {
                        (t.speed + 1).min(SPEEDS.len() - 1)
                    } else {
                        t.speed.saturating_sub(1)
                    };
                    self.flash = Some(format!("playback: {} snapshots/s", SPEEDS[t.speed]));
                }
            }
            Action::Pause => {
                if !self.can_steer {
                    self.flash = Some("watching a log: this view cannot steer the run".into());
                    return None;
                }
                match self.state {
                    RunState::Running => {
                        self.state = RunState::Paused;
                        self.flash = Some("paused: the worker stops at its next checkpoint".into());
                        return Some(Effect::Pause(true));
                    }
                    RunState::Paused => {
                        self.state = RunState::Running;
                        return Some(Effect::Pause(false));
                    }
                    _ => self.flash = Some("the run is not running".into()),
                }
            }
            Action::Snapshot => {
                if !self.can_steer {
                    self.flash = Some("watching a log: this view cannot steer the run".into());
                } else if !self.trains() {
                    self.flash =
                        Some("this preset trains no model: every snapshot is converged".into());
                } else if self.state.active() {
                    self.flash = Some("converged snapshot requested".into());
                    return Some(Effect::SnapshotNow);
                } else {
                    self.flash = Some("the run is over: no more snapshots".into());
                }
            }
            Action::Export => {
                self.flash = Some(match self.export_figure() {
                    Ok(p) => format!("wrote {} and .png", p.display()),
                    Err(e) => format!("export failed: {e:#}"),
                });
            }
            Action::Theme => {
                self.theme = (self.theme + 1) % self.themes.len();
                self.flash = Some(format!("theme: {}", self.theme().name));
            }
            Action::BarsMode => {
                self.bars = match self.bars {
                    BarsMode::Both => BarsMode::Train,
                    BarsMode::Train => BarsMode::Test,
                    BarsMode::Test if self.has_selectivity() => BarsMode::Selectivity,
                    BarsMode::Test | BarsMode::Selectivity => BarsMode::Both,
                }
            }
            Action::Help => self.help = true,
            // Not in this view's key table.
            Action::Diff | Action::Base | Action::Readings => {}
            Action::Quit => {
                if self.state.active() && self.can_steer {
                    self.confirm_quit = true;
                } else {
                    self.quit = true;
                    return Some(Effect::Quit);
                }
            }
        }
        None
    }

    fn select_by(&mut self, delta: i64) {
        let vis = self.visible();
        let n = vis.len() as i64;
        if n == 0 {
            return;
        }
        // Among the taps the filter shows: from where the selection is (or the first shown
        // tap after it). Single steps wrap around; jumps stop at the ends.
        let at = vis.iter().position(|&i| i >= self.selected).unwrap_or(0) as i64;
        let at = if vis.get(at as usize) == Some(&self.selected) || delta < 0 {
            at
        } else {
            at - 1
        };
        let next = at + delta;
        let k = if delta.abs() == 1 {
            next.rem_euclid(n)
        } else {
            next.clamp(0, n - 1)
        };
        self.selected = vis[k as usize];
    }

    /// The taps the bars and the layer x time picture show: those whose name contains the `/`
    /// filter (any case), or all when there is none or nothing matches.
    pub fn visible(&self) -> Vec<usize> {
        match self.matches() {
            Some(hits) if !hits.is_empty() => hits,
            _ => (0..self.taps.len()).collect(),
        }
    }

    /// Whether the `/` filter matches no tap (so every tap shows).
    pub fn filter_misses(&self) -> bool {
        self.matches().is_some_and(|hits| hits.is_empty())
    }

    /// The taps whose name contains the `/` filter (any case); None without a filter.
    fn matches(&self) -> Option<Vec<usize>> {
        let f = self
            .filter
            .as_deref()
            .filter(|f| !f.is_empty())?
            .to_lowercase();
        Some(
            (0..self.taps.len())
                .filter(|&i| self.taps[i].name.to_lowercase().contains(&f))
                .collect(),
        )
    }

    /// A key while the `/` prompt is open.
    fn search_key(&mut self, key: KeyEvent) {
        let f = self.filter.get_or_insert_with(String::new);
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => f.push(c),
            KeyCode::Backspace => {
                f.pop();
            }
            KeyCode::Enter => self.searching = false,
            _ => {
                // Esc, Ctrl-C and the rest: close the prompt and clear the filter.
                self.searching = false;
                self.filter = None;
            }
        }
        // Keep the selection on a shown tap.
        let vis = self.visible();
        if !vis.contains(&self.selected) {
            if let Some(&first) = vis.first() {
                self.selected = first;
            }
        }
    }
}

/// `DIR/STEM.svg`, or `DIR/STEM-2.svg`, `-3`... : the first name whose .svg and .png are both
/// free, so an export never overwrites an earlier one.
pub fn free_path(dir: &std::path::Path, stem: &str) -> std::path::PathBuf {
    let mut k = 1;
    loop {
        let name = if k == 1 {
            stem.to_string()
        } else {
            format!("{stem}-{k}")
        };
        let svg = dir.join(format!("{name}.svg"));
        if !svg.exists() && !svg.with_extension("png").exists() {
            return svg;
        }
        k += 1;
    }
}

fn tap_meta(g: &Graph, shapes: &[Vec<usize>], p: &ProbeSpec) -> TapMeta {
    let node = g.index_of(&p.tap).unwrap_or(0);
    let shape = shapes.get(node).cloned().unwrap_or_default();
    let can_die = match g.nodes.get(node).map(|n| &n.op) {
        Some(Op::Activation { activation, .. }) => activation.can_die(),
        _ => false,
    };
    TapMeta {
        name: p.name.clone(),
        tap: p.tap.clone(),
        node,
        kind: g.nodes.get(node).map_or("?", |n| n.op.kind()).to_string(),
        features: shape.iter().product(),
        shape,
        width: p.width(),
        can_die,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeReading;
    use crate::runlog::TapReading;

    #[test]
    fn looking_back_in_a_live_run_shows_that_snapshot_while_new_ones_arrive() {
        let h = header("bifurcation", &[]);
        let mut app = crate::tui::sample::app(&h, 5);
        let at = |app: &App| app.shown().map(|s| s.step);
        let err = |k: usize| {
            crate::tui::sample::snapshot(&h, k, false).probes[2]
                .reading
                .train_error
        };
        assert_eq!(at(&app), Some(400));
        app.act(Action::StepBack);
        assert_eq!(at(&app), Some(300));
        assert_eq!(app.bar_values(2).0, err(3));
        assert!(app.bars_source().starts_with("⏪"));
        // Training goes on: the view stays where it was looked at.
        app.apply(&Record::Snapshot(crate::tui::sample::snapshot(
            &h, 5, false,
        )));
        assert_eq!(at(&app), Some(300));
        assert_eq!(app.latest.as_ref().map(|s| s.step), Some(500));
        app.act(Action::JumpBack);
        assert_eq!(at(&app), Some(0));
        app.act(Action::StepForward);
        assert_eq!(at(&app), Some(100));
        // Ten on passes the newest: live again.
        app.act(Action::JumpForward);
        assert_eq!((app.travel, at(&app)), (None, Some(500)));
        app.act(Action::StepBack);
        app.act(Action::Live);
        assert_eq!((app.travel, at(&app)), (None, Some(500)));
        assert_eq!(app.bar_values(2).0, err(5));
    }

    #[test]
    fn x_shows_the_newest_transfer_matrix_or_says_there_is_none() {
        let h = header("bifurcation", &[]);
        let mut app = crate::tui::sample::app(&h, 2);
        app.act(Action::Transfer);
        assert!(app.bottom == BottomView::Transfer && app.transfer_matrix().is_none());
        assert!(app.flash.as_deref().unwrap_or("").contains("transfer=on"));
        let n = h.probes.len();
        let mut s = crate::tui::sample::snapshot(&h, 2, true);
        for (i, p) in s.probes.iter_mut().enumerate() {
            p.reading.transfer = Some((0..n).map(|j| Some((i * n + j) as f64 / 1e3)).collect());
        }
        app.apply(&Record::Snapshot(s));
        // An online snapshot after it: the matrix is still the converged one's.
        app.apply(&Record::Snapshot(crate::tui::sample::snapshot(
            &h, 3, false,
        )));
        let (label, m) = app.transfer_matrix().unwrap();
        assert_eq!(label, "step 200");
        assert_eq!(m[2][5], Some((2 * n + 5) as f64 / 1e3));
        // Drift: the previous probe's error less the own one (the diagonal).
        assert!(app.drift_rows().is_empty());
        let mut s = crate::tui::sample::snapshot(&h, 4, true);
        for (i, p) in s.probes.iter_mut().enumerate() {
            p.reading.transfer = Some(
                (0..n)
                    .map(|j| Some(if i == j { 0.1 } else { 0.3 }))
                    .collect(),
            );
            p.reading.drift_error = Some(0.1 + i as f64 / 100.0);
        }
        app.apply(&Record::Snapshot(s));
        let d = app.drift_rows();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 400);
        assert!((d[0].1[3] - 0.03).abs() < 1e-12);
        let text = |app: &App| {
            let mut buf = ratatui::buffer::Buffer::empty(ratatui::layout::Rect::new(0, 0, 120, 40));
            crate::tui::view::draw(app, &mut buf);
            buf.content().iter().map(|c| c.symbol()).collect::<String>()
        };
        assert!(text(&app).contains("transfer · row"), "the matrix is drawn");
        app.act(Action::Transfer);
        assert_eq!(app.bottom, BottomView::Drift);
        assert!(text(&app).contains("drift ·"), "the drift is drawn");
    }

    #[test]
    fn the_find_prompt_filters_taps_and_esc_clears_it() {
        let h = header("untrained-mlp", &["depth=24"]);
        let mut app = App::new(vec![Theme::default_theme()]);
        app.apply(&Record::Run(h.clone()));
        let key = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
        app.selected = 5;
        for k in [KeyCode::Char('/'), KeyCode::Char('H'), KeyCode::Char('1')] {
            assert_eq!(app.key(key(k)), None);
        }
        assert!(app.searching);
        let names = |app: &App| -> Vec<String> {
            app.visible()
                .iter()
                .map(|&i| app.taps[i].name.clone())
                .collect()
        };
        // Any case: h10 to h19.
        let want: Vec<String> = (10..20).map(|k| format!("h{k}")).collect();
        assert_eq!(names(&app), want);
        assert_eq!(
            app.taps[app.selected].name, "h10",
            "the selection moves onto the first match"
        );
        app.key(key(KeyCode::Enter));
        assert!(!app.searching && app.filter.as_deref() == Some("H1"));
        // Arrows move among the matches, wrapping.
        app.act(Action::Right);
        assert_eq!(app.taps[app.selected].name, "h11");
        app.act(Action::Last);
        assert_eq!(app.taps[app.selected].name, "h19");
        app.act(Action::Right);
        assert_eq!(app.taps[app.selected].name, "h10");
        app.act(Action::Left);
        assert_eq!(app.taps[app.selected].name, "h19");
        // Esc clears the filter (and does not quit); the next Esc quits.
        assert_eq!(app.key(key(KeyCode::Esc)), None);
        assert!(app.filter.is_none() && !app.quit);
        assert_eq!(app.visible().len(), h.probes.len());
        // A filter that matches nothing shows every tap and says so.
        app.key(key(KeyCode::Char('/')));
        app.key(key(KeyCode::Char('z')));
        assert!(app.filter_misses());
        assert_eq!(app.visible().len(), h.probes.len());
        app.key(key(KeyCode::Esc));
        assert!(app.filter.is_none() && !app.searching);
    }

    #[test]
    fn a_probe_stopped_early_on_purpose_is_flagged() {
        use candle_core::{Device, Tensor};
        // Two Gaussian classes in 20 dimensions; a fit allowed 2 iterations cannot converge.
        let dev = Device::Cpu;
        let (n, d) = (400, 20);
        let mut rng = crate::rng::stream(5, "test");
        let y: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let x: Vec<f32> = crate::rng::normal_vec(&mut rng, n * d, 1.0)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v + if y[k / d] == 1 { 0.4 } else { -0.4 })
            .collect();
        let split = crate::probe::Split {
            x: vec![Tensor::from_vec(x, (n, d), &dev).unwrap()],
            y: Tensor::from_vec(y, n, &dev).unwrap(),
        };
        let fit = |max_iter| {
            let cfg = crate::probe::FitConfig {
                max_iter,
                ..Default::default()
            };
            crate::probe::fit_converged(&split, None, None, 2, None, &cfg).unwrap()[0]
                .reading
                .clone()
        };
        let (early, full) = (fit(2), fit(300));
        assert!(!early.converged && full.converged);
        let h = header("bifurcation", &[]);
        let mut app = App::new(vec![Theme::default_theme()]);
        app.apply(&Record::Run(h.clone()));
        let mut s = crate::tui::sample::snapshot(&h, 0, true);
        s.probes[2].reading = early;
        s.probes[3].reading = full;
        app.apply(&Record::Snapshot(s));
        assert_eq!(app.health(2).flags, [HealthFlag::NotConverged]);
        assert!(app.health(3).flags.is_empty(), "{:?}", app.health(3));
    }

    #[test]
    fn health_flags_past_best_overfitting_staleness_and_nan() {
        let h = header("bifurcation", &[]);
        let mut app = App::new(vec![Theme::default_theme()]);
        app.apply(&Record::Run(h.clone()));
        let with = |step: u64, val: f64, train: f64, test: f64, kind: SnapshotKind| {
            let mut s = crate::tui::sample::snapshot(&h, 0, true);
            s.step = step;
            s.kind = kind;
            for p in &mut s.probes {
                p.reading.val_error = Some(val);
                p.reading.train_error = train;
                p.reading.test_error = Some(test);
            }
            Record::Snapshot(s)
        };
        app.apply(&with(0, 0.20, 0.18, 0.20, SnapshotKind::Converged));
        app.apply(&with(500, 0.10, 0.09, 0.10, SnapshotKind::Converged));
        assert!(app.health(1).flags.is_empty(), "{:?}", app.health(1));
        // Validation error back up by 0.05, test 0.08 above a 0.07 train error.
        app.apply(&with(1000, 0.15, 0.07, 0.15, SnapshotKind::Converged));
        let hl = app.health(1);
        assert_eq!(hl.best_val, Some((0.10, 500)));
        assert_eq!(hl.flags, [HealthFlag::Overfits, HealthFlag::PastBest]);
        // bifurcation runs 1,500 steps: a converged reading 151 steps old is stale.
        app.apply(&with(
            1151,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            SnapshotKind::Online,
        ));
        let hl = app.health(1);
        assert_eq!(hl.age, Some(151));
        assert!(hl.flags.contains(&HealthFlag::Stale) && hl.flags.contains(&HealthFlag::NaN));
    }

    fn header(preset: &str, sets: &[&str]) -> RunHeader {
        crate::tui::sample::header(preset, sets).unwrap()
    }

    fn snap(
        h: &RunHeader,
        step: u64,
        dataset: Option<usize>,
        err: impl Fn(usize) -> f64,
    ) -> Snapshot {
        Snapshot {
            step,
            label: format!("s{step}"),
            kind: SnapshotKind::Converged,
            dataset,
            epoch: None,
            probes: h
                .probes
                .iter()
                .enumerate()
                .map(|(i, p)| TapReading {
                    probe: p.name.clone(),
                    tap: p.tap.clone(),
                    reading: ProbeReading {
                        train_error: err(i),
                        test_error: Some(err(i) + 0.01),
                        ..Default::default()
                    },
                    activation: None,
                })
                .collect(),
            model: None,
            elapsed_s: step as f64,
            alerts: Vec::new(),
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn app_with(preset: &str) -> (App, RunHeader) {
        let h = header(preset, &[]);
        let mut app = App::new(vec![Theme::default_theme()]);
        app.apply(&Record::Run(h.clone()));
        (app, h)
    }

    #[test]
    fn selection_wraps_and_jumps_clamp() {
        let (mut app, h) = app_with("untrained-mlp");
        let n = h.probes.len();
        assert_eq!(n, 33);
        app.key(key(KeyCode::Left));
        assert_eq!(app.selected, n - 1);
        app.key(key(KeyCode::Char('l')));
        assert_eq!(app.selected, 0);
        app.key(key(KeyCode::Char('j')));
        assert_eq!(app.selected, 10);
        app.key(key(KeyCode::Char('G')));
        assert_eq!(app.selected, n - 1);
        app.key(key(KeyCode::Down));
        assert_eq!(app.selected, n - 1);
        app.key(key(KeyCode::Up));
        assert_eq!(app.selected, n - 11);
        app.key(key(KeyCode::Home));
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn diagram_focus_moves_between_branches() {
        let (mut app, h) = app_with("bifurcation");
        let upper = h.probes.iter().position(|p| p.name == "upper1").unwrap();
        app.selected = upper;
        app.focus = Pane::Diagram;
        app.key(key(KeyCode::Down));
        let now = &h.probes[app.selected].name;
        assert!(now.starts_with("lower"), "moved to {now}");
        app.key(key(KeyCode::Up));
        assert!(h.probes[app.selected].name.starts_with("upper"));
    }

    #[test]
    fn history_stays_bounded_and_keeps_both_ends() {
        let mut d = Decimating::new(8);
        for i in 0..1000usize {
            d.push(i);
            assert!(d.len() <= 8, "{} kept", d.len());
            assert_eq!(*d.items().last().unwrap(), i, "newest kept");
            assert_eq!(d.items()[0], 0, "oldest kept");
        }
        // Evenly spaced: consecutive kept entries (but the newest) are one stride apart.
        let it = d.items();
        for w in it[..it.len() - 1].windows(2) {
            assert_eq!(w[1] - w[0], d.stride);
        }
    }

    #[test]
    fn snapshots_fold_into_mean_history_and_rate() {
        let (mut app, h) = app_with("untrained-mlp");
        app.apply(&Record::Snapshot(snap(&h, 0, Some(0), |i| {
            i as f64 / 100.0
        })));
        app.apply(&Record::Snapshot(snap(&h, 0, Some(1), |i| i as f64 / 50.0)));
        let (tr, te) = app.bar_values(10);
        assert!((tr - 0.15).abs() < 1e-12, "{tr}");
        assert!((te - 0.16).abs() < 1e-12, "{te}");
        assert_eq!(app.history.len(), 2);
        assert!((app.history.items()[1].shown(10) - 0.21).abs() < 1e-6);
        assert_eq!(app.bars_source(), "mean of 2 datasets");
        // Colour level: 0.16 test error against chance 0.5.
        assert!((app.level(10) - 0.32).abs() < 1e-12);
        // Both snapshots at 0 s: no rate yet.
        assert_eq!(app.rate, None);
    }

    #[test]
    fn rate_from_consecutive_snapshots() {
        let (mut app, h) = app_with("bifurcation");
        app.apply(&Record::Snapshot(snap(&h, 100, None, |_| 0.3)));
        app.apply(&Record::Snapshot(snap(&h, 300, None, |_| 0.3)));
        // 200 steps in 200 s.
        assert_eq!(app.rate, Some(1.0));
        assert_eq!(app.bars_source(), "converged s300");

        // Datasets arriving in pairs: the rate is over the window, not the last pair.
        let (mut app, h) = app_with("untrained-mlp");
        for (d, t) in [(0, 1.0), (1, 1.0), (2, 3.0), (3, 3.0)] {
            let mut s = snap(&h, 0, Some(d), |_| 0.3);
            s.elapsed_s = t;
            app.apply(&Record::Snapshot(s));
        }
        assert_eq!(app.rate, Some(1.5));
    }

    #[test]
    fn quit_asks_while_running_and_not_after() {
        let (mut app, _) = app_with("untrained-mlp");
        assert_eq!(app.key(key(KeyCode::Char('q'))), None);
        assert!(app.confirm_quit);
        assert_eq!(app.key(key(KeyCode::Char('n'))), None);
        assert!(!app.confirm_quit && !app.quit);
        app.key(key(KeyCode::Esc));
        assert_eq!(app.key(key(KeyCode::Char('y'))), Some(Effect::Quit));
        assert!(app.quit);

        let (mut app, _) = app_with("untrained-mlp");
        app.fail("boom".into());
        assert_eq!(app.state, RunState::Failed("boom".into()));
        assert_eq!(app.key(key(KeyCode::Char('q'))), Some(Effect::Quit));
    }

    #[test]
    fn pause_snapshot_theme_help_and_panes() {
        let mut themes = vec![Theme::default_theme(), Theme::builtin("mono").unwrap()];
        themes.truncate(2);
        let h = header("bifurcation", &[]);
        let mut app = App::new(themes);
        app.apply(&Record::Run(h));
        assert_eq!(app.key(key(KeyCode::Char(' '))), Some(Effect::Pause(true)));
        assert_eq!(app.state, RunState::Paused);
        assert_eq!(app.key(key(KeyCode::Char('p'))), Some(Effect::Pause(false)));
        assert_eq!(app.key(key(KeyCode::Char('s'))), Some(Effect::SnapshotNow));
        let (mut untrained, _) = app_with("untrained-mlp");
        assert_eq!(untrained.key(key(KeyCode::Char('s'))), None);
        assert!(untrained
            .flash
            .as_deref()
            .unwrap()
            .contains("every snapshot is converged"));
        app.key(key(KeyCode::Char('t')));
        assert_eq!(app.theme().name, "mono");
        app.key(key(KeyCode::Char('t')));
        assert_eq!(app.theme().name, "dark");
        app.key(key(KeyCode::Char('?')));
        assert!(app.help);
        app.key(key(KeyCode::Char('x')));
        assert!(!app.help, "any key closes the help");
        let order: Vec<Pane> = (0..5)
            .map(|_| {
                app.key(key(KeyCode::Tab));
                app.focus
            })
            .collect();
        assert_eq!(
            order,
            [
                Pane::Diagram,
                Pane::Heatmap,
                Pane::Chart,
                Pane::Inspector,
                Pane::Bars
            ]
        );
        app.key(key(KeyCode::Enter));
        assert!(!app.inspector);
        app.key(key(KeyCode::Char('b')));
        assert_eq!(app.bars, BarsMode::Train);
    }

    #[test]
    fn replay_seeks_steps_and_plays() {
        let h = header("bifurcation", &[]);
        let mut records = vec![Record::Run(h.clone())];
        for k in 0..5u64 {
            records.push(Record::Snapshot(snap(&h, 100 * k, None, |_| 0.3)));
        }
        records.push(Record::End(crate::runlog::End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s: 9.0,
            step: None,
            peak_rss: None,
        }));
        let mut app = App::new(vec![Theme::default_theme()]);
        app.replay(records);
        let cursor = |a: &App| a.timeline.as_ref().unwrap().cursor;
        assert_eq!(cursor(&app), 5);
        assert_eq!(app.state, RunState::Finished);
        assert!(!app.can_steer);
        app.key(key(KeyCode::Char('[')));
        assert_eq!(cursor(&app), 4);
        assert_eq!(app.history.len(), 4);
        assert_eq!(app.latest.as_ref().unwrap().step, 300);
        assert_eq!(
            app.state,
            RunState::Paused,
            "not at the end: no end line yet"
        );
        app.key(key(KeyCode::Char('{')));
        assert_eq!(cursor(&app), 1, "clamped to the first snapshot");
        app.key(key(KeyCode::Char('}')));
        assert_eq!(cursor(&app), 5);
        assert_eq!(app.state, RunState::Finished);
        app.key(key(KeyCode::Home));
        assert_eq!(cursor(&app), 1);
        assert_eq!(app.selected, 0);
        // Space plays at 10 snapshots a second (the default speed).
        app.key(key(KeyCode::Char(' ')));
        assert!(app.timeline.as_ref().unwrap().playing);
        assert!(!app.on_tick(0.05), "half a snapshot: nothing yet");
        assert!(app.on_tick(0.05));
        assert_eq!(cursor(&app), 2);
        app.key(key(KeyCode::Char('+')));
        assert!(app.on_tick(0.1));
        assert_eq!(cursor(&app), 4, "20 a second");
        assert!(app.on_tick(10.0));
        assert_eq!(cursor(&app), 5);
        assert!(!app.timeline.as_ref().unwrap().playing, "stops at the end");
        // Space at the end plays from the start again.
        app.key(key(KeyCode::Char(' ')));
        assert_eq!(cursor(&app), 1);
        // Quitting a replay asks nothing.
        assert_eq!(app.key(key(KeyCode::Char('q'))), Some(Effect::Quit));
    }

    #[test]
    fn a_followed_log_that_restarts_is_forgotten() {
        let (mut app, h) = app_with("untrained-mlp");
        app.apply(&Record::Snapshot(snap(&h, 0, Some(0), |_| 0.2)));
        app.selected = 7;
        app.reset_data();
        assert!(app.info.is_none() && app.history.is_empty() && app.mean.is_none());
        assert_eq!(app.selected, 7, "view settings stay");
        app.apply(&Record::Run(h));
        assert_eq!(app.state, RunState::Running);
    }

    #[test]
    fn e_writes_the_focused_figure_with_every_kept_snapshot() {
        let h = crate::tui::sample::header("bifurcation", &[]).unwrap();
        let mut app = crate::tui::sample::app(&h, 5);
        let dir = tempfile::tempdir().unwrap();
        app.export_dir = dir.path().to_path_buf();
        let log = app.kept_log().unwrap();
        assert_eq!(log.snapshots().count(), 5);
        assert_eq!(
            log.snapshots().map(|s| s.step).collect::<Vec<_>>(),
            vec![0, 100, 200, 300, 400]
        );
        app.focus = Pane::Heatmap;
        app.act(Action::Export);
        let name = "probescope-bifurcation-step400-heatmap.svg";
        assert_eq!(
            app.flash.as_deref(),
            Some(format!("wrote {} and .png", dir.path().join(name).display()).as_str())
        );
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
        let png = std::fs::read(dir.path().join(name).with_extension("png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG beside the SVG");
        // Again: a new name, never overwriting; from the bars, the curve.
        app.act(Action::Export);
        assert!(dir
            .path()
            .join("probescope-bifurcation-step400-heatmap-2.svg")
            .exists());
        app.focus = Pane::Bars;
        app.act(Action::Export);
        assert!(dir
            .path()
            .join("probescope-bifurcation-step400-curve.svg")
            .exists());
        // Nowhere to write: said in the status bar, nothing panics.
        app.export_dir = dir.path().join("missing");
        app.act(Action::Export);
        assert!(
            app.flash.as_deref().unwrap().starts_with("export failed"),
            "{:?}",
            app.flash
        );
    }
}
