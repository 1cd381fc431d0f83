//! Findings computed from the readings, the things a careful reader of the paper looks for:
//! error rising with depth at initialisation (sec 3.3, "garbage forwardprop"), a concatenation no
//! better than one of its branches alone (sec 3.2), a run of layers whose error does not move
//! while the rest learn (sec 3.6, the skip connection's failure), and NaN or divergence.
//!
//! A [`Watch`] takes the snapshots one by one and keeps only what the rules need (the first and
//! the newest converged snapshot, the mean over datasets, the least model loss), so it costs the
//! same at step 10 and at step 10 million. The recorder stores each snapshot's alerts in the run
//! log; the UI and `probescope status` compute them the same way.

use crate::graph::Op;
use crate::runlog::{Record, RunHeader, Snapshot, SnapshotKind};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Error rises with depth at initialisation.
    GarbageForwardprop,
    /// A concatenation does no better than one of its inputs alone.
    ConcatNoBetter,
    /// A run of layers does not move while the rest learn.
    Frozen,
    /// A NaN reading, or the model's loss NaN or infinite.
    NotANumber,
    /// The model's loss far above its best.
    Diverging,
    /// After training, the model's own error is still near chance.
    NotLearning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The sentence the user reads.
    pub message: String,
    /// A few words, for a status line.
    pub short: String,
}

/// Error rising with depth: the deep end's error is at least this fraction of chance above the
/// shallow end's...
const RISE_OF_CHANCE: f64 = 0.25;
/// ...and the rank correlation of error with depth at least this.
const RISE_CORRELATION: f64 = 0.6;
/// A concatenation "does no better" unless its error is this much below its best input's.
const CONCAT_MARGIN: f64 = 0.002;
/// A tap "has not improved" when its error fell by less than this (or rose: the layers that
/// training bypasses in sec 3.6 drift, and with a skip connection they get worse)...
const STILL: f64 = 0.005;
/// ...while at least three others improved by more than this...
const LEARNED: f64 = 0.02;
/// ...in a run of at least this many consecutive taps (and a tenth of all).
const FROZEN_RUN: usize = 4;
/// A trained model whose error is within this of chance (1 - 1/K) "is not learning".
const NEAR_CHANCE: f64 = 0.05;
/// The model's loss this many times its least is "diverging".
const DIVERGE_FACTOR: f64 = 10.0;

/// The error a rule reads: test where the snapshot has it, else train.
fn shown(s: &Snapshot) -> Vec<f64> {
    s.probes
        .iter()
        .map(|p| p.reading.test_error.unwrap_or(p.reading.train_error))
        .collect()
}

/// Spearman's rank correlation of `v` with its index (NaNs left out).
pub fn rank_correlation(v: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = v
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .map(|(i, e)| (i as f64, *e))
        .collect();
    let n = pts.len();
    if n < 3 {
        return 0.0;
    }
    let ranks = |xs: Vec<f64>| {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        let mut r = vec![0.0; xs.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
                j += 1;
            }
            // Ties share their mean rank.
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let a = ranks(pts.iter().map(|p| p.0).collect());
    let b = ranks(pts.iter().map(|p| p.1).collect());
    let mean = (n as f64 - 1.0) / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        sab += (x - mean) * (y - mean);
        saa += (x - mean) * (x - mean);
        sbb += (y - mean) * (y - mean);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Follows a run's snapshots and says which findings hold.
#[derive(Debug, Clone)]
pub struct Watch {
    header: RunHeader,
    chance: f64,
    /// Sum of the errors over datasets, and how many.
    dataset_sum: Option<(Vec<f64>, usize)>,
    first: Option<Snapshot>,
    last: Option<Snapshot>,
    least_loss: f64,
    losses: usize,
}

impl Watch {
    /// A watch over the run that `header` describes.
    pub fn new(header: &RunHeader) -> Self {
        Self {
            chance: 1.0 - 1.0 / header.graph.classes.max(2) as f64,
            header: header.clone(),
            dataset_sum: None,
            first: None,
            last: None,
            least_loss: f64::INFINITY,
            losses: 0,
        }
    }

    /// Takes in `s`; returns the findings that hold after it.
    pub fn push(&mut self, s: &Snapshot) -> Vec<Alert> {
        let mut out = Vec::new();
        // NaN readings, in the snapshot itself.
        let nan: Vec<&str> = s
            .probes
            .iter()
            .filter(|p| p.reading.train_error.is_nan())
            .map(|p| p.probe.as_str())
            .collect();
        if !nan.is_empty() {
            let more = if nan.len() > 4 {
                format!(" and {} more", nan.len() - 4)
            } else {
                String::new()
            };
            out.push(Alert {
                kind: AlertKind::NotANumber,
                message: format!(
                    "NaN probe readings at {}{more} (step {}): the fit failed on degenerate \
                     features",
                    nan[..nan.len().min(4)].join(", "),
                    s.step
                ),
                short: format!("NaN at {}", nan[0]),
            });
        }
        if let Some(m) = &s.model {
            if !m.loss.is_finite() {
                out.push(Alert {
                    kind: AlertKind::NotANumber,
                    message: format!(
                        "the model's loss is {} at step {}: training diverged",
                        m.loss, s.step
                    ),
                    short: "loss NaN".into(),
                });
            } else {
                self.losses += 1;
                if self.losses > 3 && m.loss > DIVERGE_FACTOR * self.least_loss {
                    out.push(Alert {
                        kind: AlertKind::Diverging,
                        message: format!(
                            "the model's loss {:.3} at step {} is over {DIVERGE_FACTOR}x its best \
                             {:.3}: diverging?",
                            m.loss, s.step, self.least_loss
                        ),
                        short: "loss diverging".into(),
                    });
                }
                self.least_loss = self.least_loss.min(m.loss);
            }
        }
        let n = self.header.probes.len();
        if s.dataset.is_some() {
            let (sum, k) = self.dataset_sum.get_or_insert_with(|| (vec![0.0; n], 0));
            for (acc, e) in sum.iter_mut().zip(shown(s)) {
                *acc += e;
            }
            *k += 1;
        } else if s.kind == SnapshotKind::Converged {
            if self.first.is_none() {
                self.first = Some(s.clone());
            }
            self.last = Some(s.clone());
        }
        // At initialisation: the mean over datasets, or the first converged snapshot at step 0.
        let mean = self.dataset_mean().map(|(m, _)| m);
        let init: Option<Vec<f64>> = match (&mean, &self.first) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(f)) if f.step == 0 => Some(shown(f)),
            _ => None,
        };
        if let Some(e) = init {
            out.extend(self.garbage_forwardprop(&e));
        }
        let latest = match (mean, &self.last) {
            (Some(m), _) => Some(m),
            (None, Some(l)) => Some(shown(l)),
            _ => None,
        };
        if let Some(e) = &latest {
            out.extend(self.concat_no_better(e));
        }
        if let (Some(f), Some(l)) = (&self.first, &self.last) {
            if l.step > f.step {
                out.extend(self.frozen(f, l));
                out.extend(self.not_learning(l));
            }
        }
        out
    }

    fn not_learning(&self, last: &Snapshot) -> Option<Alert> {
        let m = last.model.as_ref()?;
        let e = m.test_error.or(m.train_error)?;
        (e.is_finite() && e >= self.chance - NEAR_CHANCE).then(|| Alert {
            kind: AlertKind::NotLearning,
            message: format!(
                "the model is not learning: its error is {e:.3} at step {} (chance {:.2}); a deep \
                 network without help (auxiliary heads, a skip connection) does not train (sec 3.6)",
                last.step, self.chance
            ),
            short: "model not learning".into(),
        })
    }

    /// For presets that repeat over datasets: the mean error per probe over the datasets so
    /// far (test where there is one, else train), and how many.
    pub fn dataset_mean(&self) -> Option<(Vec<f64>, usize)> {
        let (sum, k) = self.dataset_sum.as_ref()?;
        Some((sum.iter().map(|v| v / *k as f64).collect(), *k))
    }

    /// The newest converged snapshot of a training run (not a dataset's).
    pub fn newest_converged(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    fn name(&self, i: usize) -> &str {
        &self.header.probes[i].name
    }

    fn garbage_forwardprop(&self, e: &[f64]) -> Option<Alert> {
        let n = e.len();
        // Depth means probes on different layers (not, as in feature-subset, many subsets of
        // one layer).
        let mut taps: Vec<&str> = self.header.probes.iter().map(|p| p.tap.as_str()).collect();
        taps.sort_unstable();
        taps.dedup();
        if n < 4 || taps.len() < 4 {
            return None;
        }
        let q = (n / 4).max(1);
        let (lo_i, lo) = e[..q]
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))?;
        let deep: Vec<f64> = e[n - q..]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if deep.is_empty() {
            return None;
        }
        let deep_mean = deep.iter().sum::<f64>() / deep.len() as f64;
        let rho = rank_correlation(e);
        (deep_mean - lo > RISE_OF_CHANCE * self.chance && rho >= RISE_CORRELATION).then(|| Alert {
            kind: AlertKind::GarbageForwardprop,
            message: format!(
                "at initialisation the error rises with depth, {} {:.3} to {:.3} at the deepest \
                 quarter (chance {:.2}): deep layers lose the input's information (sec 3.3)",
                self.name(lo_i),
                lo,
                deep_mean,
                self.chance
            ),
            short: "error rises with depth at init".into(),
        })
    }

    fn concat_no_better(&self, e: &[f64]) -> Vec<Alert> {
        let probe_on = |tap: &str| self.header.probes.iter().position(|p| p.tap == tap);
        let mut out = Vec::new();
        for node in &self.header.graph.nodes {
            let Op::Concat { inputs } = &node.op else {
                continue;
            };
            let Some(c) = probe_on(&node.name) else {
                continue;
            };
            let branches: Vec<usize> = inputs.iter().filter_map(|i| probe_on(i)).collect();
            if branches.len() < 2 || !e[c].is_finite() {
                continue;
            }
            let Some(&best) = branches
                .iter()
                .filter(|&&b| e[b].is_finite())
                .min_by(|&&a, &&b| e[a].total_cmp(&e[b]))
            else {
                continue;
            };
            if e[c] > e[best] - CONCAT_MARGIN {
                out.push(Alert {
                    kind: AlertKind::ConcatNoBetter,
                    message: format!(
                        "{} ({:.3}) does no better than its branch {} alone ({:.3}): the other \
                         branch adds nothing a linear probe can use (sec 3.2)",
                        self.name(c),
                        e[c],
                        self.name(best),
                        e[best]
                    ),
                    short: format!("{} no better than {}", self.name(c), self.name(best)),
                });
            }
        }
        out
    }

    fn frozen(&self, first: &Snapshot, last: &Snapshot) -> Option<Alert> {
        let (a, b) = (shown(first), shown(last));
        let n = a.len().min(b.len());
        let moved: Vec<f64> = (0..n).map(|i| b[i] - a[i]).collect();
        let learned = moved.iter().filter(|d| **d < -LEARNED).count();
        if learned < 3 {
            return None;
        }
        let need = FROZEN_RUN.max(n / 10);
        let mut best: Option<(usize, usize)> = None;
        let mut i = 0;
        while i < n {
            if moved[i].is_finite() && moved[i] > -STILL {
                let start = i;
                while i < n && moved[i].is_finite() && moved[i] > -STILL {
                    i += 1;
                }
                if i - start >= need && best.is_none_or(|(s, e)| i - start > e - s) {
                    best = Some((start, i));
                }
            } else {
                i += 1;
            }
        }
        let (s, e) = best?;
        Some(Alert {
            kind: AlertKind::Frozen,
            message: format!(
                "{} to {} ({} taps) have not improved since step {} while {learned} others \
                 learned: training bypasses them (sec 3.6)",
                self.name(s),
                self.name(e - 1),
                e - s,
                first.step
            ),
            short: format!("{}-{} frozen", self.name(s), self.name(e - 1)),
        })
    }
}

/// The findings that hold at the end of `records` (a run log's header and records).
pub fn of_log(log: &crate::runlog::RunLog) -> Vec<Alert> {
    let mut w = Watch::new(&log.header);
    let mut now = Vec::new();
    for r in &log.records {
        if let Record::Snapshot(s) = r {
            now = w.push(s);
        }
    }
    now
}

/// A sink that writes each snapshot's findings into it (`alerts`) before passing it on.
pub struct AlertingSink<'a> {
    inner: &'a mut dyn crate::report::Sink,
    watch: Option<Watch>,
}

impl<'a> AlertingSink<'a> {
    /// Annotates what goes to `inner`.
    pub fn new(inner: &'a mut dyn crate::report::Sink) -> Self {
        Self { inner, watch: None }
    }
}

impl crate::report::Sink for AlertingSink<'_> {
    fn record(&mut self, record: &Record) -> anyhow::Result<()> {
        match record {
            Record::Run(h) => {
                self.watch = Some(Watch::new(h));
                self.inner.record(record)
            }
            Record::Snapshot(s) => match &mut self.watch {
                Some(w) => {
                    let mut s = s.clone();
                    s.alerts = w.push(&s).into_iter().map(|a| a.message).collect();
                    self.inner.record(&Record::Snapshot(s))
                }
                None => self.inner.record(record),
            },
            _ => self.inner.record(record),
        }
    }

    fn progress(&mut self, message: &str) {
        self.inner.progress(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::sample;

    fn with_errors(h: &RunHeader, step: u64, e: &[f64]) -> Snapshot {
        let mut s = sample::snapshot(h, 0, true);
        s.step = step;
        for (p, v) in s.probes.iter_mut().zip(e) {
            p.reading.train_error = *v;
            p.reading.test_error = Some(*v);
        }
        s
    }

    #[test]
    fn rank_correlation_matches_hand_values() {
        assert!((rank_correlation(&[0.1, 0.2, 0.3, 0.4]) - 1.0).abs() < 1e-12);
        assert!((rank_correlation(&[0.4, 0.3, 0.2, 0.1]) + 1.0).abs() < 1e-12);
        // Ranks of [1, 3, 2, 4] against [0, 1, 2, 3]: 1 - 6 * 2 / (4 * 15) = 0.8.
        assert!((rank_correlation(&[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn error_rising_with_depth_at_init_fires_and_a_flat_profile_does_not() {
        let h = sample::header("untrained-mlp", &["depth=7"]).unwrap();
        assert_eq!(h.probes.len(), 8);
        let rising = [0.0, 0.05, 0.1, 0.2, 0.3, 0.38, 0.45, 0.48];
        let mut w = Watch::new(&h);
        let a = w.push(&with_errors(&h, 0, &rising));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, AlertKind::GarbageForwardprop);
        assert!(a[0].message.contains("input 0.000"), "{}", a[0].message);
        let flat = [0.1, 0.09, 0.1, 0.11, 0.1, 0.09, 0.1, 0.12];
        assert!(Watch::new(&h).push(&with_errors(&h, 0, &flat)).is_empty());
        // Not at initialisation: a trained model's profile is no finding of sec 3.3.
        assert!(Watch::new(&h)
            .push(&with_errors(&h, 500, &rising))
            .is_empty());
    }

    #[test]
    fn a_concat_no_better_than_a_branch_fires() {
        let h = sample::header("bifurcation", &[]).unwrap();
        let concat = h
            .graph
            .nodes
            .iter()
            .find_map(|n| match &n.op {
                Op::Concat { inputs } => Some((n.name.clone(), inputs.clone())),
                _ => None,
            })
            .expect("bifurcation has a concat");
        let at = |tap: &str| h.probes.iter().position(|p| p.tap == tap).unwrap();
        let mut e = vec![0.3; h.probes.len()];
        e[at(&concat.1[0])] = 0.10;
        e[at(&concat.1[1])] = 0.20;
        e[at(&concat.0)] = 0.05;
        assert!(Watch::new(&h).push(&with_errors(&h, 0, &e)).is_empty());
        e[at(&concat.0)] = 0.12;
        let a = Watch::new(&h).push(&with_errors(&h, 0, &e));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, AlertKind::ConcatNoBetter);
    }

    #[test]
    fn layers_that_do_not_move_while_others_learn_fire() {
        let h = sample::header("untrained-mlp", &["depth=12"]).unwrap();
        let n = h.probes.len();
        let init = vec![0.5; n];
        // Taps 2..=7 stay put or get worse (as the bypassed layers of sec 3.6's skip model do);
        // the others fall by 0.2.
        let later: Vec<f64> = (0..n)
            .map(|i| match i {
                2..=4 => 0.501,
                5..=7 => 0.5 + 0.05 * i as f64,
                _ => 0.3,
            })
            .collect();
        let mut w = Watch::new(&h);
        w.push(&with_errors(&h, 0, &init));
        let a = w.push(&with_errors(&h, 1000, &later));
        let frozen: Vec<_> = a.iter().filter(|a| a.kind == AlertKind::Frozen).collect();
        assert_eq!(frozen.len(), 1, "{a:?}");
        assert!(
            frozen[0].message.contains("h02 to h07 (6 taps)"),
            "{}",
            frozen[0].message
        );
        // Everyone learns: quiet.
        let mut w = Watch::new(&h);
        w.push(&with_errors(&h, 0, &init));
        let all = vec![0.3; n];
        assert!(w
            .push(&with_errors(&h, 1000, &all))
            .iter()
            .all(|a| a.kind != AlertKind::Frozen));
    }

    #[test]
    fn nan_and_divergence_fire() {
        let h = sample::header("bifurcation", &[]).unwrap();
        let mut w = Watch::new(&h);
        let mut losses = vec![1.0, 0.5, 0.2, 0.1];
        losses.push(5.0);
        let mut last = Vec::new();
        for (k, l) in losses.iter().enumerate() {
            let mut s = sample::snapshot(&h, k, false);
            s.model.as_mut().unwrap().loss = *l;
            last = w.push(&s);
        }
        assert!(
            last.iter().any(|a| a.kind == AlertKind::Diverging),
            "{last:?}"
        );
        let mut s = sample::snapshot(&h, 5, false);
        s.model.as_mut().unwrap().loss = f64::NAN;
        s.probes[1].reading.train_error = f64::NAN;
        let a = w.push(&s);
        assert_eq!(
            a.iter().filter(|a| a.kind == AlertKind::NotANumber).count(),
            2,
            "{a:?}"
        );
    }

    #[test]
    fn a_trained_model_near_chance_is_not_learning() {
        let h = sample::header("bifurcation", &[]).unwrap();
        let at = |step: u64, error: f64| {
            let mut s = sample::snapshot(&h, 0, true);
            s.step = step;
            s.model.as_mut().unwrap().test_error = Some(error);
            s
        };
        // Chance is 0.5 for two classes: 0.46 after training is within 0.05 of it.
        let mut w = Watch::new(&h);
        assert!(w
            .push(&at(0, 0.5))
            .iter()
            .all(|a| a.kind != AlertKind::NotLearning));
        let a = w.push(&at(500, 0.46));
        let found: Vec<_> = a
            .iter()
            .filter(|a| a.kind == AlertKind::NotLearning)
            .collect();
        assert_eq!(found.len(), 1, "{a:?}");
        assert!(
            found[0].message.contains("0.460 at step 500"),
            "{}",
            found[0].message
        );
        // 0.44 is learning.
        let mut w = Watch::new(&h);
        w.push(&at(0, 0.5));
        assert!(w
            .push(&at(500, 0.44))
            .iter()
            .all(|a| a.kind != AlertKind::NotLearning));
    }

    #[test]
    fn a_healthy_run_is_quiet() {
        // Errors fall with depth, the concatenation beats both branches, every tap learns and
        // the loss falls.
        let h = sample::header("bifurcation", &[]).unwrap();
        let n = h.probes.len();
        let concat = h
            .graph
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Concat { .. }))
            .map(|n| n.name.clone())
            .unwrap();
        let c = h.probes.iter().position(|p| p.tap == concat).unwrap();
        let mut w = Watch::new(&h);
        for (k, (step, base)) in [(0, 0.3), (100, 0.2), (200, 0.1)].into_iter().enumerate() {
            let mut e: Vec<f64> = (0..n).map(|i| base - 0.01 * i as f64 / n as f64).collect();
            e[c] = base / 3.0;
            let mut s = with_errors(&h, step, &e);
            s.model.as_mut().unwrap().loss = 1.0 / (1.0 + k as f64);
            let a = w.push(&s);
            assert!(a.is_empty(), "step {step}: {a:?}");
        }
    }
}
