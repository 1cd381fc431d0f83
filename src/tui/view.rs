//! Drawing: every pane renders straight into a ratatui `Buffer` from the [`App`] state, so the
//! same code serves the terminal, the snapshot tests and the frame benchmark.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Direction, Layout as Split, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Clear, Dataset, GraphType, Paragraph, Widget, Wrap};

use super::diagram::{self, err_label, DiagramView};
use super::state::{Action, App, BarsMode, BottomView, Pane, RunState};
use super::theme::{downgrade, Theme};
use crate::runlog::SnapshotKind;

/// Smallest terminal the UI draws into; below it, a message says how big it must be.
pub const MIN_SIZE: (u16, u16) = (60, 16);

pub(super) const EIGHTHS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws the whole UI into `buf` (its full area).
pub fn draw(app: &App, buf: &mut Buffer) {
    let area = buf.area;
    Clear.render(area, buf);
    let theme = app.theme().for_depth(app.depth);
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        too_small(area, buf, &theme);
        return;
    }
    let [main, status] = rows(area, [Constraint::Min(1), Constraint::Length(1)]);
    let wide_inspector = app.inspector && area.width >= 110;
    let (left, side) = if wide_inspector {
        let [l, r] = cols(main, [Constraint::Min(1), Constraint::Length(44)]);
        (l, Some(r))
    } else {
        (main, None)
    };
    let lanes = app.layout.as_ref().map_or(1, |l| l.lanes) as u16;
    let diagram_h = (2 * lanes + 2).min(left.height / 3).max(4);
    let rest = left.height.saturating_sub(diagram_h);
    let bars_h = (rest * 11 / 20).max(6);
    let [bars, diag, bottom] = rows(
        left,
        [
            Constraint::Length(bars_h),
            Constraint::Length(diagram_h),
            Constraint::Min(1),
        ],
    );
    // A preset that trains no model has no chart: the layer x time picture takes its room.
    let chart = !(app.model.is_empty() && app.info.is_some());
    let right_pane = match side {
        Some(_) => chart,
        None => app.inspector || chart,
    };
    let (heat, right) = if right_pane {
        let [h, r] = cols(bottom, [Constraint::Percentage(55), Constraint::Min(1)]);
        (h, Some(r))
    } else {
        (bottom, None)
    };
    draw_bars(app, &theme, bars, buf);
    draw_diagram(app, &theme, diag, buf);
    match app.bottom {
        BottomView::LayerTime => draw_heatmap(app, &theme, heat, buf),
        BottomView::Transfer => draw_transfer(app, &theme, heat, buf),
        BottomView::Drift => draw_drift(app, &theme, heat, buf),
    }
    if let Some(side) = side {
        draw_inspector(app, &theme, side, buf);
    }
    if let Some(right) = right {
        if side.is_none() && app.inspector {
            draw_inspector(app, &theme, right, buf);
        } else {
            draw_chart(app, &theme, right, buf);
        }
    }
    draw_status(app, &theme, status, buf);
    if let RunState::Failed(msg) = &app.state {
        let h = 6.min(main.height);
        let r = Rect::new(main.x, main.y + main.height - h, main.width, h);
        let block = Block::bordered()
            .title(" the run failed ")
            .border_style(Style::default().fg(theme.bad));
        Clear.render(r, buf);
        Paragraph::new(vec![
            Line::from(msg.as_str()),
            Line::from(Span::styled(
                "The readings above are what it recorded. q quits.",
                Style::default().fg(theme.muted),
            )),
        ])
        .wrap(Wrap { trim: true })
        .block(block)
        .render(r, buf);
    }
    if app.confirm_quit {
        let r = centred(area, 52, 5);
        Clear.render(r, buf);
        Paragraph::new(vec![
            Line::from("Training is still running."),
            Line::from("Stop it and quit?  y / q: yes    any other key: no"),
        ])
        .block(
            Block::bordered()
                .title(" quit ")
                .border_style(Style::default().fg(theme.warn)),
        )
        .style(Style::default().bg(theme.overlay_bg).fg(theme.text))
        .render(r, buf);
    }
    if app.help {
        draw_help(app, &theme, area, buf);
    }
}

pub(super) fn rows<const N: usize>(area: Rect, c: [Constraint; N]) -> [Rect; N] {
    Split::default()
        .direction(Direction::Vertical)
        .constraints(c)
        .areas(area)
}

pub(super) fn cols<const N: usize>(area: Rect, c: [Constraint; N]) -> [Rect; N] {
    Split::default()
        .direction(Direction::Horizontal)
        .constraints(c)
        .areas(area)
}

pub(super) fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

pub(super) fn too_small(area: Rect, buf: &mut Buffer, theme: &Theme) {
    let text = format!(
        "terminal too small: {}x{}; probescope needs at least {}x{}. Enlarge it, or press q to quit.",
        area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
    );
    Paragraph::new(text)
        .style(Style::default().fg(theme.warn))
        .wrap(Wrap { trim: true })
        .render(area, buf);
}

fn pane_block<'a>(app: &App, theme: &Theme, pane: Pane, title: String) -> Block<'a> {
    framed(app.focus == pane, theme, title)
}

/// A pane's frame: thick and in the focus colour when `focused`, with `title`.
pub(super) fn framed<'a>(focused: bool, theme: &Theme, title: String) -> Block<'a> {
    let mut style = Style::default().fg(if focused { theme.focus } else { theme.border });
    if focused && theme.monochrome {
        style = style.add_modifier(Modifier::BOLD);
    }
    Block::bordered()
        .border_type(if focused {
            ratatui::widgets::BorderType::Thick
        } else {
            ratatui::widgets::BorderType::Plain
        })
        .border_style(style)
        .title(Span::styled(title, Style::default().fg(theme.text)))
}

/// The horizontal window of `n` slots of `slot` columns that fits `width` and shows `selected`.
pub(super) fn window(n: usize, slot: usize, width: usize, selected: usize) -> (usize, usize) {
    let fit = (width / slot.max(1)).max(1);
    if n <= fit {
        return (0, n);
    }
    let start = selected.saturating_sub(fit / 2).min(n - fit);
    (start, fit)
}

/// A history line of the inspector: its name, which snapshots, which error, its colour.
type HistorySeries = (
    &'static str,
    SnapshotKind,
    fn(&super::state::Row, usize) -> f32,
    Color,
);

/// The taps the `/` filter shows, the selected one's position among them, and the window of
/// them (start, count) that fits `width` columns in slots of `slot` (see [`window`]).
fn visible_window(app: &App, slot: usize, width: usize) -> (Vec<usize>, usize, usize, usize) {
    let vis = app.visible();
    let sel = app.selected.min(app.taps.len().saturating_sub(1));
    let sel_pos = vis.iter().position(|&i| i == sel).unwrap_or(0);
    let (start, shown) = window(vis.len(), slot, width, sel_pos);
    (vis, sel_pos, start, shown)
}

/// `inner` less a left axis of `axis_w` columns and a label row at the bottom.
pub(super) fn plot_area(inner: Rect, axis_w: u16) -> Rect {
    Rect::new(
        inner.x + axis_w,
        inner.y,
        inner.width.saturating_sub(axis_w),
        inner.height.saturating_sub(1),
    )
}

fn label_of(app: &App, i: usize) -> String {
    app.taps.get(i).map_or_else(String::new, |t| t.name.clone())
}

fn draw_bars(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let n = app.taps.len();
    let sel = app.selected.min(n.saturating_sub(1));
    let (tr, te) = if n > 0 {
        app.bar_values(sel)
    } else {
        (f64::NAN, f64::NAN)
    };
    let selective = app.bars == BarsMode::Selectivity;
    let title = if selective {
        let (sv, c) = app.selectivity(sel);
        format!(
            " selectivity · control error - train error · {} {} (control {}) ",
            label_of(app, sel),
            err_label(sv, 4).trim(),
            err_label(c, 4).trim()
        )
    } else {
        format!(
            " probe error · {} · {} train {} test {} ",
            app.bars_source(),
            label_of(app, sel),
            err_label(tr, 4).trim(),
            err_label(te, 4).trim()
        )
    };
    let mut legend = if selective {
        vec![
            Span::styled("█", Style::default().fg(theme.good)),
            Span::raw(" selectivity "),
        ]
    } else {
        vec![
            Span::styled("█", Style::default().fg(theme.train)),
            Span::raw(" train "),
            Span::styled("█", Style::default().fg(theme.test)),
            Span::raw(" test "),
        ]
    };
    legend.extend([
        Span::styled("─", Style::default().fg(theme.chance)),
        Span::raw(format!(" chance {:.2} ", app.chance())),
    ]);
    let block =
        pane_block(app, theme, Pane::Bars, title).title_bottom(Line::from(legend).right_aligned());
    let inner = block.inner(area);
    block.render(area, buf);
    if n == 0 || inner.width < 8 || inner.height < 3 {
        return;
    }
    let plot = plot_area(inner, 4);
    let label_row = inner.y + inner.height - 1;
    // In selectivity mode the "train" slot holds the selectivity.
    let values: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            if selective {
                (app.selectivity(i).0, f64::NAN)
            } else {
                app.bar_values(i)
            }
        })
        .collect();
    let vmax = values
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .filter(|v| v.is_finite())
        .fold(app.chance(), f64::max);
    let ymax = ((vmax * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let series: Vec<(usize, Color, char)> = match app.bars {
        BarsMode::Both => vec![(0, theme.train, '█'), (1, theme.test, '█')],
        BarsMode::Train => vec![(0, theme.train, '█')],
        BarsMode::Test => vec![(1, theme.test, '█')],
        BarsMode::Selectivity => vec![(0, theme.good, '█')],
    };
    let min_slot = series.len();
    let pw = plot.width as usize;
    // The taps the `/` filter shows.
    let (vis, sel_pos, start, shown) = visible_window(app, min_slot, pw);
    let nv = vis.len();
    let slot = (pw / shown).max(min_slot);
    let bw = if slot > series.len() {
        ((slot - 1) / series.len()).max(1)
    } else {
        1
    };
    let ph = plot.height as usize;
    // Axis.
    for (frac, text) in [
        (1.0, format!("{ymax:.1}")),
        (0.5, format!("{:.2}", ymax / 2.0)),
        (0.0, "0".into()),
    ] {
        let y = plot.y + ((1.0 - frac) * (ph - 1) as f64).round() as u16;
        let s = text.trim_start_matches('0');
        let s = if s.is_empty() { "0" } else { s };
        buf.set_string(
            inner.x,
            y,
            format!("{s:>3}"),
            Style::default().fg(theme.muted),
        );
    }
    // Chance line underneath the bars.
    let chance_rows = app.chance() / ymax * ph as f64;
    if app.chance() <= ymax {
        let y = plot.y + ph as u16 - 1 - (chance_rows.floor() as u16).min(ph as u16 - 1);
        for x in plot.x..plot.x + plot.width {
            buf[(x, y)]
                .set_char('─')
                .set_style(Style::default().fg(theme.chance));
        }
    }
    for (k, &i) in vis[start..start + shown].iter().enumerate() {
        let x0 = plot.x as usize + k * slot;
        for (s, &(which, colour, _)) in series.iter().enumerate() {
            let v = if which == 0 { values[i].0 } else { values[i].1 };
            // Test where there is no test split: fall back to train in test-only mode.
            let v = if v.is_nan() && app.bars == BarsMode::Test {
                values[i].0
            } else {
                v
            };
            if !v.is_finite() {
                continue;
            }
            let eighths = ((v / ymax).clamp(0.0, 1.0) * (ph * 8) as f64).round() as usize;
            let style = if theme.monochrome && which == 1 {
                Style::default().add_modifier(Modifier::DIM)
            } else {
                Style::default().fg(colour)
            };
            for b in 0..bw {
                let x = (x0 + s * bw + b) as u16;
                if x >= plot.x + plot.width {
                    continue;
                }
                for r in 0..ph {
                    let fill = eighths.saturating_sub(r * 8).min(8);
                    if fill == 0 {
                        break;
                    }
                    let y = plot.y + (ph - 1 - r) as u16;
                    buf[(x, y)].set_char(EIGHTHS[fill]).set_style(style);
                }
            }
            // Value label above the bar when it fits.
            if bw >= 3 {
                let top_row = ph.saturating_sub(eighths.div_ceil(8) + 1);
                let y = plot.y + top_row as u16;
                let x = (x0 + s * bw) as u16;
                if x + 3 <= plot.x + plot.width {
                    buf.set_string(x, y, err_label(v, 3), Style::default().fg(theme.text));
                }
            }
        }
    }
    // Unhealthy readings are marked, so nobody trusts them blindly.
    for (k, &i) in vis[start..start + shown].iter().enumerate() {
        // Staleness is about the converged reading, not the newest one the bars show.
        let flags = app.health(i).flags;
        if flags.iter().any(|f| *f != super::state::HealthFlag::Stale) {
            let x = (plot.x as usize + k * slot) as u16;
            buf[(x, plot.y)]
                .set_char('!')
                .set_style(Style::default().fg(theme.warn).add_modifier(Modifier::BOLD));
        }
    }
    // Labels: tap indices at intervals, the selected tap's marker and name.
    let used = series.len() * bw;
    let mut k = 0;
    while k < shown {
        let x = plot.x as usize + k * slot;
        let text = format!("{}", vis[start + k]);
        if x + text.len() < (plot.x + plot.width) as usize {
            buf.set_string(x as u16, label_row, &text, Style::default().fg(theme.muted));
        }
        k += (8 / slot.max(1)).max(1) * 2;
    }
    let sx = plot.x as usize + sel_pos.saturating_sub(start) * slot + used.saturating_sub(1) / 2;
    let marks = (start > 0, start + shown < nv);
    tap_marker(
        buf,
        (inner, plot, label_row),
        sx,
        &label_of(app, sel),
        marks,
        theme,
    );
}

/// The selected tap's `▲name` on the label `row` from column `sx` (kept inside `plot`, over the
/// indices already there), and `◀` `▶` at the ends of `inner` where taps lie outside the window
/// (`more`: left, right).
pub(super) fn tap_marker(
    buf: &mut Buffer,
    (inner, plot, row): (Rect, Rect, u16),
    sx: usize,
    name: &str,
    more: (bool, bool),
    theme: &Theme,
) {
    let name = format!("▲{name}");
    let w = name.chars().count();
    let end = (plot.x + plot.width) as usize;
    let x = if sx + w <= end {
        sx
    } else {
        end.saturating_sub(w).max(plot.x as usize)
    };
    // Clear the row first so the name reads cleanly over the indices.
    for cx in x..(x + w).min(end) {
        buf[(cx as u16, row)].set_char(' ');
    }
    buf.set_stringn(x as u16, row, &name, end - x, theme.selected());
    let muted = Style::default().fg(theme.muted);
    if more.0 {
        buf.set_string(inner.x, row, "◀", muted);
    }
    if more.1 {
        buf.set_string(inner.x + inner.width - 1, row, "▶", muted);
    }
}

/// The selected tap's `▲name` under its column `x` on row `y`, kept inside `plot`.
fn column_marker(buf: &mut Buffer, plot: Rect, (x, y): (u16, u16), name: &str, theme: &Theme) {
    let name = format!("▲{name}");
    let end = plot.x + plot.width;
    let x = x
        .min(end.saturating_sub(name.chars().count() as u16))
        .max(plot.x);
    buf.set_stringn(x, y, &name, (end - x) as usize, theme.selected());
}

fn draw_diagram(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let n = app.taps.len();
    let levels: Vec<f64> = (0..n).map(|i| app.level(i)).collect();
    let errors: Vec<f64> = (0..n)
        .map(|i| {
            let (tr, te) = app.bar_values(i);
            if te.is_nan() {
                tr
            } else {
                te
            }
        })
        .collect();
    let sel = app.selected.min(n.saturating_sub(1));
    let title = format!(
        " model graph · coloured by {} error · {} {} ",
        if errors.iter().all(|e| e.is_nan()) || app.bar_values(0).1.is_finite() {
            "test"
        } else {
            "train"
        },
        label_of(app, sel),
        err_label(errors.get(sel).copied().unwrap_or(f64::NAN), 4).trim()
    );
    let block = pane_block(app, theme, Pane::Diagram, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(layout) = &app.layout else {
        return;
    };
    let palette = theme.palette(app.depth);
    diagram::render(
        &DiagramView {
            layout,
            taps: &app.taps,
            selected: sel,
            levels: &levels,
            errors: &errors,
            theme,
            palette: &palette,
        },
        inner,
        buf,
    );
}

fn scale_legend(theme: &Theme, app: &App) -> Line<'static> {
    let mut spans = vec![Span::raw(" 0 ")];
    for k in 0..8 {
        let (ch, style) = theme.scale_cell(k as f64 / 7.0);
        let style = match style.fg {
            Some(c) => Style::default().fg(downgrade(c, app.depth)),
            None => style,
        };
        spans.push(Span::styled(ch.to_string(), style));
    }
    spans.push(Span::raw(format!(" {:.2} ", app.chance())));
    Line::from(spans).right_aligned()
}

fn draw_heatmap(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let rows_all = app.history.items();
    let block = pane_block(
        app,
        theme,
        Pane::Heatmap,
        format!(
            " layer × time · {} snapshot{} ",
            rows_all.len(),
            if rows_all.len() == 1 { "" } else { "s" }
        ),
    )
    .title_bottom(scale_legend(theme, app));
    let inner = block.inner(area);
    block.render(area, buf);
    let n = app.taps.len();
    if n == 0 || inner.width < 8 || inner.height < 2 || rows_all.is_empty() {
        note(buf, inner, "waiting for snapshots", theme);
        return;
    }
    let plot = plot_area(inner, 6);
    let sel = app.selected.min(n - 1);
    let (vis, sel_pos, start, shown) = visible_window(app, 1, plot.width as usize);
    let slot = (plot.width as usize / shown).max(1);
    let per_row = if theme.monochrome { 1 } else { 2 };
    let capacity = plot.height as usize * per_row;
    // Evenly spaced snapshots over the whole history, always ending with the newest.
    let picks: Vec<usize> = if rows_all.len() <= capacity {
        (0..rows_all.len()).collect()
    } else {
        (0..capacity)
            .map(|k| k * (rows_all.len() - 1) / (capacity - 1).max(1))
            .collect()
    };
    let chance = app.chance();
    let palette = theme.palette(app.depth);
    let colour =
        |e: f32| -> Option<Color> { e.is_finite().then(|| palette.at(f64::from(e) / chance)) };
    for (r, chunk) in picks.chunks(per_row).enumerate() {
        let y = plot.y + r as u16;
        let first = &rows_all[chunk[0]];
        if r == 0 || r + 1 == picks.len().div_ceil(per_row) || r % 4 == 0 {
            buf.set_stringn(
                inner.x,
                y,
                format!("{:>5}", compact_step(first)),
                5,
                Style::default().fg(theme.muted),
            );
        }
        for (k, &i) in vis[start..start + shown].iter().enumerate() {
            let x = plot.x + (k * slot) as u16;
            let upper = first.shown(i);
            let lower = chunk.get(1).map(|&j| rows_all[j].shown(i));
            for dx in 0..slot as u16 {
                let cell = &mut buf[(x + dx, y)];
                if theme.monochrome {
                    let (ch, st) = theme.scale_cell(f64::from(upper) / chance);
                    cell.set_char(if upper.is_finite() { ch } else { '·' })
                        .set_style(st);
                    continue;
                }
                match (colour(upper), lower.map(colour)) {
                    (Some(u), Some(Some(l))) => {
                        cell.set_char('▀').set_style(Style::default().fg(u).bg(l));
                    }
                    (Some(u), _) => {
                        cell.set_char('▀').set_style(Style::default().fg(u));
                    }
                    (None, Some(Some(l))) => {
                        cell.set_char('▄').set_style(Style::default().fg(l));
                    }
                    _ => {
                        cell.set_char('·')
                            .set_style(Style::default().fg(theme.muted));
                    }
                }
            }
        }
    }
    // The snapshot looked back at: a marker by its row.
    if let (Some(s), Some(_)) = (app.shown(), app.travel) {
        let row = picks
            .chunks(per_row)
            .position(|c| c.iter().any(|&j| rows_all[j].step >= s.step))
            .unwrap_or(picks.len().div_ceil(per_row).saturating_sub(1));
        let y = plot.y + row as u16;
        if y < plot.y + plot.height {
            buf[(inner.x + 5, y)]
                .set_char('▶')
                .set_style(theme.selected());
        }
    }
    let y = inner.y + inner.height - 1;
    let x = plot.x + (sel_pos.saturating_sub(start) * slot) as u16;
    column_marker(buf, plot, (x, y), &label_of(app, sel), theme);
    let axis = if app.mean.is_some() { " data" } else { " step" };
    buf.set_string(inner.x, y, axis, Style::default().fg(theme.muted));
}

/// The transfer matrix of the shown converged snapshot: row i is the probe fitted on tap i,
/// column j the tap it is applied to, coloured by error from 0 to chance.
fn draw_transfer(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let matrix = app.transfer_matrix();
    let title = match &matrix {
        Some((label, _)) => {
            format!(" transfer · row: probe's own tap, column: tap applied to · {label} ")
        }
        None => " transfer ".to_string(),
    };
    let block = pane_block(app, theme, Pane::Heatmap, title).title_bottom(scale_legend(theme, app));
    let inner = block.inner(area);
    block.render(area, buf);
    let Some((_, rows)) = matrix else {
        note(
            buf,
            inner,
            "no transfer matrix: run with --set transfer=on (x goes back)",
            theme,
        );
        return;
    };
    let n = rows.len();
    if n == 0 || inner.width < 10 || inner.height < 3 {
        return;
    }
    let label_w = 8u16;
    let plot = Rect::new(
        inner.x + label_w,
        inner.y,
        inner.width - label_w,
        inner.height - 1,
    );
    let sel = app.selected.min(n - 1);
    let cw = (plot.width as usize / n).clamp(1, 3);
    let (c0, cn) = window(n, cw, plot.width as usize, sel);
    let (r0, rn) = window(n, 1, plot.height as usize, sel);
    let chance = app.chance();
    let palette = theme.palette(app.depth);
    for (ry, i) in (r0..r0 + rn).enumerate() {
        let y = plot.y + ry as u16;
        let name: String = label_of(app, i)
            .chars()
            .take(label_w as usize - 1)
            .collect();
        buf.set_string(
            inner.x,
            y,
            format!("{name:>7}"),
            if i == sel {
                theme.selected()
            } else {
                Style::default().fg(theme.muted)
            },
        );
        for (cx, j) in (c0..c0 + cn).enumerate() {
            let (ch, st) = match rows[i].get(j).copied().flatten() {
                Some(e) if theme.monochrome => theme.scale_cell(e / chance),
                Some(e) => ('█', Style::default().fg(palette.at(e / chance))),
                None => ('·', Style::default().fg(theme.muted)),
            };
            for dx in 0..cw {
                let x = plot.x + (cx * cw + dx) as u16;
                if x < plot.x + plot.width {
                    buf[(x, y)].set_char(ch).set_style(st);
                }
            }
        }
    }
    let y = inner.y + inner.height - 1;
    let x = plot.x + ((sel - c0) * cw) as u16;
    column_marker(buf, plot, (x, y), &label_of(app, sel), theme);
}

/// Drift over training: a row per converged snapshot with drift readings, a column per shown
/// tap; how much worse the previous snapshot's probe does on these features than this one's,
/// coloured from 0 to chance.
fn draw_drift(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let rows = app.drift_rows();
    let block = pane_block(
        app,
        theme,
        Pane::Heatmap,
        " drift · previous snapshot's probe on these features, less this one's ".into(),
    )
    .title_bottom(scale_legend(theme, app));
    let inner = block.inner(area);
    block.render(area, buf);
    let n = app.taps.len();
    if rows.is_empty() || n == 0 || inner.width < 10 || inner.height < 2 {
        note(
            buf,
            inner,
            "no drift readings: a training run with --set transfer=on records them (x goes on)",
            theme,
        );
        return;
    }
    let plot = plot_area(inner, 6);
    let sel = app.selected.min(n - 1);
    let (vis, sel_pos, start, shown) = visible_window(app, 1, plot.width as usize);
    let slot = (plot.width as usize / shown).max(1);
    // The newest rows that fit.
    let first = rows.len().saturating_sub(plot.height as usize);
    let palette = theme.palette(app.depth);
    let chance = app.chance();
    for (r, (step, v)) in rows[first..].iter().enumerate() {
        let y = plot.y + r as u16;
        buf.set_stringn(
            inner.x,
            y,
            format!("{step:>5}"),
            5,
            Style::default().fg(theme.muted),
        );
        for (k, &i) in vis[start..start + shown].iter().enumerate() {
            let (ch, st) = match v.get(i).copied().filter(|d| d.is_finite()) {
                Some(d) if theme.monochrome => theme.scale_cell(d.max(0.0) / chance),
                Some(d) => ('█', Style::default().fg(palette.at(d.max(0.0) / chance))),
                None => ('·', Style::default().fg(theme.muted)),
            };
            for dx in 0..slot {
                buf[(plot.x + (k * slot + dx) as u16, y)]
                    .set_char(ch)
                    .set_style(st);
            }
        }
    }
    let y = inner.y + inner.height - 1;
    let x = plot.x + (sel_pos.saturating_sub(start) * slot) as u16;
    column_marker(buf, plot, (x, y), &label_of(app, sel), theme);
}

fn compact_step(r: &super::state::Row) -> String {
    if r.label.starts_with("dataset") {
        return format!("d{}", r.label.trim_start_matches("dataset ").trim());
    }
    let s = r.step;
    if s >= 10_000 {
        format!("{}k", s / 1000)
    } else {
        s.to_string()
    }
}

fn draw_chart(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let pts = app.model.items();
    let block = pane_block(app, theme, Pane::Chart, " model loss and error ".into());
    if pts.is_empty() {
        let inner = block.inner(area);
        block.render(area, buf);
        Paragraph::new(if app.info.is_some() {
            "this preset does not train a model: only its probes are fitted"
        } else {
            "waiting for the run"
        })
        .style(Style::default().fg(theme.muted))
        .wrap(Wrap { trim: true })
        .render(inner, buf);
        return;
    }
    let series = |f: &dyn Fn(&super::state::ModelPoint) -> f64| -> Vec<(f64, f64)> {
        pts.iter()
            .map(|p| (p.step as f64, f(p)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let loss = series(&|p| p.metrics.loss);
    let train = series(&|p| p.metrics.train_error);
    let test = series(&|p| p.metrics.test_error);
    let x0 = pts.first().map_or(0.0, |p| p.step as f64);
    let x1 = pts.last().map_or(1.0, |p| p.step as f64).max(x0 + 1.0);
    let ymax = loss
        .iter()
        .chain(&train)
        .chain(&test)
        .map(|p| p.1)
        .fold(0.1, f64::max);
    fn line<'d>(name: &'static str, colour: Color, data: &'d [(f64, f64)]) -> Dataset<'d> {
        Dataset::default()
            .name(name)
            .marker(ratatui::symbols::Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(colour))
            .data(data)
    }
    let mut sets = vec![line("loss", theme.focus, &loss)];
    if !train.is_empty() {
        sets.push(line("train err", theme.train, &train));
    }
    if !test.is_empty() {
        sets.push(line("test err", theme.test, &test));
    }
    let last = pts.last().expect("non-empty");
    let title = format!(
        " model · step {} · loss {:.3}{} ",
        last.step,
        last.metrics.loss,
        if last.metrics.test_error.is_finite() {
            format!(" · test err {:.3}", last.metrics.test_error)
        } else {
            String::new()
        }
    );
    Chart::new(sets)
        .block(pane_block(app, theme, Pane::Chart, title))
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .style(Style::default().fg(theme.muted))
                .labels([format!("{x0}"), format!("{x1}")]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                .style(Style::default().fg(theme.muted))
                .labels(["0".to_string(), format!("{ymax:.2}")]),
        )
        .render(area, buf);
}

fn spark(values: &[f32], width: usize, lo: f32, hi: f32) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let picks: Vec<f32> = if values.len() <= width {
        values.to_vec()
    } else {
        (0..width)
            .map(|k| values[k * (values.len() - 1) / (width - 1).max(1)])
            .collect()
    };
    picks
        .iter()
        .map(|v| {
            if !v.is_finite() {
                ' '
            } else {
                let t = ((v - lo) / (hi - lo).max(1e-9)).clamp(0.0, 1.0);
                EIGHTHS[1 + (t * 7.0).round() as usize]
            }
        })
        .collect()
}

fn draw_inspector(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let n = app.taps.len();
    let block = pane_block(app, theme, Pane::Inspector, " inspector ".into());
    let inner = block.inner(area);
    block.render(area, buf);
    if n == 0 {
        return;
    }
    let i = app.selected.min(n - 1);
    let t = &app.taps[i];
    let muted = Style::default().fg(theme.muted);
    let mut lines = vec![Line::from(vec![
        Span::styled(t.name.clone(), theme.selected()),
        Span::styled(format!("  {} · tap {}", t.kind, t.tap), muted),
    ])];
    let subset = if t.width < t.features {
        format!(" · probe reads a random {} of them", t.width)
    } else {
        String::new()
    };
    lines.push(Line::from(format!(
        "shape {:?} · {} features{subset}",
        t.shape, t.features
    )));
    let reading = app.shown().and_then(|s| s.probes.get(i).map(|r| (s, r)));
    if let Some((s, r)) = reading {
        let rd = &r.reading;
        let opt = |v: Option<f64>| err_label(v.unwrap_or(f64::NAN), 4).trim().to_string();
        lines.push(Line::from(Span::styled(
            format!(
                "{} reading, {}",
                match s.kind {
                    SnapshotKind::Converged => "converged",
                    SnapshotKind::Online => "online",
                },
                s.label
            ),
            muted,
        )));
        lines.push(Line::from(vec![
            Span::styled("train ", muted),
            Span::raw(err_label(rd.train_error, 4).trim().to_string()),
            Span::styled("  val ", muted),
            Span::raw(opt(rd.val_error)),
            Span::styled("  test ", muted),
            Span::raw(opt(rd.test_error)),
        ]));
        lines.push(Line::from(Span::styled(
            format!(
                "{} {} · loss {:.4}",
                rd.iterations,
                if s.kind == SnapshotKind::Online {
                    "updates"
                } else if rd.converged {
                    "iterations, converged"
                } else {
                    "iterations, NOT converged"
                },
                rd.train_loss
            ),
            if s.kind == SnapshotKind::Converged && !rd.converged {
                Style::default().fg(theme.warn)
            } else {
                muted
            },
        )));
        let health = app.health(i);
        let mut parts: Vec<String> = health
            .flags
            .iter()
            .map(|f| match f {
                super::state::HealthFlag::PastBest => match (health.best_val, health.last_val) {
                    (Some((b, at)), Some(l)) => format!(
                        "past its best (val {} at step {at}, now {})",
                        err_label(b, 4).trim(),
                        err_label(l, 4).trim()
                    ),
                    _ => f.label().into(),
                },
                super::state::HealthFlag::Overfits => format!(
                    "overfits (held-out - train {})",
                    err_label(health.gap.unwrap_or(f64::NAN), 4).trim()
                ),
                super::state::HealthFlag::Stale => format!(
                    "stale (converged reading {} steps old)",
                    health.age.unwrap_or(0)
                ),
                _ => f.label().into(),
            })
            .collect();
        if parts.is_empty() {
            parts.push("ok".into());
        }
        lines.push(Line::from(vec![
            Span::styled("health ", muted),
            Span::styled(
                parts.join(" · "),
                Style::default().fg(if health.flags.is_empty() {
                    theme.good
                } else {
                    theme.warn
                }),
            ),
        ]));
        let (sv, control) = app.selectivity(i);
        if sv.is_finite() {
            lines.push(Line::from(vec![
                Span::styled("selectivity ", muted),
                Span::raw(err_label(sv, 4).trim().to_string()),
                Span::styled(
                    format!(
                        " (control {} - train {})",
                        err_label(control, 4).trim(),
                        err_label(control - sv, 4).trim()
                    ),
                    muted,
                ),
            ]));
        }
        if let Some(a) = &r.activation {
            let dead = if t.can_die {
                format!(" · dead units {:.1}%", 100.0 * a.dead_fraction)
            } else {
                String::new()
            };
            lines.push(Line::from(format!(
                "mean activation norm {:.3e}{dead}",
                a.mean_norm
            )));
        }
    } else {
        lines.push(Line::from(Span::styled("no reading yet", muted)));
    }
    // Error history, scaled 0 to chance. Converged and online readings measure different things
    // (a fitted probe on a split, a smoothed minibatch error), so they get lines of their own.
    let hist = app.history.items();
    let w = inner.width.saturating_sub(8) as usize;
    let chance = app.chance() as f32;
    let series: [HistorySeries; 3] = [
        (
            "train",
            SnapshotKind::Converged,
            |r, i| r.train[i],
            theme.train,
        ),
        (
            "test",
            SnapshotKind::Converged,
            |r, i| r.test[i],
            theme.test,
        ),
        (
            "online",
            SnapshotKind::Online,
            |r, i| r.train[i],
            theme.train,
        ),
    ];
    for (name, kind, pick, colour) in series {
        let v: Vec<f32> = hist
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| pick(r, i))
            .collect();
        if v.iter().all(|x| x.is_nan()) {
            continue;
        }
        lines.push(Line::from(vec![
            Span::styled(format!("{name:<7}"), muted),
            Span::styled(spark(&v, w, 0.0, chance), Style::default().fg(colour)),
        ]));
    }
    for a in &app.alerts {
        lines.push(Line::from(Span::styled(
            format!("⚠ {}", a.message),
            Style::default().fg(theme.bad),
        )));
    }
    if let Some(m) = reading.and_then(|(_, r)| r.reading.confusion.as_ref()) {
        let k = m.len();
        // Four columns a cell where the pane is wide enough, else three (ten classes in a
        // 40-column pane), with 100% shown as 99 so that cells never run together.
        let cell = if 3 + 4 * k <= inner.width as usize {
            4
        } else {
            3
        };
        lines.push(Line::from(Span::styled(
            format!(
                "confusion, % of each true class (rows) predicted as (columns{}):",
                if cell == 3 { "; 99: 99% or more" } else { "" }
            ),
            muted,
        )));
        let mut head = String::from("   ");
        for c in 0..k {
            head.push_str(&format!("{c:>cell$}"));
        }
        lines.push(Line::from(Span::styled(head, muted)));
        for (r, row) in m.iter().enumerate() {
            let total: u32 = row.iter().sum();
            let mut spans = vec![Span::styled(format!("{r:>3}"), muted)];
            for (c, &v) in row.iter().enumerate() {
                let mut pct = if total > 0 {
                    100.0 * f64::from(v) / f64::from(total)
                } else {
                    0.0
                };
                if cell == 3 {
                    pct = pct.min(99.0);
                }
                let style = if r == c {
                    Style::default().fg(theme.good).add_modifier(Modifier::BOLD)
                } else if pct >= 1.0 {
                    Style::default().fg(theme.bad)
                } else {
                    muted
                };
                spans.push(Span::styled(format!("{pct:>cell$.0}"), style));
            }
            lines.push(Line::from(spans));
        }
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .style(Style::default().fg(theme.text))
        .render(inner, buf);
}

/// The first key of `action` among the `active` bindings (`Keymap::active`, computed once per
/// frame by the caller), as the help shows it ("-" if none).
pub(super) fn first_key(active: &[super::keys::Binding], action: Action) -> String {
    active
        .iter()
        .find(|b| b.action == action)
        .and_then(|b| b.keys.first())
        .map_or_else(|| "-".to_string(), |k| k.label())
}

/// Writes `hint` right-aligned on the status row `area`, muted.
pub(super) fn place_hint(buf: &mut Buffer, area: Rect, hint: &str, theme: &Theme) {
    let w = hint.chars().count() as u16;
    buf.set_string(
        area.x + area.width.saturating_sub(w),
        area.y,
        hint,
        Style::default().fg(theme.muted),
    );
}

/// A muted one-line note at the top of a pane's `inner` area.
fn note(buf: &mut Buffer, inner: Rect, text: &str, theme: &Theme) {
    if inner.height > 0 && inner.width > 0 {
        buf.set_stringn(
            inner.x,
            inner.y,
            text,
            inner.width as usize,
            Style::default().fg(theme.muted),
        );
    }
}

fn draw_status(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    // Hints come from the key table, so a rebound key shows as it is.
    let active = app.keymap.active();
    let first = |a: Action| first_key(&active, a);
    let (state, colour) = match &app.state {
        RunState::Starting => ("starting", theme.muted),
        RunState::Running => ("running", theme.good),
        RunState::Paused => ("paused", theme.warn),
        RunState::Finished => ("finished", theme.good),
        RunState::Stopped => ("stopped", theme.warn),
        RunState::Failed(_) => ("FAILED", theme.bad),
    };
    // A replay says where it is on the timeline instead.
    let (state, colour) = match &app.timeline {
        Some(t) if t.playing => ("▶ replay", theme.good),
        Some(t) if t.cursor < t.snapshots => ("replay", theme.focus),
        _ => (state, colour),
    };
    let mut spans = vec![Span::styled(
        format!(" {state} "),
        Style::default()
            .fg(colour)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED),
    )];
    if let Some(t) = &app.timeline {
        // A gauge of the timeline: where the cursor is among the snapshots.
        let w = 12usize;
        let filled = if t.snapshots == 0 {
            0
        } else {
            (t.cursor * w).div_ceil(t.snapshots)
        };
        spans.push(Span::styled(
            format!(
                " · ▕{}{}▏ snapshot {}/{} · {}/s",
                "█".repeat(filled),
                "░".repeat(w - filled),
                t.cursor,
                t.snapshots,
                super::state::SPEEDS[t.speed]
            ),
            Style::default().fg(theme.focus),
        ));
    } else if app.attached {
        spans.push(Span::styled(
            " · attached, read-only",
            Style::default().fg(theme.warn),
        ));
    } else if !app.can_steer {
        spans.push(Span::styled(
            " · read-only",
            Style::default().fg(theme.warn),
        ));
    }
    // Looking back in a live run: which snapshot, and how to return.
    if let (Some(s), Some(_)) = (app.shown(), app.travel) {
        let live = app.latest.as_ref().map_or(0, |l| l.step);
        let back = first(Action::Live);
        spans.push(Span::styled(
            format!(" ⏪ {} (live at step {live}) · {back} returns ·", s.label),
            Style::default()
                .fg(theme.focus)
                .add_modifier(Modifier::BOLD),
        ));
    }
    // The `/` prompt or filter, then a message for the user, so a narrow terminal shows them.
    if let Some(f) = &app.filter {
        let shown = app.visible().len();
        let text = if app.searching {
            format!(" /{f}▏")
        } else {
            format!(" filter /{f}")
        };
        let count = if f.is_empty() {
            String::new()
        } else if app.filter_misses() {
            " (no tap matches)".into()
        } else {
            format!(" ({shown} of {} taps)", app.taps.len())
        };
        let tail = if app.searching {
            " Enter keeps, Esc clears ·"
        } else {
            " Esc clears ·"
        };
        spans.push(Span::styled(
            format!("{text}{count}{tail}"),
            Style::default().fg(theme.focus),
        ));
    }
    if let Some(f) = &app.flash {
        spans.push(Span::styled(
            format!(" {f} ·"),
            Style::default().fg(theme.warn),
        ));
    }
    if let Some(info) = &app.info {
        let h = &info.header;
        let mut progress = String::new();
        // Datasets count for dataset snapshots, steps for the others.
        let done = match (&info.total, &app.latest) {
            (Some((unit, _)), Some(s)) => match (unit.as_str(), s.dataset) {
                ("datasets", Some(d)) => Some(d as u64 + 1),
                ("steps", None) => Some(s.step),
                _ => None,
            },
            _ => None,
        };
        if let Some(e) = app.latest.as_ref().and_then(|s| s.epoch) {
            progress = format!(" · epoch {e:.2}");
        }
        if let (Some((unit, total)), Some(done)) = (&info.total, done) {
            progress.push_str(&format!(" · {} {done}/{total}", unit.trim_end_matches('s')));
            // Time left, while the run goes on at its measured rate.
            if let (Some(r), RunState::Running) = (app.rate, &app.state) {
                if r > 0.0 && *total > done {
                    let left = ((*total - done) as f64 / r).round() as u64;
                    progress.push_str(&format!(" · ~{} left", clock(left)));
                }
            }
        }
        let rate = app.rate.map_or(String::new(), |r| {
            let unit = if app.mean.is_some() {
                "datasets"
            } else {
                "steps"
            };
            format!(" · {r:.1} {unit}/s")
        });
        let rss = app.rss.map_or(String::new(), |b| {
            format!(" · RSS {}", crate::memory::human(b))
        });
        spans.push(Span::raw(format!(
            " {} · {} · seed {}{progress}{rate} · {}{rss}",
            h.preset,
            h.device,
            h.seed,
            clock(app.elapsed_s.round() as u64)
        )));
    }
    // Findings: how many, and the first (the inspector lists them all).
    if let Some(a) = app.alerts.first() {
        let n = app.alerts.len();
        spans.push(Span::styled(
            format!(
                " · ⚠ {}{}",
                if n > 1 {
                    format!("{n} alerts: ")
                } else {
                    String::new()
                },
                a.short
            ),
            Style::default().fg(theme.bad),
        ));
    }
    let hints = format!(
        " {}{} tap  {} pane  {} inspect  {} pause  {} snap  {} theme  {} help  {} quit ",
        first(Action::Left),
        first(Action::Right),
        first(Action::NextPane),
        first(Action::Inspector),
        first(Action::Pause),
        first(Action::Snapshot),
        first(Action::Theme),
        first(Action::Help),
        first(Action::Quit)
    );
    let help_hint = format!(" {} help ", first(Action::Help));
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    Paragraph::new(Line::from(spans))
        .style(Style::default().fg(theme.text))
        .render(area, buf);
    // The full hints, else the help key alone (with a column to spare).
    let width = area.width as usize;
    if used + hints.chars().count() <= width {
        place_hint(buf, area, &hints, theme);
    } else if used + help_hint.chars().count() < width {
        place_hint(buf, area, &help_hint, theme);
    }
}

/// Seconds as "42s", "3m05s" or "2h03m".
fn clock(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn draw_help(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let names: Vec<&str> = app.themes.iter().map(|t| t.name.as_str()).collect();
    help_overlay(&app.keymap, &app.theme().name, &names, theme, area, buf);
}

/// The `?` overlay: every active binding of `keymap` with its help, then the themes.
pub(super) fn help_overlay(
    keymap: &super::keys::Keymap,
    current: &str,
    themes: &[&str],
    theme: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let active = keymap.active();
    // Two columns where one does not fit the height, each help wrapped to its column.
    let two = active.len() + 5 > area.height as usize;
    let col_w = if two {
        (area.width.saturating_sub(2) / 2) as usize
    } else {
        70
    };
    const KEY_W: usize = 12;
    let entry = |b: &super::keys::Binding| -> Vec<Vec<Span<'static>>> {
        let room = col_w.saturating_sub(KEY_W).max(8);
        let mut rows = crate::text::wrap(b.help, room);
        if rows.is_empty() {
            rows.push(String::new());
        }
        rows.into_iter()
            .enumerate()
            .map(|(k, text)| {
                let key = if k == 0 {
                    format!(" {:<10} ", keymap.label(b.action))
                } else {
                    " ".repeat(KEY_W)
                };
                let pad = room.saturating_sub(text.chars().count());
                vec![
                    Span::styled(key, Style::default().fg(theme.focus)),
                    Span::raw(format!("{text}{}", " ".repeat(pad))),
                ]
            })
            .collect()
    };
    let mut lines: Vec<Line> = if two {
        let entries: Vec<Vec<Vec<Span>>> = active.iter().map(entry).collect();
        let total: usize = entries.iter().map(Vec::len).sum();
        // The first column takes entries until it holds half the rows.
        let mut split = 0;
        let mut rows = 0;
        while split < entries.len() && rows * 2 < total {
            rows += entries[split].len();
            split += 1;
        }
        let left: Vec<Vec<Span>> = entries[..split].iter().flatten().cloned().collect();
        let right: Vec<Vec<Span>> = entries[split..].iter().flatten().cloned().collect();
        (0..left.len().max(right.len()))
            .map(|k| {
                let mut spans = left
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| vec![Span::raw(" ".repeat(col_w))]);
                spans.extend(right.get(k).cloned().unwrap_or_default());
                Line::from(spans)
            })
            .collect()
    } else {
        active.iter().flat_map(entry).map(Line::from).collect()
    };
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(" theme: {current} · themes: {}", themes.join(", ")),
        Style::default().fg(theme.muted),
    )));
    lines.push(Line::from(Span::styled(
        " colours: probe error, from 0 to the chance level",
        Style::default().fg(theme.muted),
    )));
    let h = (lines.len() + 2) as u16;
    let r = centred(area, if two { area.width } else { 72 }, h);
    Clear.render(r, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(
            Block::bordered()
                .title(" keys · any key closes ")
                .border_style(Style::default().fg(theme.focus)),
        )
        .style(Style::default().bg(theme.overlay_bg).fg(theme.text))
        .render(r, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_the_selection_visible() {
        for n in [1, 5, 33, 129] {
            for sel in 0..n {
                let (start, shown) = window(n, 2, 80, sel);
                assert!(start <= sel && sel < start + shown, "n {n} sel {sel}");
                assert!(start + shown <= n);
            }
        }
    }

    #[test]
    fn clock_reads_naturally() {
        assert_eq!(clock(42), "42s");
        assert_eq!(clock(185), "3m05s");
        assert_eq!(clock(7380), "2h03m");
    }

    #[test]
    fn sparkline_spans_the_range() {
        assert_eq!(spark(&[0.0, 0.5, 1.0], 10, 0.0, 1.0), "▁▅█");
        assert_eq!(spark(&[f32::NAN, 1.0], 10, 0.0, 1.0), " █");
        assert_eq!(
            spark(
                &(0..100).map(|v| v as f32).collect::<Vec<_>>(),
                4,
                0.0,
                99.0
            )
            .chars()
            .count(),
            4
        );
    }
}
