//! The training loop shared by the presets that train a model on MNIST or Fashion-MNIST
//! (`mnist-convnet`, `deep-mlp`).
//!
//! Every step: a minibatch forward pass, the model's update, and one online-probe update on the
//! detached taps. At the plan's snapshot steps: every probe fitted to convergence on the frozen
//! model (the paper's Fig 5 procedure: a probe-training set, early stopping on the validation
//! split, the test error reported), warm-started from the previous converged snapshot.
//!
//! Converged snapshots never hold every tap's features at once: taps are fitted in groups whose
//! features fit `probe_memory_mb`, each group from its own chunked forward pass, so the 25,088-
//! feature taps of the convnet fit in a few GiB.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::graph::{Graph, Model};
use crate::mnist::{self, Which};
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::{
    self, ActivationStats, FitConfig, Fitted, LinearProbe, OnlineConfig, OnlineProbes, ProbeSpec,
    Split,
};
use crate::runlog::{ModelMetrics, Record, Snapshot, SnapshotKind};
use crate::train::{self, Batches, CheckpointId, Optim, OptimKind};

use super::RunCtx;

/// Samples per forward pass when computing features for converged fits.
const CHUNK: usize = 500;

/// How a preset trains.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Images `[n, 1, 28, 28]` (false) or vectors `[n, 784]` (true).
    pub flat: bool,
    /// Minibatches in all (unless `epochs` is given).
    pub steps: usize,
    /// Train for this many epochs instead of `steps` minibatches.
    pub epochs: Option<usize>,
    /// Samples per minibatch.
    pub batch: usize,
    /// Steps at which to take converged snapshots (0 = at initialisation).
    pub snapshot_steps: Vec<usize>,
    /// Also take one at the end of every epoch.
    pub snapshot_each_epoch: bool,
    /// Steps between online snapshots in the log.
    pub online_every: usize,
    /// Steps between online-probe updates.
    pub online_update_every: usize,
    /// The optimiser.
    pub optim: OptimKind,
    /// Initial learning rate.
    pub lr: f64,
    /// Learning-rate factor per epoch.
    pub lr_decay: f64,
    /// L2 penalty on the weights.
    pub weight_decay: f64,
    /// Gradient-norm clipping (0: none).
    pub clip: f64,
    /// Samples of the training split the converged probes are fitted on.
    pub probe_train: usize,
    /// Samples of the validation split used for early stopping.
    pub probe_val: usize,
    /// Samples of the test split the converged probes are tested on.
    pub probe_test: usize,
    /// Most MiB of features held at once during a converged snapshot.
    pub memory_mb: usize,
    /// Fit a probe whose tap is a wider affine map of another probe's tap (a convolution's
    /// output) through that tap's features, without holding its own (see [`affine_bases`]).
    pub affine: bool,
    /// The converged fit's settings.
    pub fit: FitConfig,
}

impl Plan {
    /// The plan the shared training parameters ask for, on `flat` or image input; the preset
    /// sets the length and the snapshot steps.
    pub fn from_params(p: &Params, flat: bool) -> Self {
        Self {
            flat,
            steps: 0,
            epochs: None,
            batch: p.usize("batch"),
            snapshot_steps: Vec::new(),
            snapshot_each_epoch: false,
            online_every: p.usize("online_every"),
            online_update_every: p.usize("online_update_every"),
            optim: optim_of(p),
            lr: p.f64("lr"),
            lr_decay: p.f64("lr_decay"),
            weight_decay: p.f64("weight_decay"),
            clip: p.f64("clip"),
            probe_train: p.usize("probe_train"),
            probe_val: p.usize("probe_val"),
            probe_test: p.usize("probe_test"),
            memory_mb: p.usize("probe_memory_mb"),
            affine: affine_on(p),
            fit: super::fit_config(p),
        }
    }
}

/// The parameters every training preset takes (after its own).
pub fn training_params(
    batch: u64,
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    clip: f64,
    online_every: u64,
) -> Vec<ParamSpec> {
    let mut p = vec![
        ParamSpec::choice(
            "dataset",
            &["mnist", "fashion-mnist"],
            "which dataset (the files come from `probescope data fetch NAME`)",
        ),
        ParamSpec::choice(
            "optimizer",
            &["sgd", "adam", "rmsprop"],
            "sgd (with momentum), adam, or rmsprop (PyTorch's: alpha 0.99, eps 1e-8, the paper's \
             probe optimiser)",
        ),
        ParamSpec::float("lr", lr, 1e-9, 10.0, "initial learning rate"),
        ParamSpec::float(
            "lr_decay",
            lr_decay,
            0.0,
            1.0,
            "learning-rate factor per epoch (1 = constant)",
        ),
        ParamSpec::float("momentum", 0.9, 0.0, 0.9999, "momentum of sgd"),
        ParamSpec::float(
            "weight_decay",
            weight_decay,
            0.0,
            1.0,
            "L2 penalty on the weights (not the biases)",
        ),
        ParamSpec::int("batch", batch, 1, 50_000, "minibatch size"),
        ParamSpec::float(
            "clip",
            clip,
            0.0,
            1e6,
            "largest global gradient norm, larger ones scaled down to it (0: no clipping)",
        ),
        ParamSpec::int(
            "online_every",
            online_every,
            1,
            10_000_000,
            "steps between online-probe snapshots in the log",
        ),
        ParamSpec::int(
            "online_update_every",
            1,
            1,
            10_000_000,
            "steps between online-probe updates (1: every minibatch; 4 spends a quarter of the \
             time on them, each probe seeing every 4th minibatch)",
        ),
        ParamSpec::int(
            "probe_train",
            10_000,
            10,
            50_000,
            "training samples the converged probes are fitted on",
        ),
        ParamSpec::int(
            "probe_val",
            10_000,
            10,
            mnist::VALIDATION as u64,
            "validation samples for the probes' early stopping",
        ),
        ParamSpec::int(
            "probe_test",
            10_000,
            10,
            10_000,
            "test samples the converged probes are tested on",
        ),
        ParamSpec::int(
            "probe_memory_mb",
            4096,
            16,
            1 << 24,
            "most MiB of features held at once in a converged snapshot (more taps per pass)",
        ),
        ParamSpec::choice(
            "probe_dtype",
            &["auto", "f32", "bf16"],
            "precision a converged snapshot keeps the taps' activations in: bf16 halves their \
             memory (more taps per forward pass) and the bytes each solver pass reads; auto \
             keeps the taps wider than 1,024 features (those not whitened) in bf16, the rest \
             in f32; on CPUs with AVX-512 BF16 the fits of bf16 taps start with bf16 products \
             and finish in f32 (f32: f32 throughout)",
        ),
        ParamSpec::choice(
            "probe_affine",
            &["on", "off"],
            "fit a probe on a convolution's output (before its activation) through the probed \
             tap the convolution reads, moving the weights through the convolution: the same fit \
             without holding or reading the wider features (mnist-convnet's conv1_preact reads \
             784 features a pass, not 25,088); off holds them",
        ),
    ];
    p.extend(super::fit_params());
    p
}

/// Whether `probe_affine` is on (it is where a preset does not have it).
fn affine_on(p: &Params) -> bool {
    !matches!(
        p.0.get("probe_affine"),
        Some(crate::params::ParamValue::Text(t)) if t == "off"
    )
}

/// Which dataset the parameters name.
pub fn dataset_of(p: &Params) -> Which {
    Which::parse(p.text("dataset")).expect("a checked choice")
}

/// Checks that the dataset is there and reads well before anything starts (reading it takes
/// well under a second), so a missing or damaged file is bad input, not a failed run.
pub fn check_data(p: &Params, data_dir: &std::path::Path) -> Result<(), ParamError> {
    mnist::check_present(data_dir, dataset_of(p)).map_err(ParamError)?;
    mnist::load(data_dir, dataset_of(p))
        .map(|_| ())
        .map_err(|e| ParamError(format!("{e:#}")))
}

/// The optimiser the parameters ask for.
pub fn optim_of(p: &Params) -> OptimKind {
    match p.text("optimizer") {
        "adam" => OptimKind::adam(),
        "rmsprop" => OptimKind::rmsprop(),
        _ => OptimKind::Sgd {
            momentum: p.f64("momentum"),
        },
    }
}

/// `snapshot_every`: converged snapshots every N minibatches besides the epoch ends.
pub fn snapshot_every_param() -> ParamSpec {
    ParamSpec::int(
        "snapshot_every",
        0,
        0,
        100_000_000,
        "also fit converged probes every this many minibatches (0: only at epoch ends)",
    )
}

/// The steps at which a run of `total` steps fits converged probes: those of `at`, and every
/// `every` steps from step 0 (none when `every` is 0), up to `total`, in order, each once.
pub fn snapshot_steps(at: &[usize], every: usize, total: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = at.iter().copied().filter(|&s| s <= total).collect();
    if every > 0 {
        steps.extend((0..=total).step_by(every));
    }
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// The samples the converged probes use.
pub(crate) struct ProbeSets {
    pub(crate) train: Dataset,
    pub(crate) val: Dataset,
    pub(crate) test: Dataset,
}

/// Per-probe features of a split (an empty `[n, 0]` tensor for a probe fitted through an
/// affine map), (when asked) the model's mean loss and error on it, (when asked) the taps'
/// statistics, and per probe fitted through an affine map, its features' moments (when the
/// statistics are asked for).
type Features = (
    Vec<Tensor>,
    Option<(f64, f64)>,
    Option<Vec<ActivationStats>>,
    Vec<Option<probe::Moments>>,
);

/// The graph nodes of the probes `groups`' taps, and the last node a forward pass for them
/// must reach: only as far into the model as the deepest tap (or the logits, for the model's
/// own `metrics`).
fn tap_nodes(
    model: &Model,
    groups: &[usize],
    specs: &[ProbeSpec],
    metrics: bool,
) -> (Vec<usize>, usize) {
    let g = model.graph();
    let nodes: Vec<usize> = groups
        .iter()
        .map(|&i| g.index_of(&specs[i].tap).expect("known tap"))
        .collect();
    let mut last = nodes.iter().copied().max().unwrap_or(0);
    if metrics {
        last = last.max(g.index_of(&g.output).expect("valid graph"));
    }
    (nodes, last)
}

/// The features of the probes `groups` on `data`, from a forward pass in chunks of [`CHUNK`]
/// samples. Each probe's features are written into one matrix reserved up front (no chunks
/// kept and joined, which would hold them twice; see [`crate::host::RowSink`]), and a stop is
/// honoured between chunks. The probes marked in `through` (fitted through an affine map) get
/// no features, only their moments where `stats` asks.
#[allow(clippy::too_many_arguments)]
fn features_of(
    model: &Model,
    groups: &[usize],
    specs: &[ProbeSpec],
    data: &Dataset,
    metrics: bool,
    stats: bool,
    fit: &FitConfig,
    through: &[bool],
    cancel: &Cancel,
) -> candle_core::Result<Features> {
    let n = data.len();
    let dev = data.x.device();
    let (nodes, last) = tap_nodes(model, groups, specs, metrics);
    let mapped = |k: usize| through.get(k).copied().unwrap_or(false);
    let mut x = groups
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let width = if mapped(k) { 0 } else { specs[i].width() };
            crate::host::RowSink::new((n, width), fit.feature_dtype_of(specs[i].width()), dev)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut moments: Vec<Option<probe::Moments>> = (0..groups.len())
        .map(|k| (stats && mapped(k)).then(Default::default))
        .collect();
    let mut acc: Vec<probe::StatsAccumulator> = Vec::new();
    if stats {
        acc.resize_with(groups.len(), Default::default);
    }
    let (mut loss, mut wrong) = (0f64, 0f64);
    for b in cancel.blocks(n, CHUNK) {
        let (start, len) = b?;
        let outs = model.infer_until(&data.x.narrow(0, start, len)?, last)?;
        for (k, &i) in groups.iter().enumerate() {
            let part = specs[i].select(&outs[nodes[k]])?;
            if stats {
                acc[k].add(&part)?;
            }
            if let Some(m) = &mut moments[k] {
                m.add(&part)?;
            }
            if !mapped(k) {
                x[k].push(&part)?;
            }
        }
        if metrics {
            let y = data.y.narrow(0, start, len)?;
            let logits = model.logits(&outs);
            loss +=
                candle_nn::loss::cross_entropy(logits, &y)?.to_scalar::<f32>()? as f64 * len as f64;
            wrong += probe::errors(&logits.unsqueeze(0)?, &y)?[0] * len as f64;
        }
    }
    let stats = stats
        .then(|| acc.iter().map(|a| a.finish()).collect())
        .transpose()?;
    let x = x
        .into_iter()
        .map(crate::host::RowSink::finish)
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((
        x,
        metrics.then(|| (loss / n as f64, wrong / n as f64)),
        stats,
        moments,
    ))
}

/// Per probe, the probe through whose tap it can be fitted (see [`probe::affine`]): its tap is
/// a stride-1 convolution's or a widening linear layer's output (before any activation) whose
/// input is another probe's whole tap, and it is wider than that tap and than the whitened
/// probes ([`FitConfig::whiten_max`]). Both probes read every feature of their taps. None
/// unless `enabled` (`probe_affine` on, features on the host), nor with a transfer matrix (which
/// reads every probe's own features) or more classes than the host kernels take.
pub fn affine_bases(
    g: &Graph,
    specs: &[ProbeSpec],
    fit: &FitConfig,
    enabled: bool,
) -> Vec<Option<usize>> {
    let mut out = vec![None; specs.len()];
    if !enabled || fit.transfer || g.classes > crate::host::SOFTMAX_FIT_MAX_CLASSES {
        return out;
    }
    let node_of = |s: &ProbeSpec| g.index_of(&s.tap);
    for (i, s) in specs.iter().enumerate() {
        let Some(from) = node_of(s).and_then(|node| g.affine_source(node)) else {
            continue;
        };
        if s.subset.is_some() || s.width() <= fit.whiten_max {
            continue;
        }
        out[i] = specs
            .iter()
            .position(|b| b.subset.is_none() && node_of(b) == Some(from));
    }
    out
}

/// Per member of `group`, whether it is fitted through an affine map of another member's tap
/// (its base, from [`affine_bases`], is in the group).
fn through_in(group: &[usize], bases: &[Option<usize>]) -> Vec<bool> {
    group
        .iter()
        .map(|&i| matches!(bases.get(i), Some(Some(b)) if group.contains(b)))
        .collect()
}

/// Groups of probe indices whose features for `samples` samples, `elems[i]` bytes each for
/// probe `i` (see [`FitConfig::feature_bytes`]), fit `budget` bytes (a probe larger than the
/// budget is a group of its own): consecutive probes, as many to a group as fit.
pub(crate) fn memory_groups(
    specs: &[ProbeSpec],
    samples: usize,
    elems: &[usize],
    budget: usize,
) -> Vec<Vec<usize>> {
    memory_groups_with(specs, samples, elems, budget, &[], &[])
}

/// Per probe of `specs`, what a forward pass that makes its tap costs a sample (the sum of
/// [`Graph::forward_costs`] up to its node: [`Model::infer_until`] computes every node before
/// the last one asked for).
pub(crate) fn tap_depths(graph: &Graph, specs: &[ProbeSpec]) -> Vec<f64> {
    let mut prefix = graph.forward_costs();
    for i in 1..prefix.len() {
        prefix[i] += prefix[i - 1];
    }
    specs
        .iter()
        .map(|s| {
            graph
                .index_of(&s.tap)
                .and_then(|k| prefix.get(k))
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// [`memory_groups`], where a probe with `bases[i]` (see [`affine_bases`]) holds no features
/// when its base is in its group (it costs nothing there), and with `depths` (per probe, from
/// [`tap_depths`]) the groups of consecutive probes that fit are chosen for the least forward
/// work: the sum over groups of the deepest member's depth, and then the fewest groups. Each
/// group is a forward pass over every sample, so a cut between two taps behind one expensive
/// layer (mnist-convnet's second convolution) makes it run twice. Without depths: as many
/// consecutive probes to a group as fit.
pub(crate) fn memory_groups_with(
    specs: &[ProbeSpec],
    samples: usize,
    elems: &[usize],
    budget: usize,
    bases: &[Option<usize>],
    depths: &[f64],
) -> Vec<Vec<usize>> {
    let n = specs.len();
    let base = |i: usize| bases.get(i).copied().flatten();
    let own = |i: usize| specs[i].width() * samples * elems[i];
    if depths.len() != n {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut used = 0usize;
        for i in 0..n {
            let free = matches!((base(i), groups.last()), (Some(b), Some(g)) if g.contains(&b));
            let bytes = if free { 0 } else { own(i) };
            match groups.last_mut() {
                Some(g) if used + bytes <= budget => {
                    g.push(i);
                    used += bytes;
                }
                _ => {
                    groups.push(vec![i]);
                    used = bytes;
                }
            }
        }
        return groups;
    }
    // The probes fitted through each probe's features.
    let mut through: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        if let Some(b) = base(i).filter(|&b| b < n) {
            through[b].push(i);
        }
    }
    // best[j]: the least (work, groups) that covers probes 0..j, and where its last group starts.
    let mut best: Vec<(f64, usize, usize)> = vec![(f64::INFINITY, usize::MAX, 0); n + 1];
    best[0] = (0.0, 0, 0);
    for j in 1..=n {
        // Probes i..j, grown at the front: a new first member frees those fitted through it
        // that are in the group.
        let (mut bytes, mut deepest) = (0usize, 0f64);
        for i in (0..j).rev() {
            let free = base(i).is_some_and(|b| b > i && b < j);
            bytes += if free { 0 } else { own(i) };
            for &k in &through[i] {
                if k > i && k < j {
                    bytes -= own(k);
                }
            }
            deepest = deepest.max(depths[i]);
            if bytes > budget && j - i > 1 {
                continue;
            }
            let (work, groups, _) = best[i];
            let cand = (work + deepest, groups + 1, i);
            if (cand.0, cand.1) < (best[j].0, best[j].1) {
                best[j] = cand;
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = best[j].2;
        groups.push((i..j).collect());
        j = i;
    }
    groups.reverse();
    groups
}

/// The memory groups a converged snapshot of `specs` on `graph` takes, `held` samples of each
/// probe's features kept as `fit` keeps them, in `budget` bytes, the probes with `bases` fitted
/// through their base (see [`affine_bases`]): the cut with the least forward work. The snapshot
/// itself, its memory estimate and the benchmark's report all take their groups from here.
pub(crate) fn snapshot_groups(
    graph: &Graph,
    specs: &[ProbeSpec],
    held: usize,
    fit: &FitConfig,
    budget: usize,
    bases: &[Option<usize>],
) -> Vec<Vec<usize>> {
    memory_groups_with(
        specs,
        held,
        &fit.feature_bytes(specs),
        budget,
        bases,
        &tap_depths(graph, specs),
    )
}

/// A run's peak memory, estimated before it starts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The whole process at its peak.
    pub peak: u64,
    /// Of which the taps' features held at once in a converged snapshot (the largest group).
    pub features: u64,
    /// Of which the solver's own copies while it fits the widest batch of that group.
    pub solver: u64,
}

/// What the process holds besides the run's data: the binary, candle's and the allocator's own
/// memory, the threads' stacks (measured: 120 to 160 MB for a run with small probe sets).
pub(crate) const PROCESS_BASE: u64 = 150 << 20;

/// The peak memory of a run that trains `graph` on `train` + `val` + `test` samples with converged
/// snapshots of the probes `specs`, as the code here allocates it: the data and the probe sets in
/// f32, the model and its optimiser, and the largest memory group of a snapshot: its features,
/// plus the larger of one forward-pass chunk of every node (held while the group's features are
/// made, and while its test split is scored) and the solver's own memory for the group's widest
/// batch (held while it is fitted, after the forward passes).
pub fn memory_estimate(
    p: &Params,
    graph: &Graph,
    specs: &[ProbeSpec],
    (train, val, test): (usize, usize, usize),
) -> MemoryEstimate {
    let shapes = graph.shapes().unwrap_or_default();
    let size = |s: &Vec<usize>| s.iter().product::<usize>() as u64;
    let input = shapes.first().map_or(0, size);
    let (ntr, nva, nte) = (
        p.usize("probe_train").min(train) as u64,
        p.usize("probe_val").min(val) as u64,
        p.usize("probe_test").min(test) as u64,
    );
    let samples = ntr + nva + nte;
    let fit = super::fit_config(p);
    let held = held_samples((ntr as usize, nva as usize, nte as usize), &fit) as u64;
    let elems = fit.feature_bytes(specs);
    // The splits, and the probe sets selected from them.
    let data = (train + val + test) as u64 * input * 4 + samples * input * 4;
    // Weights, gradients and two optimiser moments.
    let params: u64 = graph
        .nodes
        .iter()
        .filter_map(|node| {
            let ins = node.op.inputs();
            let from = ins
                .first()
                .and_then(|n| graph.index_of(n))
                .and_then(|k| shapes.get(k))
                .map_or(&[][..], |s| s.as_slice());
            Graph::param_shape(node, from, graph.classes)
                .map(|(_, out, w)| w.iter().product::<usize>() as u64 + out as u64)
        })
        .sum();
    let model = params * 4 * 4;
    // One forward chunk of every node, and the subset probes' selections from it (a whole
    // tap's selection is a view of its output, not a copy).
    let selected: u64 = specs
        .iter()
        .filter(|s| s.subset.is_some())
        .map(|s| s.width() as u64)
        .sum();
    let chunk: u64 = (shapes.iter().map(size).sum::<u64>() + selected) * CHUNK as u64 * 4;
    // Probes fitted through an affine map hold no features (a GPU holds every probe's, but
    // not in this process's memory).
    let bases = affine_bases(graph, specs, &fit, affine_on(p));
    let groups = snapshot_groups(
        graph,
        specs,
        held as usize,
        &fit,
        p.usize("probe_memory_mb") << 20,
        &bases,
    );
    let classes = graph.classes as u64;
    let (features, solver) = snapshot_memory(specs, &groups, held, ntr, classes, &elems, &bases);
    // The forward chunk and the solver's memory are never held at once.
    let snapshot = features + solver.max(chunk);
    MemoryEstimate {
        peak: PROCESS_BASE + data + model + snapshot,
        features,
        solver,
    }
}

/// The memory a converged snapshot fitted in `groups` needs at its peak, in bytes: the largest
/// group's features for `samples` samples of `elem` bytes each, and the solver's own memory
/// for that group's widest batch: the whitening's matrices (probes of at most
/// [`FitConfig::whiten_max`] features), the L-BFGS state and the logits of `classes` classes.
/// The solver reads the features where they are stored (fitted on `ntr` of the samples): it
/// makes no centred copy of them on the host.
#[allow(clippy::too_many_arguments)]
pub(crate) fn snapshot_memory(
    specs: &[ProbeSpec],
    groups: &[Vec<usize>],
    samples: u64,
    ntr: u64,
    classes: u64,
    elems: &[usize],
    bases: &[Option<usize>],
) -> (u64, u64) {
    let cfg = FitConfig::default();
    let (mut features, mut solver) = (0u64, 0u64);
    for g in groups {
        let through = through_in(g, bases);
        let feats: u64 = g
            .iter()
            .zip(&through)
            .filter(|(_, &t)| !t)
            .map(|(&i, _)| specs[i].width() as u64 * samples * elems[i] as u64)
            .sum();
        // The widest batch the solver forms in this group: one probe per batch past 24 MiB.
        let widest = g
            .iter()
            .map(|&i| specs[i].width() as u64)
            .max()
            .unwrap_or(0);
        let same = g
            .iter()
            .filter(|&&i| specs[i].width() as u64 == widest)
            .count() as u64;
        let per = ntr * (widest + 1) * 4;
        let batch = (cfg.batch_bytes as u64 / per.max(1)).clamp(1, same.max(1));
        let whiten = if widest as usize <= cfg.whiten_max {
            batch * widest * widest * (8 + 3 * 4)
        } else if cfg.rank > 0 {
            // The low-rank preconditioner's centred sample of rows and its subspace
            // iteration's d x (rank + oversampling) matrices, f64 included.
            let rows = ntr.min(probe::LOW_RANK_ROWS as u64);
            let cols = (cfg.rank + probe::LOW_RANK_OVERSAMPLE) as u64;
            batch * widest * (rows * 4 + cols * (4 * 4 + 8))
        } else {
            0
        };
        // Parameters, gradients, the best parameters and the line search's (about 8 copies),
        // the L-BFGS pairs, and the logits of the splits.
        let state = batch * (widest + 1) * classes * 4 * (2 * cfg.memory as u64 + 8);
        let logits = batch * samples * classes * 4 * 3;
        let fit = whiten + state + logits;
        if feats + fit > features + solver {
            (features, solver) = (feats, fit);
        }
    }
    (features, solver)
}

/// [`memory_estimate`] on MNIST's splits (50,000 training, 10,000 validation, 10,000 test images).
pub fn mnist_memory_estimate(p: &Params, graph: &Graph, specs: &[ProbeSpec]) -> MemoryEstimate {
    memory_estimate(p, graph, specs, (50_000, mnist::VALIDATION, 10_000))
}

/// A snapshot's features for one memory group: per probe of the group, the training,
/// validation and test splits' features, and the probes fitted through an affine map of another
/// member's features (indices into the group; empty when there are none).
pub(crate) type GroupFeatures = (
    Vec<Tensor>,
    Option<Vec<Tensor>>,
    Option<Vec<Tensor>>,
    Vec<Option<probe::AffineTap>>,
);

/// Every probe of `specs` fitted to convergence, group by group (`groups`, from
/// [`memory_groups`]): `features` gives a group's features (called once per group, in order),
/// which are fitted against the labels `y` (train, validation, test), warm-started from `warm`,
/// handed to `after` (which may score them further), and dropped before the next group's are
/// made. Transfer rows come back in probe order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_in_groups(
    specs: &[ProbeSpec],
    groups: &[Vec<usize>],
    classes: usize,
    y: (&Tensor, Option<&Tensor>, Option<&Tensor>),
    warm: Option<&[LinearProbe]>,
    fit: &FitConfig,
    mut features: impl FnMut(usize, &[usize]) -> anyhow::Result<GroupFeatures>,
    mut after: impl FnMut(usize, &[usize], &mut [Fitted]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Fitted>> {
    let n = specs.len();
    let mut fitted: Vec<Option<Fitted>> = vec![None; n];
    for (gi, group) in groups.iter().enumerate() {
        let (xtr, xva, xte, affine) = features(gi, group)?;
        let split = |x: Option<Vec<Tensor>>, y: Option<&Tensor>| match (x, y) {
            (Some(x), Some(y)) => Some(Split { x, y: y.clone() }),
            _ => None,
        };
        let warm_g: Option<Vec<LinearProbe>> =
            warm.map(|w| group.iter().map(|&i| w[i].clone()).collect());
        let out = probe::fit_converged_affine(
            &Split {
                x: xtr,
                y: y.0.clone(),
            },
            split(xva, y.1).as_ref(),
            split(xte, y.2).as_ref(),
            classes,
            warm_g.as_deref(),
            fit,
            &affine,
        )?;
        let mut out = out;
        after(gi, group, &mut out)?;
        for (&i, mut f) in group.iter().zip(out) {
            // Transfer rows come in the group's order: put them in the probes' (only pairs
            // fitted in one group have an entry).
            if let Some(row) = f.reading.transfer.take() {
                let mut full = vec![None; n];
                for (&j, v) in group.iter().zip(row) {
                    full[j] = v;
                }
                f.reading.transfer = Some(full);
            }
            fitted[i] = Some(f);
        }
    }
    Ok(fitted
        .into_iter()
        .map(|f| f.expect("every probe in a group"))
        .collect())
}

/// The samples whose features a converged snapshot holds at once: the training and validation
/// splits, and the test split only where the transfer matrix reads it (otherwise the test split
/// is scored as the forward pass makes its features, see [`converged`]).
pub(crate) fn held_samples((train, val, test): (usize, usize, usize), fit: &FitConfig) -> usize {
    train + val + if fit.transfer { test } else { 0 }
}

/// Every probe fitted to convergence on the model as it is now, plus the taps' statistics and
/// the model's loss and errors on the same samples. The test split's features are not held
/// (unless the transfer matrix needs them): each group's fitted probes score the test split
/// chunk by chunk from a forward pass.
pub(crate) fn converged(
    model: &Model,
    specs: &[ProbeSpec],
    sets: &ProbeSets,
    warm: Option<&[LinearProbe]>,
    plan: &Plan,
) -> anyhow::Result<(Vec<Fitted>, Vec<ActivationStats>, ModelMetrics)> {
    let held = held_samples(
        (sets.train.len(), sets.val.len(), sets.test.len()),
        &plan.fit,
    );
    let stream_test = !plan.fit.transfer;
    // The host kernels take the data's classes (the graph's, as `affine_bases` checks).
    let enabled = plan.affine
        && sets.train.x.device().is_cpu()
        && sets.train.classes <= crate::host::SOFTMAX_FIT_MAX_CLASSES;
    let bases = affine_bases(model.graph(), specs, &plan.fit, enabled);
    let groups = snapshot_groups(
        model.graph(),
        specs,
        held,
        &plan.fit,
        plan.memory_mb << 20,
        &bases,
    );
    let stats = std::cell::RefCell::new(vec![ActivationStats::default(); specs.len()]);
    let metrics = std::cell::RefCell::new(ModelMetrics {
        loss: f64::NAN,
        train_error: None,
        test_error: None,
    });
    let cancel = &plan.fit.cancel;
    let fitted = fit_in_groups(
        specs,
        &groups,
        sets.train.classes,
        (
            &sets.train.y,
            Some(&sets.val.y),
            (!stream_test).then_some(&sets.test.y),
        ),
        warm,
        &plan.fit,
        |gi, group| {
            // The model's own figures with the last group, whose pass goes deepest.
            let last = gi + 1 == groups.len();
            let through = through_in(group, &bases);
            let (xtr, mtr, st, moments) = features_of(
                model,
                group,
                specs,
                &sets.train,
                last,
                true,
                &plan.fit,
                &through,
                cancel,
            )?;
            let (xva, _, _, _) = features_of(
                model, group, specs, &sets.val, false, false, &plan.fit, &through, cancel,
            )?;
            let mut affine = Vec::with_capacity(group.len());
            for (k, (&i, m)) in group.iter().zip(moments).enumerate() {
                affine.push(match (through[k], m, bases[i]) {
                    (true, Some(m), Some(b)) => {
                        let node = model.graph().index_of(&specs[i].tap).expect("known tap");
                        let Some((_, map, offset)) = model.affine_input(node)? else {
                            anyhow::bail!("tap {} lost its affine map", specs[i].tap);
                        };
                        Some(probe::AffineTap {
                            base: group.iter().position(|&j| j == b).expect("base in group"),
                            map: std::sync::Arc::new(map),
                            offset,
                            var: m.variances(),
                        })
                    }
                    _ => None,
                });
            }
            if let Some((loss, tre)) = mtr {
                let mut m = metrics.borrow_mut();
                m.loss = loss;
                m.train_error = Some(tre);
            }
            for (&i, s) in group.iter().zip(st.unwrap_or_default()) {
                stats.borrow_mut()[i] = s;
            }
            let xte = if stream_test {
                None
            } else {
                let (xte, mte, _, _) = features_of(
                    model, group, specs, &sets.test, last, false, &plan.fit, &through, cancel,
                )?;
                if let Some((_, tee)) = mte {
                    metrics.borrow_mut().test_error = Some(tee);
                }
                Some(xte)
            };
            Ok((xtr, Some(xva), xte, affine))
        },
        |gi, group, fitted| {
            if !stream_test {
                return Ok(());
            }
            let last = gi + 1 == groups.len();
            let probes: Vec<&LinearProbe> = fitted.iter().map(|f| &f.probe).collect();
            let (scores, mte) =
                score_streamed(model, group, specs, &sets.test, &probes, last, cancel)?;
            for (f, (err, loss, confusion)) in fitted.iter_mut().zip(scores) {
                f.reading.test_error = Some(err);
                f.reading.test_loss = Some(loss);
                if confusion.is_some() {
                    f.reading.confusion = confusion;
                }
            }
            if let Some((_, tee)) = mte {
                metrics.borrow_mut().test_error = Some(tee);
            }
            Ok(())
        },
    )?;
    Ok((fitted, stats.into_inner(), metrics.into_inner()))
}

/// Every probe of `specs` fitted by `fit_one` (a probe's training features `[n, width]` and the
/// labels in, a raw-space probe out) on the training split, group by group as [`converged`]
/// does, and scored on the test split as the forward pass makes it: per probe, the test error.
/// For benchmarks: another procedure on the same features, memory groups and forward passes.
pub(crate) fn fit_each_and_test(
    model: &Model,
    specs: &[ProbeSpec],
    sets: &ProbeSets,
    plan: &Plan,
    mut fit_one: impl FnMut(&Tensor, &Tensor) -> anyhow::Result<LinearProbe>,
) -> anyhow::Result<Vec<f64>> {
    let cancel = &plan.fit.cancel;
    let groups = snapshot_groups(
        model.graph(),
        specs,
        sets.train.len(),
        &plan.fit,
        plan.memory_mb << 20,
        &[],
    );
    let mut errors = vec![f64::NAN; specs.len()];
    for group in &groups {
        let (xtr, _, _, _) = features_of(
            model,
            group,
            specs,
            &sets.train,
            false,
            false,
            &plan.fit,
            &[],
            cancel,
        )?;
        let probes = xtr
            .iter()
            .map(|x| fit_one(x, &sets.train.y))
            .collect::<anyhow::Result<Vec<_>>>()?;
        drop(xtr);
        let refs: Vec<&LinearProbe> = probes.iter().collect();
        let (scores, _) = score_streamed(model, group, specs, &sets.test, &refs, false, cancel)?;
        for (&i, (err, _, _)) in group.iter().zip(scores) {
            errors[i] = err;
        }
    }
    Ok(errors)
}

/// Per probe of `group` (fitted: `probes`, in raw activation space), the error, mean
/// cross-entropy and (for at most [`probe::CONFUSION_MAX_CLASSES`] classes) confusion matrix on
/// `data`, from a forward pass in chunks of [`CHUNK`] samples, each chunk's features scored and
/// dropped; and (when asked) the model's own mean loss and error on `data`.
#[allow(clippy::type_complexity)]
fn score_streamed(
    model: &Model,
    group: &[usize],
    specs: &[ProbeSpec],
    data: &Dataset,
    probes: &[&LinearProbe],
    metrics: bool,
    cancel: &Cancel,
) -> candle_core::Result<(Vec<(f64, f64, Option<Vec<Vec<u32>>>)>, Option<(f64, f64)>)> {
    let n = data.len();
    let dev = data.x.device();
    let (nodes, last) = tap_nodes(model, group, specs, metrics);
    let params = probes
        .iter()
        .map(|p| {
            Ok((
                Tensor::from_slice(&p.weight, (p.width, p.classes), dev)?,
                Tensor::from_slice(&p.bias, (1, p.classes), dev)?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let classes = data.classes;
    let confusions = classes <= probe::CONFUSION_MAX_CLASSES;
    let mut wrong = vec![0f64; group.len()];
    let mut loss = vec![0f64; group.len()];
    let mut confusion = vec![vec![vec![0u32; classes]; classes]; group.len()];
    let (mut mloss, mut mwrong) = (0f64, 0f64);
    for b in cancel.blocks(n, CHUNK) {
        let (start, len) = b?;
        let outs = model.infer_until(&data.x.narrow(0, start, len)?, last)?;
        let y = data.y.narrow(0, start, len)?;
        let yoh = probe::one_hot(&y, classes)?;
        let truth: Vec<u32> = y.to_vec1()?;
        for (k, &i) in group.iter().enumerate() {
            let (w, bias) = &params[k];
            let x = specs[i].select(&outs[nodes[k]])?.to_dtype(DType::F32)?;
            let lg = x.matmul(w)?.broadcast_add(bias)?.unsqueeze(0)?;
            wrong[k] += probe::errors(&lg, &y)?[0] * len as f64;
            loss[k] +=
                f64::from(probe::cross_entropy(&lg, &yoh)?.to_vec1::<f32>()?[0]) * len as f64;
            if confusions {
                let pred: Vec<u32> = lg.squeeze(0)?.argmax(1)?.to_vec1()?;
                for (&t, &p) in truth.iter().zip(&pred) {
                    confusion[k][t as usize][p as usize] += 1;
                }
            }
        }
        if metrics {
            let logits = model.logits(&outs);
            mloss +=
                candle_nn::loss::cross_entropy(logits, &y)?.to_scalar::<f32>()? as f64 * len as f64;
            mwrong += probe::errors(&logits.unsqueeze(0)?, &y)?[0] * len as f64;
        }
    }
    let m = n.max(1) as f64;
    let scores = (0..group.len())
        .map(|k| {
            (
                wrong[k] / m,
                loss[k] / m,
                confusions.then(|| confusion[k].clone()),
            )
        })
        .collect();
    Ok((scores, metrics.then(|| (mloss / m, mwrong / m))))
}

/// The model's error on `data`, in chunks.
fn model_error(model: &Model, data: &Dataset, cancel: &Cancel) -> candle_core::Result<f64> {
    let (n, mut wrong) = (data.len(), 0f64);
    for b in cancel.blocks(n, CHUNK) {
        let (start, len) = b?;
        let last = model.graph().nodes.len() - 1;
        let outs = model.infer_until(&data.x.narrow(0, start, len)?, last)?;
        let y = data.y.narrow(0, start, len)?;
        wrong += probe::errors(&model.logits(&outs).unsqueeze(0)?, &y)?[0] * len as f64;
    }
    Ok(wrong / n as f64)
}

/// A one-line account of a converged snapshot: the model's test error and the probes'.
fn line(s: &Snapshot) -> String {
    let errs: Vec<String> = s
        .probes
        .iter()
        .map(|r| {
            format!(
                "{} {:.3}",
                r.probe,
                r.reading.test_error.unwrap_or(r.reading.train_error)
            )
        })
        .collect();
    let shown = if errs.len() > 12 {
        let k = errs.len();
        let mut v = errs[..4].to_vec();
        v.push(format!("... ({} more)", k - 8));
        v.extend_from_slice(&errs[k - 4..]);
        v
    } else {
        errs
    };
    let at = if s.label == format!("step {}", s.step) {
        s.label.clone()
    } else {
        format!("{} (step {})", s.label, s.step)
    };
    format!(
        "{at}: model test error {:.4}; probe test errors: {}",
        s.model
            .as_ref()
            .and_then(|m| m.test_error)
            .unwrap_or(f64::NAN),
        shown.join(", ")
    )
}

/// Where checkpoints go and when, and where a run resumes from.
#[derive(Debug, Clone, Default)]
pub struct CheckpointPlan {
    /// Where to save checkpoints (None: no checkpoints).
    pub path: Option<PathBuf>,
    /// Steps between checkpoints (0: only when the run stops or ends).
    pub every: usize,
    /// A checkpoint to resume from.
    pub resume: Option<PathBuf>,
}

/// Trains `graph` on the preset's dataset following `plan`, with probes `specs`.
pub fn run(
    preset: &str,
    plan: &Plan,
    p: &Params,
    graph: &Graph,
    specs: &[ProbeSpec],
    ctx: &mut RunCtx<'_>,
) -> anyhow::Result<()> {
    let which = dataset_of(p);
    let loaded = mnist::load(&ctx.opts.data_dir, which)?;
    let splits = loaded.splits(plan.flat, &ctx.device)?;
    run_on(preset, plan, graph, specs, splits, which.name(), ctx)
}

/// [`run`] on data already loaded (`data` names it in the log's progress lines and summaries).
pub fn run_on(
    preset: &str,
    plan: &Plan,
    graph: &Graph,
    specs: &[ProbeSpec],
    splits: mnist::Splits,
    data: &str,
    ctx: &mut RunCtx<'_>,
) -> anyhow::Result<()> {
    // Every converged fit and forward pass of this run stops when the run is stopped.
    let plan = &Plan {
        fit: FitConfig {
            cancel: ctx.cancel(),
            ..plan.fit.clone()
        },
        ..plan.clone()
    };
    let dev = ctx.device.clone();
    let seed = ctx.seed;
    let ck = ctx.opts.checkpoint.clone();
    let ntr = splits.train.len();
    let pick = |d: &Dataset, n: usize, stream: &str| -> candle_core::Result<Dataset> {
        // A fixed random subset, the same at every snapshot.
        let mut idx = crate::rng::subset(&mut crate::rng::stream(seed, stream), d.len(), n);
        idx.sort_unstable();
        d.select(&idx)
    };
    let sets = ProbeSets {
        train: pick(&splits.train, plan.probe_train.min(ntr), "probe-train")?,
        val: pick(
            &splits.val,
            plan.probe_val.min(splits.val.len()),
            "probe-val",
        )?,
        test: pick(
            &splits.test,
            plan.probe_test.min(splits.test.len()),
            "probe-test",
        )?,
    };
    ctx.sink.progress(&format!(
        "{preset}: {} {} training, {} validation, {} test samples; converged probes on {}/{}/{}",
        data,
        ntr,
        splits.val.len(),
        splits.test.len(),
        sets.train.len(),
        sets.val.len(),
        sets.test.len()
    ));

    let vm = graph.init_varmap(ctx.seed, &dev)?;
    let model =
        Model::new(graph, VarBuilder::from_varmap(&vm, DType::F32, &dev))?.stop_on(ctx.cancel());
    let mut opt = Optim::new(&vm, plan.optim, plan.lr, plan.weight_decay)?.with_clip(plan.clip);
    let id = CheckpointId {
        preset: preset.to_string(),
        graph: serde_json::to_string(graph)?,
        seed: ctx.seed,
    };
    let per_epoch = (ntr / plan.batch).max(1);
    let steps = plan.epochs.map_or(plan.steps, |e| e * per_epoch);
    let epoch_at = |step: usize| step as f64 / per_epoch as f64;
    let mut start = 0usize;
    if let Some(from) = &ck.resume {
        start = train::load_checkpoint(from, &id, &vm, &mut opt, &dev)? as usize;
        ctx.sink.progress(&format!(
            "resumed from {} at step {start} (epoch {:.2})",
            from.display(),
            epoch_at(start)
        ));
    }
    let save = |opt: &Optim, step: usize, sink: &mut dyn crate::report::Sink| {
        if let Some(path) = &ck.path {
            match train::save_checkpoint(path, &id, &vm, opt, step as u64) {
                Ok(()) => sink.progress(&format!("checkpoint at step {step}: {}", path.display())),
                Err(e) => sink.progress(&format!("{e:#}")),
            }
        }
    };

    let mut warm: Option<Vec<LinearProbe>> = None;
    let mut taken: Vec<Snapshot> = Vec::new();
    let take = |step: usize,
                label: String,
                warm: &mut Option<Vec<LinearProbe>>,
                taken: &mut Vec<Snapshot>,
                ctx: &mut RunCtx<'_>|
     -> anyhow::Result<()> {
        let (fitted, stats, metrics) = converged(&model, specs, &sets, warm.as_deref(), plan)?;
        let snap = Snapshot {
            step: step as u64,
            label,
            kind: SnapshotKind::Converged,
            dataset: None,
            epoch: Some(epoch_at(step)),
            probes: super::converged_readings(specs, &fitted, Some(&stats)),
            model: Some(metrics),
            elapsed_s: ctx.elapsed(),
            alerts: Vec::new(),
        };
        ctx.sink.progress(&line(&snap));
        ctx.record(Record::Snapshot(snap.clone()))?;
        taken.push(snap);
        *warm = Some(fitted.into_iter().map(|f| f.probe).collect());
        Ok(())
    };
    // A snapshot cut short by a stop is not written (a partial one would look complete); the
    // model is saved as it is, at the step the snapshot was for.
    let stopped_in = |e: anyhow::Error, step: usize, opt: &Optim, ctx: &mut RunCtx<'_>| {
        if ctx.controls.stopping() {
            ctx.sink.progress(&format!(
                "stopped during the converged snapshot at step {step}; it is not recorded"
            ));
            save(opt, step, ctx.sink);
            anyhow::Error::new(super::Stopped)
        } else {
            e
        }
    };
    ctx.at_step(start as u64);
    if start == 0 && plan.snapshot_steps.contains(&0) {
        take(0, "init".into(), &mut warm, &mut taken, ctx)
            .map_err(|e| stopped_in(e, 0, &opt, ctx))?;
    }

    let mut online = OnlineProbes::new(
        specs.to_vec(),
        graph.classes,
        &dev,
        OnlineConfig {
            l2: plan.fit.l2,
            ..OnlineConfig::default()
        },
    )?;
    let mut batches = Batches::default();
    let mut last_loss = f64::NAN;
    let mut readings = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        for step in start + 1..=steps {
            if let Err(stopped) = ctx.check_stop() {
                save(&opt, step - 1, ctx.sink);
                return Err(stopped.into());
            }
            if ctx.take_snapshot_request() {
                take(
                    step - 1,
                    format!("step {}", step - 1),
                    &mut warm,
                    &mut taken,
                    ctx,
                )
                .map_err(|e| stopped_in(e, step - 1, &opt, ctx))?;
            }
            let (epoch, idx) = batches.get(ctx.seed, step, plan.batch, ntr);
            opt.set_lr(train::scheduled_lr(plan.lr, plan.lr_decay, epoch));
            let mb = splits.train.select(idx)?;
            let outs = model.forward_train(&mb.x, ctx.seed, step as u64)?;
            let loss = model.loss(&outs, &mb.y)?;
            opt.backward_step(&loss)?;
            last_loss = loss.to_scalar::<f32>()? as f64;
            ctx.at_step(step as u64);
            if !last_loss.is_finite() {
                anyhow::bail!(
                    "training diverged at step {step} (loss {last_loss}); lower --set lr"
                );
            }
            let epoch_end = step % per_epoch == 0;
            let record = step % plan.online_every == 0 || step == steps || epoch_end;
            // A recorded step always has a fresh update, so the log never repeats a reading.
            if step % plan.online_update_every == 0 || record {
                let taps: Vec<Tensor> = specs
                    .iter()
                    .map(|s| outs[graph.index_of(&s.tap).expect("known tap")].detach())
                    .collect();
                readings = online.update(&taps, &mb.y)?;
            }
            if record {
                let test_error = if epoch_end {
                    let e = model_error(&model, &splits.test, &plan.fit.cancel);
                    Some(e.map_err(|e| stopped_in(e.into(), step, &opt, ctx))?)
                } else {
                    None
                };
                let probes = super::online_readings(specs, &readings, online.steps());
                ctx.record(Record::Snapshot(Snapshot {
                    step: step as u64,
                    label: format!("step {step}"),
                    kind: SnapshotKind::Online,
                    dataset: None,
                    epoch: Some(epoch_at(step)),
                    probes,
                    model: Some(ModelMetrics {
                        loss: last_loss,
                        train_error: None,
                        test_error,
                    }),
                    elapsed_s: ctx.elapsed(),
                    alerts: Vec::new(),
                }))?;
                ctx.sink.progress(&match test_error {
                    Some(e) => format!(
                        "epoch {} done (step {step}/{}): model loss {last_loss:.4}, test error {e:.4}",
                        step / per_epoch,
                        steps
                    ),
                    None => format!(
                        "step {step}/{} (epoch {:.2}): model loss {last_loss:.4}",
                        steps,
                        epoch_at(step)
                    ),
                });
            }
            if plan.snapshot_steps.contains(&step) || (plan.snapshot_each_epoch && epoch_end) {
                let label = if epoch_end && plan.snapshot_each_epoch {
                    format!("epoch {}", step / per_epoch)
                } else {
                    format!("step {step}")
                };
                take(step, label, &mut warm, &mut taken, ctx)
                    .map_err(|e| stopped_in(e, step, &opt, ctx))?;
            }
            if ck.every > 0 && step % ck.every == 0 {
                save(&opt, step, ctx.sink);
            }
        }
        Ok(())
    })();
    outcome?;
    // The figure's table: one summary per converged snapshot.
    for s in &taken {
        ctx.record(Record::Summary(super::summarise(
            &format!("{preset} on {}: {} (step {})", data, s.label, s.step),
            specs,
            &[s],
        )))?;
    }
    // The end state is saved unless the last periodic checkpoint already holds it.
    if steps > start && (ck.every == 0 || !steps.is_multiple_of(ck.every)) {
        save(&opt, steps, ctx.sink);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_groups_respect_the_budget() {
        let specs: Vec<ProbeSpec> = [10, 10, 30, 5, 100]
            .iter()
            .enumerate()
            .map(|(i, &w)| ProbeSpec::full(format!("t{i}"), w))
            .collect();
        // 1 sample, 4 bytes a feature: 40, 40, 120, 20, 400 bytes; budget 100.
        assert_eq!(
            memory_groups(&specs, 1, &[4; 5], 100),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(
            memory_groups(&specs, 1, &[4; 5], 10_000),
            vec![vec![0, 1, 2, 3, 4]]
        );
    }

    /// A probe fitted through its base's features costs nothing in its base's group, so it
    /// joins it past the budget; away from its base it costs its width.
    #[test]
    fn a_probe_through_its_base_holds_no_features() {
        let specs: Vec<ProbeSpec> = [10, 10, 30, 5, 100, 8]
            .iter()
            .enumerate()
            .map(|(i, &w)| ProbeSpec::full(format!("t{i}"), w))
            .collect();
        // t2 through t1 (in its group: free, so it joins a full group), t5 through t0 (in an
        // earlier group: its own 32 bytes, past the budget of t4's group).
        let bases = [None, None, Some(1), None, None, Some(0)];
        let groups = memory_groups_with(&specs, 1, &[4; 6], 100, &bases, &[]);
        assert_eq!(groups, vec![vec![0, 1, 2, 3], vec![4], vec![5]]);
        assert_eq!(through_in(&groups[0], &bases), [false, false, true, false]);
        assert_eq!(through_in(&groups[2], &bases), [false]);
        // The features held at once: 40 + 40 + 20 bytes in the first group, not 120 more.
        let (features, _) = snapshot_memory(&specs, &groups, 1, 1, 2, &[4; 6], &bases);
        assert_eq!(features, 400);
        let (features, _) = snapshot_memory(&specs, &groups[..1], 1, 1, 2, &[4; 6], &bases);
        assert_eq!(features, 100);
    }

    /// Features held by one group of probes `i..j`, from the definition: a member whose base is
    /// in the group holds none.
    fn group_bytes(widths: &[usize], bases: &[Option<usize>], i: usize, j: usize) -> usize {
        (i..j)
            .filter(|&k| !matches!(bases[k], Some(b) if (i..j).contains(&b)))
            .map(|k| widths[k] * 4)
            .sum()
    }

    /// By hand: two taps behind an expensive layer and a cheap one before it, two to a group.
    /// As many as fit (the first two, then the third) runs the expensive layer twice; the least
    /// work puts the cheap tap alone and the two deep ones together.
    #[test]
    fn memory_groups_keep_taps_behind_an_expensive_layer_together() {
        let specs: Vec<ProbeSpec> = (0..3)
            .map(|i| ProbeSpec::full(format!("t{i}"), 10))
            .collect();
        let greedy = memory_groups_with(&specs, 1, &[4; 3], 80, &[], &[]);
        assert_eq!(greedy, vec![vec![0, 1], vec![2]]);
        let least = memory_groups_with(&specs, 1, &[4; 3], 80, &[], &[1.0, 100.0, 100.0]);
        assert_eq!(least, vec![vec![0], vec![1, 2]]);
        // Equal depths: the fewest groups.
        let even = memory_groups_with(&specs, 1, &[4; 3], 80, &[], &[5.0; 3]);
        assert_eq!(even.len(), 2);
    }

    /// On random widths, bases and depths, the chosen groups against every way of cutting the
    /// probes into consecutive groups: each group fits (or is one probe), the groups cover the
    /// probes in order, and no feasible cut does less work, or as little in fewer groups.
    #[test]
    fn memory_groups_match_an_exhaustive_search() {
        use rand::Rng;
        let mut r = crate::rng::stream(5, "groups");
        for case in 0..300 {
            let n = 1 + case % 9;
            let widths: Vec<usize> = (0..n)
                .map(|_| 1 + (r.random::<u32>() % 40) as usize)
                .collect();
            let depths: Vec<f64> = {
                let mut d = 0.0;
                (0..n)
                    .map(|_| {
                        d += f64::from(r.random::<u32>() % 50);
                        d
                    })
                    .collect()
            };
            let bases: Vec<Option<usize>> = (0..n)
                .map(|k| {
                    (k > 0 && r.random::<u32>() % 3 == 0).then(|| (r.random::<u32>() as usize) % k)
                })
                .collect();
            let budget = 4 * (10 + (r.random::<u32>() % 80) as usize);
            let specs: Vec<ProbeSpec> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| ProbeSpec::full(format!("t{i}"), w))
                .collect();
            let elems = vec![4; n];
            let got = memory_groups_with(&specs, 1, &elems, budget, &bases, &depths);
            let flat: Vec<usize> = got.iter().flatten().copied().collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>(), "case {case}");
            let work = |cut: &[(usize, usize)]| -> (f64, usize) {
                let w = cut
                    .iter()
                    .map(|&(i, j)| depths[i..j].iter().fold(0.0, |a: f64, &b| a.max(b)))
                    .sum();
                (w, cut.len())
            };
            let ranges: Vec<(usize, usize)> =
                got.iter().map(|g| (g[0], g[g.len() - 1] + 1)).collect();
            for &(i, j) in &ranges {
                assert!(
                    j - i == 1 || group_bytes(&widths, &bases, i, j) <= budget,
                    "case {case}"
                );
            }
            let mine = work(&ranges);
            // Every cut: bit k set cuts between probes k and k + 1.
            for mask in 0u32..(1 << (n - 1)) {
                let mut cut = Vec::new();
                let mut start = 0;
                for k in 0..n {
                    if k == n - 1 || mask & (1 << k) != 0 {
                        cut.push((start, k + 1));
                        start = k + 1;
                    }
                }
                let fits = cut
                    .iter()
                    .all(|&(i, j)| j - i == 1 || group_bytes(&widths, &bases, i, j) <= budget);
                if fits {
                    let other = work(&cut);
                    assert!(
                        mine.0 < other.0 || (mine.0 == other.0 && mine.1 <= other.1),
                        "case {case}: {ranges:?} {mine:?} against {cut:?} {other:?}"
                    );
                }
            }
        }
    }
}
