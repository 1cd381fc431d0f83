//! `untrained-mlp` (sec 3.3, Fig 3): probes on every layer of a deep MLP that is never trained.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::data;
use crate::graph::{Activation, Chain, Graph, Model};
use crate::params::{ParamSpec, Params};
use crate::probe::{self, ActivationStats, FitConfig, Fitted, ProbeSpec, Split};
use crate::runlog::{Record, Snapshot, SnapshotKind};

use super::{Preset, RunCtx};

/// The MLP: `depth` layers of `width` units with LeakyReLU(`slope`), Glorot normal, and a
/// two-class linear output. Probes on the input and on every hidden layer's activation.
pub fn graph(depth: usize, width: usize, slope: f64) -> Graph {
    let mut c = Chain::new(vec![width]);
    for i in 1..=depth {
        c.linear(format!("fc{i:02}"), width, false).activation(
            format!("h{i:02}"),
            Activation::LeakyRelu { slope },
            true,
        );
    }
    c.linear("logits", 2, false);
    c.finish("logits", 2)
}

/// One dataset's result: the fitted probes and the activation statistics, per tap.
pub struct DatasetResult {
    /// Per tap, in tap order.
    pub fitted: Vec<Fitted>,
    /// Per tap, on the training samples.
    pub stats: Vec<ActivationStats>,
}

/// Draws dataset `k` (fresh data, fresh w, fresh network weights) and runs the network: the
/// probes' features on `train` samples and on `test` held-out ones, and the taps' statistics.
#[allow(clippy::too_many_arguments)]
pub fn dataset_splits(
    g: &Graph,
    specs: &[ProbeSpec],
    seed: u64,
    k: usize,
    train: usize,
    test: usize,
    device: &Device,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<(Split, Split, Vec<ActivationStats>)> {
    let width = g.taps().map_err(candle_core::Error::wrap)?[0].features;
    let ds = data::sign_task(
        seed,
        &format!("dataset/{k}"),
        train + test,
        width,
        device,
        cancel,
    )?;
    let vm = g.init_varmap(seed.wrapping_add(k as u64 * 0x9e37_79b9), device)?;
    let model =
        Model::new(g, VarBuilder::from_varmap(&vm, DType::F32, device))?.stop_on(cancel.clone());
    let outs = model.forward(&ds.x)?;
    let mut tr = Vec::with_capacity(specs.len());
    let mut te = Vec::with_capacity(specs.len());
    let mut stats = Vec::with_capacity(specs.len());
    for s in specs {
        cancel.check_candle()?;
        let i = g.index_of(&s.tap).expect("probe on a known tap");
        let x = s.select(&outs[i])?;
        let x_train = x.narrow(0, 0, train)?;
        stats.push(probe::activation_stats(&x_train)?);
        tr.push(x_train);
        te.push(x.narrow(0, train, test)?);
    }
    let train_split = Split {
        x: tr,
        y: ds.y.narrow(0, 0, train)?,
    };
    let test_split = Split {
        x: te,
        y: ds.y.narrow(0, train, test)?,
    };
    Ok((train_split, test_split, stats))
}

/// Dataset `k` with a converged probe on every tap: train error on the `train` samples, test
/// error on the `test` held-out ones.
#[allow(clippy::too_many_arguments)]
pub fn run_dataset(
    g: &Graph,
    specs: &[ProbeSpec],
    seed: u64,
    k: usize,
    train: usize,
    test: usize,
    fit: &FitConfig,
    device: &Device,
) -> candle_core::Result<DatasetResult> {
    let (tr, te, stats) = dataset_splits(g, specs, seed, k, train, test, device, &fit.cancel)?;
    let fitted = probe::fit_converged(&tr, None, Some(&te), 2, None, fit)?;
    Ok(DatasetResult { fitted, stats })
}

/// The preset.
pub struct UntrainedMlp;

impl Preset for UntrainedMlp {
    fn name(&self) -> &'static str {
        "untrained-mlp"
    }

    fn about(&self) -> &'static str {
        "sec 3.3, Fig 3: probes on every layer of a deep MLP that is never trained; error climbs with depth"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("the paper's 100 datasets (about 30 s on 2 cores; datasets=20 for a quick look)")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int(
                "datasets",
                100,
                1,
                100_000,
                "toy datasets to average over (fresh data, w and weights each)",
            ),
            ParamSpec::int("depth", 32, 1, 1024, "hidden layers"),
            ParamSpec::int(
                "width",
                128,
                1,
                8192,
                "units per layer (and input dimension)",
            ),
            ParamSpec::float("slope", 0.5, -100.0, 100.0, "LeakyReLU negative slope"),
            ParamSpec::int(
                "train",
                10_000,
                2,
                10_000_000,
                "training samples per dataset",
            ),
            ParamSpec::int(
                "test",
                10_000,
                1,
                10_000_000,
                "held-out samples per dataset",
            ),
        ];
        p.extend(super::fit_params());
        p
    }

    fn graph(&self, p: &Params) -> Graph {
        graph(p.usize("depth"), p.usize("width"), p.f64("slope"))
    }

    fn probes(&self, _p: &Params, g: &Graph, _seed: u64) -> Vec<ProbeSpec> {
        super::probe_every_tap(g)
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let g = self.graph(p);
        let specs = self.probes(p, &g, ctx.seed);
        let fit = ctx.fit_config(p);
        let n = p.usize("datasets");
        let mut snaps = Vec::with_capacity(n);
        // Datasets are independent: fit a few at once, so the second core works while the other
        // runs its small sequential solver steps. Each draws from its own seeded streams, so the
        // numbers do not depend on how many run together.
        let workers = std::thread::available_parallelism().map_or(1, |c| c.get().clamp(1, 4));
        let (train, test) = (p.usize("train"), p.usize("test"));
        // One thread each: candle's products and the host kernels (rayon) inside a worker run
        // on its own one-thread pool, so two workers do not each split their work over both
        // cores as well (measured: 1.4x slower that way).
        let _serial = (workers > 1).then(crate::host::SerialProducts::begin);
        let pools: Vec<rayon::ThreadPool> = (0..workers)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<_, _>>()?;
        let mut pending: std::collections::VecDeque<(usize, DatasetResult)> = Default::default();
        for k in 0..n {
            ctx.check_stop()?;
            if pending.is_empty() {
                let ks: Vec<usize> = (k..(k + workers).min(n)).collect();
                let (g, specs, fit, dev, seed) = (&g, &specs, &fit, &ctx.device, ctx.seed);
                let results: Vec<candle_core::Result<DatasetResult>> = std::thread::scope(|s| {
                    let handles: Vec<_> = ks
                        .iter()
                        .zip(&pools)
                        .map(|(&k, pool)| {
                            s.spawn(move || {
                                pool.install(|| {
                                    run_dataset(g, specs, seed, k, train, test, fit, dev)
                                })
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("dataset worker panicked"))
                        .collect()
                });
                for (k, r) in ks.into_iter().zip(results) {
                    pending.push_back((k, r?));
                }
            }
            let (_, r) = pending.pop_front().expect("a result per dataset");
            let snap = Snapshot {
                step: 0,
                label: format!("dataset {k}"),
                kind: SnapshotKind::Converged,
                dataset: Some(k),
                epoch: None,
                probes: super::converged_readings(&specs, &r.fitted, Some(&r.stats)),
                model: None,
                elapsed_s: ctx.elapsed(),
                alerts: Vec::new(),
            };
            let first = &snap.probes[0].reading;
            let last = &snap.probes[snap.probes.len() - 1].reading;
            ctx.sink.progress(&format!(
                "dataset {}/{n}: train error {} {:.3} .. {} {:.3} ({:.1}s)",
                k + 1,
                snap.probes[0].probe,
                first.train_error,
                snap.probes[snap.probes.len() - 1].probe,
                last.train_error,
                ctx.elapsed()
            ));
            ctx.record(Record::Snapshot(snap.clone()))?;
            snaps.push(snap);
        }
        let refs: Vec<&Snapshot> = snaps.iter().collect();
        ctx.record(Record::Summary(super::summarise(
            "untrained-mlp: probe error per layer",
            &specs,
            &refs,
        )))
    }
}
