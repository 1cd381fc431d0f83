//! `probescope export`: a run log as a table. `--csv OUT` writes one row per snapshot and probe.

use std::path::Path;

use serde::Serialize;

use crate::runlog::{RunLog, SnapshotKind};

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

/// Which figure `--svg` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Figure {
    /// Probe error per tap (the paper's Figs 3 and 5): train and test, with the chance line. For
    /// presets that repeat over datasets, the mean over datasets; else the last snapshot.
    Curve,
    /// Layer x time: one row per snapshot, one column per probe, coloured by error.
    Heatmap,
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
    let what = if s.label == format!("step {}", s.step) {
        s.label.clone()
    } else {
        format!("{} (step {})", s.label, s.step)
    };
    Ok((v, what))
}

fn rgb(c: ratatui::style::Color) -> plotters::style::RGBColor {
    match c {
        ratatui::style::Color::Rgb(r, g, b) => plotters::style::RGBColor(r, g, b),
        _ => plotters::style::RGBColor(128, 128, 128),
    }
}

/// Size of the figures, in pixels.
const FIGURE_SIZE: (u32, u32) = (1000, 520);

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

/// Draws `figure` of `log` as SVG into `path` (through a temporary file); returns the number of
/// series (curve) or cells (heatmap) drawn.
pub fn svg_file(log: &RunLog, figure: Figure, path: &Path) -> anyhow::Result<usize> {
    let tmp = path.with_extension("svg.partial");
    let backend = plotters::prelude::SVGBackend::new(&tmp, FIGURE_SIZE);
    write_figure(backend, &tmp, path, log, figure)
}

/// Draws `figure` of `log` as PNG into `path` (through a temporary file); returns the number of
/// series (curve) or cells (heatmap) drawn.
pub fn png_file(log: &RunLog, figure: Figure, path: &Path) -> anyhow::Result<usize> {
    // The encoder picks the format from the extension, so the temporary name ends in .png.
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".partial.png");
    let tmp = path.with_file_name(name);
    let backend = plotters::prelude::BitMapBackend::new(&tmp, FIGURE_SIZE);
    write_figure(backend, &tmp, path, log, figure)
}

/// Draws on `backend`, which writes `tmp`, then renames `tmp` to `path`; `tmp` is removed if
/// anything fails, so `path` is either the whole figure or untouched.
fn write_figure<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    tmp: &Path,
    path: &Path,
    log: &RunLog,
    figure: Figure,
) -> anyhow::Result<usize> {
    use plotters::prelude::IntoDrawingArea;
    register_font()?;
    let drawn = {
        let root = backend.into_drawing_area();
        let drawn = draw(&root, log, figure);
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

fn draw<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    log: &RunLog,
    figure: Figure,
) -> anyhow::Result<usize> {
    use plotters::prelude::*;
    let classes = log.header.graph.classes.max(2);
    let chance = 1.0 - 1.0 / classes as f64;
    let names: Vec<String> = log.header.probes.iter().map(|p| p.name.clone()).collect();
    let n = names.len();
    let drawn;
    {
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let title = format!("{}: ", log.header.preset);
        match figure {
            Figure::Curve => {
                let (values, what) = curve_values(log)?;
                let ymax = values
                    .iter()
                    .flat_map(|(a, b)| [*a, *b])
                    .filter(|v| v.is_finite())
                    .fold(chance, f64::max)
                    * 1.05;
                let mut chart = ChartBuilder::on(root)
                    .caption(
                        format!("{title}probe error per layer, {what}"),
                        ("sans-serif", 20),
                    )
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(50)
                    .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let label = |x: &f64| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        names.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                };
                chart
                    .configure_mesh()
                    .x_desc("probe")
                    .y_desc("prediction error")
                    .x_labels(n.min(17))
                    .x_label_formatter(&label)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let theme = crate::tui::theme::Theme::default_theme();
                let mut series = 0;
                for (name, pick, colour) in
                    [("train", 0, rgb(theme.train)), ("test", 1, rgb(theme.test))]
                {
                    let pts: Vec<(f64, f64)> = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, if pick == 0 { v.0 } else { v.1 }))
                        .filter(|(_, y)| y.is_finite())
                        .collect();
                    if pts.is_empty() {
                        continue;
                    }
                    chart
                        .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .label(name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
                    series += 1;
                }
                let red = RGBColor(200, 40, 60);
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(-0.5, chance), (n as f64 - 0.5, chance)],
                        6,
                        4,
                        red.stroke_width(1),
                    ))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(format!("chance {chance:.2}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                drawn = series;
            }
            Figure::Heatmap => {
                let snaps: Vec<_> = log.snapshots().collect();
                anyhow::ensure!(!snaps.is_empty(), "the log has no snapshot to draw");
                let rows = snaps.len();
                let mut chart = ChartBuilder::on(root)
                    .caption(
                        format!("{title}probe error, layer x time (0 to chance {chance:.2})"),
                        ("sans-serif", 20),
                    )
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(60)
                    .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (rows as f64 - 0.5)..-0.5f64)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                // Cells are centred on whole numbers, so the labels name the probe and the
                // snapshot's step.
                let at = |v: f64, len: usize| {
                    let i = v.round();
                    ((v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < len).then_some(i as usize)
                };
                let xlabel = |x: &f64| at(*x, n).map(|i| names[i].clone()).unwrap_or_default();
                let ylabel = |y: &f64| {
                    at(*y, rows)
                        .map(|i| snaps[i].step.to_string())
                        .unwrap_or_default()
                };
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .x_desc("probe")
                    .y_desc("step")
                    .x_labels(n.min(17))
                    .y_labels(rows.min(12))
                    .x_label_formatter(&xlabel)
                    .y_label_formatter(&ylabel)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let theme = crate::tui::theme::Theme::default_theme();
                let cells: Vec<_> = snaps
                    .iter()
                    .enumerate()
                    .flat_map(|(r, s)| {
                        let theme = &theme;
                        s.probes.iter().enumerate().take(n).map(move |(i, p)| {
                            let e = p.reading.test_error.unwrap_or(p.reading.train_error);
                            let c = rgb(theme.scale(e / chance));
                            Rectangle::new(
                                [
                                    (i as f64 - 0.5, r as f64 - 0.5),
                                    (i as f64 + 0.5, r as f64 + 0.5),
                                ],
                                c.filled(),
                            )
                        })
                    })
                    .collect();
                drawn = cells.len();
                chart
                    .draw_series(cells)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    Ok(drawn)
}
