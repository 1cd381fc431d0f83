//! The model graph as the paper draws it (Figs 2, 6, 9): chains left to right, branches on their
//! own lanes, concatenations merging them, auxiliary heads hanging below; every probed node
//! coloured by its probe's error.
//!
//! The layout depends only on the graph: nodes that are probed or structural (input, output,
//! branch points, merges, auxiliary heads) are shown, the others (a linear layer before its
//! activation) are folded into the edge. Each shown node gets a column (its depth) and a lane (a
//! consumer inherits its input's lane the first time, a second consumer opens a new lane). Edges
//! that cannot run straight (a skip connection) get a routing lane of their own. Drawing then
//! picks the richest of four densities that fits the width (names and values, values, one cell
//! per node with gaps, one cell per node without gaps), and scrolls around the selection when
//! even the densest does not fit. Lines are merged on a canvas of direction bits, so crossings
//! and corners come out as proper box-drawing characters and nothing overlaps.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};

use crate::graph::{Graph, Op};

use super::state::TapMeta;
use super::theme::{Palette, Theme};

/// One shown node.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Node index in the graph.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Depth.
    pub col: usize,
    /// Lane (row).
    pub lane: usize,
    /// The probes on this node (the first colours it unless the selected one is among them).
    pub probes: Vec<usize>,
}

/// How an edge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Neighbouring columns on one lane.
    Straight,
    /// Down from the source to an auxiliary head.
    Aux,
    /// Along this lane between the source's column and the target's.
    Via(usize),
}

/// A drawn edge between two cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Source cell.
    pub from: usize,
    /// Target cell.
    pub to: usize,
    /// How it runs.
    pub route: Route,
}

/// The diagram's layout, from the graph alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Shown nodes.
    pub cells: Vec<Cell>,
    /// Edges between them.
    pub edges: Vec<Edge>,
    /// Number of lanes (node lanes, routing lanes, then the auxiliary lane if any).
    pub lanes: usize,
    /// Number of columns.
    pub cols: usize,
    /// The cell of each probe.
    pub probe_cell: Vec<Option<usize>>,
}

impl Layout {
    /// Lays out `g` with probes `taps`.
    pub fn new(g: &Graph, taps: &[TapMeta]) -> Self {
        let n = g.nodes.len();
        let index = |name: &str| g.index_of(name);
        let inputs: Vec<Vec<usize>> = g
            .nodes
            .iter()
            .map(|nd| nd.op.inputs().iter().filter_map(|s| index(s)).collect())
            .collect();
        let mut consumers = vec![0usize; n];
        for ins in &inputs {
            for &i in ins {
                consumers[i] += 1;
            }
        }
        let probed: Vec<bool> = (0..n).map(|i| taps.iter().any(|t| t.node == i)).collect();
        let output = index(&g.output);
        let shown: Vec<bool> = (0..n)
            .map(|i| {
                probed[i]
                    || inputs[i].len() != 1
                    || consumers[i] != 1
                    || output == Some(i)
                    || matches!(g.nodes[i].op, Op::AuxHead { .. })
            })
            .collect();
        // Shown predecessors: walk back through folded nodes.
        let shown_input = |mut i: usize| -> Option<usize> {
            loop {
                if shown[i] {
                    return Some(i);
                }
                i = *inputs[i].first()?;
            }
        };
        let mut cell_of = vec![None; n];
        let mut cells: Vec<Cell> = Vec::new();
        let mut raw_edges: Vec<(usize, usize)> = Vec::new();
        let mut continued = vec![false; n];
        let mut next_lane = 0usize;
        let mut aux_cells = Vec::new();
        // Graph nodes are in dependency order (shapes() checks that inputs come first).
        for i in (0..n).filter(|&i| shown[i]) {
            let preds: Vec<usize> = inputs[i]
                .iter()
                .filter_map(|&p| shown_input(p))
                .filter_map(|p| cell_of[p])
                .collect();
            let is_aux = matches!(g.nodes[i].op, Op::AuxHead { .. });
            let (col, lane) = if preds.is_empty() {
                let lane = next_lane;
                next_lane += 1;
                (0, lane)
            } else if is_aux {
                (cells[preds[0]].col, usize::MAX)
            } else {
                let col = preds.iter().map(|&c| cells[c].col + 1).max().unwrap_or(0);
                let first = preds[0];
                let lane = if !continued[cells[first].node] {
                    continued[cells[first].node] = true;
                    cells[first].lane
                } else {
                    let l = next_lane;
                    next_lane += 1;
                    l
                };
                (col, lane)
            };
            let id = cells.len();
            cell_of[i] = Some(id);
            if is_aux {
                aux_cells.push(id);
            }
            cells.push(Cell {
                node: i,
                name: g.nodes[i].name.clone(),
                col,
                lane,
                probes: taps
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.node == i)
                    .map(|(k, _)| k)
                    .collect(),
            });
            for p in preds {
                raw_edges.push((p, id));
            }
        }
        let node_lanes = next_lane.max(1);
        let cols = cells.iter().map(|c| c.col + 1).max().unwrap_or(0);
        // Routing: straight when possible, else along a lane that is free between the two.
        let free = |cells: &[Cell], lane: usize, lo: usize, hi: usize| {
            !cells
                .iter()
                .any(|c| c.lane == lane && c.col > lo && c.col < hi)
        };
        let mut routing_lanes = 0;
        let mut edges = Vec::new();
        for (a, b) in raw_edges {
            let (ca, cb) = (&cells[a], &cells[b]);
            let route = if cb.lane == usize::MAX {
                Route::Aux
            } else if ca.lane == cb.lane && cb.col == ca.col + 1 {
                Route::Straight
            } else if ca.lane != cb.lane && free(&cells, cb.lane, ca.col, cb.col) {
                Route::Via(cb.lane)
            } else if free(&cells, ca.lane, ca.col, cb.col) {
                Route::Via(ca.lane)
            } else {
                routing_lanes += 1;
                Route::Via(node_lanes + routing_lanes - 1)
            };
            edges.push(Edge {
                from: a,
                to: b,
                route,
            });
        }
        let mut lanes = node_lanes + routing_lanes;
        if !aux_cells.is_empty() {
            for &c in &aux_cells {
                cells[c].lane = lanes;
            }
            lanes += 1;
        }
        let mut probe_cell = vec![None; taps.len()];
        for (id, c) in cells.iter().enumerate() {
            for &p in &c.probes {
                probe_cell[p] = Some(id);
            }
        }
        Self {
            cells,
            edges,
            lanes,
            cols,
            probe_cell,
        }
    }

    /// The probe nearest in column on the next lane up or down (that has probes) from probe
    /// `selected`'s cell.
    pub fn neighbour_lane(&self, selected: usize, down: bool) -> Option<usize> {
        let me = &self.cells[(*self.probe_cell.get(selected)?)?];
        let lanes: Vec<usize> = if down {
            (me.lane + 1..self.lanes).collect()
        } else {
            (0..me.lane).rev().collect()
        };
        lanes.into_iter().find_map(|lane| {
            self.cells
                .iter()
                .filter(|c| c.lane == lane && !c.probes.is_empty())
                .min_by_key(|c| c.col.abs_diff(me.col))
                .map(|c| c.probes[0])
        })
    }
}

/// How densely the diagram is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    /// "name value" boxes.
    Full,
    /// Values only.
    Values,
    /// One character per node, gaps between.
    Cells,
    /// One character per node, gaps only where a line turns.
    Dense,
}

struct Geometry {
    density: Density,
    cw: usize,
    xs: Vec<usize>,
    width: usize,
}

fn geometry(l: &Layout, density: Density, name_w: usize) -> Geometry {
    let (cw, gap) = match density {
        Density::Full => (name_w + 5, 3),
        Density::Values => (3, 1),
        Density::Cells => (1, 1),
        Density::Dense => (1, 0),
    };
    let mut need = vec![gap; l.cols];
    if density == Density::Dense {
        for e in &l.edges {
            if let Route::Via(_) = e.route {
                let (a, b) = (&l.cells[e.from], &l.cells[e.to]);
                need[a.col] = 1;
                if b.col > 0 {
                    need[b.col - 1] = 1;
                }
            }
        }
    }
    let mut xs = Vec::with_capacity(l.cols);
    let mut x = 0;
    for g in need.iter().take(l.cols) {
        xs.push(x);
        x += cw + g;
    }
    let width = x.saturating_sub(need.last().copied().unwrap_or(0));
    Geometry {
        density,
        cw,
        xs,
        width,
    }
}

const UP: u8 = 1;
const DOWN: u8 = 2;
const LEFT: u8 = 4;
const RIGHT: u8 = 8;

fn glyph(mask: u8) -> char {
    match mask {
        m if m == LEFT | RIGHT || m == LEFT || m == RIGHT => '─',
        m if m == UP | DOWN || m == UP || m == DOWN => '│',
        m if m == DOWN | RIGHT => '╭',
        m if m == DOWN | LEFT => '╮',
        m if m == UP | RIGHT => '╰',
        m if m == UP | LEFT => '╯',
        m if m == LEFT | RIGHT | DOWN => '┬',
        m if m == LEFT | RIGHT | UP => '┴',
        m if m == UP | DOWN | RIGHT => '├',
        m if m == UP | DOWN | LEFT => '┤',
        _ => '┼',
    }
}

struct Canvas {
    w: usize,
    h: usize,
    m: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, bits: u8) {
        if x < self.w && y < self.h {
            self.m[y * self.w + x] |= bits;
        }
    }

    /// A path of axis-aligned segments through `pts`.
    fn path(&mut self, pts: &[(usize, usize)]) {
        for w in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if y0 == y1 {
                let (a, b) = (x0.min(x1), x0.max(x1));
                for x in a..=b {
                    let mut bits = 0;
                    if x > a {
                        bits |= LEFT;
                    }
                    if x < b {
                        bits |= RIGHT;
                    }
                    self.set(x, y0, bits);
                }
            } else {
                let (a, b) = (y0.min(y1), y0.max(y1));
                for y in a..=b {
                    let mut bits = 0;
                    if y > a {
                        bits |= UP;
                    }
                    if y < b {
                        bits |= DOWN;
                    }
                    self.set(x0, y, bits);
                }
            }
        }
        // Path ends that leave or enter a cell sideways keep their horizontal stroke.
        if let (Some(&(x0, y0)), Some(&(x1, y1))) = (pts.first(), pts.get(1)) {
            if y0 == y1 {
                self.set(x0, y0, if x1 > x0 { LEFT } else { RIGHT });
            }
        }
        if pts.len() >= 2 {
            let (x1, y1) = pts[pts.len() - 1];
            let (x0, y0) = pts[pts.len() - 2];
            if y0 == y1 {
                self.set(x1, y1, if x1 > x0 { RIGHT } else { LEFT });
            }
        }
    }
}

/// What the diagram needs to colour its cells.
pub struct DiagramView<'a> {
    /// The layout.
    pub layout: &'a Layout,
    /// The probes.
    pub taps: &'a [TapMeta],
    /// The selected probe.
    pub selected: usize,
    /// Colour level per probe (0 perfect, 1 chance), NaN where no reading yet.
    pub levels: &'a [f64],
    /// Error per probe for the labels, NaN where none.
    pub errors: &'a [f64],
    /// The theme (already mapped to the terminal's colours).
    pub theme: &'a Theme,
    /// The error scale for this frame.
    pub palette: &'a Palette,
}

/// A short error label: ".266", "1.00", " -- ".
pub fn err_label(e: f64, width: usize) -> String {
    if !e.is_finite() {
        return format!("{:^width$}", "--");
    }
    let s = if width >= 4 {
        if e >= 0.9995 {
            "1.00".to_string()
        } else {
            format!("{e:.3}")[1..].to_string()
        }
    } else if e >= 0.995 {
        "1.0".to_string()
    } else {
        format!("{e:.2}")[1..].to_string()
    };
    format!("{s:>width$}")
}

/// Readable text on `bg`.
fn contrast(bg: Color) -> Color {
    match bg {
        Color::Rgb(r, g, b) => {
            let l = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
            if l > 140.0 {
                Color::Black
            } else {
                Color::White
            }
        }
        _ => Color::Black,
    }
}

/// Draws the diagram into `area` of `buf`; returns the density used.
pub fn render(v: &DiagramView<'_>, area: Rect, buf: &mut Buffer) -> Option<Density> {
    let l = v.layout;
    if area.width == 0 || area.height == 0 || l.cells.is_empty() {
        return None;
    }
    let name_w = l
        .cells
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(1)
        .min(12);
    let aw = area.width as usize;
    let geo = [
        Density::Full,
        Density::Values,
        Density::Cells,
        Density::Dense,
    ]
    .into_iter()
    .map(|d| geometry(l, d, name_w))
    .find(|g| g.width <= aw)
    .unwrap_or_else(|| geometry(l, Density::Dense, name_w));
    let rows = 2 * l.lanes;
    let mut canvas = Canvas {
        w: geo.width.max(1),
        h: rows,
        m: vec![0; geo.width.max(1) * rows],
    };
    let y_of = |lane: usize| 1 + 2 * lane;
    let cw = geo.cw;
    for e in &l.edges {
        let (a, b) = (&l.cells[e.from], &l.cells[e.to]);
        let (ya, yb) = (y_of(a.lane), y_of(b.lane));
        let (xa, xb) = (geo.xs[a.col], geo.xs[b.col]);
        match e.route {
            Route::Straight => {
                if xb > xa + cw {
                    canvas.path(&[(xa + cw, ya), (xb - 1, yb)]);
                }
            }
            Route::Aux => {
                let x = xa + cw / 2;
                for y in ya + 1..yb {
                    canvas.set(x, y, UP | DOWN);
                }
            }
            Route::Via(r) => {
                let yr = y_of(r);
                let out = xa + cw; // first column after the source
                let inn = xb.saturating_sub(1); // last column before the target
                let mut pts = vec![(out, ya)];
                if yr != ya {
                    pts.push((out, yr));
                }
                if yr != yb {
                    pts.push((inn, yr));
                }
                pts.push((inn, yb));
                pts.dedup();
                if pts.len() == 1 {
                    canvas.set(out, ya, LEFT | RIGHT);
                } else {
                    canvas.path(&pts);
                }
            }
        }
    }
    // Horizontal window: keep the selected cell in view.
    let sel_cell = v.layout.probe_cell.get(v.selected).copied().flatten();
    let sel_x = sel_cell.map_or(0, |c| geo.xs[l.cells[c].col] + cw / 2);
    let off = if geo.width > aw {
        sel_x.saturating_sub(aw / 2).min(geo.width - aw)
    } else {
        0
    };
    let line_style = Style::default().fg(v.theme.muted);
    for y in 0..rows.min(area.height as usize) {
        for x in 0..aw.min(geo.width.saturating_sub(off)) {
            let m = canvas.m[y * canvas.w + x + off];
            if m != 0 {
                buf[(area.x + x as u16, area.y + y as u16)]
                    .set_char(glyph(m))
                    .set_style(line_style);
            }
        }
    }
    for (id, c) in l.cells.iter().enumerate() {
        let y = y_of(c.lane);
        let x0 = geo.xs[c.col];
        if y >= area.height as usize || x0 + cw <= off || x0 >= off + aw {
            continue;
        }
        let probe = if c.probes.contains(&v.selected) {
            Some(v.selected)
        } else {
            c.probes.first().copied()
        };
        let selected = Some(id) == sel_cell;
        let level = probe.map_or(f64::NAN, |p| v.levels.get(p).copied().unwrap_or(f64::NAN));
        let err = probe.map_or(f64::NAN, |p| v.errors.get(p).copied().unwrap_or(f64::NAN));
        let mut style;
        let text: Vec<char> = match geo.density {
            Density::Full => {
                let name: String = c.name.chars().take(name_w).collect();
                if probe.is_some() {
                    format!(" {name:<name_w$} {} ", err_label(err, 4))
                } else {
                    format!(" {name:<w$} ", w = name_w + 5)
                }
            }
            .chars()
            .collect(),
            Density::Values => if probe.is_some() {
                err_label(err, 3)
            } else {
                c.name.chars().take(3).collect::<String>()
            }
            .chars()
            .collect(),
            Density::Cells | Density::Dense => vec![' '],
        };
        let cell_bg = (probe.is_some() && level.is_finite()).then(|| v.palette.at(level));
        if v.theme.monochrome {
            style = Style::default();
        } else if let Some(bg) = cell_bg {
            style = Style::default().bg(bg).fg(contrast(bg));
        } else {
            style = Style::default().fg(v.theme.muted);
        }
        let mut text = text;
        if matches!(geo.density, Density::Cells | Density::Dense) {
            let ch = match (probe, v.theme.monochrome, level.is_finite()) {
                (None, _, _) => '○',
                (Some(_), _, false) => '·',
                (Some(_), true, true) => v.theme.scale_cell(level).0,
                (Some(_), false, true) => '█',
            };
            text = vec![ch];
            if let (Some(bg), false) = (cell_bg, v.theme.monochrome) {
                style = Style::default().fg(bg);
            }
        }
        if selected {
            style = style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
            if v.theme.monochrome {
                style = style.add_modifier(Modifier::REVERSED);
            }
        }
        for (k, ch) in text.iter().enumerate().take(cw) {
            let x = x0 + k;
            if x >= off && x < off + aw {
                buf[(area.x + (x - off) as u16, area.y + y as u16)]
                    .set_char(*ch)
                    .set_style(style);
            }
        }
    }
    // The selection marker on the top row, and scroll markers.
    if sel_cell.is_some() && sel_x >= off && sel_x < off + aw {
        buf[(area.x + (sel_x - off) as u16, area.y)]
            .set_char('▼')
            .set_style(v.theme.selected());
    }
    if off > 0 {
        buf[(area.x, area.y)].set_char('◀').set_style(line_style);
    }
    if off + aw < geo.width {
        buf[(area.x + area.width - 1, area.y)]
            .set_char('▶')
            .set_style(line_style);
    }
    Some(geo.density)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(g: &Graph) -> Vec<TapMeta> {
        let shapes = g.shapes().unwrap();
        g.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.probe)
            .map(|(i, n)| TapMeta {
                name: n.name.clone(),
                tap: n.name.clone(),
                node: i,
                kind: n.op.kind().into(),
                shape: shapes[i].clone(),
                features: shapes[i].iter().product(),
                width: shapes[i].iter().product(),
                can_die: false,
            })
            .collect()
    }

    /// A `depth`-layer chain; with `skip`, layer depth/2 also reads the input (concatenated).
    fn chain_with_skip(depth: usize, skip: bool, aux_every: usize) -> Graph {
        crate::tui::sample::chain(depth, 8, 2, skip.then_some(depth / 2), aux_every)
    }

    fn draw(g: &Graph, w: u16, h: u16, selected: usize) -> (String, Option<Density>) {
        let taps = metas(g);
        let layout = Layout::new(g, &taps);
        let levels: Vec<f64> = (0..taps.len())
            .map(|i| i as f64 / taps.len() as f64)
            .collect();
        let theme = Theme::default_theme();
        let view = DiagramView {
            layout: &layout,
            taps: &taps,
            selected,
            levels: &levels,
            errors: &levels,
            theme: &theme,
            palette: &theme.palette(super::super::theme::ColorDepth::TrueColor),
        };
        let area = Rect::new(0, 0, w, h);
        let mut buf = Buffer::empty(area);
        let d = render(&view, area, &mut buf);
        let text = (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        (text, d)
    }

    #[test]
    fn bifurcation_branches_get_lanes_and_merge() {
        let g = crate::presets::bifurcation::graph(4, (3, 8), (1, 64));
        let taps = metas(&g);
        let l = Layout::new(&g, &taps);
        let lane = |n: &str| l.cells.iter().find(|c| c.name == n).unwrap().lane;
        let col = |n: &str| l.cells.iter().find(|c| c.name == n).unwrap().col;
        assert_eq!(lane("input"), 0);
        assert_eq!(lane("upper_in"), 0);
        assert_eq!(lane("lower_in"), 1);
        assert_eq!(lane("concat"), 0);
        assert_eq!(col("concat"), 1 + col("upper3").max(col("lower1")));
        // The lower branch's last node reaches the concat along its own lane.
        let (text, d) = draw(&g, 120, 6, 0);
        assert_eq!(d, Some(Density::Full));
        assert!(
            text.contains("upper_in") && text.contains("lower1"),
            "{text}"
        );
        assert!(
            text.contains('╰') && text.contains('╯'),
            "a branch line:\n{text}"
        );
    }

    #[test]
    fn long_chain_with_skip_is_dense_and_never_overlaps() {
        let g = chain_with_skip(128, true, 0);
        let taps = metas(&g);
        let l = Layout::new(&g, &taps);
        // One routing lane carries the skip edge.
        assert!(l.edges.iter().any(|e| matches!(e.route, Route::Via(_))));
        // No two cells share a position.
        let mut seen = std::collections::HashSet::new();
        for c in &l.cells {
            assert!(seen.insert((c.col, c.lane)), "{} overlaps", c.name);
        }
        let (text, d) = draw(&g, 200, 8, 64);
        assert_eq!(d, Some(Density::Dense));
        assert!(text.contains('▼'));
        // Narrow: scrolls, with a marker on each side when the selection is in the middle.
        let (text, _) = draw(&g, 60, 8, 64);
        let top = text.lines().next().unwrap();
        assert!(top.starts_with('◀') && top.ends_with('▶'), "{top}");
    }

    #[test]
    fn aux_heads_hang_below() {
        let g = chain_with_skip(32, false, 16);
        let taps = metas(&g);
        let l = Layout::new(&g, &taps);
        let aux: Vec<&Cell> = l
            .cells
            .iter()
            .filter(|c| c.name.starts_with("aux"))
            .collect();
        assert_eq!(aux.len(), 2);
        for a in aux {
            assert_eq!(a.lane, l.lanes - 1);
            let src = l
                .cells
                .iter()
                .find(|c| c.name == a.name.replace("aux", "h"))
                .unwrap();
            assert_eq!(a.col, src.col);
        }
        let (text, _) = draw(&g, 200, 8, 0);
        assert!(text.contains('│'), "{text}");
    }

    #[test]
    fn error_labels() {
        assert_eq!(err_label(0.2661, 4), ".266");
        assert_eq!(err_label(1.0, 4), "1.00");
        assert_eq!(err_label(0.5, 3), ".50");
        assert_eq!(err_label(f64::NAN, 4), " -- ");
    }

    #[test]
    fn every_size_draws_without_panic() {
        let g = chain_with_skip(16, true, 8);
        for w in 0..60 {
            for h in 0..10 {
                draw(&g, w, h, 3);
            }
        }
    }
}
