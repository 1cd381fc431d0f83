//! Where a run's records go: the run log and a renderer. The headless renderer prints progress on
//! stderr and each summary as a table on stdout.

use std::io::Write;

use crate::runlog::{Record, RunLogWriter, Summary};

/// Receives a run's records as they happen.
pub trait Sink {
    /// A record for the log and the display.
    fn record(&mut self, record: &Record) -> anyhow::Result<()>;
    /// A progress line (not logged).
    fn progress(&mut self, message: &str);
}

/// The headless renderer (stdout and stderr), optionally writing the run log.
pub struct Headless {
    log: Option<RunLogWriter>,
    tables: bool,
}

impl Headless {
    /// Prints to the process's stdout and stderr, and writes `log` if given.
    pub fn new(log: Option<RunLogWriter>) -> Self {
        Self { log, tables: true }
    }

    /// Like [`Headless::new`], without the summary tables on stdout (progress lines only).
    pub fn without_tables(log: Option<RunLogWriter>) -> Self {
        Self { log, tables: false }
    }
}

impl Sink for Headless {
    fn record(&mut self, record: &Record) -> anyhow::Result<()> {
        if let Some(log) = &mut self.log {
            log.write(record)?;
        }
        if let (Record::Summary(s), true) = (record, self.tables) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(table(s).as_bytes());
            let _ = out.flush();
        }
        Ok(())
    }

    fn progress(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

/// A summary as a plain-text table: probe, features, train error, test error (mean ± spread),
/// mean activation norm.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let many = s.datasets > 1;
    out.push_str(&format!(
        "\n{} ({} dataset{}{})\n",
        s.label,
        s.datasets,
        if many { "s" } else { "" },
        if many {
            "; mean ± standard deviation over datasets"
        } else {
            ""
        }
    ));
    let w = s
        .probes
        .iter()
        .map(|p| p.probe.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<w$}  {:>8}  {:>15}  {:>15}  {:>10}\n",
        "probe", "features", "train error", "test error", "mean norm"
    ));
    let fmt = |m: f64, sd: f64| {
        if many {
            format!("{m:.4} ± {sd:.4}")
        } else {
            format!("{m:.4}")
        }
    };
    for p in &s.probes {
        let test = p
            .test_error
            .map(|t| fmt(t.mean, t.std))
            .unwrap_or_else(|| "-".into());
        let norm = p
            .mean_norm
            .map(|n| format!("{:.3e}", n.mean))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<w$}  {:>8}  {:>15}  {:>15}  {:>10}\n",
            p.probe,
            p.features,
            fmt(p.train_error.mean, p.train_error.std),
            test,
            norm
        ));
    }
    out
}

/// Keeps every record in memory (tests, library users).
#[derive(Debug, Default)]
pub struct Collect {
    /// The records, in order.
    pub records: Vec<Record>,
}

impl Sink for Collect {
    fn record(&mut self, record: &Record) -> anyhow::Result<()> {
        self.records.push(record.clone());
        Ok(())
    }

    fn progress(&mut self, _message: &str) {}
}
