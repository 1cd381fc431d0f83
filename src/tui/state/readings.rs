//! The readings the panes show of each tap: its bar values in the chosen mode, its health
//! flags, selectivity, level on the colour scale, the transfer matrix and the drift rows.

use super::*;

/// What makes a probe's reading not to be trusted blindly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFlag {
    /// The newest converged fit stopped at its iteration limit.
    NotConverged,
    /// Its validation error is past its best (by more than [`PAST_BEST`]).
    PastBest,
    /// Test error well above train error (more than [`OVERFIT_GAP`], and half the train error).
    Overfits,
    /// The newest converged reading is older than a tenth of the run (or 1,000 steps).
    Stale,
    /// The reading is NaN.
    NaN,
}

impl HealthFlag {
    /// A few words for the inspector.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotConverged => "not converged",
            Self::PastBest => "past its best",
            Self::Overfits => "overfits",
            Self::Stale => "stale",
            Self::NaN => "NaN",
        }
    }
}

/// Validation error this far above its best is "past its best".
pub const PAST_BEST: f64 = 0.01;

/// Test less train error above this (and above half the train error) "overfits".
pub const OVERFIT_GAP: f64 = 0.03;

/// A probe's health: the flags and the figures behind them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    /// What is wrong (empty: nothing).
    pub flags: Vec<HealthFlag>,
    /// Least validation error over the converged snapshots kept, and its step.
    pub best_val: Option<(f64, u64)>,
    /// The newest converged snapshot's validation error.
    pub last_val: Option<f64>,
    /// Test (or validation) less train error of the newest converged reading.
    pub gap: Option<f64>,
    /// Steps between the newest converged reading and the newest snapshot.
    pub age: Option<u64>,
}

impl App {
    /// The bars' values for probe `i`: (train, test), NaN where missing. A running mean over
    /// datasets where the preset repeats over datasets, else the newest snapshot (or the one
    /// looked back at).
    pub fn bar_values(&self, i: usize) -> (f64, f64) {
        if let (Some((tr, te, k)), None) = (&self.mean, self.travel) {
            let k = *k as f64;
            return (tr[i] / k, te[i] / k);
        }
        match self.shown() {
            Some(s) => s.probes.get(i).map_or((f64::NAN, f64::NAN), |r| {
                (
                    r.reading.train_error,
                    r.reading.test_error.unwrap_or(f64::NAN),
                )
            }),
            None => (f64::NAN, f64::NAN),
        }
    }

    /// The transfer matrix to show (`transfer=on`): the label of its snapshot and its rows (the
    /// snapshot looked back at if it has one, else the newest converged one that has one).
    pub fn transfer_matrix(&self) -> Option<(String, Vec<Vec<Option<f64>>>)> {
        let rows = |s: &Snapshot| -> Option<Vec<Vec<Option<f64>>>> {
            s.probes
                .iter()
                .map(|p| p.reading.transfer.clone())
                .collect::<Option<Vec<_>>>()
        };
        let travelled = self
            .travel
            .and_then(|_| self.shown())
            .and_then(|s| Some((s, rows(s)?)));
        let (s, m) = travelled.or_else(|| {
            self.kept
                .converged
                .iter()
                .rev()
                .find_map(|(_, s)| Some((s, rows(s)?)))
        })?;
        Some((s.label.clone(), m))
    }

    /// The drift picture: per converged snapshot with drift readings, its step and per tap the
    /// previous probe's error on its features less its own probe's (NaN where unknown).
    pub fn drift_rows(&self) -> Vec<(u64, Vec<f64>)> {
        self.kept
            .converged
            .iter()
            .filter(|(_, s)| s.probes.iter().any(|p| p.reading.drift_error.is_some()))
            .map(|(_, s)| {
                let v = s
                    .probes
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let own = p
                            .reading
                            .transfer
                            .as_ref()
                            .and_then(|r| r.get(i).copied().flatten());
                        match (p.reading.drift_error, own) {
                            (Some(d), Some(o)) => d - o,
                            _ => f64::NAN,
                        }
                    })
                    .collect();
                (s.step, v)
            })
            .collect()
    }

    /// Whether the run fits control twins (`selectivity=on`).
    pub fn has_selectivity(&self) -> bool {
        self.kept
            .converged
            .iter()
            .any(|(_, s)| s.probes.iter().any(|p| p.reading.control_error.is_some()))
    }

    /// Probe `i`'s selectivity (control error less train error) and control error, NaN where
    /// unknown: the mean over datasets where the preset repeats over datasets, else the newest
    /// converged snapshot (or the one looked back at, if converged).
    pub fn selectivity(&self, i: usize) -> (f64, f64) {
        let of = |s: &Snapshot| {
            s.probes.get(i).and_then(|p| {
                let c = p.reading.control_error?;
                Some((c - p.reading.train_error, c))
            })
        };
        if self.mean.is_some() && self.travel.is_none() {
            let v: Vec<(f64, f64)> = self
                .kept
                .converged
                .iter()
                .filter(|(_, s)| s.dataset.is_some())
                .filter_map(|(_, s)| of(s))
                .collect();
            if v.is_empty() {
                return (f64::NAN, f64::NAN);
            }
            let k = v.len() as f64;
            return (
                v.iter().map(|x| x.0).sum::<f64>() / k,
                v.iter().map(|x| x.1).sum::<f64>() / k,
            );
        }
        let travelled = self.shown().filter(|s| s.kind == SnapshotKind::Converged);
        travelled
            .or(self.kept.converged.last().map(|(_, s)| s))
            .and_then(of)
            .unwrap_or((f64::NAN, f64::NAN))
    }

    /// Probe `i`'s health, from the converged snapshots kept and the newest snapshot.
    pub fn health(&self, i: usize) -> Health {
        let mut h = Health::default();
        let latest = self.latest.as_ref().and_then(|s| s.probes.get(i));
        if latest.is_some_and(|r| r.reading.train_error.is_nan()) {
            h.flags.push(HealthFlag::NaN);
        }
        let conv = &self.kept.converged;
        let Some((_, last)) = conv.last() else {
            return h;
        };
        let Some(r) = last.probes.get(i) else {
            return h;
        };
        if !r.reading.converged {
            h.flags.push(HealthFlag::NotConverged);
        }
        let held_out = r.reading.test_error.or(r.reading.val_error);
        if let Some(t) = held_out {
            let gap = t - r.reading.train_error;
            h.gap = Some(gap);
            if gap > OVERFIT_GAP && gap > 0.5 * r.reading.train_error {
                h.flags.push(HealthFlag::Overfits);
            }
        }
        // Best against last validation error, and age, only along a training run (not across
        // the datasets of a repeated experiment).
        if self.mean.is_none() {
            h.last_val = r.reading.val_error;
            h.best_val = conv
                .iter()
                .filter_map(|(_, s)| {
                    let v = s.probes.get(i)?.reading.val_error?;
                    v.is_finite().then_some((v, s.step))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let (Some((best, _)), Some(last)) = (h.best_val, h.last_val) {
                if last > best + PAST_BEST {
                    h.flags.push(HealthFlag::PastBest);
                }
            }
            if let Some(now) = &self.latest {
                let age = now.step.saturating_sub(last.step);
                h.age = Some(age);
                let total = self
                    .info
                    .as_ref()
                    .and_then(|i| i.total.as_ref())
                    .filter(|(unit, _)| unit == "steps")
                    .map(|(_, n)| *n);
                let limit = total.map_or(1000, |t| (t / 10).max(1));
                if self.trains() && age > limit {
                    h.flags.push(HealthFlag::Stale);
                }
            }
        }
        h
    }

    /// The error that colours probe `i` (test where there is one, else train), as a fraction of
    /// chance: 0 perfect, 1 chance or worse.
    pub fn level(&self, i: usize) -> f64 {
        let (tr, te) = self.bar_values(i);
        let e = if te.is_nan() { tr } else { te };
        e / self.chance()
    }

    /// What the bars' title says they show.
    pub fn bars_source(&self) -> String {
        if let (Some((_, _, k)), None) = (&self.mean, self.travel) {
            return format!("mean of {k} dataset{}", if *k == 1 { "" } else { "s" });
        }
        let back = if self.travel.is_some() { "⏪ " } else { "" };
        match self.shown() {
            Some(s) => format!(
                "{back}{} {}",
                match s.kind {
                    SnapshotKind::Converged => "converged",
                    SnapshotKind::Online => "online",
                },
                s.label
            ),
            None => "waiting for the first snapshot".into(),
        }
    }
}
