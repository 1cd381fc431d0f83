//! `probescope bench train`: what the probes cost a real training run, on MNIST with the
//! `mnist-convnet` model.
//!
//! 1. Training steps without probes, then the same steps (same seed, same minibatches, a fresh
//!    model) with online probes on all 10 taps: the ratio of the two, and the probes' own share
//!    of the second run timed around their updates.
//! 2. One converged snapshot of the 10 probes on the trained model: its time, its memory groups
//!    and every probe's test error.
//! 3. The paper's procedure (minibatch RMSProp) on the same snapshot, as the baseline: its time,
//!    the ratio, and every probe's test error beside the converged one.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::graph::Model;
use crate::mnist::{self, Which};
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
    /// Where to compute.
    pub device: Device,
    /// Rounds of the two training runs, in alternating order (the median is reported).
    pub rounds: usize,
    /// Also take the snapshot with every tap's activations in bfloat16 and compare every
    /// probe's error.
    pub bf16: bool,
    /// Take the snapshot with every tap's activations in bfloat16 only.
    pub bf16_only: bool,
    /// Skip the paper's RMSProp procedure on the snapshot (the baseline).
    pub skip_rmsprop: bool,
    /// Steps between online-probe updates (the presets' `online_update_every`).
    pub update_every: usize,
    /// The snapshot's early-stopping patience (the presets' `probe_patience`).
    pub patience: usize,
    /// Also take the snapshot with every probe on its own features (`probe_affine=off`) first.
    pub affine_off_too: bool,
    /// Also take the snapshot without the wide probes' low-rank preconditioner (`probe_rank=0`)
    /// first.
    pub rank_off_too: bool,
    /// Also take the snapshot with every tap's activations in f32 (`probe_dtype=f32`) first,
    /// as the baseline of the default (`probe_dtype=auto`).
    pub f32_too: bool,
    /// Also train with the online probes stepped by candle's operations (`OnlineConfig::fused`
    /// off; on the CPU the same host kernel either way).
    pub online_ops_too: bool,
}

fn train_steps(
    model: &Model,
    opt: &mut Optim,
    data: &crate::data::Dataset,
    steps: usize,
    mut online: Option<&mut OnlineProbes>,
    specs: &[ProbeSpec],
    update_every: usize,
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
        if let Some(on) = online
            .as_deref_mut()
            .filter(|_| step % update_every.max(1) == 0)
        {
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

/// Minibatches of 64 in an epoch of MNIST's 50,000 training images (10,000 held out).
const STEPS_PER_EPOCH: f64 = 781.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark, printing its report as it goes.
pub fn run(s: &Settings) -> anyhow::Result<()> {
    let dev = s.device.clone();
    let loaded = mnist::load(s.data_dir, Which::Mnist)?;
    let splits = loaded.splits(false, &dev)?;
    let g = crate::presets::default_graph("mnist-convnet")?;
    let specs = crate::presets::probes_with_subset(&g, s.subset, 0);
    let mut out = Out;
    let threads = if dev.is_cpu() {
        format!(" ({} threads)", candle_core::utils::get_num_threads())
    } else {
        String::new()
    };
    writeln!(
        out,
        "bench train: mnist-convnet on MNIST, {}{threads}, batch 64, SGD momentum 0.9",
        crate::device::device_name(&dev)
    )?;
    let fresh = || -> anyhow::Result<(candle_nn::VarMap, Model)> {
        let vm = g.init_varmap(0, &dev)?;
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        Ok((vm, m))
    };
    let sgd = OptimKind::Sgd { momentum: 0.9 };
    let online = |fused: bool| {
        let cfg = OnlineConfig {
            fused,
            ..OnlineConfig::default()
        };
        OnlineProbes::new(specs.clone(), 10, &dev, cfg)
    };
    // The runs of a round: without probes, with the probes' default step, and with candle's
    // operations where asked; each round starts at a different one, so that none always meets
    // a cold or a hot machine.
    let mut runs = vec![None, Some(true)];
    if s.online_ops_too {
        runs.push(Some(false));
    }
    // Warm-up, untimed: the first steps load kernels and create library handles.
    {
        let (vm, model) = fresh()?;
        let mut opt = Optim::new(&vm, sgd, 0.01, 5e-4)?;
        let warm = s.steps.min(20);
        for run in &runs {
            let mut on = run.map(&online).transpose()?;
            train_steps(
                &model,
                &mut opt,
                &splits.train,
                warm,
                on.as_mut(),
                &specs,
                1,
            )?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut probe_times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut losses = vec![f64::NAN; runs.len()];
    let mut trained = None;
    for round in 0..s.rounds.max(1) {
        for at in 0..runs.len() {
            let r = (round + at) % runs.len();
            let (vm, model) = fresh()?;
            let mut opt = Optim::new(&vm, sgd, 0.01, 5e-4)?;
            let mut on = runs[r].map(&online).transpose()?;
            let (t, p, l) = train_steps(
                &model,
                &mut opt,
                &splits.train,
                s.steps,
                on.as_mut(),
                &specs,
                s.update_every,
            )?;
            times[r].push(t);
            probe_times[r].push(p);
            losses[r] = l;
            if r == 1 {
                trained = Some(model);
            }
        }
    }
    let model = trained.expect("at least one round");
    let per = |t: f64| t / s.steps as f64 * 1e3;
    let base_s = median(times[0].clone());
    writeln!(
        out,
        "{} training steps each run, {} rounds in rotating order (medians)",
        s.steps,
        s.rounds.max(1)
    )?;
    writeln!(
        out,
        "  without probes:            {:8.2} ms/step, {:7.2} s/epoch (final loss {:.4})",
        per(base_s),
        per(base_s) * STEPS_PER_EPOCH / 1e3,
        losses[0]
    )?;
    for r in 1..runs.len() {
        let (with_s, probe_s) = (median(times[r].clone()), median(probe_times[r].clone()));
        let how = match (runs[r], dev.is_cpu()) {
            (_, true) => "",
            (Some(true), false) => " (fused kernels)",
            _ => " (candle's operations)",
        };
        let label = format!("with 10 online probes{how}:");
        writeln!(
            out,
            "  {label:<27}{:8.2} ms/step, {:7.2} s/epoch (final loss {:.4}: the same model, the probes cannot change it; updated every {} steps)",
            per(with_s),
            per(with_s) * STEPS_PER_EPOCH / 1e3,
            losses[r],
            s.update_every.max(1)
        )?;
        writeln!(
            out,
            "  ratio with/without:        {:8.3}  (probe updates alone: {:.2} ms/step, {:.1}% of a step with probes)",
            with_s / base_s,
            per(probe_s),
            100.0 * probe_s / with_s
        )?;
    }
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
        online_update_every: 1,
        optim: sgd,
        lr: 0.01,
        lr_decay: 1.0,
        weight_decay: 0.0,
        clip: 0.0,
        probe_train: sets.train.len(),
        probe_val: sets.val.len(),
        probe_test: sets.test.len(),
        memory_mb: s.memory_mb,
        affine: true,
        fit: Default::default(),
    };
    // The first snapshot is the baseline of the others; the RMSProp procedure is the baseline
    // of the first one with probe_affine on (the default), on its settings.
    let mut first: Option<(Vec<f64>, f64)> = None;
    let mut main: Option<(Vec<f64>, f64, Plan)> = None;
    let rank = crate::probe::FitConfig::default().rank;
    // (activations, probe_affine, probe_rank), activations as the presets' probe_dtype. The
    // first is the baseline of the rest; the main one (the default, or all bf16 with
    // --bf16-only) is the RMSProp procedure's.
    let main_dtype = if s.bf16_only { "bf16" } else { "auto" };
    let mut variants = Vec::new();
    if s.f32_too {
        variants.push(("f32", true, rank));
    }
    if s.rank_off_too {
        variants.push((main_dtype, true, 0));
    }
    if s.affine_off_too {
        variants.push((main_dtype, false, rank));
    }
    variants.push((main_dtype, true, rank));
    if s.bf16 {
        variants.push(("bf16", true, rank));
    }
    for (dtype, affine, rank) in variants {
        let plan = Plan {
            affine,
            fit: crate::probe::FitConfig {
                patience: s.patience,
                rank,
                ..Default::default()
            }
            .with_probe_dtype(Some(dtype)),
            ..plan.clone()
        };
        let held = trained::held_samples(
            (sets.train.len(), sets.val.len(), sets.test.len()),
            &plan.fit,
        );
        let enabled = affine && s.device.is_cpu();
        let bases = trained::affine_bases(model.graph(), &specs, &plan.fit, enabled);
        let groups = trained::snapshot_groups(
            model.graph(),
            &specs,
            held,
            &plan.fit,
            s.memory_mb << 20,
            &bases,
        )
        .len();
        let reset = crate::memory::reset_peak_rss();
        let t = Instant::now();
        let (fitted, _, metrics) = trained::converged(&model, &specs, &sets, None, &plan)?;
        let secs = t.elapsed().as_secs_f64();
        // The peak from the snapshot's start (the process holds the data and the model too),
        // where the system lets the peak be reset.
        let peak = match crate::memory::peak_rss().filter(|_| reset) {
            Some(b) => format!(", peak resident memory {:.2} GB", b as f64 / 1e9),
            None => String::new(),
        };
        writeln!(
            out,
            "converged snapshot (probe_dtype {dtype}: {} activations, probe_affine {}, probe_rank {rank}), {} probes on {} train / {} val / {} test samples, {} forward-pass groups (probe_memory_mb {}, probe_patience {}): {secs:.1} s{peak}",
            plan.fit.feature_dtype_label(),
            if affine { "on" } else { "off" },
            specs.len(),
            sets.train.len(),
            sets.val.len(),
            sets.test.len(),
            groups,
            s.memory_mb,
            s.patience
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
        let errs: Vec<f64> = fitted
            .iter()
            .map(|f| f.reading.test_error.unwrap_or(f64::NAN))
            .collect();
        match &first {
            None => first = Some((errs.clone(), secs)),
            Some((first_errs, first_secs)) => {
                let worst = first_errs
                    .iter()
                    .zip(&errs)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                writeln!(
                    out,
                    "  against the first snapshot above: largest test-error difference {:.3} percentage points, {:.2}x its time",
                    100.0 * worst,
                    secs / first_secs
                )?;
            }
        }
        if dtype == main_dtype && affine && rank > 0 && main.is_none() {
            main = Some((errs, secs, plan.clone()));
        }
    }
    if let (Some((errs, secs, plan)), false) = (main, s.skip_rmsprop) {
        // The paper's procedure on the same features, memory groups and forward passes.
        let (epochs, batch, lr) = (8, 100, 1e-3);
        let cancel = plan.fit.cancel.clone();
        let t = Instant::now();
        let base = trained::fit_each_and_test(&model, &specs, &sets, &plan, |x, y| {
            crate::bench::rmsprop_probe(x, y, 10, epochs, batch, lr, 0, &cancel)
        })?;
        let base_s = t.elapsed().as_secs_f64();
        writeln!(
            out,
            "the paper's procedure on the same snapshot (RMSProp, {epochs} epochs, batch {batch}, lr {lr}, standardised features, residuals under 1e-15 as 0, {} activations): {base_s:.1} s; the converged snapshot took {:.2}x its time",
            plan.fit.feature_dtype_label(),
            secs / base_s
        )?;
        writeln!(
            out,
            "  {:<15} {:>10} {:>10}",
            "probe", "converged", "rmsprop"
        )?;
        for ((sp, a), b) in specs.iter().zip(&errs).zip(&base) {
            writeln!(out, "  {:<15} {a:>10.4} {b:>10.4}", sp.name)?;
        }
    }
    Ok(())
}
