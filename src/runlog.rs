//! The run log: JSON Lines, one record per line, each with a `"type"` field.
//!
//! A log is a `run` header (schema version, preset, every parameter, seed, device, graph,
//! probes), then `snapshot` lines, then `summary` lines where a preset averages over datasets or
//! phases, then one `end`. Every line is flushed as it is written and the file is synced to disk
//! at each snapshot, so a killed run loses at most the line being written; the reader skips a
//! torn last line with a warning. The schema is documented in `docs/runlog.md`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::params::ParamValue;
use crate::probe::{ActivationStats, FitConfig, ProbeReading, ProbeSpec};

/// Version of the record layout; readers refuse logs from a newer one.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of the run log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what was run.
    Run(RunHeader),
    /// Probe readings at one moment.
    Snapshot(Snapshot),
    /// Per-probe mean and spread over datasets (or one phase's readings).
    Summary(Summary),
    /// The last line: how the run ended.
    End(End),
}

/// What was run, with everything needed to run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Version of probescope that wrote the log.
    pub probescope_version: String,
    /// Preset name.
    pub preset: String,
    /// Every parameter, defaults included.
    pub params: BTreeMap<String, ParamValue>,
    /// The run's seed.
    pub seed: u64,
    /// Device the run used ("cpu", "cuda:0").
    pub device: String,
    /// The model graph.
    pub graph: Graph,
    /// The probes, with their feature subsets.
    pub probes: Vec<ProbeSpec>,
    /// Settings of the converged probe fits.
    pub fit: FitConfig,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Training steps (minibatches) the run will take, for presets that train a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
}

/// Seconds since the Unix epoch (0 if the clock is before it), for [`RunHeader::started_unix`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a number that may be `null` (defined with the readings it serves, in the engine).
pub use crate::probe::f64_or_nan;

/// Which schedule produced a snapshot's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Probes fitted to convergence on frozen activations.
    Converged,
    /// Online probes (one step per model step); errors are smoothed minibatch errors.
    Online,
}

/// Probe readings at one moment of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Model training step (0 = initialisation).
    pub step: u64,
    /// A short label ("init", "trained", "dataset 3").
    pub label: String,
    /// Converged or online readings.
    pub kind: SnapshotKind,
    /// Index of the toy dataset, for presets that repeat over datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<usize>,
    /// Training epochs completed (fractional between epoch ends), for presets that train on a
    /// dataset in epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    /// One entry per probe, in probe order.
    pub probes: Vec<TapReading>,
    /// The model's own loss and errors, for presets that train it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelMetrics>,
    /// Seconds since the run started.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub elapsed_s: f64,
    /// The findings that hold at this snapshot ([`crate::alerts`]), written by the recorder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
}

/// One probe's reading in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapReading {
    /// Probe name.
    pub probe: String,
    /// Tap it reads.
    pub tap: String,
    /// Errors, losses, iterations.
    #[serde(flatten)]
    pub reading: ProbeReading,
    /// Statistics of the tap's activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationStats>,
}

/// The model's own figures at a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    /// Training loss (with auxiliary heads) on the last minibatch.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub loss: f64,
    /// Error of the model's output on the training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_error: Option<f64>,
    /// Error of the model's output on the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_error: Option<f64>,
}

/// Mean, spread and range of one figure over datasets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub std: f64,
    /// Smallest value.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub min: f64,
    /// Largest value.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub max: f64,
}

impl Stat {
    /// Statistics of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Self {
            mean,
            std,
            min: values.iter().cloned().fold(f64::INFINITY, f64::min),
            max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Per-probe figures over the datasets (or of one phase) of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Which phase ("init", "trained", "all datasets").
    pub label: String,
    /// Number of datasets averaged.
    pub datasets: usize,
    /// One entry per probe.
    pub probes: Vec<ProbeSummary>,
}

/// One probe's figures over datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// Probe name.
    pub probe: String,
    /// Tap it reads.
    pub tap: String,
    /// Features the probe reads.
    pub features: usize,
    /// Train error over datasets.
    pub train_error: Stat,
    /// Test error over datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_error: Option<Stat>,
    /// Mean activation norm over datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_norm: Option<Stat>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// Ran to completion.
    Finished,
    /// Stopped by the user.
    Stopped,
    /// Stopped by an error.
    Failed,
}

/// The last record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// How it ended.
    pub status: EndStatus,
    /// Error or note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds since the run started.
    #[serde(deserialize_with = "crate::runlog::f64_or_nan")]
    pub elapsed_s: f64,
    /// The last training step the run completed (presets that train a model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The process's peak resident memory in bytes, where the system tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
}

/// Appends records to a run log, one flushed line each.
pub struct RunLogWriter {
    file: File,
    path: PathBuf,
}

impl RunLogWriter {
    /// Creates the log at `path`. An existing file is kept unless `overwrite` is set.
    pub fn create(path: &Path, overwrite: bool) -> anyhow::Result<Self> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "--record {}: the file exists; choose another path or add --force to overwrite it",
                    path.display()
                )
            } else {
                anyhow::anyhow!("--record {}: cannot create the run log: {e}", path.display())
            }
        })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one record as one line and flushes it; snapshots and the end are also synced to disk.
    pub fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        // One write call per line: a crash leaves whole lines and at most one torn one.
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| anyhow::anyhow!("writing run log {}: {e}", self.path.display()))?;
        if matches!(record, Record::Snapshot(_) | Record::End(_)) {
            self.file
                .sync_data()
                .map_err(|e| anyhow::anyhow!("syncing run log {}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

/// A run log read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLog {
    /// The header.
    pub header: RunHeader,
    /// Every record after the header, in order.
    pub records: Vec<Record>,
    /// Problems the reader stepped over (a torn last line).
    pub warnings: Vec<String>,
}

impl RunLog {
    /// The snapshots, in order.
    pub fn snapshots(&self) -> impl Iterator<Item = &Snapshot> {
        self.records.iter().filter_map(|r| match r {
            Record::Snapshot(s) => Some(s),
            _ => None,
        })
    }

    /// The summaries, in order.
    pub fn summaries(&self) -> impl Iterator<Item = &Summary> {
        self.records.iter().filter_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
    }

    /// The end record, if the run got that far.
    pub fn end(&self) -> Option<&End> {
        self.records.iter().find_map(|r| match r {
            Record::End(e) => Some(e),
            _ => None,
        })
    }
}

/// Reads a run log. A torn last line (no newline, not valid JSON) is skipped with a warning;
/// any other bad line is an error naming the file and the line.
pub fn read(path: &Path) -> anyhow::Result<RunLog> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{name}: cannot open the run log: {e}"))?;
    parse(&name, &bytes)
}

/// Parses a run log's bytes (`name` is used in messages); see [`read`].
pub fn parse(name: &str, bytes: &[u8]) -> anyhow::Result<RunLog> {
    let mut lines: Vec<(usize, &[u8], bool)> = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], true),
            None => (rest, false),
        };
        rest = &rest[line.len()..];
        lines.push((lines.len() + 1, line, complete));
    }
    if lines.is_empty() {
        anyhow::bail!("{name}: the file is empty, not a probescope run log");
    }
    let mut warnings = Vec::new();
    let mut records = Vec::new();
    let last = lines.len();
    let mut header = None;
    for (i, (line_no, bytes, complete)) in lines.into_iter().enumerate() {
        if String::from_utf8_lossy(bytes).trim().is_empty() {
            continue;
        }
        if header.is_none() {
            header = Some(parse_header_line(name, bytes)?);
            continue;
        }
        match parse_record_line(name, line_no, bytes) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == last && !complete => {
                warnings.push(format!(
                    "{name}: line {line_no} is cut short (the run was probably killed while writing it); skipped"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let Some(header) = header else {
        anyhow::bail!("{name}: the file has no records, not a probescope run log");
    };
    Ok(RunLog {
        header,
        records,
        warnings,
    })
}

/// The first line of a run log: the `run` header. Errors name `name` and say what the file is
/// not: not a run log, or a newer schema than this probescope reads.
pub fn parse_header_line(name: &str, bytes: &[u8]) -> anyhow::Result<RunHeader> {
    match serde_json::from_slice::<Record>(bytes) {
        Ok(Record::Run(h)) => {
            if h.schema_version > SCHEMA_VERSION {
                anyhow::bail!(
                    "{name}: written with run-log schema {}, newer than this probescope reads ({SCHEMA_VERSION}); upgrade probescope",
                    h.schema_version
                );
            }
            Ok(h)
        }
        Ok(_) => {
            anyhow::bail!("{name}: not a probescope run log (the first line is not a `run` record)")
        }
        Err(e) => {
            // Say what the file is not, before the parser's detail.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
                if v.get("type").and_then(|t| t.as_str()) == Some("run") {
                    if let Some(ver) = v.get("schema_version").and_then(|s| s.as_u64()) {
                        if ver > u64::from(SCHEMA_VERSION) {
                            anyhow::bail!(
                                "{name}: written with run-log schema {ver}, newer than this probescope reads ({SCHEMA_VERSION}); upgrade probescope"
                            );
                        }
                    }
                }
            }
            anyhow::bail!("{name}: not a probescope run log (line 1: {e})")
        }
    }
}

/// A record line after the header (`line_no` counts from 1, for the message).
pub fn parse_record_line(name: &str, line_no: usize, bytes: &[u8]) -> anyhow::Result<Record> {
    match serde_json::from_slice::<Record>(bytes) {
        Ok(Record::Run(_)) => {
            anyhow::bail!("{name}: line {line_no} is a second `run` header; one log holds one run")
        }
        Ok(r) => Ok(r),
        Err(e) => anyhow::bail!("{name}: line {line_no} is not a valid record: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_matches_a_hand_computation() {
        let s = Stat::of(&[1.0, 2.0, 4.0]);
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-12);
        // Sample variance: ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 42/18.
        assert!((s.std - (42.0f64 / 18.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn a_nan_reading_writes_as_null_and_reads_back_as_nan() {
        let h = crate::tui::sample::header("bifurcation", &[]).unwrap();
        let mut snap = crate::tui::sample::snapshot(&h, 0, true);
        snap.probes[0].reading.train_loss = f64::NAN;
        snap.probes[1].reading.test_loss = Some(f64::INFINITY);
        snap.probes[2].activation.as_mut().unwrap().mean_norm = f64::NAN;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.jsonl");
        let mut w = RunLogWriter::create(&path, false).unwrap();
        w.write(&Record::Run(h)).unwrap();
        w.write(&Record::Snapshot(snap)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"train_loss\":null"), "{text}");
        let back = read(&path).unwrap();
        let s = back.snapshots().next().unwrap();
        assert!(s.probes[0].reading.train_loss.is_nan());
        // An optional one reads back as absent; the others are untouched.
        assert_eq!(s.probes[1].reading.test_loss, None);
        assert!(s.probes[2].activation.as_ref().unwrap().mean_norm.is_nan());
        assert!(s.probes[3].reading.train_loss.is_finite());
    }
}
