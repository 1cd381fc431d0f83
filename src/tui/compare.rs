//! The comparison view (`probescope compare A B [C]`): the runs' probe errors side by side per
//! tap (aligned by name), each run's layer x time picture on a shared timeline, and an inspector
//! with every run's reading of the selected tap. `d` shows each run's difference from a base run
//! instead. Read-only: it steers nothing.

use crossterm::event::KeyEvent;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use super::diagram::err_label;
use super::keys::{KeyMode, Keymap};
use super::state::{Action, Effect, SPEEDS};
use super::theme::{downgrade, ColorDepth, Theme};
use super::view::{self, cols, rows, window, EIGHTHS};
use super::{Screen, WorkerMsg};
use crate::compare::Comparison;

/// The panes Tab cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComparePane {
    /// Errors (or differences) per tap, one bar per run.
    Bars,
    /// Each run's layer x time picture.
    Heatmap,
    /// The selected tap in every run.
    Inspector,
}

/// The comparison's state; pure, so it is unit-tested without a terminal.
pub struct CompareApp {
    /// The runs.
    pub cmp: Comparison,
    /// Only converged snapshots count (else every snapshot).
    pub converged_only: bool,
    /// The timeline: every step where a run has a counted snapshot.
    pub steps: Vec<u64>,
    /// Index into `steps`.
    pub cursor: usize,
    /// Whether the timeline plays.
    pub playing: bool,
    /// Index into [`SPEEDS`].
    pub speed: usize,
    carry: f64,
    /// The selected aligned tap.
    pub selected: usize,
    /// Differences from the base run instead of errors.
    pub diff: bool,
    /// The base run of the differences.
    pub base: usize,
    /// Train error instead of test.
    pub train: bool,
    /// The focused pane.
    pub focus: ComparePane,
    /// Whether the inspector shows.
    pub inspector: bool,
    /// Whether the help overlay shows.
    pub help: bool,
    /// The themes `t` cycles through.
    pub themes: Vec<Theme>,
    /// Index into `themes`.
    pub theme: usize,
    /// What the terminal can show.
    pub depth: ColorDepth,
    /// The key table (compare mode).
    pub keymap: Keymap,
    /// A short message for the status bar.
    pub flash: Option<String>,
    /// Whether the UI should close.
    pub quit: bool,
    /// Where `e` writes figures.
    pub export_dir: std::path::PathBuf,
    /// Errors `[step][run][tap]` for the current readings and split.
    grid: Vec<Vec<Vec<f64>>>,
}

impl CompareApp {
    /// A comparison at its last step, with `themes` (the first current) and the user's `keymap`.
    pub fn new(cmp: Comparison, themes: Vec<Theme>, keymap: Keymap) -> Self {
        assert!(!themes.is_empty(), "at least one theme");
        let converged_only = cmp.all_converged();
        let flash = cmp
            .runs
            .iter()
            .flat_map(|r| r.log.warnings.first())
            .next()
            .cloned()
            .or_else(|| {
                (!converged_only).then(|| {
                    "a run has no converged snapshot: comparing every snapshot (c toggles)".into()
                })
            });
        let mut app = Self {
            cmp,
            converged_only,
            steps: Vec::new(),
            cursor: 0,
            playing: false,
            speed: 3,
            carry: 0.0,
            selected: 0,
            diff: false,
            base: 0,
            train: false,
            focus: ComparePane::Bars,
            inspector: true,
            help: false,
            themes,
            theme: 0,
            depth: ColorDepth::TrueColor,
            keymap: Keymap::for_mode(&keymap, KeyMode::Compare),
            flash,
            quit: false,
            export_dir: std::path::PathBuf::from("."),
            grid: Vec::new(),
        };
        app.refresh();
        app.cursor = app.steps.len().saturating_sub(1);
        app
    }

    /// Moves the cursor to the newest timeline step at or before `step`.
    pub fn seek_step(&mut self, step: u64) {
        self.cursor = self.steps.iter().rposition(|&x| x <= step).unwrap_or(0);
    }

    /// Recomputes the timeline and the errors after the readings or the split changed, keeping
    /// the cursor at the same step (or the nearest before it).
    pub fn refresh(&mut self) {
        let at = self.step();
        self.steps = self.cmp.steps(self.converged_only);
        if self.steps.is_empty() {
            self.steps.push(0);
        }
        self.cursor = match at {
            Some(s) => self.steps.iter().rposition(|&x| x <= s).unwrap_or(0),
            None => self.steps.len() - 1,
        };
        self.grid = self
            .steps
            .iter()
            .map(|&s| self.cmp.errors(s, self.converged_only, self.train))
            .collect();
    }

    /// The step the cursor is at.
    pub fn step(&self) -> Option<u64> {
        self.steps.get(self.cursor).copied()
    }

    /// Errors `[run][tap]` at the cursor.
    pub fn errors(&self) -> &[Vec<f64>] {
        &self.grid[self.cursor.min(self.grid.len() - 1)]
    }

    /// What the bars show for run `r` at tap `t`: its error, or in difference mode its error
    /// less the base run's.
    pub fn shown(&self, r: usize, t: usize) -> f64 {
        self.value_at(self.cursor, r, t)
    }

    fn value_at(&self, row: usize, r: usize, t: usize) -> f64 {
        let e = &self.grid[row];
        if self.diff {
            e[r][t] - e[self.base][t]
        } else {
            e[r][t]
        }
    }

    /// The runs the bars draw: all, or in difference mode all but the base.
    pub fn shown_runs(&self) -> Vec<usize> {
        (0..self.cmp.runs.len())
            .filter(|&r| !self.diff || r != self.base)
            .collect()
    }

    /// The current theme.
    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme]
    }

    /// Run `r`'s colour.
    pub fn run_colour(theme: &Theme, r: usize) -> Color {
        [theme.train, theme.test, theme.good][r % 3]
    }

    fn which(&self) -> &'static str {
        if self.train {
            "train"
        } else {
            "test"
        }
    }

    fn seek(&mut self, to: i64) {
        self.cursor = to.clamp(0, self.steps.len() as i64 - 1) as usize;
    }

    /// Writes the comparison's figure (errors or differences at the cursor) as SVG and PNG into
    /// `export_dir`; returns the SVG file.
    pub fn export_figure(&self) -> anyhow::Result<std::path::PathBuf> {
        let step = self.step().unwrap_or(0);
        let plot = self.cmp.plot(
            step,
            self.converged_only,
            self.train,
            self.diff.then_some(self.base),
        );
        let stem = format!(
            "probescope-compare-step{step}-{}{}",
            self.which(),
            if self.diff { "-diff" } else { "" }
        );
        let svg = super::state::free_path(&self.export_dir, &stem);
        crate::export::svg_file(&plot, &svg)?;
        crate::export::png_file(&plot, &svg.with_extension("png"))?;
        Ok(svg)
    }

    /// Does `action`.
    pub fn act(&mut self, action: Action) {
        let n = self.cmp.taps.len() as i64;
        let select = |sel: usize, d: i64, wrap: bool| {
            let next = sel as i64 + d;
            if wrap {
                next.rem_euclid(n) as usize
            } else {
                next.clamp(0, n - 1) as usize
            }
        };
        let c = self.cursor as i64;
        match action {
            Action::Left => self.selected = select(self.selected, -1, true),
            Action::Right => self.selected = select(self.selected, 1, true),
            Action::Up => self.selected = select(self.selected, -10, false),
            Action::Down => self.selected = select(self.selected, 10, false),
            Action::First => self.selected = 0,
            Action::Last => self.selected = (n - 1) as usize,
            Action::Inspector => {
                self.inspector = !self.inspector;
                if !self.inspector && self.focus == ComparePane::Inspector {
                    self.focus = ComparePane::Bars;
                }
            }
            Action::NextPane | Action::PrevPane => {
                let mut panes = vec![ComparePane::Bars, ComparePane::Heatmap];
                if self.inspector {
                    panes.push(ComparePane::Inspector);
                }
                let at = panes.iter().position(|p| *p == self.focus).unwrap_or(0);
                let len = panes.len();
                let next = if action == Action::NextPane {
                    at + 1
                } else {
                    at + len - 1
                };
                self.focus = panes[next % len];
            }
            Action::Pause => {
                if !self.playing && self.cursor + 1 >= self.steps.len() {
                    self.cursor = 0;
                }
                self.playing = !self.playing;
                self.carry = 0.0;
            }
            Action::StepBack => self.seek(c - 1),
            Action::StepForward => self.seek(c + 1),
            Action::JumpBack => self.seek(c - 10),
            Action::JumpForward => self.seek(c + 10),
            Action::TimelineStart => self.seek(0),
            Action::TimelineEnd => self.seek(i64::MAX / 2),
            Action::Faster | Action::Slower => {
                self.speed = if action == Action::Faster {
                    (self.speed + 1).min(SPEEDS.len() - 1)
                } else {
                    self.speed.saturating_sub(1)
                };
                self.flash = Some(format!("playback: {} snapshots/s", SPEEDS[self.speed]));
            }
            Action::Diff => {
                self.diff = !self.diff;
                self.flash = Some(if self.diff {
                    format!(
                        "differences from {} (below 0: better than it)",
                        self.cmp.runs[self.base].name
                    )
                } else {
                    "errors".into()
                });
            }
            Action::Base => {
                self.base = (self.base + 1) % self.cmp.runs.len();
                self.flash = Some(format!("base run: {}", self.cmp.runs[self.base].name));
            }
            Action::Readings => {
                self.converged_only = !self.converged_only;
                self.refresh();
                self.flash = Some(if self.converged_only {
                    "converged snapshots only".into()
                } else {
                    "every snapshot (online readings are smoothed minibatch errors)".into()
                });
            }
            Action::BarsMode => {
                self.train = !self.train;
                self.refresh();
                self.flash = Some(format!("{} error", self.which()));
            }
            Action::Theme => {
                self.theme = (self.theme + 1) % self.themes.len();
                self.flash = Some(format!("theme: {}", self.theme().name));
            }
            Action::Export => {
                self.flash = Some(match self.export_figure() {
                    Ok(p) => format!(
                        "wrote {} and .png",
                        p.display().to_string().trim_end_matches(".svg")
                    ),
                    Err(e) => format!("export failed: {e:#}"),
                });
            }
            Action::Help => self.help = true,
            Action::Quit => self.quit = true,
            Action::Snapshot | Action::Find | Action::Live | Action::Transfer => {}
        }
    }
}

impl Screen for CompareApp {
    fn key(&mut self, key: KeyEvent) -> Option<Effect> {
        let action = self.keymap.action(&key);
        if self.help {
            self.help = false;
            return None;
        }
        self.flash = None;
        if let Some(a) = action {
            if matches!(
                a,
                Action::StepBack
                    | Action::StepForward
                    | Action::JumpBack
                    | Action::JumpForward
                    | Action::TimelineStart
                    | Action::TimelineEnd
            ) {
                self.playing = false;
            }
            self.act(a);
        }
        self.quit.then_some(Effect::Quit)
    }

    fn fold(&mut self, _msg: WorkerMsg) {}

    fn on_tick(&mut self, dt: f64) -> bool {
        if !self.playing {
            return false;
        }
        self.carry += dt * SPEEDS[self.speed];
        let steps = self.carry.floor() as usize;
        if steps == 0 {
            return false;
        }
        self.carry -= steps as f64;
        self.cursor = (self.cursor + steps).min(self.steps.len() - 1);
        if self.cursor + 1 >= self.steps.len() {
            self.playing = false;
        }
        true
    }

    fn quitting(&self) -> bool {
        self.quit
    }

    fn close(&mut self) {
        self.quit = true;
    }

    fn draw(&self, buf: &mut Buffer) {
        draw(self, buf);
    }
}

/// Draws the comparison into `buf` (its full area).
pub fn draw(app: &CompareApp, buf: &mut Buffer) {
    let area = buf.area;
    Clear.render(area, buf);
    let theme = app.theme().for_depth(app.depth);
    if area.width < view::MIN_SIZE.0 || area.height < view::MIN_SIZE.1 {
        view::too_small(area, buf, &theme);
        return;
    }
    let [main, status] = rows(area, [Constraint::Min(1), Constraint::Length(1)]);
    let side = app.inspector && area.width >= 110;
    let (left, right) = if side {
        let [l, r] = cols(main, [Constraint::Min(1), Constraint::Length(44)]);
        (l, Some(r))
    } else {
        (main, None)
    };
    let bars_h = (left.height * 11 / 20).max(8);
    let [bars, bottom] = rows(left, [Constraint::Length(bars_h), Constraint::Min(1)]);
    draw_bars(app, &theme, bars, buf);
    match right {
        Some(r) => {
            draw_heatmap(app, &theme, bottom, buf);
            draw_inspector(app, &theme, r, buf);
        }
        None if app.inspector => {
            let [h, i] = cols(bottom, [Constraint::Percentage(50), Constraint::Min(1)]);
            draw_heatmap(app, &theme, h, buf);
            draw_inspector(app, &theme, i, buf);
        }
        None => draw_heatmap(app, &theme, bottom, buf),
    }
    draw_status(app, &theme, status, buf);
    if app.help {
        let names: Vec<&str> = app.themes.iter().map(|t| t.name.as_str()).collect();
        view::help_overlay(&app.keymap, &app.theme().name, &names, &theme, area, buf);
    }
}

fn block<'a>(app: &CompareApp, theme: &Theme, pane: ComparePane, title: String) -> Block<'a> {
    view::framed(app.focus == pane, theme, title)
}

/// A signed difference as ".123" with its sign.
fn signed(d: f64) -> String {
    if !d.is_finite() {
        return "--".into();
    }
    let s = err_label(d.abs(), 4);
    format!("{}{}", if d < 0.0 { "-" } else { "+" }, s.trim())
}

/// Run `r`'s bar style: its colour, or in monochrome a distinguishing modifier.
fn run_style(theme: &Theme, r: usize) -> Style {
    if theme.monochrome {
        [
            Style::default(),
            Style::default().add_modifier(Modifier::DIM),
            Style::default().add_modifier(Modifier::ITALIC),
        ][r % 3]
    } else {
        Style::default().fg(CompareApp::run_colour(theme, r))
    }
}

/// The run's mark in legends: a coloured block, or in monochrome its number.
fn run_mark(theme: &Theme, r: usize) -> Span<'static> {
    if theme.monochrome {
        Span::raw(format!("{}:", r + 1))
    } else {
        Span::styled("█ ", run_style(theme, r))
    }
}

/// A round axis top at or above `v`.
fn nice_top(v: f64) -> f64 {
    for t in [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0] {
        if v <= t + 1e-12 {
            return t;
        }
    }
    v.ceil()
}

fn draw_bars(app: &CompareApp, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let n = app.cmp.taps.len();
    let runs = app.shown_runs();
    let sel = app.selected.min(n.saturating_sub(1));
    let step = app.step().unwrap_or(0);
    let mut title = vec![Span::styled(
        if app.diff {
            format!(
                " {} error minus {}'s · step {step} · {}: ",
                app.which(),
                app.cmp.runs[app.base].name,
                app.cmp.taps[sel].name
            )
        } else {
            format!(
                " probe {} error · step {step} · {}: ",
                app.which(),
                app.cmp.taps[sel].name
            )
        },
        Style::default().fg(theme.text),
    )];
    for &r in &runs {
        let v = app.shown(r, sel);
        title.push(Span::styled(
            format!(
                "{} {} ",
                app.cmp.runs[r].name,
                if app.diff {
                    signed(v)
                } else {
                    err_label(v, 4).trim().to_string()
                }
            ),
            run_style(theme, r),
        ));
    }
    let mut legend: Vec<Span> = Vec::new();
    for &r in &runs {
        legend.push(run_mark(theme, r));
        let name = if app.diff {
            format!("{}−{} ", app.cmp.runs[r].name, app.cmp.runs[app.base].name)
        } else {
            format!("{} ", app.cmp.runs[r].name)
        };
        legend.push(Span::raw(name));
    }
    legend.push(Span::styled("─", Style::default().fg(theme.chance)));
    legend.push(Span::raw(if app.diff {
        " 0 ".to_string()
    } else {
        format!(" chance {:.2} ", app.cmp.runs[0].chance)
    }));
    let blk = block(app, theme, ComparePane::Bars, String::new())
        .title(Line::from(title))
        .title_bottom(Line::from(legend).right_aligned());
    let inner = blk.inner(area);
    blk.render(area, buf);
    if n == 0 || inner.width < 10 || inner.height < 4 {
        return;
    }
    let plot = view::plot_area(inner, 5);
    let label_row = inner.y + inner.height - 1;
    let ph = plot.height as usize;
    let k = runs.len().max(1);
    let values: Vec<f64> = (0..n)
        .flat_map(|t| runs.iter().map(move |&r| (r, t)))
        .map(|(r, t)| app.shown(r, t))
        .filter(|v| v.is_finite())
        .collect();
    // Errors: 0 up to the chance level or above; differences: symmetric about 0.
    let (lo, hi) = if app.diff {
        let m = nice_top(values.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(0.01));
        (-m, m)
    } else {
        let m = values
            .iter()
            .copied()
            .fold(app.cmp.runs[0].chance, f64::max);
        (0.0, nice_top(m))
    };
    let rows_for = |v: f64| (v - lo) / (hi - lo) * ph as f64;
    for (v, text) in [(hi, hi), ((hi + lo) / 2.0, (hi + lo) / 2.0), (lo, lo)] {
        let y = plot.y + ph as u16 - 1 - (rows_for(v).floor() as u16).min(ph as u16 - 1);
        let t = if app.diff {
            if text == 0.0 {
                "0".to_string()
            } else {
                signed(text)
            }
        } else {
            let s = format!("{text:.2}");
            let s = s.trim_start_matches('0');
            if s == ".00" {
                "0".into()
            } else {
                s.to_string()
            }
        };
        buf.set_string(
            inner.x,
            y,
            format!("{t:>4}"),
            Style::default().fg(theme.muted),
        );
    }
    // The reference line: chance, or zero.
    let reference = if app.diff {
        0.0
    } else {
        app.cmp.runs[0].chance
    };
    if reference <= hi {
        let y = plot.y + ph as u16 - 1 - (rows_for(reference).floor() as u16).min(ph as u16 - 1);
        for x in plot.x..plot.x + plot.width {
            buf[(x, y)]
                .set_char('─')
                .set_style(Style::default().fg(theme.chance));
        }
    }
    let pw = plot.width as usize;
    let (start, shown) = window(n, k + 1, pw, sel);
    let slot = (pw / shown).max(k + 1);
    let bw = ((slot - 1) / k).max(1);
    let zero = rows_for(0.0);
    for (j, t) in (start..start + shown).enumerate() {
        let x0 = plot.x as usize + j * slot;
        for (s, &r) in runs.iter().enumerate() {
            let v = app.shown(r, t);
            if !v.is_finite() {
                continue;
            }
            let style = run_style(theme, r);
            for b in 0..bw {
                let x = (x0 + s * bw + b) as u16;
                if x >= plot.x + plot.width {
                    continue;
                }
                fill_bar(buf, plot, x, zero, rows_for(v.clamp(lo, hi)), style);
            }
        }
    }
    // Tap indices, and the selected tap's marker and name.
    let mut j = 0;
    while j < shown {
        let x = plot.x as usize + j * slot;
        let text = format!("{}", start + j);
        if x + text.len() < (plot.x + plot.width) as usize {
            buf.set_string(x as u16, label_row, &text, Style::default().fg(theme.muted));
        }
        j += (8 / slot.max(1)).max(1) * 2;
    }
    let sx = plot.x as usize + (sel - start) * slot + (k * bw).saturating_sub(1) / 2;
    view::tap_marker(
        buf,
        (inner, plot, label_row),
        sx,
        &app.cmp.taps[sel].name,
        (start > 0, start + shown < n),
        theme,
    );
}

/// Fills column `x` of `plot` between the heights `from` and `to` (in rows from the bottom,
/// fractional): upward in eighths of a cell, downward in halves.
fn fill_bar(buf: &mut Buffer, plot: Rect, x: u16, from: f64, to: f64, style: Style) {
    let ph = plot.height as usize;
    let row_y = |r: usize| plot.y + (ph - 1 - r.min(ph - 1)) as u16;
    if to >= from {
        let a = (from * 8.0).round() as usize;
        let b = (to * 8.0).round() as usize;
        for r in a / 8..ph {
            let lo = (r * 8).max(a);
            let hi = ((r + 1) * 8).min(b);
            if hi <= lo {
                break;
            }
            // Cells partly filled from below show eighths; one that starts above its bottom
            // (the zero line mid-cell) is drawn full.
            let ch = if lo == r * 8 { EIGHTHS[hi - lo] } else { '█' };
            buf[(x, row_y(r))].set_char(ch).set_style(style);
        }
    } else {
        let a = (from * 2.0).round() as usize;
        let b = (to.max(0.0) * 2.0).round() as usize;
        let mut r = a.div_ceil(2);
        while r > 0 {
            r -= 1;
            let top = ((r + 1) * 2).min(a);
            let bottom = (r * 2).max(b);
            if top <= bottom {
                break;
            }
            let ch = if top - bottom >= 2 {
                '█'
            } else if top == (r + 1) * 2 {
                '▀'
            } else {
                '▄'
            };
            buf[(x, row_y(r))].set_char(ch).set_style(style);
        }
    }
}

fn draw_heatmap(app: &CompareApp, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let title = format!(
        " layer x time · {} · {}/{} ",
        if app.diff {
            format!(
                "{} error minus {}'s",
                app.which(),
                app.cmp.runs[app.base].name
            )
        } else {
            format!("{} error", app.which())
        },
        app.cursor + 1,
        app.steps.len()
    );
    let mut legend = vec![];
    if app.diff {
        for (t, label) in [(-1.0, "better "), (1.0, "worse ")] {
            let (ch, style) = diff_cell(theme, t, app.depth);
            legend.push(Span::styled(ch.to_string(), style));
            legend.push(Span::raw(format!(" {label}")));
        }
    } else {
        legend.push(Span::raw(" 0 "));
        for k in 0..8 {
            let (ch, style) = theme.scale_cell(k as f64 / 7.0);
            let style = match style.fg {
                Some(c) => Style::default().fg(downgrade(c, app.depth)),
                None => style,
            };
            legend.push(Span::styled(ch.to_string(), style));
        }
        legend.push(Span::raw(format!(" {:.2} ", app.cmp.runs[0].chance)));
    }
    let blk = block(app, theme, ComparePane::Heatmap, title)
        .title_bottom(Line::from(legend).right_aligned());
    let inner = blk.inner(area);
    blk.render(area, buf);
    let runs = app.shown_runs();
    let n = app.cmp.taps.len();
    if inner.width < 12 || inner.height < 2 * runs.len() as u16 || n == 0 {
        return;
    }
    let label_w = 7u16;
    let plot_w = (inner.width - label_w) as usize;
    let (start, shown) = window(n, 1, plot_w, app.selected);
    let cw = (plot_w / shown).clamp(1, 3);
    let strip_h = inner.height / runs.len() as u16;
    let diff_max = if app.diff {
        (0..app.steps.len())
            .flat_map(|row| {
                runs.iter()
                    .flat_map(move |&r| (0..n).map(move |t| app.value_at(row, r, t)))
            })
            .filter(|v| v.is_finite())
            .fold(0.0f64, |a, v| a.max(v.abs()))
            .max(1e-9)
    } else {
        1.0
    };
    for (k, &r) in runs.iter().enumerate() {
        let y0 = inner.y + k as u16 * strip_h;
        let side = &app.cmp.runs[r];
        let head = if app.diff {
            format!("{} − {}", side.name, app.cmp.runs[app.base].name)
        } else if side.about.is_empty() {
            side.name.clone()
        } else {
            format!("{} · {}", side.name, side.about)
        };
        // The strip's name, clear of the selected column's marker.
        let marker_x = (app.selected >= start && app.selected < start + shown)
            .then(|| inner.x + label_w + ((app.selected - start) * cw) as u16);
        // Beside the marker on the side with more room.
        let head_w = head.chars().count() as u16;
        let head_x;
        let head_w = match marker_x {
            Some(m) if m < inner.x + head_w + 1 && m < inner.x + inner.width / 2 => {
                let w = head_w.min(inner.x + inner.width - m - 2);
                head_x = inner.x + inner.width - w;
                w
            }
            Some(m) if m < inner.x + head_w + 1 => {
                head_x = inner.x;
                head_w.min(m - inner.x)
            }
            _ => {
                head_x = inner.x;
                head_w.min(inner.width)
            }
        };
        buf.set_stringn(head_x, y0, &head, head_w as usize, run_style(theme, r));
        let rows_h = (strip_h - 1) as usize;
        if rows_h == 0 {
            continue;
        }
        // Rows: the timeline thinned to fit, always with the cursor's own row.
        let total = app.steps.len();
        let picks: Vec<usize> = if total <= rows_h {
            (0..total).collect()
        } else {
            let mut v: Vec<usize> = (0..rows_h)
                .map(|i| i * (total - 1) / (rows_h - 1).max(1))
                .collect();
            let near = v
                .iter()
                .enumerate()
                .min_by_key(|(_, &s)| s.abs_diff(app.cursor))
                .map(|(i, _)| i)
                .unwrap_or(0);
            v[near] = app.cursor;
            v
        };
        for (i, &row) in picks.iter().enumerate() {
            let y = y0 + 1 + i as u16;
            let here = row == app.cursor;
            let label = format!("{:>6}", compact(app.steps[row]));
            buf.set_string(
                inner.x,
                y,
                &label,
                if here {
                    theme.selected()
                } else {
                    Style::default().fg(theme.muted)
                },
            );
            if here {
                buf.set_string(inner.x + 6, y, "▶", theme.selected());
            }
            for (j, t) in (start..start + shown).enumerate() {
                let v = app.value_at(row, r, t);
                let (ch, style) = if !v.is_finite() {
                    ('·', Style::default().fg(theme.muted))
                } else if app.diff {
                    diff_cell(theme, v / diff_max, app.depth)
                } else {
                    let (ch, style) = theme.scale_cell(v / side.chance);
                    let style = match style.fg {
                        Some(c) => Style::default().fg(downgrade(c, app.depth)),
                        None => style,
                    };
                    (ch, style)
                };
                for c in 0..cw {
                    let x = inner.x + label_w + (j * cw + c) as u16;
                    if x < inner.x + inner.width {
                        buf[(x, y)].set_char(ch).set_style(style);
                    }
                }
            }
        }
        if let Some(x) = marker_x.filter(|&x| x < inner.x + inner.width) {
            buf[(x, y0)].set_char('▼').set_style(theme.selected());
        }
    }
}

/// A difference cell: shade by size (relative to the largest), good colour below 0, bad above.
fn diff_cell(theme: &Theme, t: f64, depth: ColorDepth) -> (char, Style) {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let i = ((t.abs().min(1.0) * 4.0).ceil() as usize).min(4);
    let ch = if t.abs() < 0.02 {
        '·'
    } else {
        SHADES[i.max(1)]
    };
    if theme.monochrome {
        return (
            if t < 0.0 && ch != '·' { '-' } else { ch },
            Style::default(),
        );
    }
    let c = if t.abs() < 0.02 {
        theme.muted
    } else if t < 0.0 {
        theme.good
    } else {
        theme.bad
    };
    (ch, Style::default().fg(downgrade(c, depth)))
}

/// A step in at most 6 characters: 950, 12.5k, 1.2M.
fn compact(s: u64) -> String {
    match s {
        0..=99_999 => s.to_string(),
        100_000..=999_999 => format!("{:.1}k", s as f64 / 1e3),
        _ => format!("{:.1}M", s as f64 / 1e6),
    }
}

fn draw_inspector(app: &CompareApp, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let t = app.selected.min(app.cmp.taps.len().saturating_sub(1));
    let tap = &app.cmp.taps[t];
    let step = app.step().unwrap_or(0);
    let blk = block(
        app,
        theme,
        ComparePane::Inspector,
        format!(" {} ({}/{}) ", tap.name, t + 1, app.cmp.taps.len()),
    );
    let mut lines: Vec<Line> = Vec::new();
    let muted = Style::default().fg(theme.muted);
    for (r, side) in app.cmp.runs.iter().enumerate() {
        let src = app.cmp.source(r, step, app.converged_only);
        let mut head = vec![
            run_mark(theme, r),
            Span::styled(side.name.clone(), run_style(theme, r)),
        ];
        if r == app.base && app.diff {
            head.push(Span::styled(" (base)", muted));
        }
        lines.push(Line::from(head));
        if !side.about.is_empty() {
            lines.push(Line::from(Span::styled(format!("  {}", side.about), muted)));
        }
        lines.push(Line::from(Span::styled(
            format!("  {}", src.describe()),
            muted,
        )));
        match app.cmp.value(r, t, &src) {
            None if tap.at[r].is_none() => {
                lines.push(Line::from("  no probe of this name"));
            }
            None => lines.push(Line::from("  no reading")),
            Some(v) => {
                let mut parts = vec![format!("  train {}", err_label(v.train, 4).trim())];
                if v.val.is_finite() {
                    parts.push(format!("val {}", err_label(v.val, 4).trim()));
                }
                if v.test.is_finite() {
                    parts.push(format!("test {}", err_label(v.test, 4).trim()));
                }
                lines.push(Line::from(parts.join("  ")));
                if r != app.base {
                    let d = app.errors()[r][t] - app.errors()[app.base][t];
                    if d.is_finite() {
                        let colour = if d < -0.0005 {
                            theme.good
                        } else if d > 0.0005 {
                            theme.bad
                        } else {
                            theme.text
                        };
                        lines.push(Line::from(vec![
                            Span::raw(format!(
                                "  {} vs {} ",
                                app.which(),
                                app.cmp.runs[app.base].name
                            )),
                            Span::styled(signed(d), Style::default().fg(colour)),
                        ]));
                    }
                }
            }
        }
        if let Some(m) = src.model_test_error() {
            lines.push(Line::from(Span::styled(
                format!("  model test error {}", err_label(m, 4).trim()),
                muted,
            )));
        }
        if let Some(i) = tap.at[r] {
            if let Some(p) = side.log.header.probes.get(i) {
                lines.push(Line::from(Span::styled(
                    format!("  reads {} · {} features", p.tap, p.width()),
                    muted,
                )));
            }
        }
        lines.push(Line::from(""));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(blk)
        .render(area, buf);
}

fn draw_status(app: &CompareApp, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled(
        " compare ",
        Style::default().fg(theme.overlay_bg).bg(theme.focus),
    )];
    let play = if app.playing {
        format!(" ▶ {}/s ·", SPEEDS[app.speed])
    } else {
        String::new()
    };
    spans.push(Span::raw(format!(
        "{play} step {} ({}/{}) · {} · {} error{}",
        app.step().unwrap_or(0),
        app.cursor + 1,
        app.steps.len(),
        if app.converged_only {
            "converged"
        } else {
            "every snapshot"
        },
        app.which(),
        if app.diff {
            format!(" · minus {}", app.cmp.runs[app.base].name)
        } else {
            String::new()
        }
    )));
    if let Some(f) = &app.flash {
        spans.push(Span::styled(
            format!(" · {f}"),
            Style::default().fg(theme.warn),
        ));
    }
    let active = app.keymap.active();
    let first = |a: Action| view::first_key(&active, a);
    let hints = format!(
        " {}{} step  {} play  {} diff  {} base  {} readings  {} help  {} quit ",
        first(Action::StepBack),
        first(Action::StepForward),
        first(Action::Pause),
        first(Action::Diff),
        first(Action::Base),
        first(Action::Readings),
        first(Action::Help),
        first(Action::Quit)
    );
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    Paragraph::new(Line::from(spans))
        .style(Style::default().fg(theme.text))
        .render(area, buf);
    if used + hints.chars().count() <= area.width as usize {
        view::place_hint(buf, area, &hints, theme);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{Record, RunLog};

    fn app() -> CompareApp {
        let h = crate::tui::sample::header("bifurcation", &[]).unwrap();
        let log = |scale: f64, steps: &[u64]| RunLog {
            header: h.clone(),
            records: steps
                .iter()
                .enumerate()
                .map(|(k, &step)| {
                    let mut s = crate::tui::sample::snapshot(&h, k, true);
                    s.step = step;
                    for p in &mut s.probes {
                        p.reading.test_error = p.reading.test_error.map(|e| e * scale);
                    }
                    Record::Snapshot(s)
                })
                .collect(),
            warnings: Vec::new(),
        };
        let cmp = Comparison::new(vec![
            ("a.jsonl".into(), log(1.0, &[0, 100, 200])),
            ("b.jsonl".into(), log(0.5, &[0, 200])),
        ])
        .unwrap();
        CompareApp::new(cmp, vec![Theme::default_theme()], Keymap::default())
    }

    #[test]
    fn the_timeline_and_the_difference_mode_move_the_numbers() {
        let mut a = app();
        assert_eq!(a.steps, [0, 100, 200]);
        assert_eq!(a.step(), Some(200));
        let e = a.errors().to_vec();
        // b is half of a at the same snapshot index; at 200, a is its 3rd snapshot and b its 2nd.
        let a3 = a.cmp.runs[0].log.snapshots().nth(2).unwrap().probes[1]
            .reading
            .test_error
            .unwrap();
        let b2 = a.cmp.runs[1].log.snapshots().nth(1).unwrap().probes[1]
            .reading
            .test_error
            .unwrap();
        assert_eq!((e[0][1], e[1][1]), (a3, b2));
        a.act(Action::Diff);
        assert_eq!(a.shown_runs(), [1]);
        assert!((a.shown(1, 1) - (b2 - a3)).abs() < 1e-15);
        a.act(Action::Base);
        assert_eq!(a.shown_runs(), [0]);
        assert!((a.shown(0, 1) - (a3 - b2)).abs() < 1e-15);
        a.act(Action::StepBack);
        assert_eq!(a.step(), Some(100));
        a.act(Action::TimelineStart);
        assert_eq!(a.step(), Some(0));
        a.act(Action::JumpForward);
        assert_eq!(a.step(), Some(200));
        // Playing from the end starts over and stops at the end.
        a.act(Action::Pause);
        assert!(a.playing && a.cursor == 0);
        assert!(a.on_tick(1.0));
        assert_eq!(a.step(), Some(200));
        assert!(!a.playing);
        // Train error: the grid is rebuilt, the cursor stays.
        a.act(Action::BarsMode);
        assert!(a.train);
        assert_eq!(a.step(), Some(200));
        let tr = a.cmp.runs[0].log.snapshots().nth(2).unwrap().probes[1]
            .reading
            .train_error;
        assert_eq!(a.errors()[0][1], tr);
    }

    #[test]
    fn it_draws_at_small_and_large_sizes_without_panicking() {
        let mut a = app();
        for (w, h) in [(40, 10), (60, 16), (80, 24), (200, 60)] {
            for diff in [false, true] {
                a.diff = diff;
                for inspector in [true, false] {
                    a.inspector = inspector;
                    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
                    draw(&a, &mut buf);
                }
            }
        }
        a.help = true;
        let mut buf = Buffer::empty(Rect::new(0, 0, 80, 24));
        draw(&a, &mut buf);
    }

    #[test]
    fn bars_fill_from_their_base() {
        let plot = Rect::new(0, 0, 1, 4);
        let style = Style::default();
        let col = |buf: &Buffer| {
            (0..4)
                .map(|y| buf[(0, y)].symbol().to_string())
                .collect::<Vec<_>>()
        };
        // Up from 0 by 1.5 rows: one full cell, one half.
        let mut buf = Buffer::empty(plot);
        fill_bar(&mut buf, plot, 0, 0.0, 1.5, style);
        assert_eq!(col(&buf), [" ", " ", "▄", "█"]);
        // Down from the middle (2 rows up) by 1.5 rows.
        let mut buf = Buffer::empty(plot);
        fill_bar(&mut buf, plot, 0, 2.0, 0.5, style);
        assert_eq!(col(&buf), [" ", " ", "█", "▀"]);
    }
}
