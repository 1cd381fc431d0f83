//! The UI's state and its pure updates: records fold in, keys move the selection. Nothing here
//! draws or touches the terminal, so all of it is unit-tested.
//!
//! This file holds the state itself ([`App`] and the types its fields use); each concern that
//! updates or reads it is a file of its own: `history.rs` (records folding in, the histories and
//! the snapshots kept for export), `select.rs` (the selection and the find filter), `timeline.rs`
//! (a replay's cursor and playing, and looking back in a live run), `readings.rs` (what the panes
//! show of a tap) and `actions.rs` (keys and what they do).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keys::Keymap;

use crate::graph::{Graph, Op};
use crate::probe::ProbeSpec;
use crate::runlog::{EndStatus, ModelMetrics, Record, RunHeader, Snapshot, SnapshotKind};

use super::diagram::Layout;
use super::theme::{ColorDepth, Theme};

mod actions;
mod history;
mod readings;
mod select;
mod timeline;

pub use actions::{Action, Effect};
use history::Kept;
pub use history::{Decimating, EXPORT_ONLINE_CAP, HISTORY_CAP};
pub use readings::{Health, HealthFlag, OVERFIT_GAP, PAST_BEST};
pub use timeline::{Timeline, SPEEDS};

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
