//! `probescope bench ui`: the cost of the terminal UI. Frame render time with 33 and 129 taps at
//! 200x60 against the cheapest full frame (one paragraph) drawn in the same invocation, and the
//! trainer's speed with the UI open against headless.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::widgets::Paragraph;
use ratatui::{Terminal, TerminalOptions, Viewport};

use crate::presets;
use crate::report::Sink;
use crate::runlog::Record;
use crate::tui::state::App;
use crate::tui::theme::Theme;
use crate::tui::{sample, view, ChannelSink, WorkerMsg};

/// Counts the bytes a frame would send to the terminal.
#[derive(Default, Clone)]
struct CountingSink(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .fetch_add(b.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn terminal(
    w: u16,
    h: u16,
    bytes: &CountingSink,
) -> anyhow::Result<Terminal<CrosstermBackend<CountingSink>>> {
    Ok(Terminal::with_options(
        CrosstermBackend::new(bytes.clone()),
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, w, h)),
        },
    )?)
}

/// Mean seconds per frame of drawing alone into a buffer (no diff, no output).
fn time_draw_only(app: &mut App, frames: usize) -> f64 {
    let mut buf = ratatui::buffer::Buffer::empty(Rect::new(0, 0, 200, 60));
    let n = app.taps.len().max(1);
    let t = Instant::now();
    for k in 0..frames {
        app.selected = k % n;
        view::draw(app, &mut buf);
    }
    t.elapsed().as_secs_f64() / frames as f64
}

/// Mean seconds per frame over `frames` full redraws (the terminal's diff is defeated by
/// alternating the selection, so every frame changes).
fn time_frames(app: &mut App, frames: usize) -> anyhow::Result<(f64, usize)> {
    let bytes = CountingSink::default();
    let mut term = terminal(200, 60, &bytes)?;
    let n = app.taps.len().max(1);
    let t = Instant::now();
    for k in 0..frames {
        app.selected = k % n;
        term.draw(|f| view::draw(app, f.buffer_mut()))?;
    }
    let secs = t.elapsed().as_secs_f64() / frames as f64;
    let sent = bytes.0.load(std::sync::atomic::Ordering::Relaxed);
    Ok((secs, sent / frames.max(1)))
}

fn time_baseline(frames: usize) -> anyhow::Result<f64> {
    let mut term = terminal(200, 60, &CountingSink::default())?;
    let text: String = (0..60)
        .map(|r| format!("{}\n", "x".repeat(150 + r % 50)))
        .collect();
    let t = Instant::now();
    for k in 0..frames {
        let p = Paragraph::new(if k % 2 == 0 { text.as_str() } else { "" });
        term.draw(|f| f.render_widget(p, f.area()))?;
    }
    Ok(t.elapsed().as_secs_f64() / frames as f64)
}

/// A 129-tap state: 128 layers, the 64th also reading the input.
fn deep_app() -> anyhow::Result<App> {
    Ok(sample::app(&sample::deep_skip_header()?, 400))
}

/// Throws records away (the headless baseline without printing).
struct Discard;

impl Sink for Discard {
    fn record(&mut self, _: &Record) -> anyhow::Result<()> {
        Ok(())
    }
    fn progress(&mut self, _: &str) {}
}

/// How the trainer's records are consumed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Consumer {
    /// Dropped in the worker (headless without printing).
    Headless,
    /// Sent down the channel to the UI's loop, which folds them but draws nothing.
    Channel,
    /// Sent to the UI's loop, which folds them and redraws at most 15 times a second.
    Ui,
}

/// Seconds of one bifurcation run of `steps` steps with its records consumed by `consumer`.
fn run_trainer(steps: usize, consumer: Consumer) -> anyhow::Result<(f64, usize)> {
    let sets = vec![format!("steps={steps}"), "log_every=10".to_string()];
    let draw = consumer == Consumer::Ui;
    if consumer == Consumer::Headless {
        let t = Instant::now();
        presets::run_preset("bifurcation", &sets, 0, &mut Discard)?;
        return Ok((t.elapsed().as_secs_f64(), 0));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<WorkerMsg>();
    // The UI's own loop, with no terminal events and a terminal that only counts bytes; the
    // idle variant runs the same loop but draws nothing.
    let ui = std::thread::spawn(move || -> anyhow::Result<usize> {
        let mut app = App::new(vec![Theme::default_theme()]);
        let mut term = terminal(200, 60, &CountingSink::default())?;
        let mut frames = 0;
        let controls = crate::presets::Controls::default();
        let signalled = std::sync::atomic::AtomicBool::new(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        rt.block_on(crate::tui::event_loop(
            &mut app,
            rx,
            futures_util::stream::pending(),
            &controls,
            &signalled,
            true,
            |app| {
                if draw {
                    term.draw(|f| view::draw(app, f.buffer_mut()))?;
                    frames += 1;
                }
                Ok(())
            },
        ))?;
        Ok(frames)
    });
    let t = Instant::now();
    {
        let mut sink = ChannelSink::new(None, tx);
        let h = sample::header("bifurcation", &["steps=1"])?;
        sink.record(&Record::Run(h))?;
        presets::run_preset("bifurcation", &sets, 0, &mut sink)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let frames = ui
        .join()
        .map_err(|_| anyhow::anyhow!("UI thread panicked"))??;
    Ok((secs, frames))
}

/// Runs the UI benchmark; returns the report.
pub fn ui(steps: usize, frames: usize, rounds: usize) -> anyhow::Result<String> {
    let mut out = String::new();
    let base = time_baseline(frames)?;
    let h33 = sample::header("untrained-mlp", &[])?;
    let mut small = sample::app(&h33, 400);
    let mut deep = deep_app()?;
    let (f33, b33) = time_frames(&mut small, frames)?;
    let (f129, b129) = time_frames(&mut deep, frames)?;
    let d33 = time_draw_only(&mut small, frames);
    let d129 = time_draw_only(&mut deep, frames);
    let base2 = time_baseline(frames)?;
    let base = base.min(base2);
    writeln!(out, "frame render at 200x60, {frames} frames each (ratatui diff and crossterm output included):")?;
    writeln!(
        out,
        "  baseline (one full-screen paragraph): {:8.1} µs/frame",
        base * 1e6
    )?;
    writeln!(
        out,
        "  33 taps, 400 snapshots:               {:8.1} µs/frame  ({:.2}x baseline, {b33} bytes/frame)",
        f33 * 1e6,
        f33 / base
    )?;
    writeln!(
        out,
        "  129 taps, 400 snapshots:              {:8.1} µs/frame  ({:.2}x baseline, {b129} bytes/frame)",
        f129 * 1e6,
        f129 / base
    )?;
    writeln!(
        out,
        "  drawing alone (no diff, no output):   {:8.1} µs/frame with 33 taps, {:.1} µs with 129",
        d33 * 1e6,
        d129 * 1e6
    )?;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut drawn = 0;
    for _ in 0..rounds {
        for (k, c) in [Consumer::Headless, Consumer::Channel, Consumer::Ui]
            .into_iter()
            .enumerate()
        {
            let (s, f) = run_trainer(steps, c)?;
            times[k].push(s);
            drawn += f;
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [h, c, l] = times.map(|mut v| med(&mut v));
    writeln!(
        out,
        "trainer: bifurcation, {steps} steps, online probes logged every 10 steps, median of {rounds} rounds (the three alternate):"
    )?;
    writeln!(
        out,
        "  headless (records dropped):      {:7.2} s  ({:7.1} steps/s)",
        h,
        steps as f64 / h
    )?;
    writeln!(
        out,
        "  UI loop without drawing:         {:7.2} s  ({:7.1} steps/s)",
        c,
        steps as f64 / c
    )?;
    writeln!(
        out,
        "  UI open (fold + draw, 15 fps):   {:7.2} s  ({:7.1} steps/s, {} frames drawn in all)",
        l,
        steps as f64 / l,
        drawn
    )?;
    writeln!(
        out,
        "  speed with the UI open: {:.1}% of headless, {:.1}% of the loop without drawing",
        100.0 * h / l,
        100.0 * c / l
    )?;
    Ok(out)
}
