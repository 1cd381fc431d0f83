//! `probescope paper`: the paper's experiments run one after another, each figure's claims set
//! beside what this run measured, with a verdict, in a folder holding the run logs, the figures
//! and a `REPORT.md`.
//!
//! The experiments are the presets with their defaults (or, with `--quick`, at sizes that finish
//! in minutes on two CPU cores). Each claim is checked by a rule written here from the paper's
//! statement (or a closed form, where the setting has one), with a margin of three binomial
//! standard errors of the held-out error where the claim compares two probes.
//!
//! This module runs nothing itself: the caller passes a runner that records a preset's run log
//! (the command line's `run --headless --record`), so a paper run is exactly the runs a user makes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::params::{ParamError, ParamValue};
use crate::runlog::{EndStatus, RunLog, Snapshot, SnapshotKind};
use crate::text::wrap;

/// How big the runs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Minutes on two CPU cores.
    Quick,
    /// The presets' defaults (the paper's settings where this machine allows them).
    Full,
}

/// One experiment: a preset run with settings, and the figure it stands for.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name, and the stem of its files (`deep-mlp-skip`).
    pub name: &'static str,
    /// The preset it runs.
    pub preset: &'static str,
    /// Where it is in the paper ("sec 3.6, Fig 8").
    pub figure: &'static str,
    /// What it is, one line.
    pub title: &'static str,
    /// The `--set` values of the run.
    pub sets: Vec<String>,
    /// What this size leaves out, if anything.
    pub note: Option<&'static str>,
}

impl Experiment {
    /// The command that makes its run log by hand.
    pub fn command(&self, seed: u64) -> String {
        let mut c = format!("probescope run {}", self.preset);
        for s in &self.sets {
            c.push_str(&format!(" --set {s}"));
        }
        if seed != 0 {
            c.push_str(&format!(" --seed {seed}"));
        }
        c
    }
}

fn sets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The experiments of `size`, in the order they run.
pub fn experiments(size: Size) -> Vec<Experiment> {
    let quick = size == Size::Quick;
    // Quick: half the probe samples, and online probes updated only when they are logged (they
    // are not part of any verdict).
    let mnist_quick = [
        "probe_train=5000",
        "probe_val=5000",
        "probe_test=5000",
        "online_update_every=50",
    ];
    let deep = |variant: &str, steps: &str, snapshots: &str| -> Vec<String> {
        let mut v = vec![format!("variant={variant}")];
        if quick {
            v.push(format!("steps={steps}"));
            v.push(format!("snapshots={snapshots}"));
            v.extend(sets(&mnist_quick));
        }
        v
    };
    vec![
        Experiment {
            name: "untrained-mlp",
            preset: "untrained-mlp",
            figure: "sec 3.3, Fig 3",
            title: "probes on a 32-layer MLP that is never trained, averaged over toy datasets",
            sets: if quick {
                sets(&["datasets=20"])
            } else {
                vec![]
            },
            note: None,
        },
        Experiment {
            name: "bifurcation",
            preset: "bifurcation",
            figure: "sec 3.2",
            title: "two branches that each see half of the input, and their concatenation",
            sets: vec![],
            note: None,
        },
        Experiment {
            name: "feature-subset",
            preset: "feature-subset",
            figure: "appendix A.1",
            title: "probes that read a random subset of a wide layer's features",
            sets: if quick {
                vec![]
            } else {
                sets(&["dim=100000", "classes=1000", "subsets=10,100,1000"])
            },
            note: quick.then_some(
                "the paper's size (100,000 features, 1,000 classes: about 10 GB) runs without --quick",
            ),
        },
        Experiment {
            name: "mnist-convnet",
            preset: "mnist-convnet",
            figure: "sec 3.4, Figs 4-5",
            title: "the MNIST convnet of TensorFlow's tutorial, at initialisation and trained",
            // The default 10,000 probe samples: with fewer, the first ReLU's gain from one
            // epoch of training is within noise.
            sets: if quick {
                sets(&["epochs=1", "online_update_every=50"])
            } else {
                vec![]
            },
            note: None,
        },
        Experiment {
            name: "deep-mlp-plain",
            preset: "deep-mlp",
            figure: "sec 3.6, Fig 6",
            title: "a 128-layer MLP on MNIST with no help",
            sets: deep("plain", "500", "0,500"),
            note: None,
        },
        Experiment {
            name: "deep-mlp-aux",
            preset: "deep-mlp",
            figure: "sec 3.6, Fig 7",
            title: "the 128-layer MLP with a classifier head every 16 layers",
            sets: deep("aux", "2000", "0,2000"),
            note: None,
        },
        Experiment {
            name: "deep-mlp-skip",
            preset: "deep-mlp",
            figure: "sec 3.6, Fig 8",
            title: "the 128-layer MLP whose layer 64 also reads the input",
            sets: deep("skip", "2000", "0,2000"),
            note: None,
        },
    ]
}

/// The experiments that `only` names (an experiment's name, or a preset's, which picks all its
/// experiments); every one when `only` is empty.
pub fn select(size: Size, only: &[String]) -> Result<Vec<Experiment>, ParamError> {
    let all = experiments(size);
    for o in only {
        if !all.iter().any(|e| e.name == o || e.preset == o) {
            let names: Vec<&str> = all.iter().map(|e| e.name).collect();
            return Err(ParamError(format!(
                "--only {o}: no such experiment; the experiments are: {} (a preset's name picks all of its)",
                names.join(", ")
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|e| only.is_empty() || only.iter().any(|o| e.name == o || e.preset == o))
        .collect())
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The measured figure shows what the paper says.
    Reproduced,
    /// It does not, for a reason named with it (a different measure, a smaller size).
    Differs,
    /// It does not.
    NotReproduced,
    /// The experiment did not run (or not to its end).
    NotRun,
}

impl Verdict {
    /// How the verdict is written.
    pub fn word(self) -> &'static str {
        match self {
            Self::Reproduced => "reproduced",
            Self::Differs => "differs",
            Self::NotReproduced => "not reproduced",
            Self::NotRun => "not run",
        }
    }
}

/// One claim of a figure, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The claim, one sentence.
    pub claim: String,
    /// What the paper shows (or the closed form).
    pub paper: String,
    /// What this run measured.
    pub measured: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, where the verdict is not a plain "reproduced".
    pub why: Option<String>,
}

fn check(claim: &str, paper: &str, measured: String, ok: bool) -> Check {
    Check {
        claim: claim.into(),
        paper: paper.into(),
        measured,
        verdict: if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
        why: None,
    }
}

fn not_run(claim: &str, why: String) -> Check {
    Check {
        claim: claim.into(),
        paper: String::new(),
        measured: String::new(),
        verdict: Verdict::NotRun,
        why: Some(why),
    }
}

/// A number parameter of the run (`None` if the log does not have it).
fn param(log: &RunLog, key: &str) -> Option<f64> {
    match log.header.params.get(key)? {
        ParamValue::Int(v) => Some(*v as f64),
        ParamValue::Float(v) => Some(*v),
        _ => None,
    }
}

/// The binomial standard error of an error rate `p` measured on `n` samples.
pub fn standard_error(p: f64, n: f64) -> f64 {
    (p.clamp(0.0, 1.0) * (1.0 - p.clamp(0.0, 1.0)) / n.max(1.0)).sqrt()
}

/// Three standard errors of the larger of two error rates on `n` samples each: the margin by
/// which one probe must beat another to count.
fn margin(a: f64, b: f64, n: f64) -> f64 {
    3.0 * standard_error(a.max(b), n)
}

/// The converged snapshots of a training run, in order.
fn converged(log: &RunLog) -> Vec<&Snapshot> {
    log.snapshots()
        .filter(|s| s.kind == SnapshotKind::Converged && s.dataset.is_none())
        .collect()
}

/// Probe `name`'s held-out error in `s` (test, else train).
fn err(s: &Snapshot, name: &str) -> Option<f64> {
    s.probes
        .iter()
        .find(|p| p.probe == name)
        .map(|p| p.reading.test_error.unwrap_or(p.reading.train_error))
}

fn model_error(s: &Snapshot) -> Option<f64> {
    s.model
        .as_ref()
        .and_then(|m| m.test_error.or(m.train_error))
}

/// `.123` (error rates are printed as the paper's plots read: three decimals).
fn e3(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    let s = format!("{v:.3}");
    s.strip_prefix('0').map(str::to_string).unwrap_or(s)
}

/// A count with thousands separators: `10,000`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The findings (`crate::alerts`) at the end of the run, worked out again from the log.
fn findings(log: &RunLog) -> Vec<String> {
    crate::alerts::of_log(log)
        .into_iter()
        .map(|a| a.message)
        .collect()
}

/// The claims of `exp`'s figure, checked against its run log.
pub fn judge(exp: &Experiment, log: &RunLog) -> Vec<Check> {
    judge_with(exp, log, &findings(log))
}

/// [`judge`] with the run's findings at its end, worked out once by the caller.
fn judge_with(exp: &Experiment, log: &RunLog, found: &[String]) -> Vec<Check> {
    match exp.name {
        "untrained-mlp" => untrained_mlp(log),
        "bifurcation" => bifurcation(log),
        "feature-subset" => feature_subset(log),
        "mnist-convnet" => mnist_convnet(log),
        "deep-mlp-plain" => deep_plain(log, found),
        "deep-mlp-aux" => deep_aux(log),
        "deep-mlp-skip" => deep_skip(log, found),
        other => vec![not_run(
            "the figure's claims",
            format!("no rules for experiment {other}"),
        )],
    }
}

fn untrained_mlp(log: &RunLog) -> Vec<Check> {
    let Some(sum) = log.summaries().last() else {
        return vec![not_run(
            "error climbs with depth",
            "the log has no summary over datasets".into(),
        )];
    };
    let train: Vec<f64> = sum.probes.iter().map(|p| p.train_error.mean).collect();
    let n = train.len();
    if n < 3 {
        return vec![not_run(
            "error climbs with depth",
            "fewer than three probes".into(),
        )];
    }
    let (first, last) = (&sum.probes[0], &sum.probes[n - 1]);
    let rho = crate::alerts::rank_correlation(&train);
    let mut out = vec![
        check(
            "the input is linearly separable: its probe has about 0 error",
            "about 0 at layer 0",
            format!(
                "{} {} train (mean of {} datasets)",
                first.probe,
                e3(train[0]),
                sum.datasets
            ),
            train[0] <= 0.02,
        ),
        check(
            "with depth the error climbs toward chance (0.5): an untrained layer loses information",
            "rising from about 0 toward 0.5",
            format!(
                "{} {} to {} {}, rank correlation with depth {:.2}",
                first.probe,
                e3(train[0]),
                last.probe,
                e3(train[n - 1]),
                rho
            ),
            rho >= 0.9 && train[n - 1] - train[0] >= 0.25 && train[n - 1] <= 0.52,
        ),
    ];
    if let (Some(a), Some(b)) = (&first.mean_norm, &last.mean_norm) {
        // Probes standardise every feature, so a smaller scale costs nothing until f32 runs out
        // of exponent (its smallest normal number is 1.2e-38).
        out.push(check(
            "the loss is not numerical: the deepest activations are far from underflow",
            "no underflow (the paper checks the activation norms)",
            format!(
                "mean norm {} {:.3e}, {} {:.3e} (f32 underflows below 1.2e-38)",
                first.probe, a.mean, last.probe, b.mean
            ),
            a.mean.is_finite() && b.mean.is_finite() && b.mean > 1e-20,
        ));
    }
    out
}

fn bifurcation(log: &RunLog) -> Vec<Check> {
    let snaps = converged(log);
    let (Some(last), Some(ratio), Some(n)) =
        (snaps.last(), param(log, "ratio"), param(log, "test"))
    else {
        return vec![not_run(
            "the concatenation beats both branches",
            "the log has no converged snapshot".into(),
        )];
    };
    let bound_upper = ratio.atan() / std::f64::consts::PI;
    let bound_lower = (1.0 / ratio).atan() / std::f64::consts::PI;
    let best = |prefix: &str| -> Option<(String, f64)> {
        last.probes
            .iter()
            .filter(|p| p.tap.starts_with(prefix))
            .map(|p| {
                (
                    p.probe.clone(),
                    p.reading.test_error.unwrap_or(p.reading.train_error),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
    };
    let (Some(upper), Some(lower), Some(concat)) =
        (best("upper"), best("lower"), err(last, "concat"))
    else {
        return vec![not_run(
            "the concatenation beats both branches",
            "the log lacks the upper, lower or concat probes".into(),
        )];
    };
    vec![
        check(
            "a probe on one branch cannot beat what its half of the input tells",
            "upper at least atan(r)/pi, lower at least atan(1/r)/pi (closed form)",
            format!(
                "best upper {} {} (bound {}), best lower {} {} (bound {})",
                upper.0,
                e3(upper.1),
                e3(bound_upper),
                lower.0,
                e3(lower.1),
                e3(bound_lower)
            ),
            upper.1 >= bound_upper - 3.0 * standard_error(bound_upper, n)
                && lower.1 >= bound_lower - 3.0 * standard_error(bound_lower, n),
        ),
        check(
            "after training the concatenation does better than either branch",
            "concat below both branches",
            format!(
                "concat {} against upper {}, lower {} (step {})",
                e3(concat),
                e3(upper.1),
                e3(lower.1),
                last.step
            ),
            concat < upper.1.min(lower.1) - margin(concat, upper.1.min(lower.1), n),
        ),
    ]
}

fn feature_subset(log: &RunLog) -> Vec<Check> {
    let Some(s) = converged(log)
        .last()
        .copied()
        .or_else(|| log.snapshots().last())
    else {
        return vec![not_run(
            "error falls as the subset grows",
            "the log has no snapshot".into(),
        )];
    };
    // Features per probe: the summary says; else the subset's size.
    let features = |i: usize, name: &str| -> usize {
        log.summaries()
            .last()
            .and_then(|sum| sum.probes.iter().find(|p| p.probe == name))
            .map(|p| p.features)
            .or_else(|| log.header.probes.get(i)?.subset.as_ref().map(|v| v.len()))
            .unwrap_or(0)
    };
    let mut by_size: Vec<(usize, f64, Option<f64>)> = s
        .probes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                features(i, &r.probe),
                r.reading.train_error,
                r.reading.test_error,
            )
        })
        .collect();
    by_size.sort_by_key(|x| x.0);
    let (Some(small), Some(big)) = (by_size.first(), by_size.last()) else {
        return vec![not_run(
            "error falls as the subset grows",
            "no probes".into(),
        )];
    };
    let falls = by_size.windows(2).all(|w| w[1].1 <= w[0].1 + 0.005);
    let test = |t: Option<f64>| t.map(e3).unwrap_or_else(|| "--".into());
    let mut out = vec![check(
        "a probe on more of the features has a lower error",
        "error falls with the subset size",
        format!(
            "train {} ({} features) to {} ({}); held out {} to {}",
            e3(small.1),
            small.0,
            e3(big.1),
            big.0,
            test(small.2),
            test(big.2)
        ),
        by_size.len() >= 2 && falls && small.1 - big.1 >= 0.1,
    )];
    let (dim, classes) = (
        param(log, "dim").unwrap_or(0.0),
        param(log, "classes").unwrap_or(0.0),
    );
    let paper_size = by_size.iter().find(|x| x.0 == 1000);
    if let Some(&(_, train, Some(held))) =
        paper_size.filter(|_| dim >= 100_000.0 && classes >= 1000.0)
    {
        {
            let samples = param(log, "train").unwrap_or(0.0);
            let mut c = check(
                "1,000 random features of 100,000, 1,000 classes: about 4% error",
                "about 4%",
                format!("train {}, held out {}", e3(train), e3(held)),
                (train - 0.04).abs() <= 0.03 && (held - 0.04).abs() <= 0.03,
            );
            if train <= 0.07 && held > 0.1 {
                let chance = 1.0 - 1.0 / classes.max(2.0);
                c.verdict = Verdict::Differs;
                c.why = Some(if train < 0.02 {
                    format!(
                        "neither figure is the paper's: the probe fits its {} training samples \
                         (train {}) and predicts nothing held out ({}, chance {}). A probe on \
                         1,000 of 100,000 features sees about 1% of each class score's signal, \
                         so the paper's 4% can only be a training error, on more samples than \
                         these (1,000 x 1,000 weights fit these exactly); the paper does not \
                         say how many",
                        thousands(samples),
                        e3(train),
                        e3(held),
                        e3(chance)
                    )
                } else {
                    format!(
                        "the paper's figure matches this run's training error ({}); held out \
                         it is {} (chance {}): a probe on 1,000 of 100,000 features sees about \
                         1% of each class score's signal, so the paper's 4% reads as a \
                         training error (the paper does not say which)",
                        e3(train),
                        e3(held),
                        e3(chance)
                    )
                });
            }
            out.push(c);
        }
    }
    out
}

fn mnist_convnet(log: &RunLog) -> Vec<Check> {
    let snaps = converged(log);
    let n = param(log, "probe_test").unwrap_or(10_000.0);
    let samples = param(log, "probe_train").unwrap_or(0.0);
    let Some(init) = snaps.first().filter(|s| s.step == 0) else {
        return vec![not_run(
            "the probes at initialisation",
            "the log has no converged snapshot at step 0".into(),
        )];
    };
    let (Some(input), Some(relu)) = (err(init, "input"), err(init, "conv1_postact")) else {
        return vec![not_run(
            "the probes at initialisation",
            "the log lacks the input or conv1_postact probe".into(),
        )];
    };
    let mut first = check(
        "at initialisation the probe on the input has about 8% test error",
        "about 8%",
        format!("input {}", e3(input)),
        (0.05..=0.11).contains(&input),
    );
    if input > 0.11 && samples < 50_000.0 {
        first.verdict = Verdict::Differs;
        first.why = Some(format!(
            "these probes learn from {} images, the paper's from the 50,000 training \
             images (`--set probe_train=50000`)",
            thousands(samples)
        ));
    }
    let mut out = vec![first];
    let mut first_relu = check(
        "at initialisation the first ReLU is already better than the input (about 2%)",
        "conv1_postact about 2%, below the input",
        format!("conv1_postact {} against input {}", e3(relu), e3(input)),
        relu < input - margin(relu, input, n),
    );
    if first_relu.verdict == Verdict::Reproduced && relu > 0.03 {
        first_relu.why = Some(format!(
            "the ordering holds; the value is above the paper's 2% because these probes learn \
             from {} images (the paper: 50,000; `--set probe_train=50000`)",
            thousands(samples)
        ));
    }
    out.push(first_relu);
    let Some(last) = snaps.last().filter(|s| s.step > 0) else {
        out.push(not_run(
            "after training every layer improves",
            "the log has no converged snapshot after training".into(),
        ));
        return out;
    };
    let when = match last.epoch {
        Some(e) => format!("after {e:.0} epoch{}", if e == 1.0 { "" } else { "s" }),
        None => format!("at step {}", last.step),
    };
    // From the first ReLU on, every tap must be lower; the input and conv1_preact are linear
    // functions of the input, so their probes can only stay where they were.
    let names: Vec<&str> = log.header.probes.iter().map(|p| p.name.as_str()).collect();
    let from = names
        .iter()
        .position(|n| *n == "conv1_postact")
        .unwrap_or(0);
    let mut worse = Vec::new();
    let mut least: Option<(&str, f64, f64)> = None;
    for name in &names[from..] {
        let (Some(a), Some(b)) = (err(init, name), err(last, name)) else {
            continue;
        };
        if b >= a {
            worse.push(format!("{name} {} to {}", e3(a), e3(b)));
        }
        if least.is_none_or(|l| a - b < l.1 - l.2) {
            least = Some((name, a, b));
        }
    }
    let model = model_error(last)
        .map(|m| format!("; model test error {}", e3(m)))
        .unwrap_or_default();
    let measured = if worse.is_empty() {
        let (name, a, b) = least.unwrap_or(("--", f64::NAN, f64::NAN));
        format!(
            "{} of {} lower {when}; least gain {name} {} to {}{model}",
            names.len() - from,
            names.len() - from,
            e3(a),
            e3(b)
        )
    } else {
        format!("not lower {when}: {}{model}", worse.join(", "))
    };
    let mut every = check(
        "after training every layer from the first ReLU on has a lower probe error",
        "every layer improves (Fig 5)",
        measured,
        worse.is_empty(),
    );
    if let (true, Some((name, a, b))) = (worse.is_empty(), least) {
        if a - b < margin(a, b, n) {
            every.why = Some(format!(
                "every one is lower, but {name}'s gain is within three standard errors ({}) of \
                 the {} test images",
                e3(margin(a, b, n)),
                thousands(n)
            ));
        }
    }
    out.push(every);
    let mut linear = Vec::new();
    let mut moved = false;
    for name in &names[..from] {
        if let (Some(a), Some(b)) = (err(init, name), err(last, name)) {
            linear.push(format!("{name} {} to {}", e3(a), e3(b)));
            moved |= (b - a).abs() > margin(a, b, n);
        }
    }
    if !linear.is_empty() {
        out.push(check(
            "the input and conv1_preact, linear in the input, stay where they were",
            "unchanged (a linear map adds nothing a linear probe can use)",
            format!(
                "{} (3 standard errors: {})",
                linear.join(", "),
                e3(margin(input, input, n))
            ),
            !moved,
        ));
    }
    out
}

/// The deep MLP's hidden-layer probes `h001`..: (layer number, probe name).
fn hidden(log: &RunLog) -> Vec<(usize, String)> {
    log.header
        .probes
        .iter()
        .filter_map(|p| {
            p.name
                .strip_prefix('h')
                .and_then(|d| d.parse::<usize>().ok())
                .map(|i| (i, p.name.clone()))
        })
        .collect()
}

fn ends(log: &RunLog) -> Option<(&Snapshot, &Snapshot)> {
    let snaps = converged(log);
    let first = *snaps.first()?;
    let last = *snaps.last()?;
    (first.step == 0 && last.step > 0).then_some((first, last))
}

fn deep_plain(log: &RunLog, found: &[String]) -> Vec<Check> {
    let Some((init, last)) = ends(log) else {
        return vec![not_run(
            "the plain deep MLP does not train",
            "the log has no converged snapshots at step 0 and after training".into(),
        )];
    };
    let model = model_error(last).unwrap_or(f64::NAN);
    let not_learning = found.iter().find(|f| f.contains("not learning"));
    vec![
        check(
            "a 128-layer MLP with no help does not train",
            "the model does not learn (Fig 6)",
            format!(
                "model test error {} at step {} (at initialisation {})",
                e3(model),
                last.step,
                e3(model_error(init).unwrap_or(f64::NAN))
            ),
            model >= 0.8,
        ),
        check(
            "the run's findings say so",
            "--",
            not_learning
                .cloned()
                .unwrap_or_else(|| "no \"not learning\" finding".into()),
            not_learning.is_some(),
        ),
    ]
}

fn deep_aux(log: &RunLog) -> Vec<Check> {
    let Some((init, last)) = ends(log) else {
        return vec![not_run(
            "with auxiliary heads the deep MLP trains",
            "the log has no converged snapshots at step 0 and after training".into(),
        )];
    };
    let model = model_error(last).unwrap_or(f64::NAN);
    let layers = hidden(log);
    let mut not_lower = Vec::new();
    let mut worst: Option<(String, f64)> = None;
    for (_, name) in &layers {
        let (Some(a), Some(b)) = (err(init, name), err(last, name)) else {
            continue;
        };
        if b >= a {
            not_lower.push(format!("{name} {} to {}", e3(a), e3(b)));
        }
        if worst.as_ref().is_none_or(|w| b > w.1) {
            worst = Some((name.clone(), b));
        }
    }
    let worst = worst.unwrap_or(("--".into(), f64::NAN));
    vec![
        check(
            "with a classifier head every 16 layers the 128-layer MLP trains",
            "the model learns (Fig 7)",
            format!("model test error {} at step {}", e3(model), last.step),
            model <= 0.2,
        ),
        check(
            "every layer's probe improves",
            "every layer improves (Fig 7)",
            if not_lower.is_empty() {
                format!(
                    "{} of {} lower at step {}; the highest is {} {}",
                    layers.len(),
                    layers.len(),
                    last.step,
                    worst.0,
                    e3(worst.1)
                )
            } else {
                format!("not lower: {}", not_lower.join(", "))
            },
            not_lower.is_empty() && !layers.is_empty(),
        ),
    ]
}

fn deep_skip(log: &RunLog, found: &[String]) -> Vec<Check> {
    let Some((init, last)) = ends(log) else {
        return vec![not_run(
            "the skip connection's bumps",
            "the log has no converged snapshots at step 0 and after training".into(),
        )];
    };
    let n = param(log, "probe_test").unwrap_or(10_000.0);
    let layers = hidden(log);
    let depth = layers.iter().map(|l| l.0).max().unwrap_or(0);
    let half = depth / 2;
    let before = half.saturating_sub((depth / 16).max(1));
    let name = crate::presets::deep_mlp::layer_name;
    let mut out = Vec::new();
    match (err(init, &name(before)), err(init, &name(half))) {
        (Some(a), Some(b)) => out.push(check(
            "at initialisation the skip connection makes a second bump: the middle layer sees the input",
            "two bumps: the layer after the skip far below the layers before it",
            format!("{} {}, {} {}", name(before), e3(a), name(half), e3(b)),
            b < a - 0.2,
        )),
        _ => out.push(not_run(
            "the second bump at initialisation",
            format!("the log lacks {} or {}", name(before), name(half)),
        )),
    }
    // The first few layers sit next to the input and may move a little. From depth/16 to the
    // skip, "ignored": together they gain less than a tenth of what the layers after the skip
    // gain (single layers gaining a little beyond noise are named).
    let first_ignored = (depth / 16).max(1);
    let mut gained: Vec<(String, f64)> = Vec::new();
    let (mut before_sum, mut ignored) = (0.0, 0usize);
    let (mut after_sum, mut later, mut improved) = (0.0, 0usize, 0usize);
    let mut not_lower = Vec::new();
    for (i, probe) in &layers {
        let (Some(a), Some(b)) = (err(init, probe), err(last, probe)) else {
            continue;
        };
        if (first_ignored..half).contains(i) {
            ignored += 1;
            before_sum += a - b;
            if b < a - margin(a, b, n) {
                gained.push((probe.clone(), a - b));
            }
        } else if *i >= half {
            later += 1;
            after_sum += a - b;
            if b < a {
                improved += 1;
            } else {
                not_lower.push(format!("{probe} {} to {}", e3(a), e3(b)));
            }
        }
    }
    let pair = |i: usize| match (err(init, &name(i)), err(last, &name(i))) {
        (Some(a), Some(b)) => format!("{} {} to {}", name(i), e3(a), e3(b)),
        _ => String::new(),
    };
    let before_gain = before_sum / ignored.max(1) as f64;
    let after_gain = after_sum / later.max(1) as f64;
    let signed = |v: f64| {
        if v >= 0.0 {
            format!("{} lower", e3(v))
        } else {
            format!("{} higher", e3(-v))
        }
    };
    let mut ignored_check = check(
        &format!(
            "after training, layers {first_ignored} to {} are ignored: together they gain less \
             than a tenth of what layers {half} to {depth} gain",
            half - 1
        ),
        "layers 1 to 63 ignored (Fig 8)",
        format!(
            "layers {first_ignored} to {}: on average {} at step {} (e.g. {}); layers {half} to \
             {depth}: {}",
            half - 1,
            signed(before_gain),
            last.step,
            pair(half - 1),
            signed(after_gain)
        ),
        ignored > 0 && after_gain > 0.0 && before_gain < 0.1 * after_gain,
    );
    if let Some((top, g)) = gained.iter().max_by(|x, y| x.1.total_cmp(&y.1)) {
        ignored_check.why = Some(format!(
            "{} of these {ignored} layers gain beyond three standard errors ({}), at most {} \
             ({top}), against {} on average after the skip",
            gained.len(),
            gained
                .iter()
                .map(|g| g.0.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            e3(*g),
            e3(after_gain)
        ));
    }
    out.push(ignored_check);
    out.push(check(
        &format!("while layers {half} to {depth} improve"),
        "layers 64 to 128 improve (Fig 8)",
        if not_lower.is_empty() {
            format!(
                "{improved} of {later} lower (e.g. {}); model test error {}",
                pair(depth),
                e3(model_error(last).unwrap_or(f64::NAN))
            )
        } else {
            format!("not lower: {}", not_lower.join(", "))
        },
        not_lower.is_empty() && later > 0,
    ));
    let frozen = found.iter().find(|f| f.contains("have not improved"));
    out.push(check(
        "the run's findings name the ignored layers",
        "--",
        frozen
            .cloned()
            .unwrap_or_else(|| "no \"have not improved\" finding".into()),
        frozen.is_some(),
    ));
    out
}

/// What became of one experiment.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The experiment.
    pub experiment: Experiment,
    /// Its run log, where there is one.
    pub log: Option<PathBuf>,
    /// How it got its log: "ran", "reused", or why it has none.
    pub how: String,
    /// Seconds the run took (from its end line).
    pub elapsed_s: Option<f64>,
    /// Device and peak memory, from the log.
    pub device: Option<String>,
    /// Peak resident memory of the run in bytes.
    pub peak_rss: Option<u64>,
    /// The checks.
    pub checks: Vec<Check>,
    /// The findings at the run's end.
    pub findings: Vec<String>,
    /// Figures written, relative to the folder.
    pub figures: Vec<String>,
}

/// Settings of a paper run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Quick or full.
    pub size: Size,
    /// Which experiments run (names or presets; empty: all).
    pub only: Vec<String>,
    /// The folder for the logs, figures and REPORT.md.
    pub out: PathBuf,
    /// The runs' seed.
    pub seed: u64,
    /// Run again even where a finished log with the same settings is in the folder.
    pub force: bool,
}

/// Runs one experiment: writes a finished run log at the path (the command line's
/// `run --headless --record`). An error that is a [`crate::presets::Stopped`] ends the paper run.
pub type Runner<'a> = &'a mut dyn FnMut(&Experiment, &Path) -> anyhow::Result<()>;

/// Whether the log at `path` is a finished run of `exp` with `seed` and the settings it would
/// run with now.
fn reusable(exp: &Experiment, seed: u64, path: &Path) -> Option<RunLog> {
    let log = crate::runlog::read(path).ok()?;
    let (_, params) = crate::presets::prepare(exp.preset, &exp.sets).ok()?;
    let same = log.header.preset == exp.preset
        && log.header.seed == seed
        && log.header.params == params.0
        && log.end().is_some_and(|e| e.status == EndStatus::Finished);
    same.then_some(log)
}

/// The figures drawn for an experiment: (figure, file suffix).
fn figures_of(exp: &Experiment) -> Vec<(crate::export::Figure, &'static str)> {
    use crate::export::Figure;
    match exp.preset {
        "untrained-mlp" | "feature-subset" => vec![(Figure::Curve, "curve")],
        "deep-mlp" => vec![(Figure::Panels, "panels"), (Figure::Heatmap, "heatmap")],
        _ => vec![(Figure::Bars, "bars")],
    }
}

fn outcome_of(exp: &Experiment, path: &Path, log: &RunLog, how: &str, out: &Path) -> Outcome {
    let end = log.end();
    let mut figures = Vec::new();
    for (figure, suffix) in figures_of(exp) {
        let file = format!("{}-{suffix}.svg", exp.name);
        let drawn = crate::export::plot(log, figure, &[])
            .and_then(|p| crate::export::svg_file(&p, &out.join(&file)));
        if drawn.is_ok() {
            figures.push(file);
        }
    }
    let found = findings(log);
    let finished = end.is_some_and(|e| e.status == EndStatus::Finished);
    let checks = if finished {
        judge_with(exp, log, &found)
    } else {
        vec![not_run(
            "the figure's claims",
            match end {
                Some(e) => format!(
                    "the run {}: {}",
                    match e.status {
                        EndStatus::Stopped => "was stopped",
                        _ => "failed",
                    },
                    e.message.clone().unwrap_or_default()
                ),
                None => "the run log has no end line".into(),
            },
        )]
    };
    Outcome {
        experiment: exp.clone(),
        log: Some(path.to_path_buf()),
        how: how.into(),
        elapsed_s: end.map(|e| e.elapsed_s),
        device: Some(log.header.device.clone()),
        peak_rss: end.and_then(|e| e.peak_rss),
        checks,
        findings: found,
        figures,
    }
}

fn without_log(exp: &Experiment, how: String, why: String) -> Outcome {
    Outcome {
        experiment: exp.clone(),
        log: None,
        how,
        elapsed_s: None,
        device: None,
        peak_rss: None,
        checks: vec![not_run("the figure's claims", why)],
        findings: vec![],
        figures: vec![],
    }
}

/// [`Outcome::how`] of an experiment that this invocation did not select.
const NOT_SELECTED: &str = "not selected";

/// The result of a paper run.
#[derive(Debug)]
pub struct Report {
    /// Every experiment of the size, in order (those not selected and with no log in the
    /// folder as "not run").
    pub outcomes: Vec<Outcome>,
    /// Whether a stop ended the run early.
    pub stopped: bool,
    /// Where REPORT.md is.
    pub path: PathBuf,
}

impl Report {
    /// The number of checks with each verdict (reproduced, differs, not reproduced, not run)
    /// of the experiments this invocation selected.
    pub fn counts_of_selected(&self) -> [usize; 4] {
        tally(self.outcomes.iter().filter(|o| o.how != NOT_SELECTED))
    }
}

/// The number of checks of `outcomes` with each verdict: reproduced, differs, not reproduced,
/// not run.
fn tally<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> [usize; 4] {
    let mut c = [0; 4];
    for ch in outcomes.flat_map(|o| &o.checks) {
        c[match ch.verdict {
            Verdict::Reproduced => 0,
            Verdict::Differs => 1,
            Verdict::NotReproduced => 2,
            Verdict::NotRun => 3,
        }] += 1;
    }
    c
}

/// Runs the experiments of `settings` with `runner` (reusing finished logs with the same
/// settings in the folder unless `force`), prints each figure's table to `print` as it is
/// judged, and writes `REPORT.md` after each experiment (so a stopped run leaves one).
pub fn run(
    settings: &Settings,
    runner: Runner<'_>,
    print: &mut dyn FnMut(&str),
) -> anyhow::Result<Report> {
    let selected = select(settings.size, &settings.only)?;
    std::fs::create_dir_all(&settings.out).map_err(|e| {
        ParamError(format!(
            "--out {}: cannot create the folder: {e}; give another with --out DIR",
            settings.out.display()
        ))
    })?;
    let all = experiments(settings.size);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; all.len()];
    let mut stopped = false;
    let report_path = settings.out.join("REPORT.md");
    for (i, exp) in all.iter().enumerate() {
        let path = settings.out.join(format!("{}.jsonl", exp.name));
        let chosen = selected.iter().any(|s| s.name == exp.name);
        let reuse = if chosen && settings.force {
            None
        } else {
            reusable(exp, settings.seed, &path)
        };
        let outcome = match (reuse, chosen) {
            (Some(log), _) => outcome_of(exp, &path, &log, "reused", &settings.out),
            (None, false) => without_log(
                exp,
                NOT_SELECTED.into(),
                format!(
                    "not run; `probescope paper{} --only {}`",
                    quick_flag(settings.size),
                    exp.name
                ),
            ),
            (None, true) if stopped => without_log(
                exp,
                "not run".into(),
                "the paper run was stopped first".into(),
            ),
            (None, true) => {
                print(&format!(
                    "\n{}  {}",
                    indented(
                        &format!("{} ({}): {}", exp.name, exp.figure, exp.title),
                        79,
                        2
                    ),
                    indented(&format!("running `{}`", exp.command(settings.seed)), 77, 4)
                ));
                let started = std::time::SystemTime::now();
                // Each run's end line gives its own peak memory, not the paper run's so far.
                crate::memory::reset_peak_rss();
                let result = runner(exp, &path);
                if let Err(e) = &result {
                    stopped = e.downcast_ref::<crate::presets::Stopped>().is_some();
                }
                // A run refused before it started leaves an older log (other settings) as it
                // was: only a log written by this run counts.
                let fresh = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= started);
                let log = if fresh {
                    crate::runlog::read(&path)
                } else {
                    Err(anyhow::anyhow!("the run wrote no log"))
                };
                match (result, log) {
                    (_, Ok(log)) if log.end().is_some() => {
                        outcome_of(exp, &path, &log, "ran", &settings.out)
                    }
                    (Err(e), _) => without_log(exp, "not run".into(), format!("{e:#}")),
                    (Ok(()), Err(e)) => without_log(exp, "not run".into(), format!("{e:#}")),
                    (Ok(()), Ok(_)) => {
                        without_log(exp, "not run".into(), "the run log has no end line".into())
                    }
                }
            }
        };
        if chosen {
            print(&table(&outcome));
        }
        outcomes[i] = Some(outcome);
        let so_far: Vec<Outcome> = outcomes.iter().flatten().cloned().collect();
        write_report(settings, &so_far, &report_path)?;
    }
    let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    Ok(Report {
        outcomes,
        stopped,
        path: report_path,
    })
}

fn quick_flag(size: Size) -> &'static str {
    match size {
        Size::Quick => " --quick",
        Size::Full => "",
    }
}

fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// One experiment's table for the terminal: a verdict per claim, with the paper's figure and
/// the measured one under it (fits 80 columns; long lines wrap).
pub fn table(o: &Outcome) -> String {
    let e = &o.experiment;
    let mut head = format!("{} ({}): {}", e.name, e.figure, e.title);
    match (o.how.as_str(), o.elapsed_s) {
        (how @ ("ran" | "reused"), Some(t)) => {
            let _ = write!(head, " · {how}, {}", duration(t));
        }
        (how, _) => {
            let _ = write!(head, " · {how}");
        }
    }
    let mut s = format!("\n{}", indented(&head, 79, 2));
    if let Some(n) = e.note {
        for line in wrap(&format!("({n})"), 77) {
            let _ = writeln!(s, "  {line}");
        }
    }
    for c in &o.checks {
        let why = c.why.clone().unwrap_or_default();
        let lines = [
            (c.verdict.word(), "", c.claim.as_str()),
            ("", "paper: ", c.paper.as_str()),
            ("", "here:  ", c.measured.as_str()),
            ("", "why:   ", why.as_str()),
        ];
        for (head, prefix, text) in lines {
            if text.is_empty() {
                continue;
            }
            for (k, line) in wrap(text, 62 - prefix.len()).into_iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  {:<15}{:<w$}{line}",
                    if k == 0 { head } else { "" },
                    if k == 0 { prefix } else { "" },
                    w = prefix.len()
                );
            }
        }
    }
    s
}

/// `text` in lines of at most `width` characters, every line after the first indented by
/// `indent` spaces, each line ending in a newline.
pub fn indented(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let first = wrap(text, width);
    let mut rest = String::new();
    if let Some((head, tail)) = first.split_first() {
        out.push_str(head);
        out.push('\n');
        rest = tail.join(" ");
    }
    for line in wrap(&rest, width - indent) {
        out.push_str(&" ".repeat(indent));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A markdown table cell: no pipes or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as markdown.
pub fn markdown(settings: &Settings, outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let size = match settings.size {
        Size::Quick => "quick (`--quick`: sizes that finish in minutes on two CPU cores)",
        Size::Full => "full (the presets' defaults)",
    };
    let _ = writeln!(
        s,
        "# probescope paper report\n\nAlain & Bengio, *Understanding intermediate layers using \
         linear classifier probes* (ICLR 2017 workshop): each figure's claims beside what this \
         run measured.\n"
    );
    let counts = tally(outcomes.iter());
    let _ = writeln!(
        s,
        "- size: {size}\n- seed: {}\n- probescope {}\n- machine: {} CPU cores, {} of memory{}\n- \
         time: {} (the runs' own times, summed)\n- verdicts: {} reproduced, {} differ (with the reason), \
         {} not reproduced, {} not run\n",
        settings.seed,
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::memory::total()
            .map(crate::memory::human)
            .unwrap_or_else(|| "unknown".into()),
        outcomes
            .iter()
            .find_map(|o| o.device.clone())
            .map(|d| format!(", device {d}"))
            .unwrap_or_default(),
        duration(outcomes.iter().filter_map(|o| o.elapsed_s).sum::<f64>()),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
    );
    let _ = writeln!(
        s,
        "A claim that compares two probes counts only beyond three binomial standard errors of \
         the held-out error. Run logs (`NAME.jsonl`) open with `probescope replay`; `probescope \
         export` draws other figures from them.\n"
    );
    let _ = writeln!(s, "| experiment | paper | verdicts |\n|---|---|---|");
    for o in outcomes {
        let words: Vec<&str> = o.checks.iter().map(|c| c.verdict.word()).collect();
        let _ = writeln!(
            s,
            "| [{}](#{}) | {} | {} |",
            o.experiment.name,
            o.experiment.name,
            o.experiment.figure,
            words.join(", ")
        );
    }
    s.push('\n');
    for o in outcomes {
        let e = &o.experiment;
        let _ = writeln!(s, "## {}\n\n{}: {}.\n", e.name, e.figure, e.title);
        let mut facts = vec![format!("`{}`", e.command(settings.seed))];
        match (&o.log, o.elapsed_s) {
            (Some(p), Some(t)) => {
                let file = p.file_name().map(|f| f.to_string_lossy().to_string());
                facts.push(format!(
                    "{} (the run took {}{}){}",
                    o.how,
                    duration(t),
                    o.peak_rss
                        .map(|b| format!(", peak memory {}", crate::memory::human(b)))
                        .unwrap_or_default(),
                    file.map(|f| format!(", log [{f}]({f})"))
                        .unwrap_or_default()
                ));
            }
            _ => facts.push(o.how.clone()),
        }
        if let Some(n) = e.note {
            facts.push(n.to_string());
        }
        let _ = writeln!(s, "{}\n", facts.join(" · "));
        let _ = writeln!(
            s,
            "| claim | paper | measured | verdict |\n|---|---|---|---|"
        );
        for c in &o.checks {
            let verdict = match &c.why {
                Some(w) => format!("**{}**: {}", c.verdict.word(), w),
                None => format!("**{}**", c.verdict.word()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&c.claim),
                cell(&c.paper),
                cell(&c.measured),
                cell(&verdict)
            );
        }
        s.push('\n');
        if !o.findings.is_empty() {
            let _ = writeln!(s, "Findings at the end of the run:\n");
            for f in &o.findings {
                let _ = writeln!(s, "- {f}");
            }
            s.push('\n');
        }
        for f in &o.figures {
            let _ = writeln!(s, "![{f}]({f})\n");
        }
    }
    s
}

fn write_report(settings: &Settings, outcomes: &[Outcome], path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, markdown(settings, outcomes))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("{}: cannot write the report: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{End, Record, RunHeader};
    use crate::tui::sample;

    /// A finished run log of `h` with these snapshots.
    fn log_of(h: RunHeader, snaps: Vec<Snapshot>) -> RunLog {
        let mut records: Vec<Record> = snaps.into_iter().map(Record::Snapshot).collect();
        records.push(Record::End(End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s: 1.0,
            step: None,
            peak_rss: None,
        }));
        RunLog {
            header: h,
            records,
            warnings: vec![],
        }
    }

    /// A converged snapshot at `step` whose probes have these held-out errors, and the model
    /// this test error.
    fn snap(h: &RunHeader, step: u64, errors: &[f64], model: f64) -> Snapshot {
        let mut s = sample::snapshot(h, 0, true);
        s.step = step;
        assert_eq!(s.probes.len(), errors.len(), "one error per probe");
        for (p, e) in s.probes.iter_mut().zip(errors) {
            p.reading.train_error = *e;
            p.reading.test_error = Some(*e);
        }
        s.model.as_mut().expect("a model").test_error = Some(model);
        s
    }

    fn verdicts(checks: &[Check]) -> Vec<Verdict> {
        checks.iter().map(|c| c.verdict).collect()
    }

    fn experiment(name: &str) -> Experiment {
        experiments(Size::Full)
            .into_iter()
            .find(|e| e.name == name)
            .expect("an experiment")
    }

    #[test]
    fn the_skip_run_is_judged_by_its_bump_its_ignored_half_and_its_finding() {
        let h = sample::header("deep-mlp", &["variant=skip", "depth=16"]).unwrap();
        // input, h001..h016, logits: h001..h007 climb, h008 (the skip) drops back near the input.
        let mut init = vec![0.12];
        init.extend((1..=7).map(|i| 0.2 + 0.05 * i as f64));
        init.push(0.1);
        init.extend((9..=16).map(|i| 0.1 + 0.04 * (i - 8) as f64));
        init.push(0.5); // logits
                        // Trained: the first half unchanged or worse, the second half lower.
        let mut trained = init.clone();
        for (i, e) in trained.iter_mut().enumerate().skip(1) {
            *e += if i < 8 { 0.03 } else { -0.05 };
        }
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 2000, &trained, 0.3)],
        );
        let c = judge(&experiment("deep-mlp-skip"), &log);
        assert_eq!(verdicts(&c), vec![Verdict::Reproduced; 4], "{c:#?}");
        assert!(
            c[0].measured.contains("h007 .550, h008 .100"),
            "{}",
            c[0].measured
        );
        assert!(c[1].claim.contains("layers 1 to 7"), "{}", c[1].claim);
        assert!(
            c[2].measured.starts_with("9 of 9 lower"),
            "{}",
            c[2].measured
        );
        assert!(c[1].why.is_none(), "{c:#?}");
        // One layer of the first half learning beyond noise is named, but the half as a whole
        // is still ignored.
        let mut learned = trained.clone();
        learned[4] = init[4] - 0.1;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 2000, &learned, 0.3)],
        );
        let c = judge(&experiment("deep-mlp-skip"), &log);
        assert_eq!(c[1].verdict, Verdict::Reproduced);
        let why = c[1].why.clone().unwrap_or_default();
        assert!(
            why.starts_with("1 of these 7 layers") && why.contains("(h004)"),
            "{why}"
        );
        // The whole first half learning nearly as much as the second is not "ignored".
        let mut all_learn = init.clone();
        for (i, e) in all_learn.iter_mut().enumerate().skip(1) {
            *e -= if i < 8 { 0.04 } else { 0.05 };
        }
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 2000, &all_learn, 0.3)],
        );
        let c = judge(&experiment("deep-mlp-skip"), &log);
        assert_eq!(c[1].verdict, Verdict::NotReproduced, "{c:#?}");
        assert!(
            c[1].measured.contains("on average .040 lower"),
            "{}",
            c[1].measured
        );
        // Without the bump (no skip), the first check fails.
        let mut flat = init.clone();
        flat[8] = 0.6;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &flat, 0.9), snap(&h, 2000, &trained, 0.3)],
        );
        assert_eq!(
            judge(&experiment("deep-mlp-skip"), &log)[0].verdict,
            Verdict::NotReproduced
        );
    }

    #[test]
    fn the_plain_run_is_judged_by_the_model_error_and_the_not_learning_finding() {
        let h = sample::header("deep-mlp", &["variant=plain", "depth=16"]).unwrap();
        let e = vec![0.5; h.probes.len()];
        let stuck = log_of(
            h.clone(),
            vec![snap(&h, 0, &e, 0.91), snap(&h, 2000, &e, 0.8865)],
        );
        let c = judge(&experiment("deep-mlp-plain"), &stuck);
        assert_eq!(verdicts(&c), vec![Verdict::Reproduced; 2], "{c:#?}");
        let trains = log_of(
            h.clone(),
            vec![snap(&h, 0, &e, 0.91), snap(&h, 2000, &e, 0.2)],
        );
        assert_eq!(
            verdicts(&judge(&experiment("deep-mlp-plain"), &trains)),
            vec![Verdict::NotReproduced; 2]
        );
    }

    #[test]
    fn the_convnet_names_a_layer_that_got_worse_and_a_gain_within_noise() {
        let h = sample::header("mnist-convnet", &[]).unwrap();
        // input, conv1_preact, conv1_postact, pool1, conv2_preact, conv2_postact, pool2,
        // fc1_preact, fc1_postact, logits
        let init = [0.08, 0.08, 0.03, 0.03, 0.03, 0.03, 0.025, 0.035, 0.05, 0.45];
        let mut trained = init.map(|e| e - 0.01);
        trained[0] = 0.08;
        trained[1] = 0.081;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 781, &trained, 0.03)],
        );
        let c = judge(&experiment("mnist-convnet"), &log);
        assert_eq!(verdicts(&c), vec![Verdict::Reproduced; 4], "{c:#?}");
        assert!(
            c[2].measured.starts_with("8 of 8 lower"),
            "{}",
            c[2].measured
        );
        assert!(c[2].why.is_none());
        // A gain smaller than three standard errors of 10,000 test images (0.0051 at 3%) is
        // named as such.
        trained[2] = 0.029;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 781, &trained, 0.03)],
        );
        let c = judge(&experiment("mnist-convnet"), &log);
        assert_eq!(c[2].verdict, Verdict::Reproduced);
        assert!(
            c[2].why.as_deref().unwrap_or("").contains("conv1_postact"),
            "{c:#?}"
        );
        // A layer that got worse is named, and the claim is not reproduced.
        trained[6] = 0.026;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init, 0.9), snap(&h, 781, &trained, 0.03)],
        );
        let c = judge(&experiment("mnist-convnet"), &log);
        assert_eq!(c[2].verdict, Verdict::NotReproduced);
        assert!(
            c[2].measured.contains("pool2 .025 to .026"),
            "{}",
            c[2].measured
        );
        // An input probe at 12% with 10,000 probe images differs for that reason.
        let mut init12 = init;
        init12[0] = 0.12;
        let log = log_of(
            h.clone(),
            vec![snap(&h, 0, &init12, 0.9), snap(&h, 781, &trained, 0.03)],
        );
        let c = judge(&experiment("mnist-convnet"), &log);
        assert_eq!(c[0].verdict, Verdict::Differs);
        assert!(c[0].why.as_deref().unwrap_or("").contains("10,000 images"));
    }

    #[test]
    fn a_branch_probe_below_its_closed_form_bound_is_not_reproduced() {
        let h = sample::header("bifurcation", &[]).unwrap();
        let names: Vec<String> = h.probes.iter().map(|p| p.name.clone()).collect();
        // The bounds with ratio 0.6: atan(0.6)/pi = 0.1720, atan(1/0.6)/pi = 0.3280.
        let at = |upper: f64| -> Vec<f64> {
            names
                .iter()
                .map(|n| match n.as_str() {
                    n if n.starts_with("upper") => upper,
                    n if n.starts_with("lower") => 0.335,
                    "concat" => 0.03,
                    _ => 0.01,
                })
                .collect()
        };
        let log = log_of(h.clone(), vec![snap(&h, 1500, &at(0.175), 0.03)]);
        let c = judge(&experiment("bifurcation"), &log);
        assert_eq!(verdicts(&c), vec![Verdict::Reproduced; 2], "{c:#?}");
        assert!(c[0].measured.contains("(bound .172)"), "{}", c[0].measured);
        // 0.15 is more than three standard errors (3 x 0.0038 on 10,000) below the bound.
        let log = log_of(h.clone(), vec![snap(&h, 1500, &at(0.15), 0.03)]);
        assert_eq!(
            judge(&experiment("bifurcation"), &log)[0].verdict,
            Verdict::NotReproduced
        );
    }

    #[test]
    fn the_feature_subset_at_the_papers_size_differs_when_only_the_train_error_is_4_percent() {
        let sets = ["dim=100000", "classes=1000", "subsets=10,100,1000"];
        let h = sample::header("feature-subset", &sets).unwrap();
        let mut s = snap(&h, 0, &[0.99, 0.9, 0.9], 0.0);
        for (p, train) in s.probes.iter_mut().zip([0.98, 0.6, 0.03]) {
            p.reading.train_error = train;
        }
        let log = log_of(h, vec![s]);
        let c = judge(&experiment("feature-subset"), &log);
        assert_eq!(
            verdicts(&c),
            vec![Verdict::Reproduced, Verdict::Differs],
            "{c:#?}"
        );
        assert!(
            c[1].measured.contains("train .030, held out .900"),
            "{}",
            c[1].measured
        );
        assert!(c[1].why.as_deref().unwrap_or("").contains("training error"));
    }

    #[test]
    fn the_untrained_mlp_needs_a_rise_toward_chance() {
        let h = sample::header("untrained-mlp", &["depth=8"]).unwrap();
        let summary = |errors: &[f64]| {
            Record::Summary(crate::runlog::Summary {
                label: "all".into(),
                datasets: 5,
                probes: h
                    .probes
                    .iter()
                    .zip(errors)
                    .map(|(p, e)| crate::runlog::ProbeSummary {
                        probe: p.name.clone(),
                        tap: p.tap.clone(),
                        features: 128,
                        train_error: crate::runlog::Stat::of(&[*e]),
                        test_error: None,
                        mean_norm: Some(crate::runlog::Stat::of(&[10.0])),
                    })
                    .collect(),
            })
        };
        let rising: Vec<f64> = (0..9).map(|i| 0.002 + 0.045 * i as f64).collect();
        let mut log = log_of(h.clone(), vec![]);
        log.records.insert(0, summary(&rising));
        let c = judge(&experiment("untrained-mlp"), &log);
        assert_eq!(verdicts(&c), vec![Verdict::Reproduced; 3], "{c:#?}");
        // Flat at 0.1: no climb.
        let mut log = log_of(h.clone(), vec![]);
        log.records
            .insert(0, summary(&[0.002, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]));
        assert_eq!(
            judge(&experiment("untrained-mlp"), &log)[1].verdict,
            Verdict::NotReproduced
        );
    }

    #[test]
    fn thousands_separates_by_three() {
        assert_eq!(thousands(10_000.0), "10,000");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn select_by_name_or_preset_and_refuses_unknown_names() {
        let names = |v: Vec<Experiment>| v.iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(Size::Quick, &["deep-mlp".into()]).unwrap()),
            vec!["deep-mlp-plain", "deep-mlp-aux", "deep-mlp-skip"]
        );
        assert_eq!(
            names(select(Size::Full, &["deep-mlp-skip".into(), "bifurcation".into()]).unwrap()),
            vec!["bifurcation", "deep-mlp-skip"]
        );
        assert_eq!(select(Size::Full, &[]).unwrap().len(), 7);
        let e = select(Size::Quick, &["fig9".into()]).unwrap_err().0;
        assert!(
            e.contains("--only fig9") && e.contains("deep-mlp-skip"),
            "{e}"
        );
    }

    #[test]
    fn every_experiment_has_settings_its_preset_accepts() {
        for size in [Size::Quick, Size::Full] {
            for e in experiments(size) {
                crate::presets::prepare(e.preset, &e.sets)
                    .unwrap_or_else(|err| panic!("{}: {}", e.name, err.0));
            }
        }
    }

    #[test]
    fn standard_error_is_the_binomial_one() {
        // sqrt(0.1 * 0.9 / 10000) = 0.003
        assert!((standard_error(0.1, 10_000.0) - 0.003).abs() < 1e-12);
        assert_eq!(standard_error(0.0, 100.0), 0.0);
    }
}
