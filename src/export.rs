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
