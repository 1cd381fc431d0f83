//! The terminal UI. The run works in its own thread and sends plain records (never tensors) down
//! a channel; the UI loop is one `tokio::select!` over the terminal's events, the worker's
//! channel and a frame tick, and redraws at most 15 times a second, only when something changed.
//! The terminal is restored however the UI ends: normally, on a panic, on Ctrl-C, SIGTERM or
//! SIGHUP, or when the worker fails (the failure is shown and the UI stays up to read it).

pub mod compare;
pub mod diagram;
pub mod keys;
pub mod sample;
pub mod state;
pub use crate::theme;
pub mod view;

use std::io::{IsTerminal, Write};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use crossterm::{cursor, execute, terminal};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::presets::Controls;
use crate::report::Sink;
use crate::runlog::{Record, RunLogWriter};

use state::{App, Effect};
use theme::{ColorDepth, Theme, ThemeError};

/// Frames are drawn at most this often.
pub const FRAME: Duration = Duration::from_millis(66);

/// What the worker sends the UI.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A record (already in the run log when this arrives).
    Record(Box<Record>),
    /// A progress line.
    Progress(String),
    /// The worker is done: `Err` holds why it failed.
    Done(Result<(), String>),
    /// The log being followed started again: forget what was shown.
    Reset,
}

/// The worker's sink: writes the run log first (so nothing recorded depends on the UI), then
/// hands the record to the UI. Never blocks.
pub struct ChannelSink {
    log: Option<RunLogWriter>,
    tx: mpsc::UnboundedSender<WorkerMsg>,
}

impl ChannelSink {
    /// A sink sending to `tx` and writing `log` if given.
    pub fn new(log: Option<RunLogWriter>, tx: mpsc::UnboundedSender<WorkerMsg>) -> Self {
        Self { log, tx }
    }
}

impl Sink for ChannelSink {
    fn record(&mut self, record: &Record) -> anyhow::Result<()> {
        if let Some(log) = &mut self.log {
            log.write(record)?;
        }
        // A closed channel means the UI is gone; the run log still gets everything.
        let _ = self.tx.send(WorkerMsg::Record(Box::new(record.clone())));
        Ok(())
    }

    fn progress(&mut self, message: &str) {
        let _ = self.tx.send(WorkerMsg::Progress(message.to_string()));
    }
}

/// The themes `t` cycles through (every built-in, with the user's overrides of the same name,
/// plus `spec` when it is a file) and the index of `spec`'s. `None` picks `mono` when `NO_COLOR`
/// is set, else the default.
pub fn themes_for(
    spec: Option<&str>,
    depth: ColorDepth,
) -> Result<(Vec<Theme>, usize), ThemeError> {
    let dir = theme::config_dir();
    let mut all: Vec<Theme> = theme::BUILTIN
        .iter()
        .map(|(n, _)| Theme::load(n, dir.as_deref()))
        .collect::<Result<_, _>>()?;
    let spec = spec.unwrap_or(if depth == ColorDepth::None {
        "mono"
    } else {
        theme::BUILTIN[0].0
    });
    let chosen = Theme::load(spec, dir.as_deref())?;
    let at = match all.iter().position(|t| *t == chosen) {
        Some(i) => i,
        None => {
            all.insert(0, chosen);
            0
        }
    };
    Ok((all, at))
}

/// How the UI looks and answers keys: the themes, the terminal's colour depth and the key
/// table, loaded once for every command that opens the UI.
pub struct Look {
    /// The themes `t` cycles through, and the index of the current one.
    pub themes: (Vec<Theme>, usize),
    /// What the terminal can show.
    pub depth: ColorDepth,
    /// The key table.
    pub keymap: keys::Keymap,
}

impl Look {
    /// `--theme` (`None`: the default, or mono under `NO_COLOR`), the terminal's colour depth,
    /// and the user's key table.
    pub fn load(theme: Option<&str>) -> Result<Self, crate::params::ParamError> {
        let depth = ColorDepth::detect();
        let themes = themes_for(theme, depth)
            .map_err(|e| crate::params::ParamError(format!("--theme: {e}")))?;
        let keymap = keys::Keymap::load(theme::config_dir().as_deref())
            .map_err(|e| crate::params::ParamError(format!("{e}")))?;
        Ok(Self {
            themes,
            depth,
            keymap,
        })
    }

    /// A fresh UI state with this look.
    fn app(self) -> App {
        let mut app = App::new(self.themes.0);
        app.theme = self.themes.1;
        app.depth = self.depth;
        app.keymap = self.keymap;
        app
    }
}

/// A view the UI loop drives: the live / replay / attach [`App`], or a comparison.
pub trait Screen {
    /// Handles a key; returns what the runner must do.
    fn key(&mut self, key: crossterm::event::KeyEvent) -> Option<Effect>;
    /// Folds in a message from the worker.
    fn fold(&mut self, msg: WorkerMsg);
    /// Advances time by `dt` seconds (a playing timeline); whether anything changed.
    fn on_tick(&mut self, dt: f64) -> bool;
    /// Whether the UI should close.
    fn quitting(&self) -> bool;
    /// Asks the UI to close (a signal, or the terminal went away).
    fn close(&mut self);
    /// Draws the whole screen into `buf`.
    fn draw(&self, buf: &mut ratatui::buffer::Buffer);
}

impl Screen for App {
    fn key(&mut self, key: crossterm::event::KeyEvent) -> Option<Effect> {
        App::key(self, key)
    }

    fn fold(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Record(r) => self.apply(&r),
            WorkerMsg::Progress(p) => self.progress = p,
            WorkerMsg::Done(Err(e)) => self.fail(e),
            WorkerMsg::Done(Ok(())) => {}
            WorkerMsg::Reset => self.reset_data(),
        }
    }

    fn on_tick(&mut self, dt: f64) -> bool {
        let mut changed = App::on_tick(self, dt);
        // A live run works in this process: its resident memory, once a second.
        if self.can_steer && !self.attached && self.timeline.is_none() {
            self.rss_age_s += dt;
            if self.rss.is_none() || self.rss_age_s >= 1.0 {
                self.rss_age_s = 0.0;
                let now = crate::memory::rss();
                changed |= now != self.rss;
                self.rss = now;
            }
        }
        changed
    }

    fn quitting(&self) -> bool {
        self.quit
    }

    fn close(&mut self) {
        self.quit = true;
    }

    fn draw(&self, buf: &mut ratatui::buffer::Buffer) {
        view::draw(self, buf);
        if debug_panic() == Some("ui") && self.latest.is_some() {
            panic!("PROBESCOPE_DEBUG_PANIC=ui: a deliberate UI panic");
        }
    }
}

/// Whether the UI can run here: stdout and stdin are terminals.
pub fn is_interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// The test hook `PROBESCOPE_DEBUG_PANIC=ui|worker`: panic on purpose (in the UI after its first
/// snapshot, or in the run after its header), so the tests can check that the terminal is
/// restored and the failure reported and logged.
pub fn debug_panic() -> Option<&'static str> {
    static V: OnceLock<Option<String>> = OnceLock::new();
    V.get_or_init(|| std::env::var("PROBESCOPE_DEBUG_PANIC").ok())
        .as_deref()
}

static UI_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();
static TERMINAL_RAW: AtomicBool = AtomicBool::new(false);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Whether the UI holds the terminal (raw mode, alternate screen) right now.
pub fn ui_active() -> bool {
    TERMINAL_RAW.load(Ordering::SeqCst)
}

/// Gives the terminal back (cooked mode, main screen, cursor shown) if the UI holds it; safe to
/// call from any thread, any number of times.
pub fn restore_terminal() {
    if TERMINAL_RAW.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
    }
}

/// Restores the terminal when dropped.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_ui = UI_THREAD.get() == Some(&std::thread::current().id());
        if on_ui || !TERMINAL_RAW.load(Ordering::SeqCst) {
            // The UI itself panicked (or no UI is up): give the terminal back, then report.
            restore_terminal();
            previous(info);
        } else {
            // A worker thread: keep the screen intact; the worker reports the failure in the UI.
            let msg = info.to_string();
            if let Ok(mut slot) = LAST_PANIC.lock() {
                *slot = Some(msg);
            }
        }
    }));
}

/// A caught panic's payload as a message for the user and the run log.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let detail = LAST_PANIC.lock().ok().and_then(|mut s| s.take());
    format!(
        "internal error (a bug in probescope): {}",
        detail.unwrap_or(text)
    )
}

/// Runs `work` in a worker thread with a [`ChannelSink`] and the UI on this thread until the user
/// quits. Returns the worker's outcome (waiting for it to stop if the user quit early).
pub fn run_live<F>(
    work: F,
    log: Option<RunLogWriter>,
    controls: Arc<Controls>,
    signalled: Arc<AtomicBool>,
    look: Look,
) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Sink) -> anyhow::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let worker_tx = tx.clone();
    let worker = std::thread::Builder::new()
        .name("probescope-worker".into())
        .spawn(move || {
            let mut sink = ChannelSink::new(log, worker_tx.clone());
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut sink)))
                .unwrap_or_else(|p| Err(anyhow::anyhow!(panic_message(p.as_ref()))));
            let _ = worker_tx.send(WorkerMsg::Done(
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| crate::text::error_text(e)),
            ));
            outcome
        })?;
    drop(tx);

    let mut app = look.app();
    let ui = std::panic::catch_unwind(AssertUnwindSafe(|| {
        ui_loop(&mut app, rx, &controls, &signalled)
    }));
    // Whatever happened (the terminal is already restored), the worker stops at its next
    // checkpoint and writes its end line, so nothing recorded is lost.
    controls.pause.store(false, Ordering::Relaxed);
    let active = app.state.active();
    match &ui {
        Err(_) => controls.request_stop_because("stopped: the terminal UI failed"),
        Ok(Err(e)) => {
            controls.request_stop_because(&format!("stopped: the terminal UI failed: {e:#}"))
        }
        Ok(Ok(())) if signalled.load(Ordering::Relaxed) => {
            controls.request_stop_because("stopped by a signal")
        }
        Ok(Ok(())) => controls.request_stop(),
    }
    if active {
        eprintln!(
            "probescope: stopping the run and closing its log (Ctrl-C again ends it at once)..."
        );
    }
    let outcome = worker
        .join()
        .unwrap_or_else(|p| Err(anyhow::anyhow!(panic_message(p.as_ref()))));
    match ui {
        Err(p) => std::panic::resume_unwind(p),
        Ok(r) => r?,
    }
    outcome
}

/// `probescope replay`: the UI over a finished (or killed) run's log, with a timeline.
pub fn run_replay(
    log: crate::runlog::RunLog,
    look: Look,
    signalled: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut app = look.app();
    let mut records = vec![Record::Run(log.header)];
    records.extend(log.records);
    app.replay(records);
    app.flash = log.warnings.first().cloned();
    let (_tx, rx) = mpsc::unbounded_channel();
    ui_loop(&mut app, rx, &Controls::default(), &signalled)
}

/// `probescope attach`: the UI over a log that another process is writing, following it.
pub fn run_attach(
    path: &std::path::Path,
    look: Look,
    signalled: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut follower = crate::follow::Follower::new(path);
    let follow = std::thread::Builder::new()
        .name("probescope-follow".into())
        .spawn(move || loop {
            match follower.poll() {
                Ok(found) => {
                    for f in found {
                        let msg = match f {
                            crate::follow::Followed::Reset => WorkerMsg::Reset,
                            crate::follow::Followed::Record(r) => WorkerMsg::Record(r),
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(WorkerMsg::Done(Err(crate::text::error_text(&e))));
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        })?;
    let mut app = look.app();
    app.can_steer = false;
    app.attached = true;
    let ui = ui_loop(&mut app, rx, &Controls::default(), &signalled);
    // Closing the channel ends the follower at its next poll.
    drop(app);
    let _ = follow.join();
    ui
}

/// `probescope compare`: runs side by side, read-only.
/// `setup` adjusts the view (readings, split, step) before it opens.
pub fn run_compare(
    cmp: crate::compare::Comparison,
    look: Look,
    signalled: Arc<AtomicBool>,
    setup: impl FnOnce(&mut compare::CompareApp),
) -> anyhow::Result<()> {
    let mut screen = compare::CompareApp::new(cmp, look.themes.0, look.keymap);
    screen.theme = look.themes.1;
    screen.depth = look.depth;
    setup(&mut screen);
    let (_tx, rx) = mpsc::unbounded_channel();
    ui_loop(&mut screen, rx, &Controls::default(), &signalled)
}

fn ui_loop<A: Screen>(
    app: &mut A,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    controls: &Controls,
    signalled: &AtomicBool,
) -> anyhow::Result<()> {
    let _ = UI_THREAD.set(std::thread::current().id());
    install_panic_hook();
    terminal::enable_raw_mode()?;
    TERMINAL_RAW.store(true, Ordering::SeqCst);
    let _guard = TerminalGuard;
    let mut out = std::io::stdout();
    execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
    let mut term = Terminal::new(CrosstermBackend::new(out))?;
    term.clear()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(event_loop(
        app,
        rx,
        EventStream::new(),
        controls,
        signalled,
        false,
        |app| {
            term.draw(|f| app.draw(f.buffer_mut()))?;
            Ok(())
        },
    ))
}

/// The UI loop: one `select!` over the terminal's `events`, the worker's channel and a frame tick;
/// `draw` runs on a tick when something changed, so at most once per [`FRAME`]. Returns when the
/// user quits, on a signal, or (with `until_worker_done`, for the benchmark) when the worker's
/// channel closes.
pub async fn event_loop<A, S, D>(
    app: &mut A,
    mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
    mut events: S,
    controls: &Controls,
    signalled: &AtomicBool,
    until_worker_done: bool,
    mut draw: D,
) -> anyhow::Result<()>
where
    A: Screen,
    S: futures_util::Stream<Item = std::io::Result<Event>> + Unpin,
    D: FnMut(&A) -> anyhow::Result<()>,
{
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut worker_open = true;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    match app.key(k) {
                        Some(Effect::Pause(p)) => controls.pause.store(p, Ordering::Relaxed),
                        Some(Effect::SnapshotNow) => controls.snapshot.store(true, Ordering::Relaxed),
                        Some(Effect::Quit) | None => {}
                    }
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the terminal")),
                None => app.close(),
            },
            msg = rx.recv(), if worker_open => {
                match msg {
                    Some(m) => app.fold(m),
                    None => worker_open = false,
                }
                // Take everything already queued before drawing.
                while let Ok(m) = rx.try_recv() {
                    app.fold(m);
                }
                dirty = true;
            }
            _ = tick.tick() => {
                if signalled.load(Ordering::Relaxed) {
                    app.close();
                }
                if app.on_tick(FRAME.as_secs_f64()) {
                    dirty = true;
                }
                if dirty {
                    draw(app)?;
                    dirty = false;
                }
            }
        }
        if app.quitting() || (until_worker_done && !worker_open) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_picks_mono_and_an_explicit_theme_wins() {
        let (all, at) = themes_for(None, ColorDepth::None).unwrap();
        assert_eq!(all[at].name, "mono");
        let (all, at) = themes_for(None, ColorDepth::Ansi256).unwrap();
        assert_eq!(all[at].name, "dark");
        let (all, at) = themes_for(Some("viridis"), ColorDepth::None).unwrap();
        assert_eq!(all[at].name, "viridis");
        assert_eq!(all.len(), theme::BUILTIN.len());
    }
}
