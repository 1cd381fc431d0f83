//! `probescope status RUN.jsonl`: one short line for a tmux `status-right` (step, best tap and
//! its error, findings), returning at once; with `--watch`, a line per snapshot until the run
//! ends.

use std::path::Path;
use std::time::Duration;

use crate::alerts::{Alert, Watch};
use crate::runlog::{EndStatus, Record, RunHeader, Snapshot};

/// A log modified this recently without an end line counts as running, else as killed.
const QUIET_AFTER: Duration = Duration::from_secs(120);

/// What the line says, folded from the records.
#[derive(Debug, Clone)]
pub struct Line {
    header: Option<RunHeader>,
    latest: Option<Snapshot>,
    end: Option<(EndStatus, Option<String>)>,
    alerts: Vec<Alert>,
    watch: Option<Watch>,
    /// The peak resident memory the end line gives.
    peak: Option<u64>,
    /// The resident memory of the process writing the log, when it is on this machine.
    pub rss: Option<u64>,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self {
            header: None,
            latest: None,
            end: None,
            alerts: Vec::new(),
            watch: None,
            peak: None,
            rss: None,
        }
    }

    /// Folds in one record.
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Run(h) => {
                *self = Self::new();
                self.watch = Some(Watch::new(h));
                self.header = Some(h.clone());
            }
            Record::Snapshot(s) => {
                // The watch keeps the dataset mean and the newest converged snapshot too.
                if let Some(w) = &mut self.watch {
                    self.alerts = w.push(s);
                }
                self.latest = Some(s.clone());
            }
            Record::Summary(_) => {}
            Record::End(e) => {
                self.end = Some((e.status, e.message.clone()));
                self.peak = e.peak_rss;
            }
        }
    }

    /// Reads the resident memory of the process writing `path`, while the run goes on.
    pub fn refresh_rss(&mut self, path: &Path) {
        if !self.ended() {
            self.rss = crate::memory::writer_of(path).and_then(crate::memory::rss_of);
        }
    }

    /// Whether the run has ended.
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// The line. `quiet_for`: how long since the log last changed, which tells a running run
    /// from a killed one when there is no end line.
    pub fn render(&self, quiet_for: Option<Duration>) -> String {
        let Some(h) = &self.header else {
            return "probescope: no run yet".into();
        };
        let mut parts = Vec::new();
        let variant = h
            .params
            .get("variant")
            .map_or(String::new(), |v| format!(" {v}"));
        parts.push(format!("{}{variant}", h.preset));
        parts.push(match &self.end {
            Some((EndStatus::Finished, _)) => "finished".into(),
            Some((EndStatus::Stopped, _)) => "stopped".into(),
            Some((EndStatus::Failed, _)) => "FAILED".into(),
            None if quiet_for.is_some_and(|q| q > QUIET_AFTER) => "no end line (killed?)".into(),
            None => "running".into(),
        });
        if let Some(s) = &self.latest {
            let total = h.total_steps.map_or(String::new(), |t| format!("/{t}"));
            match (s.dataset, self.watch.as_ref().and_then(Watch::dataset_mean)) {
                (Some(_), Some((_, k))) => {
                    let of = h
                        .params
                        .get("datasets")
                        .map_or(String::new(), |v| format!("/{v}"));
                    parts.push(format!("dataset {k}{of}"));
                }
                _ => parts.push(format!("step {}{total}", s.step)),
            }
            if let Some((name, e, which)) = self.best(h) {
                parts.push(format!("best {name} {e:.3} {which}"));
            }
        } else {
            parts.push("no snapshot yet".into());
        }
        match (self.end.is_some(), self.peak, self.rss) {
            (true, Some(p), _) => parts.push(format!("peak {}", crate::memory::human(p))),
            (false, _, Some(r)) => parts.push(format!("RSS {}", crate::memory::human(r))),
            _ => {}
        }
        match self.alerts.as_slice() {
            [] => {}
            [a] => parts.push(format!("⚠ {}", short(a))),
            [a, ..] => parts.push(format!("⚠ {} alerts: {}", self.alerts.len(), short(a))),
        }
        parts.join(" · ")
    }

    /// The tap with the least error: the dataset mean, or the newest converged snapshot (test
    /// error), else the newest snapshot.
    fn best(&self, h: &RunHeader) -> Option<(String, f64, &'static str)> {
        let watch = self.watch.as_ref()?;
        let (errors, which): (Vec<f64>, &str) = match watch.dataset_mean() {
            Some((mean, _)) => (mean, "mean"),
            None => crate::export::shown_errors(watch.newest_converged().or(self.latest.as_ref())?),
        };
        let (i, e) = errors
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))?;
        Some((h.probes.get(i)?.name.clone(), *e, which))
    }
}

fn short(a: &Alert) -> &str {
    &a.short
}

/// `probescope status LOG`: prints the line (or with `watch`, a line per snapshot until the
/// end).
pub fn command(path: &Path, watch: bool) -> anyhow::Result<()> {
    if !watch {
        let log =
            crate::runlog::read(path).map_err(|e| crate::params::ParamError(format!("{e:#}")))?;
        let mut line = Line::new();
        line.apply(&Record::Run(log.header.clone()));
        for r in &log.records {
            line.apply(r);
        }
        let quiet = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        line.refresh_rss(path);
        println!("{}", line.render(quiet));
        return Ok(());
    }
    let mut follower = crate::follow::Follower::new(path);
    let mut line = Line::new();
    loop {
        for f in follower.poll()? {
            match f {
                crate::follow::Followed::Reset => line = Line::new(),
                crate::follow::Followed::Record(r) => {
                    line.apply(&r);
                    if matches!(*r, Record::Snapshot(_) | Record::End(_)) {
                        line.refresh_rss(path);
                        println!("{}", line.render(None));
                    }
                }
            }
        }
        if line.ended() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::sample;

    #[test]
    fn the_line_names_the_step_the_best_tap_and_the_state() {
        let h = sample::header("bifurcation", &[]).unwrap();
        let mut l = Line::new();
        assert_eq!(l.render(None), "probescope: no run yet");
        l.apply(&Record::Run(h.clone()));
        assert!(l.render(None).ends_with("running · no snapshot yet"));
        for k in 0..3 {
            l.apply(&Record::Snapshot(sample::snapshot(&h, k, k != 1)));
        }
        // The best tap of the newest converged snapshot (k = 2): the smallest test error.
        let s = sample::snapshot(&h, 2, true);
        let (i, e) = s
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.reading.test_error.unwrap()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let text = l.render(None);
        assert!(
            text.contains(&format!("best {} {e:.3} test", h.probes[i].name)),
            "{text}"
        );
        assert!(text.contains("step 200"), "{text}");
        assert!(l
            .render(Some(Duration::from_secs(600)))
            .contains("no end line (killed?)"));
        l.apply(&Record::End(crate::runlog::End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s: 1.0,
            step: None,
            peak_rss: None,
        }));
        assert!(l.render(None).contains("finished"));
    }
}
