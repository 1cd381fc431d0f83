//! Probes on untrained networks over fresh datasets (sec 3.3, Fig 3): each dataset draws new data
//! and new weights, a converged probe on every tap is fitted on its training samples and tested
//! on its held-out ones (no early stopping: the fit converges), and a summary averages the
//! datasets. `untrained-mlp` is this loop on its MLP; a model file reaches it with
//! `[train] datasets = N`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::graph::{Graph, Model};
use crate::probe::{self, ActivationStats, FitConfig, Fitted, ProbeSpec, Split};
use crate::runlog::{Record, Snapshot, SnapshotKind};

use super::RunCtx;

/// Draws a dataset of `n` samples from the seeded stream named by the second argument.
pub type Draw<'a> = &'a (dyn Fn(u64, &str, usize, &Cancel) -> candle_core::Result<Dataset> + Sync);

/// One dataset's result: the fitted probes and the activation statistics, per tap.
pub struct DatasetResult {
    /// Per tap, in tap order.
    pub fitted: Vec<Fitted>,
    /// Per tap, on the training samples.
    pub stats: Vec<ActivationStats>,
}

/// Samples per block of a dataset's forward pass: a 128-wide layer's block is 256 KB, so a
/// block's layers stay in the second-level cache.
const FORWARD_ROWS: usize = 512;

/// Draws dataset `k` (fresh data from the stream `dataset/k`, fresh network weights) and runs
/// the network: the probes' features on `train` samples and on `test` held-out ones, and the
/// taps' statistics.
#[allow(clippy::too_many_arguments)]
pub fn dataset_splits(
    g: &Graph,
    specs: &[ProbeSpec],
    seed: u64,
    k: usize,
    (train, test): (usize, usize),
    draw: Draw<'_>,
    device: &Device,
    cancel: &Cancel,
) -> candle_core::Result<(Split, Split, Vec<ActivationStats>)> {
    let ds = draw(seed, &format!("dataset/{k}"), train + test, cancel)?;
    let vm = g.init_varmap(seed.wrapping_add(k as u64 * 0x9e37_79b9), device)?;
    let model =
        Model::new(g, VarBuilder::from_varmap(&vm, DType::F32, device))?.stop_on(cancel.clone());
    let nodes: Vec<usize> = specs
        .iter()
        .map(|s| g.index_of(&s.tap).expect("probe on a known tap"))
        .collect();
    let last = nodes.iter().copied().max().unwrap_or(0);
    // A chain of linear layers and LeakyReLUs on the host (untrained-mlp) runs in blocks of
    // rows, each tap's block written in place and the untapped layers' outputs never held:
    // over 40 datasets its forward passes took 10.6 s against 11.1 s for a pass over every
    // sample at once, and the run's peak memory fell from 1.33 to 0.70 GB.
    let x: Vec<Tensor> = match model.chain_outputs(&ds.x, last, &nodes, FORWARD_ROWS) {
        Some(outs) => outs?,
        None => {
            let outs = model.forward_until(&ds.x, last)?;
            nodes.iter().map(|&i| outs[i].clone()).collect()
        }
    }
    .iter()
    .zip(specs)
    .map(|(o, s)| s.select(o))
    .collect::<candle_core::Result<_>>()?;
    let mut tr = Vec::with_capacity(specs.len());
    let mut te = Vec::with_capacity(specs.len());
    let mut stats = Vec::with_capacity(specs.len());
    for x in x {
        cancel.check_candle()?;
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
    sizes: (usize, usize),
    draw: Draw<'_>,
    fit: &FitConfig,
    device: &Device,
) -> candle_core::Result<DatasetResult> {
    let (tr, te, stats) = dataset_splits(g, specs, seed, k, sizes, draw, device, &fit.cancel)?;
    let fitted = probe::fit_converged(&tr, None, Some(&te), g.classes, None, fit)?;
    Ok(DatasetResult { fitted, stats })
}

/// The run: `n` datasets of `sizes` (train, test) samples drawn by `draw`, a converged snapshot
/// of each (labelled `dataset K`), then a summary over them headed `NAME: probe error per
/// layer`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    name: &str,
    g: &Graph,
    specs: &[ProbeSpec],
    fit: &FitConfig,
    n: usize,
    sizes: (usize, usize),
    draw: Draw<'_>,
    ctx: &mut RunCtx<'_>,
) -> anyhow::Result<()> {
    let mut snaps = Vec::with_capacity(n);
    // Datasets are independent: fit a few at once, so the second core works while the other
    // runs its small sequential solver steps. Each draws from its own seeded streams, so the
    // numbers do not depend on how many run together.
    let workers = std::thread::available_parallelism().map_or(1, |c| c.get().clamp(1, 4));
    // One thread each: candle's products and the host kernels (rayon) inside a worker run on
    // its own one-thread pool, so two workers do not each split their work over both cores as
    // well (measured: 1.4x slower that way).
    let _serial = (workers > 1).then(crate::host::SerialProducts::begin);
    // The workers share the last-level cache that `batch_bytes` sizes a batch for, and each
    // streams its forward pass through it too: measured on untrained-mlp (2 workers, 40
    // datasets), the solver's passes took 8.0 s with the whole size, 6.4 s with half (two
    // probes a batch) and 4.7 s with a quarter (one), the numbers the same.
    let fit = &FitConfig {
        batch_bytes: fit.batch_bytes / (2 * workers),
        ..fit.clone()
    };
    let pools: Vec<rayon::ThreadPool> = (0..workers)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect::<Result<_, _>>()?;
    let mut pending: std::collections::VecDeque<(usize, DatasetResult)> = Default::default();
    for k in 0..n {
        ctx.check_stop()?;
        if pending.is_empty() {
            let ks: Vec<usize> = (k..(k + workers).min(n)).collect();
            let (dev, seed) = (&ctx.device, ctx.seed);
            let results: Vec<candle_core::Result<DatasetResult>> = std::thread::scope(|s| {
                let handles: Vec<_> = ks
                    .iter()
                    .zip(&pools)
                    .map(|(&k, pool)| {
                        s.spawn(move || {
                            pool.install(|| run_dataset(g, specs, seed, k, sizes, draw, fit, dev))
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
            probes: super::converged_readings(specs, &r.fitted, Some(&r.stats)),
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
        &format!("{name}: probe error per layer"),
        specs,
        &refs,
    )))
}
