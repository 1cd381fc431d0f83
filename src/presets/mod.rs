//! The paper's experiments as built-in presets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use crate::cancel::Cancel;
use crate::graph::Graph;
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::{ActivationStats, FitConfig, Fitted, ProbeSpec};
use crate::report::Sink;
use crate::runlog::{ProbeSummary, Record, Snapshot, Stat, Summary, TapReading};

pub mod bifurcation;
pub mod datasets;
pub mod deep_mlp;
pub mod feature_subset;
pub mod modelfile;
pub mod trained;
pub mod untrained_mlp;

/// A built-in experiment.
pub trait Preset: Send + Sync {
    /// Name used on the command line.
    fn name(&self) -> &'static str;
    /// Where it is in the paper and what it shows, one line.
    fn about(&self) -> &'static str;
    /// Its parameters, with defaults.
    fn params(&self) -> Vec<ParamSpec>;
    /// Why the defaults are what they are, and what to run for more (`probescope presets`).
    fn defaults_note(&self) -> Option<&'static str> {
        None
    }
    /// Checks between parameters that ranges alone cannot express.
    fn check(&self, _params: &Params) -> Result<(), ParamError> {
        Ok(())
    }
    /// Checks that the data the run needs is there (before anything is written).
    fn check_data(&self, _params: &Params, _data_dir: &std::path::Path) -> Result<(), ParamError> {
        Ok(())
    }
    /// Training steps the run will take, for presets that train a model on a dataset.
    fn total_steps(&self, _params: &Params) -> Option<u64> {
        None
    }
    /// Whether it trains a model that checkpoints can save, with these parameters.
    fn checkpoints(&self, _params: &Params) -> bool {
        false
    }
    /// The run's peak memory, estimated before it starts (`None`: small, not estimated).
    fn memory(
        &self,
        _params: &Params,
        _graph: &Graph,
        _probes: &[ProbeSpec],
    ) -> Option<trained::MemoryEstimate> {
        None
    }
    /// The model graph.
    fn graph(&self, params: &Params) -> Graph;
    /// The probes (with subsets drawn from `seed`).
    fn probes(&self, params: &Params, graph: &Graph, seed: u64) -> Vec<ProbeSpec>;
    /// Runs it, sending records to `ctx.sink`.
    fn run(&self, params: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()>;
    /// The model file it is, for a built-in preset that is one (`probescope presets --show`).
    fn source(&self) -> Option<&'static str> {
        None
    }
    /// The model file that runs as this preset with `params` (`probescope presets --show NAME
    /// --set ...`): its own file, or one generated from the parameters; else why no model file
    /// describes its run.
    fn model_file(&self, _params: &Params) -> Result<String, &'static str> {
        self.source()
            .map(str::to_string)
            .ok_or("it runs its own loop, which a model file cannot describe")
    }
}

/// The built-in presets that are model files, embedded in the binary: (name, text). They run
/// by the same code as a user's file (`probescope run FILE.toml`).
pub const FILES: &[(&str, &str)] = &[("mnist-convnet", include_str!("files/mnist-convnet.toml"))];

/// The built-in model file of preset `name`.
fn builtin_file(name: &str) -> Box<dyn Preset> {
    let (_, src) = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a built-in model file of that name");
    Box::new(
        modelfile::ModelFile::builtin(&format!("{name}.toml (built in)"), src)
            .expect("the built-in model files are valid (tested)"),
    )
}

/// Every built-in preset; the first is the default.
pub fn all() -> Vec<Box<dyn Preset>> {
    vec![
        Box::new(untrained_mlp::UntrainedMlp),
        Box::new(bifurcation::Bifurcation),
        Box::new(feature_subset::FeatureSubset),
        builtin_file("mnist-convnet"),
        Box::new(deep_mlp::DeepMlp),
    ]
}

/// The preset called `name`.
pub fn find(name: &str) -> Result<Box<dyn Preset>, ParamError> {
    all().into_iter().find(|p| p.name() == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|p| p.name()).collect();
        ParamError(format!(
            "unknown preset `{name}`; the presets are: {} (see `probescope presets`)",
            names.join(", ")
        ))
    })
}

/// The preset called `name` with its parameters: defaults, overridden by `sets` (`key=value`),
/// checked.
pub fn prepare(name: &str, sets: &[String]) -> Result<(Box<dyn Preset>, Params), ParamError> {
    if name.ends_with(".toml") {
        return prepare_file(
            modelfile::ModelFile::load(std::path::Path::new(name))?,
            sets,
        );
    }
    let preset = find(name)?;
    let params = Params::resolve(preset.name(), &preset.params(), sets)?;
    preset.check(&params)?;
    Ok((preset, params))
}

/// A model file with its parameters: its `[train]` values, overridden by `sets`.
pub fn prepare_file(
    file: modelfile::ModelFile,
    sets: &[String],
) -> Result<(Box<dyn Preset>, Params), ParamError> {
    let params = Params::resolve(file.name(), &file.params(), sets)?;
    file.check(&params)?;
    Ok((Box::new(file), params))
}

/// The model graph of preset `name` with its default parameters.
pub fn default_graph(name: &str) -> Result<Graph, ParamError> {
    let (preset, params) = prepare(name, &[])?;
    Ok(preset.graph(&params))
}

/// The peak memory of preset `name` with `sets`, estimated (see [`Preset::memory`]).
pub fn memory_estimate(
    name: &str,
    sets: &[String],
    seed: u64,
) -> Result<Option<trained::MemoryEstimate>, ParamError> {
    memory_estimate_with(&|s| prepare(name, s), sets, seed)
}

/// Makes a run's preset and parameters from its `--set` values.
pub type Preparer<'a> = &'a dyn Fn(&[String]) -> Result<(Box<dyn Preset>, Params), ParamError>;

/// [`memory_estimate`] of the run that `prepare` makes.
fn memory_estimate_with(
    prepare: Preparer<'_>,
    sets: &[String],
    seed: u64,
) -> Result<Option<trained::MemoryEstimate>, ParamError> {
    let (preset, params) = prepare(sets)?;
    let graph = preset.graph(&params);
    let probes = preset.probes(&params, &graph, seed);
    Ok(preset.memory(&params, &graph, &probes))
}

/// The memory a run may use: `PROBESCOPE_MEMORY_LIMIT_MB` where set (0: no limit, no check),
/// else what the system says is available now (see [`crate::memory::available`]).
pub fn memory_limit() -> Option<u64> {
    match std::env::var("PROBESCOPE_MEMORY_LIMIT_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(0) => None,
        Some(mb) => Some(mb << 20),
        None => crate::memory::available(),
    }
}

/// Refuses, before anything is computed, a run (preset `name` with `sets`) whose estimated peak
/// memory `est` is over `limit`, naming the estimate and the settings that would fit (each
/// alone, the largest that fits; only then is the preset prepared again, to price them).
pub fn check_memory(
    est: Option<trained::MemoryEstimate>,
    limit: Option<u64>,
    name: &str,
    sets: &[String],
    seed: u64,
) -> Result<(), ParamError> {
    check_memory_with(est, limit, name, sets, seed, &|s| prepare(name, s))
}

/// [`check_memory`] for the run that `prepare` makes from `--set` values (named `name`).
pub fn check_memory_with(
    est: Option<trained::MemoryEstimate>,
    limit: Option<u64>,
    name: &str,
    sets: &[String],
    seed: u64,
    prepare: Preparer<'_>,
) -> Result<(), ParamError> {
    let (Some(est), Some(limit)) = (est, limit) else {
        return Ok(());
    };
    if est.peak <= limit {
        return Ok(());
    }
    let (preset, params) = prepare(sets)?;
    let keys: Vec<&str> = preset.params().iter().map(|s| s.key).collect();
    // Each knob's candidates, from the mildest change to the strongest.
    let mut knobs: Vec<Vec<String>> = Vec::new();
    if keys.contains(&"probe_dtype") && params.text("probe_dtype") != "bf16" {
        knobs.push(vec!["probe_dtype=bf16".into()]);
    }
    if keys.contains(&"subset") {
        let now = params.usize("subset");
        knobs.push(
            [8192, 4096, 2048, 1024, 512, 256]
                .into_iter()
                .filter(|&n| now == 0 || n < now)
                .map(|n| format!("subset={n}"))
                .collect(),
        );
    }
    if keys.contains(&"probe_train") {
        let mut v = Vec::new();
        let mut n = params.usize("probe_train") / 2;
        while n >= 500 {
            v.push(format!("probe_train={n}"));
            n /= 2;
        }
        knobs.push(v);
    }
    let mut fits = Vec::new();
    for knob in knobs {
        for set in knob {
            let mut with = sets.to_vec();
            with.push(set.clone());
            if let Ok(Some(e)) = memory_estimate_with(prepare, &with, seed) {
                if e.peak <= limit {
                    fits.push(format!(
                        "--set {set} (about {})",
                        crate::memory::human(e.peak)
                    ));
                    break;
                }
            }
        }
    }
    let h = crate::memory::human;
    Err(ParamError(format!(
        "{name}: this run needs about {} of memory at its peak (a converged snapshot holds {} of \
         features at once, and its solver {} more), but {} is available{}. {}",
        h(est.peak),
        h(est.features),
        h(est.solver),
        h(limit),
        if std::env::var_os("PROBESCOPE_MEMORY_LIMIT_MB").is_some() {
            " (PROBESCOPE_MEMORY_LIMIT_MB)"
        } else {
            ""
        },
        if fits.is_empty() {
            "No single setting brings it under that; lower probe_train, probe_val and probe_test \
             together, or run on a machine with more memory."
                .to_string()
        } else {
            format!("Settings that fit: {}.", fits.join(", or "))
        }
    )))
}

/// Runs preset `name` on the CPU with `sets` overrides, sending its records to `sink` (no run
/// log header or end: that is the command line's job).
pub fn run_preset(
    name: &str,
    sets: &[String],
    seed: u64,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    run_preset_with(name, sets, seed, RunOptions::default(), sink)
}

/// [`run_preset`] with a data directory and checkpoint settings.
pub fn run_preset_with(
    name: &str,
    sets: &[String],
    seed: u64,
    opts: RunOptions,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let (preset, params) = prepare(name, sets)?;
    preset.check_data(&params, &opts.data_dir)?;
    let mut ctx = RunCtx {
        device: Device::Cpu,
        seed,
        sink,
        started: Instant::now(),
        controls: Default::default(),
        opts,
    };
    preset.run(&params, &mut ctx)
}

/// The probe-fit parameters every preset takes.
pub fn fit_params() -> Vec<ParamSpec> {
    let d = FitConfig::default();
    vec![
        ParamSpec::float(
            "probe_l2",
            d.l2,
            0.0,
            1e3,
            "L2 penalty of the converged probe fits (on standardised weights)",
        ),
        ParamSpec::int(
            "probe_max_iter",
            d.max_iter as u64,
            1,
            100_000,
            "most L-BFGS iterations of a converged probe fit",
        ),
        ParamSpec::int(
            "probe_patience",
            d.patience as u64,
            1,
            10_000,
            "validation checks (one every 5 iterations) in a row worse than its best before a \
             converged probe stops at its best (a tie counts as no worse); fewer is faster (2 took mnist-convnet's 50k snapshot from \
             269 s to 190 s, every probe within 0.3 points) but may stop before a late gain",
        ),
        ParamSpec::int(
            "probe_rank",
            d.rank as u64,
            0,
            1024,
            "principal directions along which a converged probe wider than 1,024 features is \
             preconditioned (0: per-feature scaling alone); 64 halved the iterations of \
             mnist-convnet's wide taps",
        ),
        ParamSpec::choice(
            "selectivity",
            &["off", "on"],
            "also fit every converged probe on control labels (random per input) and report \
             selectivity = control error - train error (Hewitt & Liang 2019); doubles the fit time",
        ),
        ParamSpec::choice(
            "transfer",
            &["off", "on"],
            "also evaluate every converged probe on every same-width tap's features (the \
             transfer matrix, on 2,000 test samples)",
        ),
    ]
}

/// The fit settings from the parameters.
pub fn fit_config(params: &Params) -> FitConfig {
    let dtype = match params.0.get("probe_dtype") {
        Some(crate::params::ParamValue::Text(t)) => Some(t.as_str()),
        _ => None,
    };
    FitConfig {
        l2: params.f64("probe_l2"),
        max_iter: params.usize("probe_max_iter"),
        patience: params.usize("probe_patience"),
        rank: params.usize("probe_rank"),
        control: params.text("selectivity") == "on",
        transfer: params.text("transfer") == "on",
        ..FitConfig::default()
    }
    // Only the presets that hold a snapshot's activations in memory groups have it.
    .with_probe_dtype(dtype)
}

/// What a running preset needs from outside.
pub struct RunCtx<'a> {
    /// Where tensors live.
    pub device: Device,
    /// The run's seed.
    pub seed: u64,
    /// Where records go.
    pub sink: &'a mut dyn Sink,
    /// When the run started.
    pub started: Instant,
    /// Stop, pause and snapshot requests from Ctrl-C or the UI.
    pub controls: Arc<Controls>,
    /// Where data lives, checkpoints.
    pub opts: RunOptions,
}

/// Run settings from the command line that are not preset parameters.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The data directory (holding `mnist/`, `fashion-mnist/`).
    pub data_dir: std::path::PathBuf,
    /// Checkpoints and resuming.
    pub checkpoint: trained::CheckpointPlan,
}

impl Default for RunOptions {
    /// The data directory from `PROBESCOPE_DATA_DIR`, else the per-user default; no checkpoints.
    fn default() -> Self {
        Self {
            data_dir: std::env::var_os("PROBESCOPE_DATA_DIR")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(crate::mnist::default_data_dir),
            checkpoint: Default::default(),
        }
    }
}

/// Requests to a running preset, set from other threads (the UI, a signal handler). A stop is
/// honoured inside every long loop (training steps, forward-pass chunks, solver iterations);
/// pause and snapshot requests at the next training step.
#[derive(Debug, Default)]
pub struct Controls {
    /// Stop as soon as possible: every converged fit and forward pass of the run holds a clone.
    pub stop: Cancel,
    /// The last training step the run completed, plus one (0: none yet), for the end line.
    pub step: AtomicU64,
    /// Wait at the next checkpoint until cleared.
    pub pause: AtomicBool,
    /// Take a converged snapshot at the next step that can.
    pub snapshot: AtomicBool,
    /// Why the run was asked to stop, for the log's end line (default: by the user).
    pub reason: std::sync::Mutex<Option<String>>,
}

impl Controls {
    /// Asks the run to stop.
    pub fn request_stop(&self) {
        self.stop.cancel();
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The last training step the run completed (`None` before the first, and for presets
    /// that do not train).
    pub fn last_step(&self) -> Option<u64> {
        self.step.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Asks the run to stop, saying why in the log's end line.
    pub fn request_stop_because(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| reason.to_string());
        }
        self.request_stop();
    }

    /// Why the run stopped.
    pub fn stop_reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "stopped by the user".into())
    }
}

/// The run was stopped by the user before it finished.
#[derive(Debug, thiserror::Error)]
#[error("stopped by the user")]
pub struct Stopped;

impl RunCtx<'_> {
    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A checkpoint: an error if the user asked the run to stop; waits here while it is paused.
    pub fn check_stop(&self) -> Result<(), Stopped> {
        let c = &self.controls;
        loop {
            if c.stop.is_cancelled() {
                return Err(Stopped);
            }
            if !c.pause.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Records that the run has completed training step `step` (0: at initialisation), for the
    /// end line of a run that is stopped.
    pub fn at_step(&self, step: u64) {
        self.controls.step.store(step + 1, Ordering::Relaxed);
    }

    /// The run's stop token, for loops that must honour a stop inside a step.
    pub fn cancel(&self) -> Cancel {
        self.controls.stop.clone()
    }

    /// The fit settings from the parameters, stopping when the run is stopped.
    pub fn fit_config(&self, params: &Params) -> FitConfig {
        FitConfig {
            cancel: self.cancel(),
            ..fit_config(params)
        }
    }

    /// Whether a converged snapshot was asked for (and clears the request).
    pub fn take_snapshot_request(&self) -> bool {
        self.controls.snapshot.swap(false, Ordering::Relaxed)
    }

    /// Sends a record.
    pub fn record(&mut self, r: Record) -> anyhow::Result<()> {
        self.sink.record(&r)
    }
}

/// A probe on every tap of `g`, reading all of its features.
pub fn probe_every_tap(g: &Graph) -> Vec<ProbeSpec> {
    g.taps()
        .expect("valid graph")
        .iter()
        .map(|t| ProbeSpec::full(&t.name, t.features))
        .collect()
}

/// A probe on every tap of `g`; taps wider than `subset` (when not 0) are read through `subset`
/// random features drawn from `seed`.
pub fn probes_with_subset(g: &Graph, subset: usize, seed: u64) -> Vec<ProbeSpec> {
    g.taps()
        .expect("valid graph")
        .iter()
        .map(|t| {
            if subset > 0 && t.features > subset {
                ProbeSpec::random_subset(&t.name, &t.name, t.features, subset, seed)
            } else {
                ProbeSpec::full(&t.name, t.features)
            }
        })
        .collect()
}

/// A snapshot's per-probe entries from converged fits, with the taps' statistics where known.
pub fn converged_readings(
    specs: &[ProbeSpec],
    fitted: &[Fitted],
    stats: Option<&[ActivationStats]>,
) -> Vec<TapReading> {
    specs
        .iter()
        .zip(fitted)
        .enumerate()
        .map(|(i, (s, f))| TapReading {
            probe: s.name.clone(),
            tap: s.tap.clone(),
            reading: f.reading.clone(),
            activation: stats.map(|v| v[i].clone()),
        })
        .collect()
}

/// A snapshot's per-probe entries from online probes after `updates` updates: the smoothed
/// minibatch error and the last minibatch loss.
pub fn online_readings(
    specs: &[ProbeSpec],
    readings: &[crate::probe::OnlineReading],
    updates: usize,
) -> Vec<TapReading> {
    specs
        .iter()
        .zip(readings)
        .map(|(s, r)| TapReading {
            probe: s.name.clone(),
            tap: s.tap.clone(),
            reading: crate::probe::ProbeReading {
                train_error: r.smoothed_error,
                train_loss: r.batch_loss,
                iterations: updates,
                ..Default::default()
            },
            activation: None,
        })
        .collect()
}

/// A summary over snapshots of the same probes (one per dataset).
pub fn summarise(label: &str, specs: &[ProbeSpec], snaps: &[&Snapshot]) -> Summary {
    let probes = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let readings: Vec<&TapReading> = snaps.iter().map(|s| &s.probes[i]).collect();
            let train: Vec<f64> = readings.iter().map(|r| r.reading.train_error).collect();
            let test: Vec<f64> = readings
                .iter()
                .filter_map(|r| r.reading.test_error)
                .collect();
            let norm: Vec<f64> = readings
                .iter()
                .filter_map(|r| r.activation.as_ref().map(|a| a.mean_norm))
                .collect();
            ProbeSummary {
                probe: spec.name.clone(),
                tap: spec.tap.clone(),
                features: spec.width(),
                train_error: Stat::of(&train),
                test_error: (!test.is_empty()).then(|| Stat::of(&test)),
                mean_norm: (!norm.is_empty()).then(|| Stat::of(&norm)),
            }
        })
        .collect();
    Summary {
        label: label.to_string(),
        datasets: snaps.len(),
        probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fit settings every preset takes reach the solver's configuration; the defaults are
    /// the solver's own.
    #[test]
    fn fit_params_reach_the_fit_config() {
        let d = FitConfig::default();
        let (_, p) = prepare("mnist-convnet", &[]).unwrap();
        let f = fit_config(&p);
        assert_eq!(
            (f.l2, f.max_iter, f.patience),
            (d.l2, d.max_iter, d.patience)
        );
        let sets = ["probe_patience=2", "probe_max_iter=40", "probe_l2=0.01"].map(String::from);
        let (_, p) = prepare("untrained-mlp", &sets).unwrap();
        let f = fit_config(&p);
        assert_eq!((f.l2, f.max_iter, f.patience), (0.01, 40, 2));
        let Err(err) = prepare("deep-mlp", &["probe_patience=0".to_string()]) else {
            panic!("probe_patience=0 accepted");
        };
        assert!(err.to_string().contains("probe_patience"), "{err}");
    }
}
