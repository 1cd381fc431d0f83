//! `probescope compare`: two or three run logs side by side, their probes aligned by name.
//!
//! Runs are compared at a step: each run shows its newest snapshot at or before it (a run that
//! repeats over datasets shows the mean of its datasets), so runs that snapshot at different
//! steps still line up. By default only converged snapshots count, so a smoothed online reading
//! is never set against a converged one.

use std::path::Path;

use crate::params::ParamError;
use crate::runlog::{RunLog, Snapshot, SnapshotKind};

/// One run of a comparison.
#[derive(Debug, Clone)]
pub struct Side {
    /// Short name: the file's stem, made unique.
    pub name: String,
    /// The parameters in which this run differs from the others ("variant=skip"), or its preset
    /// where the presets differ.
    pub about: String,
    /// The log.
    pub log: RunLog,
    /// Error of always guessing, 1 - 1/K.
    pub chance: f64,
}

/// A probe name and where each run has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aligned {
    /// Probe name.
    pub name: String,
    /// Per run, the probe's index in that run's header.
    pub at: Vec<Option<usize>>,
}

/// A run's reading of one probe at a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    /// Train error.
    pub train: f64,
    /// Validation error (NaN: none).
    pub val: f64,
    /// Test error (NaN: none).
    pub test: f64,
}

impl Value {
    /// Test error where there is one, else train (`train` forces train).
    pub fn error(&self, train: bool) -> f64 {
        if train || self.test.is_nan() {
            self.train
        } else {
            self.test
        }
    }
}

/// Where a run's readings at a step come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source<'a> {
    /// The run has no snapshot at or before the step.
    None,
    /// One snapshot.
    Snapshot(&'a Snapshot),
    /// The mean of this many datasets.
    Datasets(Vec<&'a Snapshot>),
}

impl Source<'_> {
    /// A short description ("step 500", "init (step 0)", "mean of 20 datasets", "no snapshot yet").
    pub fn describe(&self) -> String {
        match self {
            Self::None => "no snapshot yet".into(),
            Self::Snapshot(s) => {
                let kind = if s.kind == SnapshotKind::Online {
                    "online "
                } else {
                    ""
                };
                format!("{kind}{}", crate::export::snapshot_name(s))
            }
            Self::Datasets(v) => format!("mean of {} datasets", v.len()),
        }
    }

    /// The model's test error there, where the run records it.
    pub fn model_test_error(&self) -> Option<f64> {
        match self {
            Self::Snapshot(s) => s.model.as_ref().and_then(|m| m.test_error),
            _ => None,
        }
    }
}

/// Runs side by side.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The runs, in the order given.
    pub runs: Vec<Side>,
    /// Every probe name of any run, in model order.
    pub taps: Vec<Aligned>,
}

impl Comparison {
    /// Reads the logs at `paths` (two or three); every problem names its file.
    pub fn read(paths: &[&Path]) -> anyhow::Result<Self> {
        let mut logs = Vec::new();
        for p in paths {
            let log = crate::runlog::read(p).map_err(|e| ParamError(format!("{e:#}")))?;
            logs.push((p.to_path_buf(), log));
        }
        Self::new(logs)
    }

    /// Aligns `logs` (each with the path it came from) by probe name. Runs with no probe in
    /// common with the first are an error naming both files.
    pub fn new(logs: Vec<(std::path::PathBuf, RunLog)>) -> anyhow::Result<Self> {
        if !(2..=3).contains(&logs.len()) {
            return Err(ParamError(format!(
                "compare takes two or three run logs, got {}",
                logs.len()
            ))
            .into());
        }
        let names = unique_names(&logs.iter().map(|(p, _)| p.as_path()).collect::<Vec<_>>());
        let abouts = differences(&logs.iter().map(|(_, l)| l).collect::<Vec<_>>());
        let mut taps: Vec<Aligned> = Vec::new();
        let k = logs.len();
        for (r, (_, log)) in logs.iter().enumerate() {
            // A probe this run adds goes after the one before it in this run.
            let mut after: Option<usize> = None;
            for (i, p) in log.header.probes.iter().enumerate() {
                match taps.iter().position(|t| t.name == p.name) {
                    Some(at) => {
                        taps[at].at[r] = Some(i);
                        after = Some(at);
                    }
                    None => {
                        let mut at = vec![None; k];
                        at[r] = Some(i);
                        let pos = after.map_or(0, |a| a + 1);
                        taps.insert(
                            pos,
                            Aligned {
                                name: p.name.clone(),
                                at,
                            },
                        );
                        after = Some(pos);
                    }
                }
            }
        }
        for (r, (path, log)) in logs.iter().enumerate().skip(1) {
            if !taps.iter().any(|t| t.at[0].is_some() && t.at[r].is_some()) {
                let list = |l: &RunLog| {
                    let n: Vec<&str> = l.header.probes.iter().map(|p| p.name.as_str()).collect();
                    let more = if n.len() > 4 { ", ..." } else { "" };
                    format!("{}{more}", n[..n.len().min(4)].join(", "))
                };
                return Err(ParamError(format!(
                    "{} and {} have no probe in common ({}: {}; {}: {}); compare runs whose \
                     probes share names, such as two variants of one preset",
                    logs[0].0.display(),
                    path.display(),
                    logs[0].1.header.preset,
                    list(&logs[0].1),
                    log.header.preset,
                    list(log)
                ))
                .into());
            }
        }
        let runs = logs
            .into_iter()
            .zip(names)
            .zip(abouts)
            .map(|(((_, log), name), about)| Side {
                name,
                about,
                chance: 1.0 - 1.0 / log.header.graph.classes.max(2) as f64,
                log,
            })
            .collect();
        Ok(Self { runs, taps })
    }

    /// Whether every run has a converged snapshot (so comparing converged ones is possible).
    pub fn all_converged(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.log.snapshots().any(|s| s.kind == SnapshotKind::Converged))
    }

    /// Every step at which some run has a snapshot (only converged ones with
    /// `converged_only`), in order.
    pub fn steps(&self, converged_only: bool) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .runs
            .iter()
            .flat_map(|r| r.log.snapshots())
            .filter(|s| !converged_only || s.kind == SnapshotKind::Converged)
            .map(|s| s.step)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Where run `r`'s readings at `step` come from.
    pub fn source(&self, r: usize, step: u64, converged_only: bool) -> Source<'_> {
        let fits = |s: &&Snapshot| {
            s.step <= step && (!converged_only || s.kind == SnapshotKind::Converged)
        };
        let log = &self.runs[r].log;
        if log.snapshots().any(|s| s.dataset.is_some()) {
            let sets: Vec<&Snapshot> = log
                .snapshots()
                .filter(|s| s.dataset.is_some())
                .filter(fits)
                .collect();
            return if sets.is_empty() {
                Source::None
            } else {
                Source::Datasets(sets)
            };
        }
        log.snapshots()
            .filter(fits)
            .last()
            .map_or(Source::None, Source::Snapshot)
    }

    /// Run `r`'s reading of aligned probe `tap` from `source` (None: the run lacks the probe or
    /// has no snapshot there).
    pub fn value(&self, r: usize, tap: usize, source: &Source<'_>) -> Option<Value> {
        let i = self.taps[tap].at[r]?;
        let of = |s: &Snapshot| {
            s.probes.get(i).map(|p| Value {
                train: p.reading.train_error,
                val: p.reading.val_error.unwrap_or(f64::NAN),
                test: p.reading.test_error.unwrap_or(f64::NAN),
            })
        };
        match source {
            Source::None => None,
            Source::Snapshot(s) => of(s),
            Source::Datasets(sets) => {
                let n = sets.len() as f64;
                let mut sum = Value {
                    train: 0.0,
                    val: 0.0,
                    test: 0.0,
                };
                for s in sets {
                    let v = of(s)?;
                    sum.train += v.train / n;
                    sum.val += v.val / n;
                    sum.test += v.test / n;
                }
                Some(sum)
            }
        }
    }

    /// Errors at `step` (`train` forces train error; else test where there is one): `[run][tap]`,
    /// NaN where missing.
    pub fn errors(&self, step: u64, converged_only: bool, train: bool) -> Vec<Vec<f64>> {
        (0..self.runs.len())
            .map(|r| {
                let src = self.source(r, step, converged_only);
                (0..self.taps.len())
                    .map(|t| self.value(r, t, &src).map_or(f64::NAN, |v| v.error(train)))
                    .collect()
            })
            .collect()
    }

    /// The comparison as a figure: one line per run, or with `diff_base`, one line per other run
    /// of its difference from the base.
    pub fn plot(
        &self,
        step: u64,
        converged_only: bool,
        train: bool,
        diff_base: Option<usize>,
    ) -> crate::export::Plot {
        let errors = self.errors(step, converged_only, train);
        let which = if train { "train" } else { "test" };
        let palette = crate::export::PALETTE;
        let taps = self.taps.iter().map(|t| t.name.clone()).collect();
        let label = |r: usize| {
            let src = self.source(r, step, converged_only).describe();
            if self.runs[r].about.is_empty() {
                format!("{} ({src})", self.runs[r].name)
            } else {
                format!("{} [{}] ({src})", self.runs[r].name, self.runs[r].about)
            }
        };
        match diff_base {
            None => crate::export::Plot::Lines {
                title: format!("probe {which} error per layer, compared"),
                taps,
                series: errors
                    .into_iter()
                    .enumerate()
                    .map(|(r, values)| crate::export::Series {
                        label: label(r),
                        values,
                        rgb: palette[r % palette.len()],
                    })
                    .collect(),
                y_desc: format!("{which} error"),
                reference: (
                    self.runs[0].chance,
                    format!("chance {:.2}", self.runs[0].chance),
                ),
            },
            Some(b) => crate::export::Plot::Lines {
                title: format!(
                    "probe {which} error per layer, difference from {}",
                    self.runs[b].name
                ),
                taps,
                series: (0..self.runs.len())
                    .filter(|&r| r != b)
                    .map(|r| crate::export::Series {
                        label: format!("{} - {}", label(r), self.runs[b].name),
                        values: errors[r]
                            .iter()
                            .zip(&errors[b])
                            .map(|(x, y)| x - y)
                            .collect(),
                        rgb: palette[r % palette.len()],
                    })
                    .collect(),
                y_desc: format!("{which} error difference"),
                reference: (0.0, "no difference".into()),
            },
        }
    }

    /// A plain-text table of the errors at `step` (and each other run's difference from the
    /// first), for a terminal without the UI or a script.
    pub fn table(&self, step: u64, converged_only: bool, train: bool) -> String {
        let errors = self.errors(step, converged_only, train);
        let k = self.runs.len();
        let which = if train { "train" } else { "test" };
        let mut out = String::new();
        for (r, side) in self.runs.iter().enumerate() {
            out.push_str(&format!(
                "{}: {} {}{} at {}\n",
                side.name,
                side.log.header.preset,
                side.about,
                if side.about.is_empty() { "" } else { "," },
                self.source(r, step, converged_only).describe()
            ));
        }
        let name_w = self
            .taps
            .iter()
            .map(|t| t.name.chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        let mut heads: Vec<String> = self.runs.iter().map(|s| s.name.clone()).collect();
        for s in &self.runs[1..] {
            heads.push(format!("{}-{}", s.name, self.runs[0].name));
        }
        let widths: Vec<usize> = heads.iter().map(|h| h.chars().count().max(7)).collect();
        out.push_str(&format!("\n{which} error\n{:<name_w$}", "tap"));
        for (h, w) in heads.iter().zip(&widths) {
            out.push_str(&format!("  {h:>w$}"));
        }
        out.push('\n');
        for (t, tap) in self.taps.iter().enumerate() {
            out.push_str(&format!("{:<name_w$}", tap.name));
            let cells = errors
                .iter()
                .take(k)
                .map(|e| {
                    if e[t].is_nan() {
                        "-".to_string()
                    } else {
                        format!("{:.4}", e[t])
                    }
                })
                .chain(errors.iter().take(k).skip(1).map(|e| {
                    let d = e[t] - errors[0][t];
                    if d.is_nan() {
                        "-".to_string()
                    } else {
                        format!("{d:+.4}")
                    }
                }));
            for (c, w) in cells.zip(&widths) {
                out.push_str(&format!("  {c:>w$}"));
            }
            out.push('\n');
        }
        out
    }
}

/// Short unique names for `paths`: the file stems, with the parent folder (then the number) where
/// two stems are the same.
fn unique_names(paths: &[&Path]) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into())
    };
    let mut names: Vec<String> = paths.iter().map(|p| stem(p)).collect();
    let dup = |names: &[String], i: usize| names.iter().filter(|n| **n == names[i]).count() > 1;
    let with_parent: Vec<String> = paths
        .iter()
        .map(|p| {
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|d| d.to_string_lossy().to_string());
            match parent {
                Some(d) => format!("{d}/{}", stem(p)),
                None => stem(p),
            }
        })
        .collect();
    let first = names.clone();
    for i in 0..names.len() {
        if dup(&first, i) {
            names[i] = with_parent[i].clone();
        }
    }
    let second = names.clone();
    for (i, n) in names.iter_mut().enumerate() {
        if dup(&second, i) {
            n.push_str(&format!("#{}", i + 1));
        }
    }
    names
}

/// Per log, what sets it apart: its preset where presets differ, then every parameter (and the
/// seed) whose value differs between the logs.
fn differences(logs: &[&RunLog]) -> Vec<String> {
    let presets_differ = logs
        .iter()
        .any(|l| l.header.preset != logs[0].header.preset);
    let mut keys: Vec<&String> = logs.iter().flat_map(|l| l.header.params.keys()).collect();
    keys.sort();
    keys.dedup();
    let seeds_differ = logs.iter().any(|l| l.header.seed != logs[0].header.seed);
    logs.iter()
        .map(|l| {
            let mut parts = Vec::new();
            if presets_differ {
                parts.push(l.header.preset.clone());
            }
            for k in &keys {
                let v = |l: &RunLog| l.header.params.get(*k).map(|v| v.to_string());
                if logs.iter().any(|o| v(o) != v(logs[0])) {
                    parts.push(format!("{k}={}", v(l).unwrap_or_else(|| "-".into())));
                }
            }
            if seeds_differ {
                parts.push(format!("seed={}", l.header.seed));
            }
            parts.join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{Record, RunHeader};

    fn log(h: &RunHeader, steps: &[(u64, bool)], scale: f64) -> RunLog {
        let records = steps
            .iter()
            .enumerate()
            .map(|(k, &(step, converged))| {
                let mut s = crate::tui::sample::snapshot(h, k, converged);
                s.step = step;
                for p in &mut s.probes {
                    p.reading.train_error *= scale;
                    p.reading.test_error = p.reading.test_error.map(|e| e * scale);
                }
                Record::Snapshot(s)
            })
            .collect();
        RunLog {
            header: h.clone(),
            records,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn probes_align_by_name_with_extra_ones_in_model_order() {
        let a = crate::tui::sample::header("untrained-mlp", &["depth=3"]).unwrap();
        let mut b = crate::tui::sample::header("untrained-mlp", &["depth=4"]).unwrap();
        // Run b has one more layer (h04) and no probe on h02.
        b.probes.retain(|p| p.name != "h02");
        let names = |h: &RunHeader| h.probes.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), ["input", "h01", "h02", "h03"]);
        let c = Comparison::new(vec![
            ("x/a.jsonl".into(), log(&a, &[(0, true)], 1.0)),
            ("y/b.jsonl".into(), log(&b, &[(0, true)], 1.0)),
        ])
        .unwrap();
        let got: Vec<(&str, Vec<Option<usize>>)> = c
            .taps
            .iter()
            .map(|t| (t.name.as_str(), t.at.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("input", vec![Some(0), Some(0)]),
                ("h01", vec![Some(1), Some(1)]),
                ("h02", vec![Some(2), None]),
                ("h03", vec![Some(3), Some(2)]),
                ("h04", vec![None, Some(3)]),
            ]
        );
        assert_eq!(c.runs[0].name, "a");
        assert_eq!(c.runs[1].about, "depth=4");
        assert_eq!(c.runs[0].about, "depth=3");
    }

    #[test]
    fn runs_line_up_at_each_step_by_their_newest_snapshot() {
        let h = crate::tui::sample::header("bifurcation", &[]).unwrap();
        // a: converged at 0 and 200, online at 100; b: converged at 0, 100 and 300.
        let a = log(&h, &[(0, true), (100, false), (200, true)], 1.0);
        let b = log(&h, &[(0, true), (100, true), (300, true)], 2.0);
        let (ea, eb) = (a.clone(), b.clone());
        let c = Comparison::new(vec![("a.jsonl".into(), a), ("b.jsonl".into(), b)]).unwrap();
        assert_eq!(c.steps(true), [0, 100, 200, 300]);
        assert_eq!(c.steps(false), [0, 100, 200, 300]);
        let test = |l: &RunLog, k: usize, i: usize| {
            l.snapshots().nth(k).unwrap().probes[i]
                .reading
                .test_error
                .unwrap()
        };
        // At 100, converged only: a's step 0, b's step 100; every snapshot: a's online one.
        let e = c.errors(100, true, false);
        assert_eq!(e[0][2], test(&ea, 0, 2));
        assert_eq!(e[1][2], test(&eb, 1, 2));
        let e = c.errors(100, false, false);
        assert_eq!(e[0][2], test(&ea, 1, 2));
        // At 250: a's step 200, b's step 100.
        let e = c.errors(250, true, false);
        assert_eq!(e[0][1], test(&ea, 2, 1));
        assert_eq!(e[1][1], test(&eb, 1, 1));
        assert_eq!(c.source(0, 250, true).describe(), "step 200");
        assert_eq!(
            c.source(0, 150, false).describe(),
            "online online 100 (step 100)"
        );
        // Before a run's first snapshot there is nothing.
        let late = log(&h, &[(50, true)], 1.0);
        let c = Comparison::new(vec![
            ("a.jsonl".into(), late),
            ("b.jsonl".into(), ea.clone()),
        ])
        .unwrap();
        assert!(c.errors(0, true, false)[0].iter().all(|v| v.is_nan()));
        assert_eq!(c.source(0, 0, true), Source::None);
    }

    #[test]
    fn dataset_runs_compare_their_means_and_the_table_shows_differences() {
        let h = crate::tui::sample::header("untrained-mlp", &["depth=2"]).unwrap();
        let with_sets = |scale: f64| {
            let mut l = log(&h, &[(0, true), (0, true)], scale);
            for (d, r) in l.records.iter_mut().enumerate() {
                if let Record::Snapshot(s) = r {
                    s.dataset = Some(d);
                    s.probes[1].reading.train_error = 0.1 * (d as f64 + 1.0) * scale;
                }
            }
            l
        };
        let c = Comparison::new(vec![
            ("one.jsonl".into(), with_sets(1.0)),
            ("two.jsonl".into(), with_sets(2.0)),
        ])
        .unwrap();
        // Mean of 0.1 and 0.2, and of 0.2 and 0.4.
        let e = c.errors(0, true, true);
        assert!((e[0][1] - 0.15).abs() < 1e-12 && (e[1][1] - 0.3).abs() < 1e-12);
        let t = c.table(0, true, true);
        let row = t.lines().find(|l| l.starts_with("h01")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["h01", "0.1500", "0.3000", "+0.1500"], "{t}");
        assert!(t.contains("mean of 2 datasets"), "{t}");
    }

    #[test]
    fn runs_with_no_probe_in_common_are_refused_naming_both() {
        let a = crate::tui::sample::header("bifurcation", &[]).unwrap();
        let mut b = a.clone();
        for p in &mut b.probes {
            p.name = format!("other_{}", p.name);
        }
        let e = Comparison::new(vec![
            ("runs/a.jsonl".into(), log(&a, &[(0, true)], 1.0)),
            ("runs/b.jsonl".into(), log(&b, &[(0, true)], 1.0)),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("runs/a.jsonl") && e.contains("runs/b.jsonl") && e.contains("no probe"),
            "{e}"
        );
    }

    #[test]
    fn names_stay_short_and_unique() {
        let p = |s: &str| std::path::PathBuf::from(s);
        let (a, b, c) = (p("x/run.jsonl"), p("y/run.jsonl"), p("z/other.jsonl"));
        assert_eq!(unique_names(&[&a, &b, &c]), ["x/run", "y/run", "other"]);
        let (a, b) = (p("x/run.jsonl"), p("x/run.jsonl"));
        assert_eq!(unique_names(&[&a, &b]), ["x/run#1", "x/run#2"]);
    }
}
