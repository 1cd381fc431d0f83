//! `probescope export`: a run log as a table. `--csv OUT` writes one row per snapshot and probe.

use std::path::Path;

use serde::Serialize;

use crate::runlog::{RunLog, Snapshot, SnapshotKind};

/// One CSV row: a probe's reading in one snapshot, with the snapshot's and the model's figures.
#[derive(Debug, Serialize)]
struct Row<'a> {
    snapshot: usize,
    step: u64,
    label: &'a str,
    kind: &'a str,
    dataset: Option<usize>,
    elapsed_s: f64,
    probe: &'a str,
    tap: &'a str,
    features: Option<usize>,
    train_error: f64,
    train_loss: f64,
    val_error: Option<f64>,
    val_loss: Option<f64>,
    test_error: Option<f64>,
    test_loss: Option<f64>,
    iterations: usize,
    converged: bool,
    mean_norm: Option<f64>,
    dead_fraction: Option<f64>,
    model_loss: Option<f64>,
    model_train_error: Option<f64>,
    model_test_error: Option<f64>,
    control_error: Option<f64>,
    selectivity: Option<f64>,
}

/// Writes `log` as CSV to `out` (any writer); returns the number of rows.
pub fn csv_to<W: std::io::Write>(log: &RunLog, out: W) -> anyhow::Result<usize> {
    let mut w = csv::Writer::from_writer(out);
    let width = |probe: &str| {
        log.header
            .probes
            .iter()
            .find(|p| p.name == probe)
            .map(|p| p.width())
    };
    let mut rows = 0;
    for (k, s) in log.snapshots().enumerate() {
        for r in &s.probes {
            w.serialize(Row {
                snapshot: k,
                step: s.step,
                label: &s.label,
                kind: match s.kind {
                    SnapshotKind::Converged => "converged",
                    SnapshotKind::Online => "online",
                },
                dataset: s.dataset,
                elapsed_s: s.elapsed_s,
                probe: &r.probe,
                tap: &r.tap,
                features: width(&r.probe),
                train_error: r.reading.train_error,
                train_loss: r.reading.train_loss,
                val_error: r.reading.val_error,
                val_loss: r.reading.val_loss,
                test_error: r.reading.test_error,
                test_loss: r.reading.test_loss,
                iterations: r.reading.iterations,
                converged: r.reading.converged,
                mean_norm: r.activation.as_ref().map(|a| a.mean_norm),
                dead_fraction: r.activation.as_ref().map(|a| a.dead_fraction),
                model_loss: s.model.as_ref().map(|m| m.loss),
                model_train_error: s.model.as_ref().and_then(|m| m.train_error),
                model_test_error: s.model.as_ref().and_then(|m| m.test_error),
                control_error: r.reading.control_error,
                selectivity: r.reading.control_error.map(|c| c - r.reading.train_error),
            })?;
            rows += 1;
        }
    }
    w.flush()?;
    Ok(rows)
}

/// Writes `log` as CSV to the file `path` (through a temporary file, so a failure leaves no
/// half-written table); returns the number of rows.
pub fn csv_file(log: &RunLog, path: &Path) -> anyhow::Result<usize> {
    let tmp = path.with_extension("csv.partial");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("{}: cannot write it: {e}", path.display()))?;
    let rows = csv_to(log, std::io::BufWriter::new(file))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write it: {e}", path.display()))?;
    Ok(rows)
}

/// Which figure `--svg` and `--png` draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Figure {
    /// Probe error per tap (the paper's Fig 3): train and test lines, with the chance line. For
    /// presets that repeat over datasets, the mean over datasets; else the last converged
    /// snapshot.
    Curve,
    /// Bars per probe point (the paper's Fig 5): one bar per tap and chosen snapshot (by default
    /// the first and the last converged one), side by side; for presets that repeat over
    /// datasets, the mean train and test error.
    Bars,
    /// Small multiples (the paper's Figs 7 and 8): one panel of bars per chosen snapshot (by
    /// default up to six, evenly spread over the converged ones), coloured by error.
    Panels,
    /// Layer x time: one row per snapshot, one column per probe, coloured by error.
    Heatmap,
}

impl Figure {
    /// The figure's name, as `--figure` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Curve => "curve",
            Self::Bars => "bars",
            Self::Panels => "panels",
            Self::Heatmap => "heatmap",
        }
    }
}

/// Colours of series that are not train and test (snapshots, compared runs): distinct on white.
pub const PALETTE: [(u8, u8, u8); 6] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (23, 190, 207),
];

/// The colour of the chance (or zero) line.
pub const REFERENCE_RGB: (u8, u8, u8) = (200, 40, 60);

/// One line or set of bars of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// One value per tap (NaN: nothing drawn there).
    pub values: Vec<f64>,
    /// Its colour.
    pub rgb: (u8, u8, u8),
}

/// A figure's content, independent of the file format.
#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    /// One line per series over the taps, with a dashed reference line (chance, or 0 for
    /// differences).
    Lines {
        /// Caption.
        title: String,
        /// The taps, in order.
        taps: Vec<String>,
        /// The lines.
        series: Vec<Series>,
        /// The y axis' name.
        y_desc: String,
        /// The dashed line: its height and legend.
        reference: (f64, String),
    },
    /// Grouped bars: per tap, one bar per series side by side.
    Bars {
        /// Caption.
        title: String,
        /// The taps, in order.
        taps: Vec<String>,
        /// The bars.
        series: Vec<Series>,
        /// The y axis' name.
        y_desc: String,
        /// The dashed chance line.
        chance: f64,
    },
    /// Panels of bars, one per snapshot, on a shared y axis, each bar coloured by its error.
    Panels {
        /// Caption.
        title: String,
        /// The taps, in order.
        taps: Vec<String>,
        /// Per panel: its title and one error per tap.
        panels: Vec<(String, Vec<f64>)>,
        /// The y axis' name.
        y_desc: String,
        /// The dashed chance line (errors are coloured from 0 to it).
        chance: f64,
    },
    /// Layer x time cells.
    Heatmap {
        /// Caption.
        title: String,
        /// The taps, in order (columns).
        taps: Vec<String>,
        /// Per row (snapshot): its label and one error per tap.
        rows: Vec<(String, Vec<f64>)>,
        /// Errors are coloured from 0 to chance.
        chance: f64,
    },
}

/// A snapshot's error per probe: test where the snapshot has test errors, else train; and which.
pub fn shown_errors(s: &Snapshot) -> (Vec<f64>, &'static str) {
    let has_test = s.probes.iter().any(|r| r.reading.test_error.is_some());
    let v = s
        .probes
        .iter()
        .map(|r| {
            if has_test {
                r.reading.test_error.unwrap_or(f64::NAN)
            } else {
                r.reading.train_error
            }
        })
        .collect();
    (v, if has_test { "test" } else { "train" })
}

/// A snapshot's name in a legend or panel title: its label, with the step where the label does
/// not say it.
pub fn snapshot_name(s: &Snapshot) -> String {
    if s.label == format!("step {}", s.step) || s.dataset.is_some() {
        s.label.clone()
    } else {
        format!("{} (step {})", s.label, s.step)
    }
}

/// The snapshots `--steps` names (the converged one at each step where there is one), or when
/// `steps` is empty, `default_count` spread evenly over the converged snapshots (all snapshots
/// where none is converged), always including the first and the last.
pub fn pick_snapshots<'a>(
    log: &'a RunLog,
    steps: &[u64],
    default_count: usize,
) -> anyhow::Result<Vec<&'a Snapshot>> {
    let all: Vec<&Snapshot> = log.snapshots().collect();
    anyhow::ensure!(!all.is_empty(), "the log has no snapshot to draw");
    let converged: Vec<&Snapshot> = all
        .iter()
        .copied()
        .filter(|s| s.kind == SnapshotKind::Converged)
        .collect();
    let pool = if converged.is_empty() {
        &all
    } else {
        &converged
    };
    if steps.is_empty() {
        let n = pool.len();
        let k = default_count.clamp(1, n);
        let mut picked: Vec<usize> = (0..k)
            .map(|i| {
                if k == 1 {
                    n - 1
                } else {
                    (i * (n - 1) + (k - 1) / 2) / (k - 1)
                }
            })
            .collect();
        picked.dedup();
        return Ok(picked.into_iter().map(|i| pool[i]).collect());
    }
    steps
        .iter()
        .map(|&step| {
            pool.iter()
                .chain(all.iter())
                .find(|s| s.step == step)
                .copied()
                .ok_or_else(|| {
                    let mut have: Vec<u64> = all.iter().map(|s| s.step).collect();
                    have.dedup();
                    let list: Vec<String> = have.iter().take(40).map(u64::to_string).collect();
                    anyhow::anyhow!(
                        "--steps {step}: the log has no snapshot at step {step}; its snapshots \
                         are at steps {}{}",
                        list.join(", "),
                        if have.len() > 40 { ", ..." } else { "" }
                    )
                })
        })
        .collect()
}

/// The figure `figure` of `log`, with `steps` picking the snapshots of bars and panels (empty:
/// the default choice).
pub fn plot(log: &RunLog, figure: Figure, steps: &[u64]) -> anyhow::Result<Plot> {
    let classes = log.header.graph.classes.max(2);
    let chance = 1.0 - 1.0 / classes as f64;
    let taps: Vec<String> = log.header.probes.iter().map(|p| p.name.clone()).collect();
    let n = taps.len();
    let preset = &log.header.preset;
    let theme = crate::theme::Theme::default_theme();
    let rgb = |c: ratatui::style::Color| match c {
        ratatui::style::Color::Rgb(r, g, b) => (r, g, b),
        _ => (128, 128, 128),
    };
    let fit = |mut v: Vec<f64>| {
        v.resize(n, f64::NAN);
        v
    };
    let datasets = log.snapshots().any(|s| s.dataset.is_some());
    Ok(match figure {
        Figure::Bars | Figure::Panels if !(figure == Figure::Bars && datasets) => {
            let bars = figure == Figure::Bars;
            let snaps = pick_snapshots(log, steps, if bars { 2 } else { 6 })?;
            let mut kinds: Vec<&str> = Vec::new();
            let named: Vec<(String, Vec<f64>)> = snaps
                .iter()
                .map(|s| {
                    let (v, kind) = shown_errors(s);
                    kinds.push(kind);
                    (snapshot_name(s), fit(v))
                })
                .collect();
            kinds.dedup();
            let y_desc = format!("{} error", kinds.join(" / "));
            if bars {
                Plot::Bars {
                    title: format!("{preset}: probe error per layer"),
                    taps,
                    series: named
                        .into_iter()
                        .enumerate()
                        .map(|(k, (label, values))| Series {
                            label,
                            values,
                            rgb: PALETTE[k % PALETTE.len()],
                        })
                        .collect(),
                    y_desc,
                    chance,
                }
            } else {
                Plot::Panels {
                    title: format!("{preset}: probe error per layer over training"),
                    taps,
                    panels: named,
                    y_desc,
                    chance,
                }
            }
        }
        Figure::Heatmap => {
            let rows: Vec<(String, Vec<f64>)> = log
                .snapshots()
                .map(|s| {
                    let v = s
                        .probes
                        .iter()
                        .map(|p| p.reading.test_error.unwrap_or(p.reading.train_error))
                        .collect();
                    (s.step.to_string(), fit(v))
                })
                .collect();
            anyhow::ensure!(!rows.is_empty(), "the log has no snapshot to draw");
            Plot::Heatmap {
                title: format!("{preset}: probe error, layer x time (0 to chance {chance:.2})"),
                taps,
                rows,
                chance,
            }
        }
        // The curve, and for presets that repeat over datasets the bars: the mean.
        _ => {
            let (values, what) = curve_values(log)?;
            let series = vec![
                Series {
                    label: "train".into(),
                    values: fit(values.iter().map(|v| v.0).collect()),
                    rgb: rgb(theme.train),
                },
                Series {
                    label: "test".into(),
                    values: fit(values.iter().map(|v| v.1).collect()),
                    rgb: rgb(theme.test),
                },
            ];
            let title = format!("{preset}: probe error per layer, {what}");
            if figure == Figure::Curve {
                Plot::Lines {
                    title,
                    taps,
                    series,
                    y_desc: "prediction error".into(),
                    reference: (chance, format!("chance {chance:.2}")),
                }
            } else {
                Plot::Bars {
                    title,
                    taps,
                    series,
                    y_desc: "prediction error".into(),
                    chance,
                }
            }
        }
    })
}

/// Per-probe (train, test) errors the curve shows, and what they are.
fn curve_values(log: &RunLog) -> anyhow::Result<(Vec<(f64, f64)>, String)> {
    let n = log.header.probes.len();
    let snaps: Vec<_> = log.snapshots().collect();
    anyhow::ensure!(!snaps.is_empty(), "the log has no snapshot to draw");
    if snaps.iter().any(|s| s.dataset.is_some()) {
        let sets: Vec<_> = snaps.iter().filter(|s| s.dataset.is_some()).collect();
        let mut v = vec![(0.0, 0.0); n];
        for s in &sets {
            for (i, r) in s.probes.iter().enumerate().take(n) {
                v[i].0 += r.reading.train_error / sets.len() as f64;
                v[i].1 += r.reading.test_error.unwrap_or(f64::NAN) / sets.len() as f64;
            }
        }
        return Ok((v, format!("mean of {} datasets", sets.len())));
    }
    // The last converged snapshot (online readings have no test error), else the last one.
    let s = snaps
        .iter()
        .rev()
        .find(|s| s.kind == SnapshotKind::Converged)
        .unwrap_or(snaps.last().expect("non-empty"));
    let v = s
        .probes
        .iter()
        .map(|r| {
            (
                r.reading.train_error,
                r.reading.test_error.unwrap_or(f64::NAN),
            )
        })
        .collect();
    Ok((v, snapshot_name(s)))
}

/// Size of the figures, in pixels.
pub const FIGURE_SIZE: (u32, u32) = (1000, 520);

/// The font PNG figures draw their text with (SVG leaves text to the viewer): DejaVu Sans,
/// embedded (see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font cannot be read".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The pixel size of `plot`: panels get taller as they add rows.
fn size_of(plot: &Plot) -> (u32, u32) {
    match plot {
        Plot::Panels { panels, .. } => {
            let (rows, _) = grid(panels.len());
            (FIGURE_SIZE.0, 60 + 300 * rows as u32)
        }
        _ => FIGURE_SIZE,
    }
}

/// Rows and columns of a grid of `k` panels.
fn grid(k: usize) -> (usize, usize) {
    let cols = match k {
        0..=3 => k.max(1),
        4 => 2,
        _ => 3,
    };
    (k.div_ceil(cols).max(1), cols)
}

/// Draws `plot` as SVG into `path` (through a temporary file); returns the number of series
/// (lines, bars), panels or cells (heatmap) drawn.
pub fn svg_file(plot: &Plot, path: &Path) -> anyhow::Result<usize> {
    let tmp = path.with_extension("svg.partial");
    let backend = plotters::prelude::SVGBackend::new(&tmp, size_of(plot));
    write_figure(backend, &tmp, path, plot)
}

/// Draws `plot` as PNG into `path` (through a temporary file); returns what [`svg_file`] does.
pub fn png_file(plot: &Plot, path: &Path) -> anyhow::Result<usize> {
    // The encoder picks the format from the extension, so the temporary name ends in .png.
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".partial.png");
    let tmp = path.with_file_name(name);
    let backend = plotters::prelude::BitMapBackend::new(&tmp, size_of(plot));
    write_figure(backend, &tmp, path, plot)
}

/// Draws on `backend`, which writes `tmp`, then renames `tmp` to `path`; `tmp` is removed if
/// anything fails, so `path` is either the whole figure or untouched.
fn write_figure<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    tmp: &Path,
    path: &Path,
    plot: &Plot,
) -> anyhow::Result<usize> {
    use plotters::prelude::IntoDrawingArea;
    register_font()?;
    let drawn = {
        let root = backend.into_drawing_area();
        let drawn = draw(&root, plot);
        let presented = root.present();
        drawn.and_then(|d| {
            presented.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(d)
        })
    };
    let drawn = drawn.and_then(|d| {
        std::fs::rename(tmp, path)
            .map_err(|e| anyhow::anyhow!("{}: cannot write it: {e}", path.display()))?;
        Ok(d)
    });
    if drawn.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    drawn
}

type Area<DB> = plotters::prelude::DrawingArea<DB, plotters::coord::Shift>;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// The top of a y axis that shows `values` and `floor`, with a little room.
fn y_top<'a>(values: impl IntoIterator<Item = &'a f64>, floor: f64) -> f64 {
    values
        .into_iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(floor, f64::max)
        * 1.05
}

/// The tap name at a whole x position, for axis labels.
fn tap_label(taps: &[String]) -> impl Fn(&f64) -> String + '_ {
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            taps.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

fn colour((r, g, b): (u8, u8, u8)) -> plotters::style::RGBColor {
    plotters::style::RGBColor(r, g, b)
}

fn draw<DB: plotters::prelude::DrawingBackend>(
    root: &Area<DB>,
    plot: &Plot,
) -> anyhow::Result<usize> {
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(err)?;
    match plot {
        Plot::Lines {
            title,
            taps,
            series,
            y_desc,
            reference,
        } => {
            let n = taps.len();
            let values = series.iter().flat_map(|s| s.values.iter());
            let top = y_top(values.clone(), reference.0.max(0.0));
            let bottom = values
                .filter(|v| v.is_finite())
                .fold(0f64, |a, &v| a.min(v))
                * 1.05;
            let (bottom, top) = if bottom < 0.0 {
                // Differences: symmetric about zero.
                let m = top.max(-bottom);
                (-m, m)
            } else {
                (0.0, top)
            };
            let mut chart = tap_chart(root, title, taps, bottom..top, y_desc, true)?;
            let mut drawn = 0;
            for s in series {
                let pts: Vec<(f64, f64)> = s
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v))
                    .filter(|(_, y)| y.is_finite())
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let c = colour(s.rgb);
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(err)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                drawn += 1;
            }
            let red = colour(REFERENCE_RGB);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(-0.5, reference.0), (n as f64 - 0.5, reference.0)],
                    6,
                    4,
                    red.stroke_width(1),
                ))
                .map_err(err)?
                .label(reference.1.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
            Ok(drawn)
        }
        Plot::Bars {
            title,
            taps,
            series,
            y_desc,
            chance,
        } => {
            let n = taps.len();
            let top = y_top(series.iter().flat_map(|s| s.values.iter()), *chance);
            let mut chart = tap_chart(root, title, taps, 0f64..top, y_desc, false)?;
            let k = series.len().max(1) as f64;
            let w = 0.8 / k;
            for (j, s) in series.iter().enumerate() {
                let c = colour(s.rgb);
                let bars: Vec<_> = s
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let x0 = i as f64 - 0.4 + j as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w, v.max(0.0))], c.filled())
                    })
                    .collect();
                chart
                    .draw_series(bars)
                    .map_err(err)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                    });
            }
            draw_chance(&mut chart, n, *chance)?;
            // Errors are usually lowest at the input, on the left.
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
            Ok(series.len())
        }
        Plot::Panels {
            title,
            taps,
            panels,
            y_desc,
            chance,
        } => {
            anyhow::ensure!(!panels.is_empty(), "no snapshot to draw");
            let n = taps.len();
            let theme = crate::theme::Theme::default_theme();
            let top = y_top(panels.iter().flat_map(|p| p.1.iter()), *chance);
            let body = root.titled(title, ("sans-serif", 22)).map_err(err)?;
            let (rows, cols) = grid(panels.len());
            let areas = body.split_evenly((rows, cols));
            let label = tap_label(taps);
            for ((name, values), area) in panels.iter().zip(areas.iter()) {
                let mut chart = ChartBuilder::on(area)
                    .caption(name, ("sans-serif", 16))
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(45)
                    .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
                    .map_err(err)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .y_desc(y_desc.as_str())
                    .x_labels(n.min(6))
                    .y_labels(5)
                    .x_label_formatter(&label)
                    .draw()
                    .map_err(err)?;
                let bars: Vec<_> = values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let c = rgb(theme.scale(v / chance));
                        Rectangle::new(
                            [(i as f64 - 0.42, 0.0), (i as f64 + 0.42, v.max(0.0))],
                            c.filled(),
                        )
                    })
                    .collect();
                chart.draw_series(bars).map_err(err)?;
                draw_chance(&mut chart, n, *chance)?;
            }
            Ok(panels.len())
        }
        Plot::Heatmap {
            title,
            taps,
            rows,
            chance,
        } => {
            let n = taps.len();
            let r = rows.len();
            let mut chart = ChartBuilder::on(root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (r as f64 - 0.5)..-0.5f64)
                .map_err(err)?;
            // Cells are centred on whole numbers, so the labels name the probe and the row.
            let at = |v: f64, len: usize| {
                let i = v.round();
                ((v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < len).then_some(i as usize)
            };
            let xlabel = tap_label(taps);
            let ylabel = |y: &f64| at(*y, r).map(|i| rows[i].0.clone()).unwrap_or_default();
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("probe")
                .y_desc("step")
                .x_labels(n.min(17))
                .y_labels(r.min(12))
                .x_label_formatter(&xlabel)
                .y_label_formatter(&ylabel)
                .draw()
                .map_err(err)?;
            let theme = crate::theme::Theme::default_theme();
            let cells: Vec<_> = rows
                .iter()
                .enumerate()
                .flat_map(|(y, (_, values))| {
                    let theme = &theme;
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.is_nan())
                        .map(move |(i, v)| {
                            Rectangle::new(
                                [
                                    (i as f64 - 0.5, y as f64 - 0.5),
                                    (i as f64 + 0.5, y as f64 + 0.5),
                                ],
                                rgb(theme.scale(v / chance)).filled(),
                            )
                        })
                })
                .collect();
            let drawn = cells.len();
            chart.draw_series(cells).map_err(err)?;
            Ok(drawn)
        }
    }
}

type TapChart<'a, DB> = plotters::prelude::ChartContext<
    'a,
    DB,
    plotters::prelude::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// A chart over the taps (x, one per whole number, labelled with its name) and `y`, with its
/// caption and axes drawn; `x_mesh` draws the vertical grid lines too.
fn tap_chart<'a, DB: plotters::prelude::DrawingBackend>(
    root: &'a Area<DB>,
    title: &str,
    taps: &[String],
    y: std::ops::Range<f64>,
    y_desc: &str,
    x_mesh: bool,
) -> anyhow::Result<TapChart<'a, DB>> {
    use plotters::prelude::*;
    let n = taps.len();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y)
        .map_err(err)?;
    let label = tap_label(taps);
    let mut mesh = chart.configure_mesh();
    if !x_mesh {
        mesh.disable_x_mesh();
    }
    mesh.x_desc("probe")
        .y_desc(y_desc)
        .x_labels(n.min(17))
        .x_label_formatter(&label)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn draw_chance<DB: plotters::prelude::DrawingBackend>(
    chart: &mut TapChart<'_, DB>,
    n: usize,
    chance: f64,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let red = colour(REFERENCE_RGB);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(-0.5, chance), (n as f64 - 0.5, chance)],
            6,
            4,
            red.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("chance {chance:.2}"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    Ok(())
}

fn rgb(c: ratatui::style::Color) -> plotters::style::RGBColor {
    match c {
        ratatui::style::Color::Rgb(r, g, b) => plotters::style::RGBColor(r, g, b),
        _ => plotters::style::RGBColor(128, 128, 128),
    }
}
