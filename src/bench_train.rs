//! `probescope bench train`: what the probes cost a real training run, on MNIST with the
//! `mnist-convnet` model.
//!
//! 1. Training steps without probes, then the same steps (same seed, same minibatches, a fresh
//!    model) with online probes on all 10 taps: the ratio of the two, and the probes' own share
//!    of the second run timed around their updates.
//! 2. One converged snapshot of the 10 probes on the trained model: its time, its memory groups
//!    and every probe's test error.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::graph::Model;
use crate::mnist::{self, Which};
use crate::presets::mnist_convnet;
use crate::presets::trained::{self, Plan, ProbeSets};
use crate::probe::{OnlineConfig, OnlineProbes, ProbeSpec};
use crate::train::{Batches, Optim, OptimKind};

/// Settings of the benchmark.
pub struct Settings<'a> {
    /// Where `mnist/` is.
    pub data_dir: &'a Path,
    /// Training steps per run (an epoch is 781).
    pub steps: usize,
    /// Probe-training samples of the converged snapshot.
    pub probe_samples: usize,
    /// Features per probe on wider taps (0: all).
    pub subset: usize,
    /// Most MiB of features held at once.
    pub memory_mb: usize,
    /// Skip the converged snapshot.
    pub skip_snapshot: bool,
}

fn train_steps(
    model: &Model,
    opt: &mut Optim,
    data: &crate::data::Dataset,
    steps: usize,
    mut online: Option<&mut OnlineProbes>,
    specs: &[ProbeSpec],
) -> anyhow::Result<(f64, f64, f64)> {
    let g = model.graph();
    let mut batches = Batches::default();
    let mut probe_s = 0.0;
    let mut loss_v = f64::NAN;
    let t0 = Instant::now();
    for step in 1..=steps {
        let (_, idx) = batches.get(0, step, 64, data.len());
        let mb = data.select(idx)?;
        let outs = model.forward(&mb.x)?;
        let loss = model.loss(&outs, &mb.y)?;
        opt.backward_step(&loss)?;
        loss_v = loss.to_scalar::<f32>()? as f64;
        if let Some(on) = online.as_deref_mut() {
            let t = Instant::now();
            let taps: Vec<Tensor> = specs
                .iter()
                .map(|s| outs[g.index_of(&s.tap).expect("tap")].detach())
                .collect();
            on.update(&taps, &mb.y)?;
            probe_s += t.elapsed().as_secs_f64();
        }
    }
    Ok((t0.elapsed().as_secs_f64(), probe_s, loss_v))
}

/// A report written to stdout line by line as the benchmark goes (each part can take minutes).
struct Out;

impl std::fmt::Write for Out {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes()).map_err(|_| std::fmt::Error)?;
        o.flush().map_err(|_| std::fmt::Error)
    }
}

/// Runs the benchmark, printing its report as it goes.
pub fn run(s: &Settings) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let loaded = mnist::load(s.data_dir, Which::Mnist)?;
    let splits = loaded.splits(false, &dev)?;
    let g = mnist_convnet::graph();
    let specs = mnist_convnet::probes(&g, s.subset, 0);
    let mut out = Out;
    writeln!(
        out,
        "bench train: mnist-convnet on MNIST, CPU ({} threads), batch 64, SGD momentum 0.9",
        candle_core::utils::get_num_threads()
    )?;
    let fresh = || -> anyhow::Result<(candle_nn::VarMap, Model)> {
        let vm = g.init_varmap(0, &dev)?;
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        Ok((vm, m))
    };
    let sgd = OptimKind::Sgd { momentum: 0.9 };
    let (vm, model) = fresh()?;
    let mut opt = Optim::new(&vm, sgd, 0.01, 5e-4)?;
    let (base_s, _, base_loss) =
        train_steps(&model, &mut opt, &splits.train, s.steps, None, &specs)?;
    let (vm, model) = fresh()?;
    let mut opt = Optim::new(&vm, sgd, 0.01, 5e-4)?;
    let mut online = OnlineProbes::new(specs.clone(), 10, &dev, OnlineConfig::default())?;
    let (with_s, probe_s, with_loss) = train_steps(
        &model,
        &mut opt,
        &splits.train,
        s.steps,
        Some(&mut online),
        &specs,
    )?;
    let per = |t: f64| t / s.steps as f64 * 1e3;
    writeln!(out, "{} training steps each run", s.steps)?;
    writeln!(
        out,
        "  without probes:            {:8.1} ms/step (final loss {base_loss:.4})",
        per(base_s)
    )?;
    writeln!(
        out,
        "  with 10 online probes:     {:8.1} ms/step (final loss {with_loss:.4}: the same model, the probes cannot change it)",
        per(with_s)
    )?;
    writeln!(
        out,
        "  ratio with/without:        {:8.3}  (probe updates alone: {:.1} ms/step, {:.1}% of a step with probes)",
        with_s / base_s,
        per(probe_s),
        100.0 * probe_s / with_s
    )?;
    if s.skip_snapshot {
        return Ok(());
    }
    let pick = |d: &crate::data::Dataset, n: usize| d.slice(0, n.min(d.len()));
    let sets = ProbeSets {
        train: pick(&splits.train, s.probe_samples)?,
        val: splits.val.clone(),
        test: splits.test.clone(),
    };
    let plan = Plan {
        flat: false,
        steps: 0,
        epochs: None,
        batch: 64,
        snapshot_steps: vec![],
        snapshot_each_epoch: false,
        online_every: 1,
        optim: sgd,
        lr: 0.01,
        lr_decay: 1.0,
        weight_decay: 0.0,
        clip: 0.0,
        probe_train: sets.train.len(),
        probe_val: sets.val.len(),
        probe_test: sets.test.len(),
        memory_mb: s.memory_mb,
        fit: Default::default(),
    };
    let samples = sets.train.len() + sets.val.len() + sets.test.len();
    let groups = trained::memory_groups(&specs, samples, s.memory_mb << 20).len();
    let t = Instant::now();
    let (fitted, _, metrics) = trained::converged(&model, &specs, &sets, None, &plan)?;
    let secs = t.elapsed().as_secs_f64();
    writeln!(
        out,
        "converged snapshot, {} probes on {} train / {} val / {} test samples, {} forward-pass groups (probe_memory_mb {}): {secs:.1} s",
        specs.len(),
        sets.train.len(),
        sets.val.len(),
        sets.test.len(),
        groups,
        s.memory_mb
    )?;
    writeln!(
        out,
        "  model after {} steps: test error {:.4}",
        s.steps,
        metrics.test_error.unwrap_or(f64::NAN)
    )?;
    writeln!(
        out,
        "  {:<15} {:>8} {:>10} {:>10} {:>6} {:>5}",
        "probe", "features", "train err", "test err", "iters", "conv"
    )?;
    for (sp, f) in specs.iter().zip(&fitted) {
        let r = &f.reading;
        writeln!(
            out,
            "  {:<15} {:>8} {:>10.4} {:>10.4} {:>6} {:>5}",
            sp.name,
            sp.width(),
            r.train_error,
            r.test_error.unwrap_or(f64::NAN),
            r.iterations,
            if r.converged { "yes" } else { "no" }
        )?;
    }
    Ok(())
}
