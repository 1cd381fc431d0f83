//! Linear classifier probes: `softmax(W h + b)` on frozen activations.
//!
//! Two schedules:
//! - [`fit_converged`] fits every probe of a snapshot to convergence, all probes of one width
//!   batched into one 3-d problem on the device. The solver is full-batch L-BFGS with an Armijo
//!   backtracking line search, one step length per probe. Features are standardised with the
//!   training split's mean and standard deviation (per feature), so the errors do not depend on
//!   the activations' scale; the fit minimises mean cross-entropy plus `l2 / 2 * |W|^2` (the bias
//!   is not penalised), which makes the optimum unique even on separable data.
//!   With a validation split it keeps, per probe, the parameters of the best validation error
//!   (the latest, where later checks tie it) and stops a probe after `patience` checks worse
//!   than its best (early stopping, see [`EarlyStop`]).
//! - [`OnlineProbes`] takes one Adam step per model step on the minibatch's detached activations,
//!   with running (exponential moving average) standardisation.
//!
//! The probes only ever see detached tensors and own their parameters: they cannot change the model.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;

pub mod affine;
pub use affine::{AffineTap, Moments, TapMap};
#[cfg(feature = "cuda")]
mod online_gpu;

/// Without the `cuda` feature there is no fused GPU step: [`online_gpu::Fused`] has no values.
#[cfg(not(feature = "cuda"))]
mod online_gpu {
    use candle_core::{Device, Tensor};

    pub(super) enum Fused {}

    impl Fused {
        pub(super) fn for_device(
            _: &Device,
            _: &[usize],
            _: usize,
        ) -> candle_core::Result<Option<Self>> {
            Ok(None)
        }

        pub(super) fn step(
            &mut self,
            _: &[Tensor],
            _: &Tensor,
            _: &crate::host::Adam,
            _: f32,
        ) -> candle_core::Result<Vec<(f64, f64)>> {
            match *self {}
        }

        pub(super) fn state(&self, _: usize) -> candle_core::Result<super::HostProbe> {
            match *self {}
        }
    }
}

/// Where a probe attaches and which features it sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Name of the probe (the tap's name, or the tap with the subset size for subset probes).
    pub name: String,
    /// Name of the tap it reads.
    pub tap: String,
    /// Number of features of the tap.
    pub features: usize,
    /// Fixed random subset of feature indices (appendix A.1), drawn once from the run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<Vec<u32>>,
}

impl ProbeSpec {
    /// A probe on all features of `tap`.
    pub fn full(tap: impl Into<String>, features: usize) -> Self {
        let tap = tap.into();
        Self {
            name: tap.clone(),
            tap,
            features,
            subset: None,
        }
    }

    /// A probe on a random subset of `size` of the tap's features, drawn from `seed` and the
    /// probe's name.
    pub fn random_subset(
        name: impl Into<String>,
        tap: impl Into<String>,
        features: usize,
        size: usize,
        seed: u64,
    ) -> Self {
        let name = name.into();
        let subset = if size >= features {
            None
        } else {
            Some(crate::rng::subset(
                &mut crate::rng::stream(seed, &format!("subset/{name}")),
                features,
                size,
            ))
        };
        Self {
            name,
            tap: tap.into(),
            features,
            subset,
        }
    }

    /// Number of features the probe reads.
    pub fn width(&self) -> usize {
        self.subset.as_ref().map_or(self.features, Vec::len)
    }

    /// The probe's input: `x` flattened to `[n, features]`, restricted to the subset.
    pub fn select(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.flatten_from(1)?.detach();
        match &self.subset {
            None => Ok(x),
            Some(idx) => {
                let idx = Tensor::from_slice(idx, idx.len(), x.device())?;
                x.index_select(&idx, 1)
            }
        }
    }
}

/// A fitted probe in the space of the raw activations: logits = `h W + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbe {
    /// Number of input features.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Weights, `width x classes`, row-major.
    pub weight: Vec<f32>,
    /// Biases, one per class.
    pub bias: Vec<f32>,
}

/// Reads a number that may be `null`: JSON has no NaN or infinity, and serde_json writes them as
/// `null`, so a reading that came out NaN (a fit that failed on degenerate features) reads back
/// as NaN instead of making the whole log unreadable.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One probe's readings at one moment. Errors are prediction errors in [0, 1] (the paper's figure
/// of merit); losses are mean cross-entropy in nats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReading {
    /// Error on the probe-training split.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_error: f64,
    /// Mean cross-entropy on the probe-training split.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Error on the validation split (early stopping), if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_error: Option<f64>,
    /// Loss on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Error on the held-out test split, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_error: Option<f64>,
    /// Loss on the held-out test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// Train error of the probe's twin fitted on control labels (random per input, the same
    /// for every run with the same samples): what the probe's capacity alone achieves. Only
    /// with `selectivity=on`; selectivity is this less `train_error` (Hewitt & Liang, 2019).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_error: Option<f64>,
    /// This probe applied to every other probe's features, in probe order (with `transfer=on`):
    /// its error on the test split's first [`TRANSFER_SAMPLES`] samples (train where there is
    /// no test split); `None` where the widths differ or the two were fitted apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Vec<Option<f64>>>,
    /// With `transfer=on`, in runs that warm-start each converged fit from the previous one: the
    /// previous converged snapshot's probe applied to this snapshot's features (same samples
    /// as `transfer`). Above this snapshot's own error by how much the layer's code drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_error: Option<f64>,
    /// Solver iterations (converged fit) or updates (online) behind the reading.
    pub iterations: usize,
    /// Whether the fit met its convergence test (gradient, loss change or early stopping).
    pub converged: bool,
    /// Confusion matrix (row: true class, column: predicted class) on the test split, else the
    /// validation split, else the training split; converged fits with at most
    /// [`CONFUSION_MAX_CLASSES`] classes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u32>>>,
}

/// Most classes for which a converged reading carries a confusion matrix.
pub const CONFUSION_MAX_CLASSES: usize = 10;

/// Most bytes of standardised features batched together on a GPU (see
/// [`FitConfig::batch_bytes`], which is sized for a CPU's cache).
pub const GPU_BATCH_BYTES: usize = 2 << 30;

/// Settings of the converged fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// L2 penalty on the standardised weights (not the bias).
    pub l2: f64,
    /// Most L-BFGS iterations per probe.
    pub max_iter: usize,
    /// Converged when the largest gradient entry falls below this.
    pub grad_tol: f64,
    /// Converged when the loss moves less than this (relative) for two iterations running.
    pub loss_tol: f64,
    /// L-BFGS memory (curvature pairs kept).
    pub memory: usize,
    /// Iterations between validation checks (early stopping).
    pub check_every: usize,
    /// Validation checks in a row worse than a probe's best before it stops (a check that ties
    /// the best counts as no worse: see [`EarlyStop`]).
    pub patience: usize,
    /// Most bytes of standardised features batched together (keeps a batch in cache).
    pub batch_bytes: usize,
    /// Also fit a control twin of every probe (see [`ProbeReading::control_error`]).
    #[serde(default)]
    pub control: bool,
    /// Also evaluate every probe on every same-width probe's features (see
    /// [`ProbeReading::transfer`]).
    #[serde(default)]
    pub transfer: bool,
    /// Probes with at most this many features are also whitened: the solver works in the
    /// coordinates of the Cholesky factor of the features' second-moment matrix, which makes
    /// correlated features (deep layers) as easy as independent ones. Wider probes use the
    /// per-feature standardisation alone.
    pub whiten_max: usize,
    /// Probes wider than `whiten_max` are preconditioned along this many principal directions
    /// of their standardised features (0: the per-feature standardisation alone). Logs written
    /// before it read as 0.
    #[serde(default)]
    pub rank: usize,
    /// Keep the activations of a converged snapshot in bfloat16 (half the memory, so twice the
    /// taps per forward pass); every evaluation computes in f32, and every fit too unless
    /// [`FitConfig::bf16_products`].
    #[serde(default)]
    pub bf16_features: bool,
    /// Keep the activations of the taps wider than `whiten_max` in bfloat16, the others in f32
    /// (see [`FitConfig::feature_dtype_of`]). Logs written before it read as false (f32).
    #[serde(default)]
    pub bf16_wide: bool,
    /// Fit probes on bfloat16 features wider than [`COARSE_MIN_WIDTH`] with bfloat16 products
    /// first, on machines with AVX-512's bfloat16 dot product, and finish in f32 (see
    /// [`crate::host::softmax_fit_coarse`]). Logs written before it read as false.
    #[serde(default)]
    pub bf16_products: bool,
    /// Stops the fit between two solver evaluations when set (not a setting: never logged).
    #[serde(skip)]
    pub cancel: crate::cancel::Cancel,
}

impl FitConfig {
    /// The type a converged snapshot keeps a tap's activations in, `width` features a sample:
    /// bfloat16 with [`FitConfig::bf16_features`], or with [`FitConfig::bf16_wide`] where the
    /// tap is wider than [`FitConfig::whiten_max`]; else f32.
    ///
    /// bfloat16 keeps 8 bits of each number. A wide tap's probe reads thousands of features,
    /// whose rounding errors average out (mnist-convnet's six wide taps at 50,000 images: every
    /// probe's test error within 0.11 points of f32's); a narrow one reads few, and the input's
    /// probe moved 0.55 points at 10,000 images on a GPU, so narrow taps stay f32.
    pub fn feature_dtype_of(&self, width: usize) -> DType {
        if self.bf16_features || (self.bf16_wide && width > self.whiten_max) {
            DType::BF16
        } else {
            DType::F32
        }
    }

    /// These settings with the activations kept as the presets' `probe_dtype` names them:
    /// `auto` ([`FitConfig::bf16_wide`]), `bf16` ([`FitConfig::bf16_features`]), else (`f32`,
    /// or none: a preset that holds no snapshot in memory groups) f32 for every tap. With
    /// bfloat16 activations the fits start with bfloat16 products
    /// ([`FitConfig::bf16_products`]).
    pub fn with_probe_dtype(self, name: Option<&str>) -> Self {
        Self {
            bf16_features: name == Some("bf16"),
            bf16_wide: name == Some("auto"),
            bf16_products: matches!(name, Some("auto" | "bf16")),
            ..self
        }
    }

    /// Per probe of `specs`, the bytes a converged snapshot keeps each of its features in.
    pub fn feature_bytes(&self, specs: &[ProbeSpec]) -> Vec<usize> {
        specs
            .iter()
            .map(|s| self.feature_dtype_of(s.width()).size_in_bytes())
            .collect()
    }

    /// How the activations are kept, for a report line: "f32", "bf16", or "bf16 past N
    /// features" (see [`FitConfig::feature_dtype_of`]).
    pub fn feature_dtype_label(&self) -> String {
        match (self.bf16_features, self.bf16_wide) {
            (true, _) => "bf16".into(),
            (false, true) => format!("bf16 past {} features, f32 below", self.whiten_max),
            (false, false) => "f32".into(),
        }
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            l2: 1e-4,
            max_iter: 300,
            grad_tol: 1e-5,
            loss_tol: 1e-7,
            memory: 10,
            check_every: 5,
            patience: 6,
            batch_bytes: 24 << 20,
            control: false,
            transfer: false,
            whiten_max: 1024,
            rank: 64,
            bf16_features: false,
            bf16_wide: true,
            bf16_products: false,
            cancel: Default::default(),
        }
    }
}

/// Early stopping on a validation split, per problem of a batched fit: the best validation
/// error so far, and the checks in a row worse than it.
///
/// A check that ties the best counts as no worse: it resets the count, and its parameters
/// become the ones reported (at the same validation error, the later iterate is the more
/// converged one, nearer the penalised optimum, which is unique). Only a strict improvement
/// would reset it otherwise, and on a plateau whether one comes within `patience` checks can
/// hang on rounding: measured on mnist-convnet's 50,000-image snapshot, fc1_postact's
/// validation errors ran .0350 (iteration 5), .0352, .0359, .0357, .0355, then .0350 or .0351
/// depending on the last bits of a convolution's sums; counting only strict improvements, one
/// build stopped at 35 iterations and reported iteration 5's probe (test .0384), the other ran
/// to 95 (test .0374). Counting ties, both run on and report .0374.
#[derive(Debug, Clone)]
pub struct EarlyStop {
    best: Vec<f64>,
    worse: Vec<usize>,
    patience: usize,
}

impl EarlyStop {
    /// No check yet for any of `problems`; each stops after `patience` checks worse than its best.
    pub fn new(problems: usize, patience: usize) -> Self {
        Self {
            best: vec![f64::INFINITY; problems],
            worse: vec![0; problems],
            patience,
        }
    }

    /// Records one check's validation errors `ev` for the problems still `active`, and clears
    /// `active` for those that have run out of patience. Returns, per problem, whether this
    /// check's parameters become the ones reported (as good as the best or better).
    pub fn check(&mut self, ev: &[f64], active: &mut [bool]) -> Vec<bool> {
        let mut keep = vec![false; ev.len()];
        for (k, &e) in ev.iter().enumerate() {
            if !active[k] {
                continue;
            }
            if e <= self.best[k] {
                self.best[k] = e;
                self.worse[k] = 0;
                keep[k] = true;
            } else {
                self.worse[k] += 1;
                if self.stopped(k) {
                    active[k] = false;
                }
            }
        }
        keep
    }

    /// Whether problem `k` was stopped by its validation errors: it has had `patience` checks
    /// worse than its best (at least one), and none since, as a stopped problem is checked no
    /// more.
    pub fn stopped(&self, k: usize) -> bool {
        self.worse[k] >= self.patience.max(1)
    }

    /// After the last iteration: per problem, whether the final parameters, with validation
    /// errors `ev`, are reported rather than the best kept (as good as the best or better).
    pub fn at_end(&self, ev: &[f64]) -> Vec<bool> {
        ev.iter().zip(&self.best).map(|(e, b)| e <= b).collect()
    }
}

/// Features and labels of one split, one tensor per probe (`[n, width]`, already selected with
/// [`ProbeSpec::select`]) and the labels (`[n]`, u32).
pub struct Split {
    /// Per-probe features.
    pub x: Vec<Tensor>,
    /// Class labels.
    pub y: Tensor,
}

/// A probe after a converged fit.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The probe, in raw activation space (for warm starts and evaluation elsewhere).
    pub probe: LinearProbe,
    /// Its readings.
    pub reading: ProbeReading,
}

/// One-hot encoding of u32 labels, `[n, classes]` f32.
pub fn one_hot(y: &Tensor, classes: usize) -> candle_core::Result<Tensor> {
    let labels: Vec<u32> = y.to_vec1()?;
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &c) in labels.iter().enumerate() {
        if (c as usize) >= classes {
            candle_core::bail!("label {c} at sample {i} is not below the {classes} classes");
        }
        v[i * classes + c as usize] = 1.0;
    }
    Tensor::from_vec(v, (labels.len(), classes), y.device())
}

/// Centring of a batch of problems of one width, from the training split.
pub(crate) struct Centring {
    /// `[B, 1, d]` training means.
    pub mean: Tensor,
}

impl Centring {
    /// Means of the probes `idx` of `xs` (each `[n, d]`), by matrix products (reductions over
    /// the middle axis are slow) summed over blocks of rows, with a check for a stop between
    /// them: no copy of the whole features is made.
    fn fit_rows(xs: &[Tensor], idx: &[usize], cancel: &Cancel) -> candle_core::Result<Self> {
        let (n, d) = xs[idx[0]].dims2()?;
        let refs: Vec<&Tensor> = idx.iter().map(|&i| &xs[i]).collect();
        if let Some(means) = crate::host::with_views(&refs, |v| match v {
            crate::host::Views::F32(v) => crate::host::column_means(&v, d, cancel),
            crate::host::Views::Bf16(v) => crate::host::column_means(&v, d, cancel),
        }) {
            let mean: Vec<f32> = means?.into_iter().flatten().map(|m| m as f32).collect();
            let mean = Tensor::from_vec(mean, (idx.len(), 1, d), xs[idx[0]].device())?;
            return Ok(Self { mean });
        }
        let mean = mean_over_blocks(n, block_rows(xs, idx)?, cancel, |start, len| {
            let part = stack_rows(xs, idx, start, len)?;
            Tensor::ones((idx.len(), 1, len), DType::F32, part.device())?.matmul(&part)
        })?;
        Ok(Self { mean })
    }

    /// `[x - mean, 1]` (`[B, n, d + 1]`) of the probes `idx` of `xs`, written block of rows by
    /// block of rows into one tensor, with a check for a stop between blocks (one pass over a
    /// 25,088-wide tap's features is seconds on two cores).
    fn apply_rows(
        &self,
        xs: &[Tensor],
        idx: &[usize],
        cancel: &Cancel,
    ) -> candle_core::Result<Tensor> {
        let (n, d) = xs[idx[0]].dims2()?;
        let refs: Vec<&Tensor> = idx.iter().map(|&i| &xs[i]).collect();
        if self.mean.device().is_cpu() {
            let means: Vec<Vec<f32>> = self.mean.squeeze(1)?.to_vec2()?;
            if let Some(z) = crate::host::with_f32_all(&refs, |v| {
                crate::host::centred_with_ones(v, &means, d, cancel)
            }) {
                return Tensor::from_vec(z?, (idx.len(), n, d + 1), xs[idx[0]].device());
            }
        }
        let z = Tensor::zeros((idx.len(), n, d + 1), DType::F32, xs[idx[0]].device())?;
        for b in cancel.blocks(n, block_rows(xs, idx)?) {
            let (start, len) = b?;
            let part = self.apply(&stack_rows(xs, idx, start, len)?)?;
            z.slice_set(&part, 1, start)?;
        }
        Ok(z)
    }

    /// `[x - mean, 1]`: `[B, n, d + 1]`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let z = x.broadcast_sub(&self.mean)?;
        let (b, n, _) = z.dims3()?;
        let ones = Tensor::ones((b, n, 1), z.dtype(), z.device())?;
        Tensor::cat(&[&z, &ones], 2)
    }

    /// Centred parameters `[B, d + 1, K]` to raw `(W [B, d, K], b [B, 1, K])`.
    pub fn to_raw(&self, theta: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let d = theta.dim(1)? - 1;
        let w = theta.narrow(1, 0, d)?.contiguous()?;
        let b = theta
            .narrow(1, d, 1)?
            .sub(&self.mean.contiguous()?.matmul(&w)?)?;
        Ok((w, b))
    }

    /// Raw `(W [B, d, K], b [B, 1, K])` to centred parameters `[B, d + 1, K]`.
    pub fn centre_params(&self, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let bs = b.add(&self.mean.contiguous()?.matmul(w)?)?;
        Tensor::cat(&[w, &bs], 1)
    }
}

/// A batch's stored features read in place by the host kernels ([`crate::host::softmax_fit_raw`]):
/// CPU tensors of f32 or bfloat16, centred with the training means as they are read, so that
/// no centred copy of them is made.
pub(crate) struct HostBatch<'a> {
    /// Per problem, its `[n, d]` training features.
    xs: Vec<&'a Tensor>,
    /// Per problem, its features' training means.
    means: Vec<Vec<f32>>,
    /// The training labels.
    labels: Vec<u32>,
    /// Features per problem.
    d: usize,
    /// The fit's passes use bfloat16 products (see [`HostBatch::start_coarse`]).
    coarse: std::sync::atomic::AtomicBool,
}

/// Fewest features of a probe whose fit starts with bfloat16 products
/// ([`FitConfig::bf16_products`]): the width from which the default keeps a tap in bfloat16.
pub const COARSE_MIN_WIDTH: usize = 1025;

impl<'a> HostBatch<'a> {
    /// The probes `idx` of `xs` with their `means` (`[B, 1, d]`) and training labels `y`, where
    /// the host kernels can read them (CPU, f32 or bfloat16, contiguous, at most
    /// [`crate::host::SOFTMAX_FIT_MAX_CLASSES`] classes); `None` otherwise.
    fn new(
        xs: &'a [Tensor],
        idx: &[usize],
        means: &Tensor,
        y: &Tensor,
        classes: usize,
    ) -> candle_core::Result<Option<Self>> {
        let refs: Vec<&Tensor> = idx.iter().map(|&i| &xs[i]).collect();
        if !means.device().is_cpu()
            || classes > crate::host::SOFTMAX_FIT_MAX_CLASSES
            || crate::host::with_views(&refs, |_| ()).is_none()
        {
            return Ok(None);
        }
        Ok(Some(Self {
            d: refs[0].dim(1)?,
            xs: refs,
            means: means.squeeze(1)?.to_vec2()?,
            labels: y.to_dtype(DType::U32)?.to_vec1()?,
            coarse: false.into(),
        }))
    }

    /// Makes the passes use bfloat16 products where they can (bfloat16 features at least
    /// [`COARSE_MIN_WIDTH`] wide, a machine with the instructions); returns whether they do.
    fn start_coarse(&self) -> bool {
        let bf16 = self.xs.iter().all(|x| x.dtype() == DType::BF16);
        let on = bf16 && self.d >= COARSE_MIN_WIDTH && crate::host::coarse_available();
        self.coarse.store(on, std::sync::atomic::Ordering::Relaxed);
        on
    }

    /// Makes the passes exact again.
    fn end_coarse(&self) {
        self.coarse
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Per problem, the mean cross-entropy, its gradient (`[B, d + 1, K]`) and the logits less
    /// each row's last (`[B, n, K]`) at `theta` (`[B, d + 1, K]`, centred coordinates).
    fn fit(&self, theta: &Tensor) -> candle_core::Result<(Vec<f64>, Vec<f32>, Vec<f32>)> {
        let k = theta.dim(2)?;
        let th: Vec<f32> = theta.flatten_all()?.to_vec1()?;
        use crate::host::{softmax_fit_coarse, softmax_fit_raw, with_views, Views};
        let coarse = self.coarse.load(std::sync::atomic::Ordering::Relaxed);
        let (means, labels, d) = (&self.means, &self.labels, self.d);
        with_views(&self.xs, |v| match v {
            Views::F32(x) => softmax_fit_raw(&x, means, &th, labels, d, k),
            Views::Bf16(x) => coarse
                .then(|| softmax_fit_coarse(&x, means, &th, labels, d, k))
                .flatten()
                .unwrap_or_else(|| softmax_fit_raw(&x, means, &th, labels, d, k)),
        })
        .ok_or_else(|| candle_core::Error::Msg("features moved off the host".into()))
    }

    /// The logits `[B, n, K]` at `theta` (`[B, d + 1, K]`, centred with this batch's training
    /// means) of the probes' features `xs` (`[n, d]` each, any split), read in place.
    fn scores(&self, xs: &[&Tensor], theta: &Tensor) -> candle_core::Result<Tensor> {
        let k = theta.dim(2)?;
        let n = xs[0].dim(0)?;
        let th: Vec<f32> = theta.flatten_all()?.to_vec1()?;
        use crate::host::{scores_raw, with_views, Views};
        let out = with_views(xs, |v| match v {
            Views::F32(x) => scores_raw(&x, &self.means, &th, self.d, k),
            Views::Bf16(x) => scores_raw(&x, &self.means, &th, self.d, k),
        })
        .ok_or_else(|| candle_core::Error::Msg("features of another type or device".into()))?;
        Tensor::from_vec(out, (xs.len(), n, k), theta.device())
    }

    /// Per problem, each feature's variance (the mean square about the training mean).
    fn variances(&self, cancel: &Cancel) -> candle_core::Result<Vec<Vec<f64>>> {
        use crate::host::{centred_variances, with_views, Views};
        with_views(&self.xs, |v| match v {
            Views::F32(x) => centred_variances(&x, &self.means, self.d, cancel),
            Views::Bf16(x) => centred_variances(&x, &self.means, self.d, cancel),
        })
        .ok_or_else(|| candle_core::Error::Msg("features moved off the host".into()))?
    }

    /// Per problem, the second moments of `[x - mean, 1]` over the training rows (`(d + 1)^2`,
    /// row-major): see [`crate::host::centred_gram`].
    fn gram(&self, cancel: &Cancel) -> candle_core::Result<Vec<Vec<f64>>> {
        use crate::host::{centred_gram, with_views, Views};
        with_views(&self.xs, |v| match v {
            Views::F32(x) => centred_gram(&x, &self.means, self.d, cancel),
            Views::Bf16(x) => centred_gram(&x, &self.means, self.d, cancel),
        })
        .ok_or_else(|| candle_core::Error::Msg("features moved off the host".into()))?
    }

    /// `[x - mean, 1]` (`[B, len, d + 1]`) of the training rows `start..start + len`.
    fn centred_rows(&self, start: usize, len: usize) -> candle_core::Result<Tensor> {
        use crate::host::{centred_with_ones, with_views, Views};
        let parts: Vec<Tensor> = self
            .xs
            .iter()
            .map(|x| x.narrow(0, start, len))
            .collect::<candle_core::Result<_>>()?;
        let refs: Vec<&Tensor> = parts.iter().collect();
        let none = crate::cancel::Cancel::default();
        let z = with_views(&refs, |v| match v {
            Views::F32(x) => centred_with_ones(&x, &self.means, self.d, &none),
            Views::Bf16(x) => centred_with_ones(&x, &self.means, self.d, &none),
        })
        .ok_or_else(|| candle_core::Error::Msg("features moved off the host".into()))??;
        Tensor::from_vec(z, (parts.len(), len, self.d + 1), self.xs[0].device())
    }
}

/// One probe on a tap that is an affine map of a stored tap (see [`affine`]): its objective
/// and scores from the stored tap's features, the weights moved through the map.
pub(crate) struct AffineBatch<'a> {
    /// The stored tap's features, centred with its training means.
    base: HostBatch<'a>,
    /// From the stored tap's features to this probe's.
    map: &'a TapMap,
    /// This probe's features' training variances.
    var: &'a [f64],
}

impl AffineBatch<'_> {
    /// Features of the probe's own tap.
    fn d(&self) -> usize {
        self.var.len()
    }

    /// The stored tap's parameters (`[1, d_in + 1, K]`) that give the same logits as `theta`
    /// (`[1, d + 1, K]`, centred): the weights moved back through the map, the bias as it is.
    fn to_base(&self, theta: &Tensor) -> candle_core::Result<Tensor> {
        let d = self.d();
        let t = theta.squeeze(0)?;
        let w = self.map.adjoint(&t.narrow(0, 0, d)?.t()?.contiguous()?)?;
        Tensor::cat(&[&w.t()?, &t.narrow(0, d, 1)?], 0)?.unsqueeze(0)
    }

    /// As [`HostBatch::fit`], with the gradient in this probe's parameters (`[1, d + 1, K]`):
    /// the stored tap's gradient mapped forward.
    fn fit(&self, theta: &Tensor) -> candle_core::Result<(Vec<f64>, Tensor, Vec<f32>)> {
        let (k, d_in) = (theta.dim(2)?, self.base.d);
        let (nll, g, logits) = self.base.fit(&self.to_base(theta)?)?;
        let g = Tensor::from_vec(g, (d_in + 1, k), theta.device())?;
        let gw = self.map.apply(&g.narrow(0, 0, d_in)?.t()?.contiguous()?)?;
        let grad = Tensor::cat(&[&gw.t()?, &g.narrow(0, d_in, 1)?], 0)?.unsqueeze(0)?;
        Ok((nll, grad, logits))
    }

    /// This probe's centred features (`[1, m, d]`) of the first `m` training rows: the stored
    /// tap's, through the map.
    fn centred_rows(&self, m: usize) -> candle_core::Result<Tensor> {
        let x = self.base.centred_rows(0, m)?.squeeze(0)?;
        let x = x.narrow(1, 0, self.base.d)?.contiguous()?;
        self.map.apply(&x)?.unsqueeze(0)
    }

    /// As [`HostBatch::scores`], of the stored tap's features `xs` of any split.
    fn scores(&self, xs: &[&Tensor], theta: &Tensor) -> candle_core::Result<Tensor> {
        self.base.scores(xs, &self.to_base(theta)?)
    }
}

/// The features an [`Objective`] is evaluated on.
#[derive(Clone, Copy)]
pub(crate) enum Features<'a> {
    /// `[B, n, p]` centred features with a trailing ones column (any device).
    Centred(&'a Tensor),
    /// The stored features, read in place on the host.
    Host(&'a HostBatch<'a>),
    /// An affine map of stored features, read in place on the host.
    Affine(&'a AffineBatch<'a>),
}

impl Features<'_> {
    /// The stored features the host kernels read, if they do.
    fn host(&self) -> Option<&HostBatch<'_>> {
        match self {
            Features::Centred(_) => None,
            Features::Host(hb) => Some(hb),
            Features::Affine(ab) => Some(&ab.base),
        }
    }
}

/// The softmax-regression objective on a batch of centred problems.
///
/// The penalty is `l2 / 2 * sum_j var_j |W_j|^2`: the plain L2 penalty on the weights of the
/// standardised features, written in centred coordinates. With the solver's preconditioning
/// this makes the fit invariant to each feature's scale.
pub(crate) struct Objective<'a> {
    /// The features.
    pub z: Features<'a>,
    /// `[n, K]` one-hot labels.
    pub y: &'a Tensor,
    /// `[B, p, 1]`: the variance of each feature, 0 on the bias row.
    pub penalty: Tensor,
    /// L2 penalty.
    pub l2: f64,
}

impl<'a> Objective<'a> {
    /// The objective with per-feature variances `var` (`[B, p, 1]`, bias row ignored).
    pub fn new(z: Features<'a>, y: &'a Tensor, var: &Tensor, l2: f64) -> candle_core::Result<Self> {
        let (b, p, _) = var.dims3()?;
        let penalty = Tensor::cat(
            &[
                var.narrow(1, 0, p - 1)?,
                Tensor::zeros((b, 1, 1), DType::F32, var.device())?,
            ],
            1,
        )?;
        Ok(Self { z, y, penalty, l2 })
    }

    /// Per-problem objective `[B]` and the logits `[B, n, K]` at `theta`, and where the host
    /// kernel ran ([`Features::Host`]), the gradient (see [`Objective::gradient`]) from the
    /// same pass over the features; its logits are then shifted per sample (less the last
    /// class's), which changes no prediction, error or cross-entropy.
    pub fn value(&self, theta: &Tensor) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let reg = theta
            .sqr()?
            .broadcast_mul(&self.penalty)?
            .sum((1, 2))?
            .affine(self.l2 / 2.0, 0.0)?;
        let (b, p, k) = theta.dims3()?;
        let dev = theta.device();
        // The host kernels' one pass: loss, gradient and logits, read into tensors.
        let (nll, grad, logits, n) = match self.z {
            Features::Centred(z) => {
                let logits = z.matmul(theta)?;
                let nll = cross_entropy(&logits, self.y)?;
                return Ok(((nll + reg)?, logits, None));
            }
            Features::Host(hb) => {
                let (nll, grad, logits) = hb.fit(theta)?;
                let grad = Tensor::from_vec(grad, (b, p, k), dev)?;
                (nll, grad, logits, hb.labels.len())
            }
            Features::Affine(ab) => {
                let (nll, grad, logits) = ab.fit(theta)?;
                (nll, grad, logits, ab.base.labels.len())
            }
        };
        let nll = Tensor::from_vec(nll, b, dev)?.to_dtype(DType::F32)?;
        let logits = Tensor::from_vec(logits, (b, n, k), dev)?;
        let grad = (grad + theta.broadcast_mul(&self.penalty)?.affine(self.l2, 0.0)?)?;
        Ok(((nll + reg)?, logits, Some(grad)))
    }

    /// Gradient `[B, p, K]` given the logits at `theta`.
    pub fn gradient(&self, theta: &Tensor, logits: &Tensor) -> candle_core::Result<Tensor> {
        self.gradient_from_softmax(theta, &candle_nn::ops::softmax_last_dim(logits)?)
    }

    /// Gradient `[B, p, K]` given the softmax of the logits at `theta` (for a caller that
    /// needs the probabilities too).
    pub fn gradient_from_softmax(
        &self,
        theta: &Tensor,
        prob: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let Features::Centred(z) = self.z else {
            candle_core::bail!("the host objective gives its gradient with its value");
        };
        let n = z.dim(1)? as f64;
        let p = prob.broadcast_sub(self.y)?;
        // p^T z reads z in its stored order (z^T p would walk it across rows: 3x slower on CPU).
        let g = p
            .transpose(1, 2)?
            .contiguous()?
            .matmul(z)?
            .transpose(1, 2)?
            .affine(1.0 / n, 0.0)?;
        g + theta.broadcast_mul(&self.penalty)?.affine(self.l2, 0.0)?
    }
}

/// The solver's change of variables `theta = L^-T v`, with `L L^T` close to the objective's
/// curvature, so that in `v` the problem is near isotropic and L-BFGS needs few iterations.
enum Preconditioner {
    /// `L` the Cholesky factor of the centred features' second moment plus the penalty's own
    /// curvature (whitening), for probes of at most `whiten_max` features.
    Full {
        linv: Tensor,
        linv_t: Tensor,
        l_t: Tensor,
    },
    /// `L = diag(std)`: per-feature standardisation, for wider probes.
    Diagonal { scale: Tensor },
    /// Standardisation, then the standardised features' top principal directions `u`
    /// (`[B, p, r]`, orthonormal, zero on the bias row), whose eigenvalues are taken down to the
    /// largest one left out: `theta = M v / std` with `M = I + u diag(up) u^T` and
    /// `M^-1 = I + u diag(down) u^T` (see [`low_rank`]). For probes wider than `whiten_max`
    /// (a conv tap's neighbouring positions and channels are strongly correlated, which the
    /// diagonal leaves to L-BFGS's ten pairs): half the iterations on mnist-convnet's wide taps.
    /// `ut` is `u` transposed, laid out once (see [`LowRank::new`]).
    LowRank(LowRank),
}

/// The parts of [`Preconditioner::LowRank`].
struct LowRank {
    scale: Tensor,
    u: Tensor,
    ut: Tensor,
    up: Tensor,
    down: Tensor,
}

impl LowRank {
    /// The preconditioner of standard deviations `scale` and directions `u` with factors `up`
    /// and `down`. `u`'s transpose is made contiguous here, once: laid out afresh in every
    /// product, it was a strided copy of the whole `d x r` matrix on one core three times an
    /// L-BFGS iteration (about 2 s of mnist-convnet's 50,000-image snapshot), with the same
    /// numbers.
    fn new(scale: Tensor, u: Tensor, up: Tensor, down: Tensor) -> candle_core::Result<Self> {
        let ut = u.transpose(1, 2)?.contiguous()?;
        Ok(Self {
            scale,
            u,
            ut,
            up,
            down,
        })
    }

    /// `x + u diag(f) u^T x` for `x` `[B, p, K]` and `f` (`up` or `down`) `[B, r, 1]`.
    fn apply(&self, x: &Tensor, f: &Tensor) -> candle_core::Result<Tensor> {
        let ut_x = self.ut.matmul(x)?;
        x + self.u.matmul(&ut_x.broadcast_mul(f)?)?
    }
}

/// Rows of a wide probe's features that estimate its principal directions
/// ([`Preconditioner::LowRank`]).
pub(crate) const LOW_RANK_ROWS: usize = 2048;

/// Columns beyond the rank that the subspace iteration carries (its estimate of the rank-th
/// direction is then close).
pub(crate) const LOW_RANK_OVERSAMPLE: usize = 16;

/// The top `rank` principal directions of the standardised features (`sample`: `[B, m, d]`
/// centred rows; `scale`: `[B, d + 1, 1]` standard deviations), by randomised subspace
/// iteration (Halko, Martinsson & Tropp 2011: two power steps, orthonormalised each time), and
/// per direction the factors `sqrt(floor / lambda) - 1` and `sqrt(lambda / floor) - 1` that take
/// its eigenvalue `lambda` down to `floor`, the largest eigenvalue left out, and back. Returns
/// the directions `[B, d + 1, r]` (zero on the bias row) and the two factors `[B, r, 1]`.
fn low_rank(
    sample: &Tensor,
    scale: &Tensor,
    rank: usize,
    cancel: &Cancel,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    // One problem at a time: a probe's preconditioner, to its last rounding, does not depend on
    // the probes it is batched with.
    let mut parts = (Vec::new(), Vec::new(), Vec::new());
    for pb in 0..sample.dim(0)? {
        let one = |t: &Tensor| t.narrow(0, pb, 1);
        let (u, up, down) = low_rank_one(&one(sample)?, &one(scale)?, rank, cancel)?;
        parts.0.push(u);
        parts.1.push(up);
        parts.2.push(down);
    }
    Ok((
        Tensor::cat(&parts.0, 0)?,
        Tensor::cat(&parts.1, 0)?,
        Tensor::cat(&parts.2, 0)?,
    ))
}

/// [`low_rank`] of one problem (`sample` `[1, m, d]`).
fn low_rank_one(
    sample: &Tensor,
    scale: &Tensor,
    rank: usize,
    cancel: &Cancel,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (_, m, d) = sample.dims3()?;
    let dev = sample.device().clone();
    let k = (rank + LOW_RANK_OVERSAMPLE).min(d).min(m);
    let rank = rank.min(k.saturating_sub(1)).max(1);
    // The standardised sample Z = X S^-1 (S the stds) only through its products with thin
    // matrices, Z v = X (S^-1 v) and Z^T u = S^-1 (X^T u): no standardised copy of the sample.
    let inv = scale.narrow(1, 0, d)?.recip()?; // [1, d, 1]
    let x = sample.to_dtype(DType::F32)?; // [1, m, d]
    let xt = x.transpose(1, 2)?;
    let z_mul = |v: &Tensor| x.matmul(&v.broadcast_mul(&inv)?);
    let zt_mul = |u: &Tensor| xt.matmul(u)?.broadcast_mul(&inv);
    let mut r = crate::rng::stream(LOW_RANK_SEED, "low-rank");
    let omega = Tensor::from_vec(crate::rng::normal_vec(&mut r, d * k, 1.0), (1, d, k), &dev)?;
    let mut y = zt_mul(&z_mul(&omega)?)?;
    for step in 0..3 {
        cancel.check_candle()?;
        let q = orthonormal_columns(&y)?;
        y = if step < 2 { zt_mul(&z_mul(&q)?)? } else { q };
    }
    let q = y; // [1, d, k]: orthonormal columns spanning the top directions
    let w = z_mul(&q)?; // [1, m, k]
    let small = (w.transpose(1, 2)?.matmul(&w)? / m as f64)?;
    let a: Vec<f64> = small
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    let (vals, vecs) = jacobi_eig(a, k);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]));
    let floor = vals[order[rank]].max(1e-12);
    let mut v = vec![0f32; k * rank];
    let (mut up, mut down) = (Vec::with_capacity(rank), Vec::with_capacity(rank));
    for (c, &o) in order.iter().take(rank).enumerate() {
        for i in 0..k {
            v[i * rank + c] = vecs[i * k + o] as f32;
        }
        let lam = vals[o].max(floor);
        up.push(((floor / lam).sqrt() - 1.0) as f32);
        down.push(((lam / floor).sqrt() - 1.0) as f32);
    }
    let v = Tensor::from_vec(v, (k, rank), &dev)?;
    let u = q.squeeze(0)?.matmul(&v)?; // [d, r]
    let u = Tensor::cat(&[u, Tensor::zeros((1, rank), DType::F32, &dev)?], 0)?;
    Ok((
        u.unsqueeze(0)?,
        Tensor::from_vec(up, (1, rank, 1), &dev)?,
        Tensor::from_vec(down, (1, rank, 1), &dev)?,
    ))
}

/// Seed of the subspace iteration's random start (fixed: a fit is reproducible).
const LOW_RANK_SEED: u64 = 17;

/// `y` (`[B, d, k]`) with each problem's columns made orthonormal: Cholesky QR twice, in f64
/// (`Q = Y L^-T` with `L L^T = Y^T Y`; the second pass restores the orthogonality the first
/// loses when the columns are nearly parallel, as power steps make them). The work is two
/// products with the `d x k` matrices on their device and a `k x k` factorisation on the host
/// (Gram-Schmidt on the host took half a second on a 25,088-wide tap, 2 cores). A column in the
/// span of the earlier ones (a rank-deficient sample) becomes zero.
fn orthonormal_columns(y: &Tensor) -> candle_core::Result<Tensor> {
    let (b, _, k) = y.dims3()?;
    let dev = y.device().clone();
    let mut q = y.to_dtype(DType::F64)?;
    for _ in 0..2 {
        let gram = q.transpose(1, 2)?.matmul(&q)?.to_vec3::<f64>()?;
        let mut m = Vec::with_capacity(b * k * k);
        for g in gram {
            let g: Vec<f64> = g.into_iter().flatten().collect();
            m.extend(gram_orthonormaliser(&g, k));
        }
        q = q.matmul(&Tensor::from_vec(m, (b, k, k), &dev)?)?;
    }
    q.to_dtype(DType::F32)
}

/// `M` (row-major `k x k`) that makes `Y M` orthonormal, from the Gram matrix `g = Y^T Y`:
/// `M = L^-T` for the Cholesky factor `L` of `g`. A column whose pivot is at rounding level of
/// its own squared norm (in the span of the earlier ones) is left out: its column of `M` is zero.
fn gram_orthonormaliser(g: &[f64], k: usize) -> Vec<f64> {
    let mut l = vec![0f64; k * k];
    let mut live = vec![false; k];
    for j in 0..k {
        let norm = g[j * k + j];
        let pivot = norm - (0..j).map(|p| l[j * k + p] * l[j * k + p]).sum::<f64>();
        if !(pivot > 1e-12 * norm && pivot > 1e-300) {
            continue;
        }
        live[j] = true;
        let dj = pivot.sqrt();
        l[j * k + j] = dj;
        for i in j + 1..k {
            let dot: f64 = (0..j).map(|p| l[i * k + p] * l[j * k + p]).sum();
            l[i * k + j] = (g[i * k + j] - dot) / dj;
        }
    }
    // L^-1 on the live rows and columns (forward substitution; a left-out column of L is zero,
    // so it adds nothing), then transposed.
    let mut inv = vec![0f64; k * k];
    for c in (0..k).filter(|&c| live[c]) {
        for i in (c..k).filter(|&i| live[i]) {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for p in c..i {
                s -= l[i * k + p] * inv[p * k + c];
            }
            inv[i * k + c] = s / l[i * k + i];
        }
    }
    let mut m = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            m[i * k + j] = inv[j * k + i];
        }
    }
    m
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of the symmetric `n x n` `a`,
/// by cyclic Jacobi rotations.
fn jacobi_eig(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _ in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-24 * diag {
            break;
        }
        for pp in 0..n {
            for qq in pp + 1..n {
                let apq = a[pp * n + qq];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[qq * n + qq] - a[pp * n + pp]) / (2.0 * apq);
                let t = theta.signum().max(0.0).mul_add(2.0, -1.0)
                    / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for kk in 0..n {
                    let akp = a[kk * n + pp];
                    let akq = a[kk * n + qq];
                    a[kk * n + pp] = c * akp - sn * akq;
                    a[kk * n + qq] = sn * akp + c * akq;
                }
                for kk in 0..n {
                    let apk = a[pp * n + kk];
                    let aqk = a[qq * n + kk];
                    a[pp * n + kk] = c * apk - sn * aqk;
                    a[qq * n + kk] = sn * apk + c * aqk;
                }
                for kk in 0..n {
                    let vkp = v[kk * n + pp];
                    let vkq = v[kk * n + qq];
                    v[kk * n + pp] = c * vkp - sn * vkq;
                    v[kk * n + qq] = sn * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

impl Preconditioner {
    /// From the centred features `z` (`[B, n, p]`, ones column last). Also returns each
    /// feature's variance (`[B, p, 1]`, 1 on the bias row), where a constant feature counts as
    /// unit variance; "constant" is relative to the probe's largest variance, so the rule is
    /// scale-invariant.
    fn new(
        z: &Features<'_>,
        (b, n, p): (usize, usize, usize),
        dev: &Device,
        l2: f64,
        (whiten, rank): (bool, usize),
        cancel: &crate::cancel::Cancel,
    ) -> candle_core::Result<(Self, Tensor)> {
        let dev = dev.clone();
        // Rows `start..start + len` of the centred features with their ones column.
        let rows = |start: usize, len: usize| match z {
            Features::Centred(z) => z.narrow(1, start, len),
            Features::Host(hb) => hb.centred_rows(start, len),
            Features::Affine(_) => {
                candle_core::bail!("a probe through an affine map is not whitened")
            }
        };
        let floor_var = |var: Vec<f64>| -> Vec<f64> {
            let top = var[..p - 1].iter().cloned().fold(0.0, f64::max);
            let mut v: Vec<f64> = var
                .iter()
                .map(|&v| if v > top * 1e-12 && v > 0.0 { v } else { 1.0 })
                .collect();
            v[p - 1] = 1.0;
            v
        };
        if !whiten {
            let var: Vec<Vec<f64>> = match z {
                Features::Host(hb) => hb
                    .variances(cancel)?
                    .into_iter()
                    .map(|mut v| {
                        v.push(1.0);
                        v
                    })
                    .collect(),
                Features::Affine(ab) => vec![ab.var.iter().copied().chain([1.0]).collect()],
                Features::Centred(z) => {
                    let var = mean_over_blocks(n, GRAM_CHUNK, cancel, |start, len| {
                        let ones = Tensor::ones((b, 1, len), DType::F32, &dev)?;
                        ones.matmul(&z.narrow(1, start, len)?.sqr()?)
                    })?;
                    let var: Vec<Vec<Vec<f32>>> = var.to_vec3()?;
                    var.into_iter()
                        .map(|v| v[0].iter().map(|&x| f64::from(x)).collect())
                        .collect()
                }
            };
            let var: Vec<f32> = var
                .into_iter()
                .flat_map(floor_var)
                .map(|v| v as f32)
                .collect();
            let var = Tensor::from_vec(var, (b, p, 1), &dev)?;
            let scale = var.sqrt()?;
            // The first rows as a sample (the rows' order is the data's, not sorted by class);
            // a single row has no directions to find.
            let m = n.min(LOW_RANK_ROWS);
            if rank == 0 || m < 2 {
                return Ok((Self::Diagonal { scale }, var));
            }
            let sample = match z {
                Features::Centred(z) => z.narrow(1, 0, m)?.narrow(2, 0, p - 1)?,
                Features::Host(hb) => hb.centred_rows(0, m)?.narrow(2, 0, p - 1)?,
                Features::Affine(ab) => ab.centred_rows(m)?,
            };
            let (u, up, down) = low_rank(&sample, &scale, rank, cancel)?;
            return Ok((Self::LowRank(LowRank::new(scale, u, up, down)?), var));
        }
        // Products in f32 over short blocks of rows, their sums in f64: an f32 sum over all n
        // rows can lose the small eigenvalues of nearly collinear features (a collapsed deep
        // layer), and a factor of such a matrix overflows f32; a block's rounding (about
        // sqrt(GRAM_BLOCK) f32 epsilons of the diagonal) is well under the penalty and jitter
        // added below. Products in f64 throughout cost three times as much on a CPU. (The
        // correlations estimated from a subsample of 16 samples a feature took 60% more
        // L-BFGS iterations on untrained-mlp, which cost what the smaller product saved.)
        let gram: Vec<Vec<f64>> = match z {
            // In place on the host, the upper triangle only (see `crate::host::centred_gram`).
            Features::Host(hb) => hb.gram(cancel)?,
            _ => mean_over_blocks(n, GRAM_BLOCK, cancel, |start, len| {
                let part = rows(start, len)?;
                part.transpose(1, 2)?.matmul(&part)?.to_dtype(DType::F64)
            })?
            .to_vec3::<f64>()?
            .into_iter()
            .map(|g| g.concat())
            .collect(),
        };
        let (mut linv, mut linv_t, mut l_t, mut vars) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for mut a in gram {
            cancel.check_candle()?;
            let var = floor_var((0..p).map(|i| a[i * p + i]).collect());
            for i in 0..p {
                let pen = if i + 1 < p { l2 } else { 0.0 };
                // The penalty's own curvature, and a jitter relative to each feature's scale.
                a[i * p + i] += (pen + 1e-6) * var[i];
            }
            let l = cholesky(&a, p);
            let li = lower_inverse(&l, p);
            for i in 0..p {
                for j in 0..p {
                    linv.push(li[i * p + j] as f32);
                    linv_t.push(li[j * p + i] as f32);
                    l_t.push(l[j * p + i] as f32);
                }
            }
            vars.extend(var.into_iter().map(|v| v as f32));
        }
        Ok((
            Self::Full {
                linv: Tensor::from_vec(linv, (b, p, p), &dev)?,
                linv_t: Tensor::from_vec(linv_t, (b, p, p), &dev)?,
                l_t: Tensor::from_vec(l_t, (b, p, p), &dev)?,
            },
            Tensor::from_vec(vars, (b, p, 1), &dev)?,
        ))
    }

    /// Parameters from the solver's variables.
    fn theta(&self, v: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Full { linv_t, .. } => linv_t.matmul(v),
            Self::Diagonal { scale } => v.broadcast_div(scale),
            Self::LowRank(lr) => lr.apply(v, &lr.up)?.broadcast_div(&lr.scale),
        }
    }

    /// Gradient in the solver's variables from the gradient in the parameters.
    fn grad(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Full { linv, .. } => linv.matmul(g),
            Self::Diagonal { scale } => g.broadcast_div(scale),
            Self::LowRank(lr) => lr.apply(&g.broadcast_div(&lr.scale)?, &lr.up),
        }
    }

    /// The solver's variables from parameters.
    fn vars(&self, theta: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Full { l_t, .. } => l_t.matmul(theta),
            Self::Diagonal { scale } => theta.broadcast_mul(scale),
            Self::LowRank(lr) => lr.apply(&theta.broadcast_mul(&lr.scale)?, &lr.down),
        }
    }
}

/// Samples per block of the standardisation's sums.
const GRAM_CHUNK: usize = 4096;

/// Samples per block of the whitening's f32 products (see [`Preconditioner::new`]).
use crate::host::GRAM_BLOCK;

/// The mean over `n` samples of `sum(start, len)`, a sum over the samples `start..start + len`,
/// taken `rows` samples at a time with a check for a stop between blocks (one product of a
/// 1,024-wide tap on 50,000 samples is seconds on two cores).
fn mean_over_blocks(
    n: usize,
    rows: usize,
    cancel: &Cancel,
    sum: impl Fn(usize, usize) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for b in cancel.blocks(n, rows) {
        let (start, len) = b?;
        let s = sum(start, len)?;
        acc = Some(match acc {
            Some(a) => (a + s)?,
            None => s,
        });
    }
    acc.expect("at least one sample")
        .affine(1.0 / n as f64, 0.0)
}

/// Lower Cholesky factor of the symmetric positive definite `p x p` matrix `a` (row-major).
/// Pivots that rounding makes non-positive are clamped, so a nearly singular matrix still factors.
/// Four rows of a column are worked together: their sums are independent, so the processor
/// overlaps them, and each is still taken in the same order as one row at a time.
fn cholesky(a: &[f64], p: usize) -> Vec<f64> {
    let mut l = vec![0f64; p * p];
    for j in 0..p {
        let mut d = a[j * p + j];
        for k in 0..j {
            d -= l[j * p + k] * l[j * p + k];
        }
        let d = d.max(a[j * p + j] * 1e-10).max(1e-300).sqrt();
        l[j * p + j] = d;
        let (head, tail) = l.split_at_mut((j + 1) * p);
        let lj = &head[j * p..j * p + j];
        let mut rows = tail.chunks_exact_mut(p).enumerate();
        while rows.len() >= 4 {
            let mut four: [(usize, &mut [f64]); 4] = std::array::from_fn(|_| {
                let (r, row) = rows.next().expect("four rows left");
                (j + 1 + r, row)
            });
            let mut s = four.each_ref().map(|(i, _)| a[i * p + j]);
            for (k, &ljk) in lj.iter().enumerate() {
                for (s, (_, row)) in s.iter_mut().zip(&four) {
                    *s -= row[k] * ljk;
                }
            }
            for (s, (_, row)) in s.iter().zip(four.iter_mut()) {
                row[j] = s / d;
            }
        }
        for (r, row) in rows {
            let mut s = a[(j + 1 + r) * p + j];
            for (k, &ljk) in lj.iter().enumerate() {
                s -= row[k] * ljk;
            }
            row[j] = s / d;
        }
    }
    l
}

/// Inverse of a lower-triangular `p x p` matrix (row-major), a row at a time: row `i` is
/// `(e_i - sum_k l[i][k] inv[k]) / l[i][i]` over the rows `k < i` already found, each entry's
/// terms subtracted in the order of `k` (as a column-by-column forward substitution would).
fn lower_inverse(l: &[f64], p: usize) -> Vec<f64> {
    let mut inv = vec![0f64; p * p];
    for i in 0..p {
        let (done, rest) = inv.split_at_mut(i * p);
        let row = &mut rest[..p];
        for k in 0..i {
            let lik = l[i * p + k];
            for (o, &v) in row[..=k].iter_mut().zip(&done[k * p..k * p + k + 1]) {
                *o -= lik * v;
            }
        }
        let lii = l[i * p + i];
        for o in &mut row[..i] {
            *o /= lii;
        }
        row[i] = 1.0 / lii;
    }
    inv
}

/// Mean cross-entropy per problem `[B]` of logits `[B, n, K]` against one-hot `y` `[n, K]`.
pub(crate) fn cross_entropy(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let lse = logits.log_sum_exp(D::Minus1)?;
    let picked = logits.broadcast_mul(y)?.sum(D::Minus1)?;
    (lse - picked)?.mean(1)
}

/// Per-problem count of wrong predictions `[B]` (on the device, exact in f32) of logits
/// `[B, n, K]` against labels `[n]` u32.
fn wrong_count(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    logits
        .argmax(D::Minus1)?
        .broadcast_ne(&y.unsqueeze(0)?)?
        .to_dtype(DType::F32)?
        .sum(1)
}

/// Per-problem prediction error `[B]` (host) of logits `[B, n, K]` against labels `[n]` u32.
pub(crate) fn errors(logits: &Tensor, y: &Tensor) -> candle_core::Result<Vec<f64>> {
    let n = y.dim(0)? as f64;
    Ok(host(&wrong_count(logits, y)?)?
        .into_iter()
        .map(|w| w / n)
        .collect())
}

/// Per-problem confusion matrices (row: true class, column: predicted) of logits `[B, n, K]`
/// against labels `[n]` u32.
pub(crate) fn confusions(logits: &Tensor, y: &Tensor) -> candle_core::Result<Vec<Vec<Vec<u32>>>> {
    let k = logits.dim(D::Minus1)?;
    let pred: Vec<Vec<u32>> = logits.argmax(D::Minus1)?.to_vec2()?;
    let truth: Vec<u32> = y.to_vec1()?;
    Ok(pred
        .iter()
        .map(|p| {
            let mut m = vec![vec![0u32; k]; k];
            for (&t, &q) in truth.iter().zip(p) {
                m[t as usize][q as usize] += 1;
            }
            m
        })
        .collect())
}

/// A boolean tensor shaped like `like` (`[B, ...]`) that is true in the problems whose flag is set:
/// the selector for `where_cond` between two batches of parameters.
fn problem_mask(flags: &[bool], like: &Tensor, dev: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f64> = flags.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
    col(&to_dev(&v, dev)?)?.broadcast_as(like.shape())?.ne(0f32)
}

fn per_problem(t: &Tensor) -> candle_core::Result<Tensor> {
    t.sum((1, 2))
}

fn dot(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    per_problem(&(a * b)?)
}

fn col(v: &Tensor) -> candle_core::Result<Tensor> {
    v.unsqueeze(1)?.unsqueeze(2)
}

fn host(v: &Tensor) -> candle_core::Result<Vec<f64>> {
    v.to_dtype(DType::F64)?.to_vec1::<f64>()
}

fn n_rows(split: &Split) -> candle_core::Result<usize> {
    split.y.dim(0)
}

fn to_dev(v: &[f64], dev: &Device) -> candle_core::Result<Tensor> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(f, v.len(), dev)
}

/// Fits every probe to convergence. `train.x[i]`, `val.x[i]`, `test.x[i]` are probe i's features
/// (see [`ProbeSpec::select`]); `warm[i]`, when given, starts probe i from an earlier fit.
pub fn fit_converged(
    train: &Split,
    val: Option<&Split>,
    test: Option<&Split>,
    classes: usize,
    warm: Option<&[LinearProbe]>,
    cfg: &FitConfig,
) -> candle_core::Result<Vec<Fitted>> {
    fit_converged_affine(train, val, test, classes, warm, cfg, &[])
}

/// [`fit_converged`], where `affine[i]`, when given, says that probe `i`'s tap is an affine map
/// of probe `affine[i].base`'s and is fitted through that probe's features (see [`affine`]);
/// such a probe's own entries in the splits are not read (an empty `[n, 0]` tensor will do).
/// These probes must be wider than [`FitConfig::whiten_max`], and their base features must be
/// where the host kernels read them (f32 or bfloat16 in CPU memory, at most
/// 32 classes, the host kernels' limit), with no transfer matrix asked for.
pub fn fit_converged_affine(
    train: &Split,
    val: Option<&Split>,
    test: Option<&Split>,
    classes: usize,
    warm: Option<&[LinearProbe]>,
    cfg: &FitConfig,
    affine: &[Option<AffineTap>],
) -> candle_core::Result<Vec<Fitted>> {
    let n = train.y.dim(0)?;
    let affine_of = |i: usize| affine.get(i).and_then(|a| a.as_ref());
    if cfg.transfer && affine.iter().any(|a| a.is_some()) {
        candle_core::bail!("the transfer matrix needs every probe's own features");
    }
    let mut out: Vec<Option<Fitted>> = vec![None; train.x.len()];
    // Group probes of the same width into batches of at most `batch_bytes` of features. A GPU
    // has the memory for bigger batches, and each batch costs kernel launches per iteration.
    let batch_bytes = if train.y.device().is_cuda() {
        cfg.batch_bytes.max(GPU_BATCH_BYTES)
    } else {
        cfg.batch_bytes
    };
    let mut order: Vec<usize> = (0..train.x.len())
        .filter(|&i| affine_of(i).is_none())
        .collect();
    order.sort_by_key(|&i| (train.x[i].dim(1).unwrap_or(0), i));
    // A probe through an affine map is a batch of its own.
    let mut batches: Vec<Vec<usize>> = (0..train.x.len())
        .filter(|&i| affine_of(i).is_some())
        .map(|i| vec![i])
        .collect();
    for i in order {
        let d = train.x[i].dim(1)?;
        let bytes = n * (d + 1) * 4;
        match batches.last_mut() {
            Some(b)
                if affine_of(b[0]).is_none()
                    && train.x[b[0]].dim(1)? == d
                    && (b.len() + 1) * bytes <= batch_bytes.max(bytes) =>
            {
                b.push(i)
            }
            _ => batches.push(vec![i]),
        }
    }
    let y_train = one_hot(&train.y, classes)?;
    let y_val = val.map(|v| one_hot(&v.y, classes)).transpose()?;
    for batch in batches {
        let fitted = fit_batch(
            &batch,
            train,
            &y_train,
            val.zip(y_val.as_ref()),
            test,
            classes,
            warm,
            cfg,
            affine_of(batch[0]),
        )?;
        for (i, f) in batch.into_iter().zip(fitted) {
            out[i] = Some(f);
        }
    }
    let mut out: Vec<Fitted> = out
        .into_iter()
        .map(|f| f.expect("every probe fitted"))
        .collect();
    if cfg.transfer {
        let on = test.unwrap_or(train);
        let probes: Vec<LinearProbe> = out.iter().map(|f| f.probe.clone()).collect();
        let rows = transfer(&probes, &on.x, &on.y, TRANSFER_SAMPLES)?;
        for (f, row) in out.iter_mut().zip(rows) {
            f.reading.transfer = Some(row);
        }
        // Drift: the probes this fit started from (the previous snapshot's) on today's features.
        if let Some(warm) = warm {
            let m = on.y.dim(0)?.min(TRANSFER_SAMPLES);
            let y = on.y.narrow(0, 0, m)?;
            for (i, f) in out.iter_mut().enumerate() {
                if let Some(old) = warm
                    .get(i)
                    .filter(|w| w.width == on.x[i].dim(1).unwrap_or(0))
                {
                    let x = on.x[i].narrow(0, 0, m)?;
                    f.reading.drift_error = Some(evaluate(old, &x, &y)?.0);
                }
            }
        }
    }
    if cfg.control {
        // The twins: the same features, control labels, no early stopping, no warm start.
        let control = Split {
            x: train.x.clone(),
            y: control_labels(n, classes, train.y.device())?,
        };
        let twins = fit_converged_affine(
            &control,
            None,
            None,
            classes,
            None,
            &FitConfig {
                control: false,
                // The twins' transfer rows would be thrown away.
                transfer: false,
                ..cfg.clone()
            },
            affine,
        )?;
        for (f, t) in out.iter_mut().zip(twins) {
            f.reading.control_error = Some(t.reading.train_error);
        }
    }
    Ok(out)
}

/// Samples the transfer matrix is measured on.
pub const TRANSFER_SAMPLES: usize = 2000;

/// The transfer matrix: entry `[i][j]` is the error of probe `i` applied to probe `j`'s features
/// `x[j]` (on the first `max_samples` samples), where the widths agree; `None` elsewhere. The
/// diagonal is each probe's own error on those samples. Probes of one width are applied
/// together: one matrix product per tap.
pub fn transfer(
    probes: &[LinearProbe],
    x: &[Tensor],
    y: &Tensor,
    max_samples: usize,
) -> candle_core::Result<Vec<Vec<Option<f64>>>> {
    let n = probes.len();
    let mut out = vec![vec![None; n]; n];
    let m = y.dim(0)?.min(max_samples);
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let y = y.narrow(0, 0, m)?.to_dtype(DType::U32)?.unsqueeze(1)?;
    let mut widths: Vec<usize> = probes.iter().map(|p| p.width).collect();
    widths.sort_unstable();
    widths.dedup();
    for d in widths {
        let group: Vec<usize> = (0..n).filter(|&i| probes[i].width == d).collect();
        let k = probes[group[0]].classes;
        if group.iter().any(|&i| probes[i].classes != k) {
            continue;
        }
        let dev = x[group[0]].device();
        // Weights side by side: d x (P k), then the biases.
        let mut w = vec![0f32; d * group.len() * k];
        let mut b = Vec::with_capacity(group.len() * k);
        for (p, &i) in group.iter().enumerate() {
            for r in 0..d {
                for c in 0..k {
                    w[r * group.len() * k + p * k + c] = probes[i].weight[r * k + c];
                }
            }
            b.extend_from_slice(&probes[i].bias);
        }
        let w = Tensor::from_vec(w, (d, group.len() * k), dev)?;
        let b = Tensor::from_vec(b, (1, group.len() * k), dev)?;
        for &j in &group {
            if x[j].dim(1)? != d {
                continue;
            }
            let logits = x[j]
                .narrow(0, 0, m)?
                .to_dtype(DType::F32)?
                .matmul(&w)?
                .broadcast_add(&b)?
                .reshape((m, group.len(), k))?;
            let wrong = logits
                .argmax(2)?
                .broadcast_ne(&y)?
                .to_dtype(DType::F32)?
                .mean(0)?
                .to_vec1::<f32>()?;
            for (p, &i) in group.iter().enumerate() {
                out[i][j] = Some(f64::from(wrong[p]));
            }
        }
    }
    Ok(out)
}

/// The control task's labels for `n` samples: uniform over `classes`, drawn from a fixed stream,
/// so they are the same in every run (and selectivity compares across runs and seeds).
pub fn control_labels(n: usize, classes: usize, device: &Device) -> candle_core::Result<Tensor> {
    use rand::Rng;
    let mut rng = crate::rng::stream(0, "control-task");
    let y: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..classes.max(1) as u32))
        .collect();
    Tensor::from_vec(y, n, device)
}

/// Rows `start..start + len` of the probes `idx` of `xs`, as one `[B, len, d]` f32 tensor.
fn stack_rows(
    xs: &[Tensor],
    idx: &[usize],
    start: usize,
    len: usize,
) -> candle_core::Result<Tensor> {
    let parts = idx
        .iter()
        .map(|&i| xs[i].narrow(0, start, len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::stack(&parts, 0)?.to_dtype(DType::F32)
}

/// Rows per block of about [`ROW_BLOCK_BYTES`] of the probes `idx` of `xs` (each `[n, d]`).
fn block_rows(xs: &[Tensor], idx: &[usize]) -> candle_core::Result<usize> {
    let d = xs[idx[0]].dim(1)?;
    Ok((ROW_BLOCK_BYTES / (4 * (d + 1) * idx.len())).max(1))
}

/// Bytes of features handled between two checks for a stop while preparing a fit.
const ROW_BLOCK_BYTES: usize = 64 << 20;

#[allow(clippy::too_many_arguments)]
fn fit_batch(
    batch: &[usize],
    train: &Split,
    y_train: &Tensor,
    val: Option<(&Split, &Tensor)>,
    test: Option<&Split>,
    classes: usize,
    warm: Option<&[LinearProbe]>,
    cfg: &FitConfig,
    affine: Option<&AffineTap>,
) -> candle_core::Result<Vec<Fitted>> {
    let b = batch.len();
    // A stop is honoured between any two of the solver's passes over the features.
    let cancel = &cfg.cancel;
    cancel.check_candle()?;
    crate::cancel::debug_hold_fit(cancel)?;
    // The stored features the solver reads: the batch's own, or for a probe through an affine
    // map, its base's.
    let src: Vec<usize> = match affine {
        Some(a) => vec![a.base],
        None => batch.to_vec(),
    };
    let dev = train.x[src[0]].device().clone();
    let st = Centring::fit_rows(&train.x, &src, cancel)?;
    // The host kernels read every split's features where they are stored; elsewhere (a GPU,
    // many classes) the solver works on centred copies.
    let hb = HostBatch::new(&train.x, &src, &st.mean, &train.y, classes)?;
    let (d, st, hb, ab) = match affine {
        None => (train.x[batch[0]].dim(1)?, st, hb, None),
        Some(a) => {
            let Some(base) = hb else {
                candle_core::bail!("a probe through an affine map needs its base on the host");
            };
            if a.var.len() <= cfg.whiten_max {
                candle_core::bail!("a probe through an affine map is wider than whiten_max");
            }
            // The tap's training means are the map of its base's: the features the solver
            // sees are exactly `A (x - mean_x)`.
            let mean = (a.map.apply(&st.mean.squeeze(1)?)? + a.offset.unsqueeze(0)?)?;
            let ab = AffineBatch {
                base,
                map: &a.map,
                var: &a.var,
            };
            let st = Centring {
                mean: mean.unsqueeze(1)?,
            };
            (a.var.len(), st, None, Some(ab))
        }
    };
    let refs = |xs: &'_ [Tensor]| -> Vec<Tensor> { src.iter().map(|&i| xs[i].clone()).collect() };
    let on_host = hb.is_some() || ab.is_some();
    let readable = |xs: &[Tensor]| {
        let r: Vec<&Tensor> = xs.iter().collect();
        on_host && crate::host::with_views(&r, |_| ()).is_some()
    };
    let z = match on_host {
        true => None,
        false => Some(st.apply_rows(&train.x, batch, cancel)?),
    };
    let feats = match (&ab, &hb, &z) {
        (Some(ab), _, _) => Features::Affine(ab),
        (None, Some(hb), _) => Features::Host(hb),
        (None, None, Some(z)) => Features::Centred(z),
        (None, None, None) => unreachable!("centred copy made without the host kernels"),
    };
    let (pre, var) = Preconditioner::new(
        &feats,
        (b, n_rows(train)?, d + 1),
        &dev,
        cfg.l2,
        (d <= cfg.whiten_max, cfg.rank),
        cancel,
    )?;
    let obj = Objective::new(feats, y_train, &var, cfg.l2)?;
    // Wide bfloat16 features: the first iterations, which move far, take bfloat16 products
    // (about 0.6 of an exact pass's time). Where the solver's own tests would stop a problem (a
    // small gradient, a line search that cannot go on, a stalled loss), which the rounding
    // could trip, it goes on from there with exact passes and a fresh curvature history. Early
    // stopping reads validation errors computed exactly, and may end a fit in either phase.
    let mut coarse = cfg.bf16_products && feats.host().is_some_and(|h| h.start_coarse());
    // The logits of a split's features at centred parameters: read in place where the host
    // kernels can, else from a centred copy (`zc`).
    let logits_of = |xs: &[Tensor], zc: Option<&Tensor>, theta: &Tensor| {
        let r: Vec<&Tensor> = xs.iter().collect();
        match (zc, &hb, &ab) {
            (Some(zc), _, _) => zc.matmul(theta),
            (None, _, Some(ab)) => ab.scores(&r, theta),
            (None, Some(hb), None) => hb.scores(&r, theta),
            (None, None, None) => unreachable!("no centred copy without the host kernels"),
        }
    };
    let train_x = refs(&train.x);
    let theta0 = match warm {
        Some(w) => {
            let mut ws = Vec::with_capacity(b);
            let mut bs = Vec::with_capacity(b);
            for &i in batch {
                let p = &w[i];
                if p.width != d || p.classes != classes {
                    candle_core::bail!(
                        "warm start for probe {i} has shape {}x{}, expected {d}x{classes}",
                        p.width,
                        p.classes
                    );
                }
                ws.push(Tensor::from_slice(&p.weight, (d, classes), &dev)?);
                bs.push(Tensor::from_slice(&p.bias, (1, classes), &dev)?);
            }
            st.centre_params(&Tensor::stack(&ws, 0)?, &Tensor::stack(&bs, 0)?)?
        }
        None => Tensor::zeros((b, d + 1, classes), DType::F32, &dev)?,
    };
    let val_x = val.map(|(v, _)| refs(&v.x));
    let zval = match val {
        Some((v, _)) if !readable(val_x.as_deref().unwrap_or_default()) => {
            if ab.is_some() {
                candle_core::bail!("a probe through an affine map needs its base on the host");
            }
            Some(st.apply_rows(&v.x, batch, cancel)?)
        }
        _ => None,
    };
    let val_logits =
        |theta: &Tensor| logits_of(val_x.as_deref().unwrap_or_default(), zval.as_ref(), theta);
    cancel.check_candle()?;
    // The solver's variables (see `Preconditioner`); `to_theta` maps them back.
    let to_theta = |v: &Tensor| pre.theta(v);
    let grad_v = |g: Tensor| pre.grad(&g);
    let mut theta = pre.vars(&theta0)?;
    let (mut f0, mut logits, mut g0) = obj.value(&to_theta(&theta)?)?;
    if warm.is_some() {
        // A warm start is a hint: where the features have changed so much that it is worse
        // than knowing nothing (the zero start, whose objective is exactly ln C: zero logits,
        // no penalty), it would only cost iterations, and its huge logits can leave early
        // stopping nothing to improve on for `patience` checks (measured: a conv tap
        // warm-started across 300 training steps stopped at loss 921 where a cold start
        // reaches 0.17). Such problems start from zero.
        let cold = (classes as f64).ln();
        let worse: Vec<bool> = host(&f0)?
            .iter()
            .map(|w| w.partial_cmp(&cold) != Some(std::cmp::Ordering::Less))
            .collect();
        if worse.iter().any(|&v| v) {
            theta = problem_mask(&worse, &theta, &dev)?.where_cond(&theta.zeros_like()?, &theta)?;
            (f0, logits, g0) = obj.value(&to_theta(&theta)?)?;
        }
    }
    let mut g = grad_v(match g0 {
        Some(g) => g,
        None => obj.gradient(&to_theta(&theta)?, &logits)?,
    })?;

    let mut fh = host(&f0)?;
    let mut active = vec![true; b];
    let mut converged = vec![false; b];
    let mut iters = vec![0usize; b];
    let mut stall = vec![0usize; b];
    let mut hist: std::collections::VecDeque<(Tensor, Tensor, Tensor)> = Default::default();
    // Set where a coarse fit would stop a problem: the passes turn exact.
    let mut finish = false;
    // The objective, gradient and logits at `theta` again, with exact passes.
    macro_rules! to_exact {
        () => {
            coarse = false;
            finish = false;
            if let Some(h) = feats.host() {
                h.end_coarse();
            }
            hist.clear();
            stall.fill(0);
            let (f, lg, g0) = obj.value(&to_theta(&theta)?)?;
            fh = host(&f)?;
            g = grad_v(match g0 {
                Some(g) => g,
                None => obj.gradient(&to_theta(&theta)?, &lg)?,
            })?;
            logits = lg;
        };
    }
    // Early stopping state: best validation error and the parameters that gave it.
    let mut best_theta = theta.clone();
    let mut early = EarlyStop::new(b, cfg.patience);
    for it in 0..cfg.max_iter {
        cancel.check_candle()?;
        if let Some((vs, _)) = val {
            if it % cfg.check_every == 0 {
                let ev = errors(&val_logits(&to_theta(&theta)?)?, &vs.y)?;
                let better = early.check(&ev, &mut active);
                for (k, c) in converged.iter_mut().enumerate() {
                    *c |= early.stopped(k);
                }
                if better.iter().any(|&v| v) {
                    best_theta =
                        problem_mask(&better, &theta, &dev)?.where_cond(&theta, &best_theta)?;
                }
            }
        }
        let gmax = host(&g.abs()?.max(2)?.max(1)?)?;
        for k in 0..b {
            if active[k] && gmax[k] < cfg.grad_tol {
                if coarse {
                    finish = true;
                } else {
                    active[k] = false;
                    converged[k] = true;
                }
            }
        }
        if finish {
            to_exact!();
            continue;
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        // Two-loop recursion, all problems at once.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = (rho * dot(s, &q)?)?;
            q = (q - yv.broadcast_mul(&col(&a)?)?)?;
            alphas.push(a);
        }
        let mut r = match hist.back() {
            Some((s, yv, _)) => {
                let ys = dot(s, yv)?;
                let yy = dot(yv, yv)?;
                let ok = yy.gt(0f32)?.mul(&ys.gt(0f32)?)?;
                let gamma = ok.where_cond(&(ys / yy.maximum(1e-30f32)?)?, &yy.ones_like()?)?;
                q.broadcast_mul(&col(&gamma)?)?
            }
            None => {
                // First step: unit length along the gradient.
                let norm = dot(&q, &q)?.sqrt()?.maximum(1e-12f32)?;
                q.broadcast_div(&col(&norm)?)?
            }
        };
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let beta = (rho * dot(yv, &r)?)?;
            r = (r + s.broadcast_mul(&col(&(a - beta)?)?)?)?;
        }
        let mut dir = r.neg()?;
        let mut gd = host(&dot(&g, &dir)?)?;
        if gd
            .iter()
            .zip(&active)
            .any(|(v, &a)| a && (v.is_nan() || *v >= 0.0))
        {
            // Not a descent direction for some problem (lost curvature): restart it along -g.
            let bad: Vec<bool> = gd.iter().map(|v| v.is_nan() || *v >= 0.0).collect();
            let m = problem_mask(&bad, &dir, &dev)?;
            let norm = dot(&g, &g)?.sqrt()?.maximum(1e-12f32)?;
            let sd = g.broadcast_div(&col(&norm)?)?.neg()?;
            dir = m.where_cond(&sd, &dir)?;
            gd = host(&dot(&g, &dir)?)?;
        }
        // Backtracking line search with one step length per problem.
        let mut step: Vec<f64> = active.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
        let mut settled = vec![false; b];
        let (mut theta_n, mut fnh, mut logits_n, mut grad_n);
        let mut tries = 0;
        loop {
            cancel.check_candle()?;
            // Problems that do not move keep their parameters exactly (a direction that
            // overflowed would otherwise turn them into NaN through 0 * inf).
            let moving: Vec<bool> = step.iter().map(|&t| t > 0.0).collect();
            theta_n = problem_mask(&moving, &theta, &dev)?.where_cond(
                &(&theta + dir.broadcast_mul(&col(&to_dev(&step, &dev)?)?)?)?,
                &theta,
            )?;
            let (fv, lg, gr) = obj.value(&to_theta(&theta_n)?)?;
            fnh = host(&fv)?;
            logits_n = lg;
            grad_n = gr;
            let mut all = true;
            for k in 0..b {
                if settled[k] || step[k] == 0.0 {
                    settled[k] = true;
                    continue;
                }
                // Armijo's condition, with slack for the f32 rounding of the loss itself: near the
                // optimum the decrease it asks for is below what f32 can resolve.
                let slack = 1e-6 * fh[k].abs().max(1e-3);
                if fnh[k].is_finite() && fnh[k] <= fh[k] + 1e-4 * step[k] * gd[k] + slack {
                    settled[k] = true;
                } else {
                    step[k] *= 0.5;
                    if step[k] < 1e-3 {
                        step[k] = 0.0;
                        if coarse {
                            finish = true;
                        } else {
                            active[k] = false;
                            converged[k] = true;
                        }
                    }
                    all = false;
                }
            }
            tries += 1;
            if all || tries > 12 {
                break;
            }
        }
        // The last try's point is where every problem stands (a settled one keeps its step).
        let g_n = grad_v(match grad_n {
            Some(g) => g,
            None => obj.gradient(&to_theta(&theta_n)?, &logits_n)?,
        })?;
        let s = (&theta_n - &theta)?;
        let yv = (&g_n - &g)?;
        let ys = dot(&s, &yv)?;
        let rho = ys
            .gt(1e-20f32)?
            .where_cond(&ys.maximum(1e-20f32)?.recip()?, &ys.zeros_like()?)?;
        hist.push_back((s, yv, rho));
        if hist.len() > cfg.memory {
            hist.pop_front();
        }
        for k in 0..b {
            if !active[k] {
                continue;
            }
            iters[k] += 1;
            if (fh[k] - fnh[k]).abs() <= cfg.loss_tol * fh[k].abs().max(1.0) {
                stall[k] += 1;
                if stall[k] >= 2 {
                    if coarse {
                        finish = true;
                    } else {
                        active[k] = false;
                        converged[k] = true;
                    }
                }
            } else {
                stall[k] = 0;
            }
        }
        theta = theta_n;
        logits = logits_n;
        g = g_n;
        fh = fnh;
        if finish {
            to_exact!();
        }
    }
    if coarse {
        // Stopped early, or at the iteration limit, with the products in bfloat16: the
        // training logits reported are the exact ones.
        if let Some(h) = feats.host() {
            h.end_coarse();
        }
        if val.is_none() {
            logits = logits_of(&train_x, z.as_ref(), &to_theta(&theta)?)?;
        }
    }
    if let Some((vs, _)) = val {
        // A last check, then report each probe at its best validation error.
        let ev = errors(&val_logits(&to_theta(&theta)?)?, &vs.y)?;
        let better = early.at_end(&ev);
        theta = problem_mask(&better, &theta, &dev)?.where_cond(&theta, &best_theta)?;
        logits = logits_of(&train_x, z.as_ref(), &to_theta(&theta)?)?;
    }
    let theta = to_theta(&theta)?;
    let train_err = errors(&logits, &train.y)?;
    let train_loss = host(&cross_entropy(&logits, y_train)?)?;
    let mut readings: Vec<ProbeReading> = (0..b)
        .map(|k| ProbeReading {
            train_error: train_err[k],
            train_loss: train_loss[k],
            iterations: iters[k],
            // A fit whose loss is not a number did not converge, whatever stopped it.
            converged: converged[k] && train_loss[k].is_finite(),
            ..Default::default()
        })
        .collect();
    // The confusion matrix of the last split scored: test, else validation, else training.
    let want_confusion = classes <= CONFUSION_MAX_CLASSES;
    let mut confusion_of: Option<(Tensor, Tensor)> = Some((logits.clone(), train.y.clone()));
    // Error and loss per problem of logits `lg` against labels `y` (one-hot `yoh`).
    let score =
        |lg: &Tensor, y: &Tensor, yoh: &Tensor| -> candle_core::Result<(Vec<f64>, Vec<f64>)> {
            Ok((errors(lg, y)?, host(&cross_entropy(lg, yoh)?)?))
        };
    if let Some((vs, yoh)) = val {
        let lg = val_logits(&theta)?;
        let (e, l) = score(&lg, &vs.y, yoh)?;
        confusion_of = Some((lg, vs.y.clone()));
        for k in 0..b {
            readings[k].val_error = Some(e[k]);
            readings[k].val_loss = Some(l[k]);
        }
    }
    let (w, bias) = st.to_raw(&theta)?;
    if let Some(ts) = test {
        cancel.check_candle()?;
        let test_x = refs(&ts.x);
        let lg = if readable(&test_x) {
            logits_of(&test_x, None, &theta)?
        } else if ab.is_some() {
            candle_core::bail!("a probe through an affine map needs its base on the host");
        } else {
            st.apply_rows(&ts.x, batch, cancel)?.matmul(&theta)?
        };
        let (e, l) = score(&lg, &ts.y, &one_hot(&ts.y, classes)?)?;
        confusion_of = Some((lg, ts.y.clone()));
        for k in 0..b {
            readings[k].test_error = Some(e[k]);
            readings[k].test_loss = Some(l[k]);
        }
    }
    if let (true, Some((lg, y))) = (want_confusion, confusion_of) {
        for (r, m) in readings.iter_mut().zip(confusions(&lg, &y)?) {
            r.confusion = Some(m);
        }
    }
    let w: Vec<Vec<Vec<f32>>> = w.to_vec3()?;
    let bias: Vec<Vec<Vec<f32>>> = bias.to_vec3()?;
    Ok(readings
        .into_iter()
        .enumerate()
        .map(|(k, reading)| Fitted {
            probe: LinearProbe {
                width: d,
                classes,
                weight: w[k].concat(),
                bias: bias[k][0].clone(),
            },
            reading,
        })
        .collect())
}

/// Error and mean cross-entropy of a raw-space probe on features `x` (`[n, width]`) with labels `y`.
pub fn evaluate(probe: &LinearProbe, x: &Tensor, y: &Tensor) -> candle_core::Result<(f64, f64)> {
    let dev = x.device();
    let w = Tensor::from_slice(&probe.weight, (probe.width, probe.classes), dev)?;
    let b = Tensor::from_slice(&probe.bias, (1, probe.classes), dev)?;
    let logits = x
        .to_dtype(DType::F32)?
        .matmul(&w)?
        .broadcast_add(&b)?
        .unsqueeze(0)?;
    let e = errors(&logits, y)?[0];
    let l = host(&cross_entropy(&logits, &one_hot(y, probe.classes)?)?)?[0];
    Ok((e, l))
}

/// Summary statistics of a tap's activations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationStats {
    /// Mean over samples of the activation vector's Euclidean norm (the paper's underflow check).
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean_norm: f64,
    /// Fraction of units that are exactly zero on every sample ("dead" units of the ReLU family).
    #[serde(deserialize_with = "f64_or_nan")]
    pub dead_fraction: f64,
}

/// Statistics of `x` (`[n, ...]`).
pub fn activation_stats(x: &Tensor) -> candle_core::Result<ActivationStats> {
    let x = x.flatten_from(1)?;
    let (rows, cols) = x.dims2()?;
    if let Some((norm_sum, max_abs)) =
        crate::host::with_f32(&x, |v| crate::host::norms_and_max_abs(v, cols))
    {
        let alive = max_abs.iter().filter(|&&m| m > 0.0).count();
        return Ok(ActivationStats {
            mean_norm: norm_sum / rows.max(1) as f64,
            dead_fraction: 1.0 - alive as f64 / cols.max(1) as f64,
        });
    }
    let x = x.to_dtype(DType::F32)?;
    let mean_norm = x.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64;
    let alive = x
        .abs()?
        .max(0)?
        .gt(0f32)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(ActivationStats {
        mean_norm,
        dead_fraction: 1.0 - alive as f64,
    })
}

/// [`activation_stats`] gathered block by block of samples, so a tap's features never need to
/// be in one tensor.
#[derive(Debug, Default)]
pub struct StatsAccumulator {
    norm_sum: f64,
    samples: usize,
    /// Largest absolute value of each feature so far, of blocks read on the host.
    host_max: Vec<f32>,
    /// The same, of blocks elsewhere (a GPU).
    max_abs: Option<Tensor>,
}

impl StatsAccumulator {
    /// Adds the samples `x` (`[k, ...]`).
    pub fn add(&mut self, x: &Tensor) -> candle_core::Result<()> {
        let x = x.flatten_from(1)?.to_dtype(DType::F32)?;
        let (k, cols) = x.dims2()?;
        self.samples += k;
        // On the host, one pass of our own kernel (candle's operations make three copies of
        // the block and reduce over its rows slowly: 3 s of a 50,000-image snapshot's
        // 25,088-wide tap on two cores).
        let host = crate::host::with_f32(&x, |v| {
            if self.host_max.len() != cols {
                self.host_max = vec![0.0; cols];
            }
            crate::host::norms_and_max_abs_into(v, cols, &mut self.host_max)
        });
        if let Some(norm_sum) = host {
            self.norm_sum += norm_sum;
            return Ok(());
        }
        self.norm_sum += x.sqr()?.sum(1)?.sqrt()?.sum_all()?.to_scalar::<f32>()? as f64;
        let m = x.abs()?.max(0)?;
        self.max_abs = Some(match self.max_abs.take() {
            Some(acc) => acc.maximum(&m)?,
            None => m,
        });
        Ok(())
    }

    /// The statistics of every sample added.
    pub fn finish(&self) -> candle_core::Result<ActivationStats> {
        let mut max: Vec<f32> = match &self.max_abs {
            Some(m) => m.to_vec1()?,
            None => Vec::new(),
        };
        if max.len() < self.host_max.len() {
            max.resize(self.host_max.len(), 0.0);
        }
        max.iter_mut()
            .zip(&self.host_max)
            .for_each(|(a, &b)| *a = a.max(b));
        if max.is_empty() {
            return Ok(ActivationStats::default());
        }
        let alive = max.iter().filter(|&&m| m > 0.0).count();
        Ok(ActivationStats {
            mean_norm: self.norm_sum / self.samples as f64,
            dead_fraction: 1.0 - alive as f64 / max.len() as f64,
        })
    }
}

/// Standard deviations from variances `[.., d]`, where a feature whose spread is at rounding
/// level of the largest counts as constant (unit scale): a relative rule, so scale-invariant.
fn safe_std(var: &Tensor) -> candle_core::Result<Tensor> {
    let std = var.sqrt()?;
    let floor = std.max_keepdim(D::Minus1)?.affine(1e-6, 1e-30)?;
    std.broadcast_gt(&floor)?
        .where_cond(&std, &std.ones_like()?)
}

/// Settings of the online probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineConfig {
    /// Adam learning rate.
    pub lr: f64,
    /// Weight of a new batch in the running mean and variance used to standardise.
    pub stats_momentum: f64,
    /// Weight of a new batch error in the smoothed error.
    pub error_momentum: f64,
    /// L2 penalty, as in the converged fit.
    pub l2: f64,
    /// On a GPU, step the probes with the fused kernels of `online.cu` (four launches per
    /// probe) rather than candle's operations (about fifty per width): the same arithmetic.
    #[serde(default = "fused_default")]
    pub fused: bool,
}

fn fused_default() -> bool {
    true
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            stats_momentum: 0.05,
            error_momentum: 0.05,
            l2: 1e-4,
            fused: true,
        }
    }
}

/// An online probe's state read back to the host: its parameters on standardised features
/// (`[d + 1, K]` row-major, bias row last), and its running mean and variance once a step has
/// run.
type HostProbe = (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>);

/// Online probes of one width, updated together: every tensor has the members on its first
/// axis (`P`), so a step costs one set of kernel launches per width, not per probe (on a GPU the
/// launches, not the arithmetic, are the cost).
struct OnlineGroup {
    /// Probe indices, in the order of the first axis.
    members: Vec<usize>,
    /// `[P, d + 1, K]` parameters on standardised features, bias row last.
    theta: Tensor,
    /// Adam's moments, shaped like `theta`.
    m: Tensor,
    v: Tensor,
    /// `[P, d + 1, 1]`: 1 on the weights, 0 on the bias row (the bias is not penalised).
    penalty: Tensor,
    /// Running mean and variance of the features, `[P, 1, d]`.
    mean: Option<Tensor>,
    var: Option<Tensor>,
    /// On the CPU, the state the host kernel updates in place instead of the tensors above
    /// (which then keep their initial values).
    host: Option<HostState>,
}

/// An online group's state on the host: `theta`, `m`, `v`, `mean`, `var` as in
/// [`OnlineGroup`], flat and row-major.
struct HostState {
    theta: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    /// Whether a batch has been seen (the running statistics start from the first batch's).
    seen: bool,
}

/// Adam's settings for the host and GPU kernels from `(b1, b2, step, eps)` as
/// `OnlineProbes::update` folds them, and the penalty `l2`.
fn adam_of((b1, b2, step, eps): (f64, f64, f64, f64), l2: f64) -> crate::host::Adam {
    crate::host::Adam {
        b1: b1 as f32,
        b2: b2 as f32,
        step: step as f32,
        eps: eps as f32,
        l2: l2 as f32,
    }
}

/// One group's update by the host kernel ([`crate::host::online_step`]) on its state `h`, from
/// its members' features `xs` (`[n, ...]` f32 in CPU memory each): the members' wrong counts
/// and losses before the step.
fn host_step(
    h: &mut HostState,
    xs: &[Tensor],
    labels: &[u32],
    cfg: &OnlineConfig,
    (b1, b2, step, eps): (f64, f64, f64, f64),
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let xs: Vec<Tensor> = xs
        .iter()
        .map(|x| x.flatten_from(1)?.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let refs: Vec<&Tensor> = xs.iter().collect();
    let d = xs[0].dim(1)?;
    let per = h.theta.len() / xs.len();
    let adam = adam_of((b1, b2, step, eps), cfg.l2);
    let (seen, mom) = (h.seen, cfg.stats_momentum as f32);
    h.seen = true;
    // The members are independent: one per core.
    crate::host::with_f32_all(&refs, |views| {
        use rayon::prelude::*;
        views
            .par_iter()
            .zip(
                h.mean
                    .par_chunks_mut(d.max(1))
                    .zip(h.var.par_chunks_mut(d.max(1))),
            )
            .zip(
                h.theta
                    .par_chunks_mut(per)
                    .zip(h.m.par_chunks_mut(per))
                    .zip(h.v.par_chunks_mut(per)),
            )
            .map(|((x, (mu, va)), ((t, mm), vv))| {
                let (w, l) =
                    crate::host::online_step(x, d, labels, (mu, va, seen, mom), t, mm, vv, &adam);
                (w as f32, l as f32)
            })
            .unzip()
    })
    .ok_or_else(|| candle_core::Error::Msg("online probes: features not f32 on the CPU".into()))
}

/// An online probe's reading after one update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OnlineReading {
    /// Error on this minibatch, measured before the update (so the probe has not seen it).
    pub batch_error: f64,
    /// Loss on this minibatch, before the update.
    pub batch_loss: f64,
    /// Exponential moving average of `batch_error`.
    pub smoothed_error: f64,
}

/// Probes updated once per model step.
pub struct OnlineProbes {
    specs: Vec<ProbeSpec>,
    /// On a GPU with `OnlineConfig::fused`, every probe's state and step; `groups` is then
    /// empty.
    fused: Option<online_gpu::Fused>,
    groups: Vec<OnlineGroup>,
    smoothed: Vec<Option<f64>>,
    classes: usize,
    steps: usize,
    cfg: OnlineConfig,
}

impl OnlineProbes {
    /// Fresh probes (zero weights) for `specs`.
    pub fn new(
        specs: Vec<ProbeSpec>,
        classes: usize,
        device: &Device,
        cfg: OnlineConfig,
    ) -> candle_core::Result<Self> {
        let all: Vec<usize> = specs.iter().map(ProbeSpec::width).collect();
        let fused = match cfg.fused {
            true => online_gpu::Fused::for_device(device, &all, classes)?,
            false => None,
        };
        let mut widths = if fused.is_some() { Vec::new() } else { all };
        widths.sort_unstable();
        widths.dedup();
        let groups = widths
            .into_iter()
            .map(|d| -> candle_core::Result<_> {
                let members: Vec<usize> = (0..specs.len())
                    .filter(|&i| specs[i].width() == d)
                    .collect();
                let p = members.len();
                let z = Tensor::zeros((p, d + 1, classes), DType::F32, device)?;
                let mut pen = vec![1f32; p * (d + 1)];
                for k in 0..p {
                    pen[k * (d + 1) + d] = 0.0;
                }
                let host = device.is_cpu().then(|| HostState {
                    theta: vec![0f32; p * (d + 1) * classes],
                    m: vec![0f32; p * (d + 1) * classes],
                    v: vec![0f32; p * (d + 1) * classes],
                    mean: vec![0f32; p * d],
                    var: vec![0f32; p * d],
                    seen: false,
                });
                Ok(OnlineGroup {
                    members,
                    theta: z.clone(),
                    m: z.clone(),
                    v: z,
                    penalty: Tensor::from_vec(pen, (p, d + 1, 1), device)?,
                    mean: None,
                    var: None,
                    host,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            smoothed: vec![None; specs.len()],
            specs,
            fused,
            groups,
            classes,
            steps: 0,
            cfg,
        })
    }

    /// The same probes updated by candle's operations on the CPU too (to test the host kernel
    /// against them).
    #[cfg(test)]
    fn without_host(mut self) -> Self {
        for g in &mut self.groups {
            g.host = None;
        }
        self
    }

    /// The probes' specifications.
    pub fn specs(&self) -> &[ProbeSpec] {
        &self.specs
    }

    /// Number of updates so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update of every probe on a minibatch: `taps[i]` is probe i's tap output (any shape
    /// `[n, ...]`; it is detached and its subset selected here), `y` the labels.
    pub fn update(
        &mut self,
        taps: &[Tensor],
        y: &Tensor,
    ) -> candle_core::Result<Vec<OnlineReading>> {
        if taps.len() != self.specs.len() {
            candle_core::bail!(
                "{} taps given for {} online probes",
                taps.len(),
                self.specs.len()
            );
        }
        self.steps += 1;
        let t = self.steps as i32;
        let n = y.dim(0)? as f64;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        // Adam's bias corrections folded into two scalars:
        // lr * (m / c1) / (sqrt(v / c2) + eps) = (lr sqrt(c2) / c1) * m / (sqrt(v) + eps sqrt(c2)).
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let (step, eps_v) = (self.cfg.lr * c2.sqrt() / c1, eps * c2.sqrt());
        let mom = self.cfg.stats_momentum;
        // Per probe, its minibatch's wrong count and loss before the step.
        let per_probe = match &mut self.fused {
            Some(f) => {
                let xs = self
                    .specs
                    .iter()
                    .zip(taps)
                    .map(|(s, t)| s.select(t)?.to_dtype(DType::F32)?.flatten_from(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let adam = adam_of((b1, b2, step, eps_v), self.cfg.l2);
                f.step(&xs, y, &adam, mom as f32)?
            }
            None => self.update_groups(taps, y, (b1, b2, step, eps_v))?,
        };
        let mut out = Vec::with_capacity(self.specs.len());
        let em = self.cfg.error_momentum;
        for (i, &(wrong, batch_loss)) in per_probe.iter().enumerate() {
            let batch_error = wrong / n;
            let smoothed = match self.smoothed[i] {
                Some(s) => s * (1.0 - em) + batch_error * em,
                None => batch_error,
            };
            self.smoothed[i] = Some(smoothed);
            out.push(OnlineReading {
                batch_error,
                batch_loss,
                smoothed_error: smoothed,
            });
        }
        Ok(out)
    }

    /// One update of the width groups (the host kernel on the CPU, candle's operations
    /// elsewhere): per probe, its minibatch's wrong count and loss before the step.
    fn update_groups(
        &mut self,
        taps: &[Tensor],
        y: &Tensor,
        (b1, b2, step, eps_v): (f64, f64, f64, f64),
    ) -> candle_core::Result<Vec<(f64, f64)>> {
        let mom = self.cfg.stats_momentum;
        // One-hot labels for the candle form, made once if a group needs them.
        let mut yoh: Option<Tensor> = None;
        // The labels on the host, read once for every group the host kernel updates.
        let mut labels: Option<Vec<u32>> = None;
        // Each group's minibatch errors and losses stay on the device until one read for all of
        // them at the end: on a GPU a read waits for the queue to drain.
        let mut measured = Vec::with_capacity(2 * self.groups.len());
        for g in &mut self.groups {
            let xs = g
                .members
                .iter()
                .map(|&i| self.specs[i].select(&taps[i])?.to_dtype(DType::F32))
                .collect::<candle_core::Result<Vec<_>>>()?;
            if let Some(h) = &mut g.host {
                let labels = match &labels {
                    Some(l) => l,
                    None => labels.insert(y.to_vec1()?),
                };
                let (wrong, loss) = host_step(h, &xs, labels, &self.cfg, (b1, b2, step, eps_v))?;
                let dev = y.device();
                measured.push(Tensor::from_vec(wrong, g.members.len(), dev)?);
                measured.push(Tensor::from_vec(loss, g.members.len(), dev)?);
                continue;
            }
            let x = match xs.as_slice() {
                [one] => one.unsqueeze(0)?,
                many => Tensor::stack(many, 0)?,
            };
            let bm = x.mean_keepdim(1)?;
            let bv = x.broadcast_sub(&bm)?.sqr()?.mean_keepdim(1)?;
            let (mean, var) = match (&g.mean, &g.var) {
                (Some(m), Some(v)) => (
                    ((m * (1.0 - mom))? + (bm * mom)?)?,
                    ((v * (1.0 - mom))? + (bv * mom)?)?,
                ),
                _ => (bm, bv),
            };
            let std_safe = safe_std(&var)?;
            let z = x.broadcast_sub(&mean)?.broadcast_div(&std_safe)?;
            let (p, rows, _) = z.dims3()?;
            let z = Tensor::cat(
                &[&z, &Tensor::ones((p, rows, 1), DType::F32, z.device())?],
                2,
            )?;
            g.mean = Some(mean);
            g.var = Some(var);
            let yoh = match &yoh {
                Some(t) => t.clone(),
                None => yoh.insert(one_hot(y, self.classes)?).clone(),
            };
            let logits = z.matmul(&g.theta)?;
            measured.push(wrong_count(&logits, y)?);
            let prob = candle_nn::ops::softmax_last_dim(&logits)?;
            // The loss from the softmax already needed for the gradient: -mean log p(true class),
            // with p floored so that a hopeless probe reads a large loss, not infinity.
            measured.push(
                prob.broadcast_mul(&yoh)?
                    .sum(2)?
                    .clamp(1e-30f32, 1f32)?
                    .log()?
                    .mean(1)?
                    .neg()?,
            );
            let obj = Objective {
                z: Features::Centred(&z),
                y: &yoh,
                penalty: g.penalty.clone(),
                l2: self.cfg.l2,
            };
            let grad = obj.gradient_from_softmax(&g.theta, &prob)?;
            g.m = ((&g.m * b1)? + (&grad * (1.0 - b1))?)?;
            g.v = ((&g.v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
            let upd = (&g.m / (g.v.sqrt()? + eps_v)?)?;
            g.theta = (&g.theta - (upd * step)?)?;
        }
        let measured = host(&Tensor::cat(&measured, 0)?)?;
        // `measured` holds, per group, its members' wrong counts then their losses.
        let mut out = vec![(f64::NAN, f64::NAN); self.specs.len()];
        let mut at = 0;
        for g in &self.groups {
            let p = g.members.len();
            for (k, &i) in g.members.iter().enumerate() {
                out[i] = (measured[at + k], measured[at + p + k]);
            }
            at += 2 * p;
        }
        Ok(out)
    }

    /// The current probes in raw activation space (zero weights before the first update).
    pub fn probes(&self) -> candle_core::Result<Vec<LinearProbe>> {
        if let Some(f) = &self.fused {
            return (0..self.specs.len())
                .map(|i| {
                    let (theta, stats) = f.state(i)?;
                    let d = self.specs[i].width();
                    let dev = &Device::Cpu;
                    let theta = Tensor::from_vec(theta, (d + 1, self.classes), dev)?;
                    let stats = stats
                        .map(|(m, v)| {
                            Ok::<_, candle_core::Error>((
                                Tensor::from_vec(m, (1, d), dev)?,
                                Tensor::from_vec(v, (1, d), dev)?,
                            ))
                        })
                        .transpose()?;
                    raw_probe(&theta, stats.as_ref(), d, self.classes)
                })
                .collect();
        }
        let mut out: Vec<Option<LinearProbe>> = vec![None; self.specs.len()];
        for g in &self.groups {
            // A host-updated group's state, as the tensors the candle form keeps.
            let (theta, mean, var) = match &g.host {
                Some(h) => {
                    let dev = g.theta.device();
                    let (p, d1, k) = g.theta.dims3()?;
                    let stat = |v: &[f32]| Tensor::from_slice(v, (p, 1, d1 - 1), dev);
                    (
                        Tensor::from_slice(&h.theta, (p, d1, k), dev)?,
                        h.seen.then(|| stat(&h.mean)).transpose()?,
                        h.seen.then(|| stat(&h.var)).transpose()?,
                    )
                }
                None => (g.theta.clone(), g.mean.clone(), g.var.clone()),
            };
            for (k, &i) in g.members.iter().enumerate() {
                let d = self.specs[i].width();
                let stats = match (&mean, &var) {
                    (Some(mean), Some(var)) => Some((mean.get(k)?, var.get(k)?)),
                    _ => None,
                };
                out[i] = Some(raw_probe(&theta.get(k)?, stats.as_ref(), d, self.classes)?);
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every probe is in a group"))
            .collect())
    }
}

/// An online probe in raw activation space, from its parameters on standardised features
/// (`theta`, `[d + 1, K]`, bias row last) and its running statistics (`[1, d]` mean and
/// variance; none before the first step).
fn raw_probe(
    theta: &Tensor,
    stats: Option<&(Tensor, Tensor)>,
    d: usize,
    classes: usize,
) -> candle_core::Result<LinearProbe> {
    let (w, b) = match stats {
        Some((mean, var)) => {
            // logits = ((x - mean) / std) W_s + b_s = x (W_s / std) + (b_s - mean W).
            let w = theta.narrow(0, 0, d)?.broadcast_div(&safe_std(var)?.t()?)?;
            let b = theta.narrow(0, d, 1)?.sub(&mean.matmul(&w)?)?;
            (w, b)
        }
        None => (theta.narrow(0, 0, d)?, theta.narrow(0, d, 1)?),
    };
    Ok(LinearProbe {
        width: d,
        classes,
        weight: w.flatten_all()?.to_vec1()?,
        bias: b.flatten_all()?.to_vec1()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default keeps the whitened (narrow) taps in f32 and the wider ones in bfloat16;
    /// `bf16_features` takes every tap to bfloat16; a log written before `bf16_wide` existed
    /// reads as f32 everywhere.
    #[test]
    fn the_default_keeps_narrow_taps_in_f32_and_wide_ones_in_bf16() {
        let auto = FitConfig::default();
        assert_eq!(auto.whiten_max, 1024);
        assert_eq!(auto.feature_dtype_of(784), DType::F32);
        assert_eq!(auto.feature_dtype_of(1024), DType::F32);
        assert_eq!(auto.feature_dtype_of(1025), DType::BF16);
        assert_eq!(auto.feature_dtype_of(25_088), DType::BF16);
        let all = FitConfig {
            bf16_features: true,
            ..FitConfig::default()
        };
        assert_eq!(all.feature_dtype_of(10), DType::BF16);
        let specs = [ProbeSpec::full("a", 784), ProbeSpec::full("b", 6272)];
        assert_eq!(auto.feature_bytes(&specs), [4, 2]);
        assert_eq!(all.feature_bytes(&specs), [2, 2]);
        let mut old = serde_json::to_value(&auto).unwrap();
        old.as_object_mut().unwrap().remove("bf16_wide");
        let old: FitConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.feature_dtype_of(25_088), DType::F32);
        assert_eq!(old.feature_dtype_label(), "f32");
    }

    /// Cholesky QR gives the Q of modified Gram-Schmidt in f64 (the QR factorisation with a
    /// positive diagonal is unique), and a column in the span of the earlier ones, exactly or to
    /// 1e-9 of its length, becomes zero while Q still spans every column of Y.
    #[test]
    fn orthonormal_columns_match_gram_schmidt_and_drop_dependent_columns() {
        let (d, k) = (300, 12);
        let mut r = crate::rng::stream(3, "qr");
        let mut a = crate::rng::normal_vec(&mut r, d * k, 1.0);
        let mut b = crate::rng::normal_vec(&mut r, d * k, 1.0);
        let noise = crate::rng::normal_vec(&mut r, d, 1.0);
        // Problem 0: columns of very different lengths. Problem 1: column 5 = 3 c2 + c1, column
        // 7 = c6 + 1e-9 noise.
        for i in 0..d {
            a[i * k + 4] *= 1e4;
            b[i * k + 5] = 3.0 * b[i * k + 2] + b[i * k + 1];
            b[i * k + 7] = b[i * k + 6] + 1e-9 * noise[i];
        }
        let y = Tensor::from_vec([a.clone(), b.clone()].concat(), (2, d, k), &Device::Cpu).unwrap();
        let q = orthonormal_columns(&y).unwrap().to_vec3::<f32>().unwrap();
        let col = |m: &Vec<Vec<f32>>, j: usize| -> Vec<f64> {
            m.iter().map(|row| f64::from(row[j])).collect()
        };
        let dot = |x: &[f64], y: &[f64]| -> f64 { x.iter().zip(y).map(|(a, b)| a * b).sum() };
        // Modified Gram-Schmidt in f64 on problem 0.
        let mut gs: Vec<Vec<f64>> = (0..k)
            .map(|j| (0..d).map(|i| f64::from(a[i * k + j])).collect())
            .collect();
        for j in 0..k {
            for p in 0..j {
                let (done, rest) = gs.split_at_mut(j);
                let c = dot(&done[p], &rest[0]);
                rest[0]
                    .iter_mut()
                    .zip(&done[p])
                    .for_each(|(x, y)| *x -= c * y);
            }
            let n = dot(&gs[j], &gs[j]).sqrt();
            gs[j].iter_mut().for_each(|x| *x /= n);
        }
        for (j, g) in gs.iter().enumerate() {
            let c = col(&q[0], j);
            let diff = c
                .iter()
                .zip(g)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                diff < 1e-5,
                "problem 0, column {j}: {diff} from Gram-Schmidt"
            );
        }
        let cols: Vec<Vec<f64>> = (0..k).map(|j| col(&q[1], j)).collect();
        for (j, c) in cols.iter().enumerate() {
            let n = dot(c, c);
            if j == 5 || j == 7 {
                assert!(n < 1e-12, "problem 1: dependent column {j} has norm^2 {n}");
                continue;
            }
            assert!((n - 1.0).abs() < 1e-5, "problem 1, column {j}: norm^2 {n}");
            for (i, o) in cols.iter().enumerate().take(j) {
                if i != 5 && i != 7 {
                    assert!(
                        dot(c, o).abs() < 1e-5,
                        "problem 1: columns {i}, {j} not orthogonal"
                    );
                }
            }
        }
        // Every column of Y, the dropped ones too, lies in the span of Q.
        for j in 0..k {
            let yj: Vec<f64> = (0..d).map(|i| f64::from(b[i * k + j])).collect();
            let mut res = yj.clone();
            for c in &cols {
                let p = dot(c, &yj);
                res.iter_mut().zip(c).for_each(|(x, y)| *x -= p * y);
            }
            let rel = (dot(&res, &res) / dot(&yj, &yj)).sqrt();
            assert!(rel < 1e-5, "problem 1, column {j}: {rel} outside span(Q)");
        }
    }

    /// Early stopping by hand, patience 6. Problem 0 has fc1_postact's validation errors from
    /// the 50,000-image snapshot (in units of 1e-4): after its best at the first check past
    /// the start, four worse checks, then a tie, which resets the count and is the probe
    /// reported; only the sixth worse check in a row after that stops it. Problem 1 gets worse
    /// after its second check and stops at the sixth worse one; problem 2 stopped elsewhere
    /// (inactive) is left alone.
    #[test]
    fn early_stopping_counts_a_tie_as_no_worse() {
        let seq0 = [
            9009, 350, 352, 359, 357, 355, 350, 351, 351, 352, 353, 354, 355,
        ];
        let seq1 = [
            9009, 400, 401, 402, 403, 404, 405, 406, 300, 300, 300, 300, 300,
        ];
        let mut es = EarlyStop::new(3, 6);
        let mut active = [true, true, false];
        let mut kept = [vec![], vec![], vec![]];
        let mut last_active = [0, 0, 0];
        for (c, (a, b)) in seq0.iter().zip(&seq1).enumerate() {
            let ev = [f64::from(*a) * 1e-4, f64::from(*b) * 1e-4, 0.0];
            let keep = es.check(&ev, &mut active);
            for k in 0..3 {
                if keep[k] {
                    kept[k].push(c);
                }
                if active[k] {
                    last_active[k] = c;
                }
            }
        }
        // Problem 0: kept at checks 0, 1 and the tie at 6; checks 7 to 12 are six worse ones.
        assert_eq!(kept[0], vec![0, 1, 6]);
        assert!(!active[0] && es.stopped(0));
        assert_eq!(last_active[0], 11, "stops at the sixth worse check (12)");
        // Problem 1: kept at 0 and 1; 2 to 7 are six worse checks, so the 300s come too late.
        assert_eq!(kept[1], vec![0, 1]);
        assert!(!active[1] && es.stopped(1));
        assert_eq!(last_active[1], 6);
        assert!(kept[2].is_empty() && !es.stopped(2));
        // At the end, parameters as good as the best are reported, worse ones are not; a
        // problem never checked reports its last.
        let e = |v: i32| f64::from(v) * 1e-4;
        assert_eq!(es.at_end(&[e(350), e(401), 1.0]), vec![true, false, true]);
        assert_eq!(es.at_end(&[e(351), e(400), 1.0]), vec![false, true, true]);
    }

    /// The factor and its inverse satisfy `L L^T = A` and `L^-1 L = I`, and equal, bit for bit,
    /// the textbook loops (one entry at a time, each sum in the order of `k`) that the blocked
    /// forms reorganise.
    #[test]
    fn cholesky_and_its_inverse_match_the_textbook_loops() {
        fn textbook(a: &[f64], p: usize) -> (Vec<f64>, Vec<f64>) {
            let mut l = vec![0f64; p * p];
            for j in 0..p {
                let mut d = a[j * p + j];
                for k in 0..j {
                    d -= l[j * p + k] * l[j * p + k];
                }
                let d = d.max(a[j * p + j] * 1e-10).max(1e-300).sqrt();
                l[j * p + j] = d;
                for i in j + 1..p {
                    let mut s = a[i * p + j];
                    for k in 0..j {
                        s -= l[i * p + k] * l[j * p + k];
                    }
                    l[i * p + j] = s / d;
                }
            }
            let mut inv = vec![0f64; p * p];
            for c in 0..p {
                for i in c..p {
                    let mut s = if i == c { 1.0 } else { 0.0 };
                    for k in c..i {
                        s -= l[i * p + k] * inv[k * p + c];
                    }
                    inv[i * p + c] = s / l[i * p + i];
                }
            }
            (l, inv)
        }
        for p in [1, 2, 3, 5, 8, 13, 130] {
            let mut r = crate::rng::stream(p as u64, "cholesky-test");
            let b: Vec<f32> = crate::rng::normal_vec(&mut r, p * p, 1.0);
            let mut a = vec![0f64; p * p];
            for i in 0..p {
                for j in 0..p {
                    a[i * p + j] = (0..p)
                        .map(|k| f64::from(b[i * p + k]) * f64::from(b[j * p + k]))
                        .sum::<f64>()
                        + if i == j { 0.5 } else { 0.0 };
                }
            }
            let (l, inv) = (cholesky(&a, p), lower_inverse(&cholesky(&a, p), p));
            let (l_ref, inv_ref) = textbook(&a, p);
            assert!(
                l == l_ref,
                "p {p}: the factor differs from the textbook loops"
            );
            assert!(
                inv == inv_ref,
                "p {p}: the inverse differs from the textbook loops"
            );
            for i in 0..p {
                for j in 0..p {
                    if j > i {
                        assert_eq!(l[i * p + j], 0.0);
                    }
                    let llt: f64 = (0..p).map(|k| l[i * p + k] * l[j * p + k]).sum();
                    let scale = (a[i * p + i] * a[j * p + j]).sqrt();
                    assert!(
                        (llt - a[i * p + j]).abs() < 1e-10 * scale,
                        "p {p} ({i}, {j})"
                    );
                    let il: f64 = (0..p).map(|k| inv[i * p + k] * l[k * p + j]).sum();
                    let eye = if i == j { 1.0 } else { 0.0 };
                    assert!((il - eye).abs() < 1e-8, "p {p} ({i}, {j}): {il}");
                }
            }
        }
    }

    /// Jacobi's eigenpairs satisfy `A v = lambda v` with orthonormal `v`, and the eigenvalues of
    /// a hand example are its closed form.
    #[test]
    fn jacobi_eigenpairs_satisfy_their_definition() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
        let (vals, _) = jacobi_eig(vec![2.0, 1.0, 1.0, 2.0], 2);
        let mut v = vals.clone();
        v.sort_by(f64::total_cmp);
        assert!(
            (v[0] - 1.0).abs() < 1e-12 && (v[1] - 3.0).abs() < 1e-12,
            "{vals:?}"
        );
        let n = 9;
        let mut r = crate::rng::stream(4, "jacobi");
        let g = crate::rng::normal_vec(&mut r, n * n, 1.0);
        let a: Vec<f64> = (0..n * n)
            .map(|k| f64::from(g[k] + g[(k % n) * n + k / n]))
            .collect();
        let (vals, vecs) = jacobi_eig(a.clone(), n);
        for c in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * vecs[j * n + c]).sum();
                assert!(
                    (av - vals[c] * vecs[i * n + c]).abs() < 1e-9,
                    "pair {c}, row {i}"
                );
            }
            for c2 in 0..n {
                let dot: f64 = (0..n).map(|i| vecs[i * n + c] * vecs[i * n + c2]).sum();
                let want = if c == c2 { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-9, "columns {c} and {c2}: {dot}");
            }
        }
    }

    /// The subspace iteration finds the planted directions of features that are a few strong
    /// directions plus weak noise, and the preconditioner's three maps agree: `vars` inverts
    /// `theta`, and `grad` is `theta`'s transpose (`<grad g, v> = <g, theta v>`).
    #[test]
    fn low_rank_preconditioner_finds_the_strong_directions_and_its_maps_agree() {
        let dev = Device::Cpu;
        let (n, d, planted, k) = (600, 300, 5, 3);
        let mut r = crate::rng::stream(8, "low-rank-test");
        let dirs = crate::rng::normal_vec(&mut r, planted * d, 1.0);
        let lat = crate::rng::normal_vec(&mut r, n * planted, 1.0);
        let noise = crate::rng::normal_vec(&mut r, n * d, 0.05);
        let x: Vec<f32> = (0..n * d)
            .map(|e| {
                let (i, j) = (e / d, e % d);
                let s: f32 = (0..planted)
                    .map(|c| lat[i * planted + c] * dirs[c * d + j] * (c + 1) as f32)
                    .sum();
                s + noise[e]
            })
            .collect();
        let x = Tensor::from_vec(x, (n, d), &dev).unwrap();
        let mean = x.mean_keepdim(0).unwrap();
        let sample = x.broadcast_sub(&mean).unwrap().unsqueeze(0).unwrap();
        let scale = Tensor::ones((1, d + 1, 1), DType::F32, &dev).unwrap();
        let (u, up, down) = low_rank(&sample, &scale, planted, &Cancel::default()).unwrap();
        // Every planted direction lies in the span of u (its projection keeps its length).
        let u2 = u.squeeze(0).unwrap().narrow(0, 0, d).unwrap();
        for c in 0..planted {
            let v = Tensor::from_slice(&dirs[c * d..(c + 1) * d], (d, 1), &dev).unwrap();
            let norm2: f32 = v.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            let proj = u2.t().unwrap().matmul(&v).unwrap();
            let kept: f32 = proj.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(kept > 0.99 * norm2, "direction {c}: {kept} of {norm2}");
        }
        // The factors: the top direction scaled down the most, up and down inverse.
        let upv: Vec<f32> = up.flatten_all().unwrap().to_vec1().unwrap();
        let downv: Vec<f32> = down.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in upv.iter().zip(&downv) {
            assert!(((1.0 + a) * (1.0 + b) - 1.0).abs() < 1e-4, "{a} {b}");
            assert!(*a <= 0.0 && *a > -1.0, "{a}");
        }
        assert!(upv[0] < upv[planted - 1], "{upv:?}");
        let scale = (Tensor::rand(0.5f32, 2.0, (1, d + 1, 1), &dev).unwrap())
            .contiguous()
            .unwrap();
        let pre = Preconditioner::LowRank(LowRank::new(scale, u, up, down).unwrap());
        let t = Tensor::randn(0f32, 1.0, (1, d + 1, k), &dev).unwrap();
        let back = pre.theta(&pre.vars(&t).unwrap()).unwrap();
        let err: f32 = (back - &t)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        // f32 through the strong directions' factors sqrt(lambda / floor) and back.
        assert!(err < 1e-3, "theta(vars(t)) - t: {err}");
        let g = Tensor::randn(0f32, 1.0, (1, d + 1, k), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, d + 1, k), &dev).unwrap();
        let lhs: f32 = (pre.grad(&g).unwrap() * &v)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let rhs: f32 = (g * pre.theta(&v).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-3 * (1.0 + rhs.abs()),
            "{lhs} vs {rhs}"
        );
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The host kernel's objective, gradient, predictions and variances, read from the stored
    /// features (f32 and bfloat16), are candle's on the centred copy.
    #[test]
    fn host_objective_matches_candle() {
        let dev = Device::Cpu;
        let cancel = Cancel::default();
        let mut r = crate::rng::stream(3, "objective");
        let (b, n, d, k) = (2, 300, 7, 3);
        // Features far from zero, so that the centring matters.
        let xs: Vec<Tensor> = (0..b)
            .map(|_| {
                let v: Vec<f32> = crate::rng::normal_vec(&mut r, n * d, 1.0)
                    .into_iter()
                    .map(|x| x + 3.0)
                    .collect();
                Tensor::from_vec(v, (n, d), &dev).unwrap()
            })
            .collect();
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7) % k) as u32).collect();
        let y_idx = Tensor::from_vec(labels, n, &dev).unwrap();
        let y = one_hot(&y_idx, k).unwrap();
        let var = Tensor::from_vec(
            crate::rng::uniform_vec(&mut r, b * (d + 1), 1.0),
            (b, d + 1, 1),
            &dev,
        )
        .unwrap()
        .abs()
        .unwrap();
        let theta = Tensor::from_vec(
            crate::rng::normal_vec(&mut r, b * (d + 1) * k, 0.5),
            (b, d + 1, k),
            &dev,
        )
        .unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs16: Vec<Tensor> = xs
            .iter()
            .map(|x| x.to_dtype(DType::BF16).unwrap())
            .collect();
        for xs in [&xs, &xs16] {
            let idx = [0, 1];
            let st = Centring::fit_rows(xs, &idx, &cancel).unwrap();
            let x32: Vec<Tensor> = xs.iter().map(|x| x.to_dtype(DType::F32).unwrap()).collect();
            let z = st.apply_rows(&x32, &idx, &cancel).unwrap();
            let hb = HostBatch::new(xs, &idx, &st.mean, &y_idx, k)
                .unwrap()
                .unwrap();
            let fast = Objective::new(Features::Host(&hb), &y, &var, 0.01).unwrap();
            let slow = Objective::new(Features::Centred(&z), &y, &var, 0.01).unwrap();
            let (f1, l1, g1) = fast.value(&theta).unwrap();
            let (f2, l2, g2) = slow.value(&theta).unwrap();
            assert!(g2.is_none());
            let g2 = slow.gradient(&theta, &l2).unwrap();
            close(&v(&f1), &v(&f2), 1e-5, "objective");
            close(&v(&g1.unwrap()), &v(&g2), 1e-4, "gradient");
            assert_eq!(errors(&l1, &y_idx).unwrap(), errors(&l2, &y_idx).unwrap());
            close(
                &v(&cross_entropy(&l1, &y).unwrap()),
                &v(&cross_entropy(&l2, &y).unwrap()),
                1e-5,
                "cross-entropy of the logits",
            );
            let refs: Vec<&Tensor> = xs.iter().collect();
            close(
                &v(&hb.scores(&refs, &theta).unwrap()),
                &v(&l2),
                1e-4,
                "scores",
            );
            close(
                &v(&hb.centred_rows(10, 20).unwrap()),
                &v(&z.narrow(1, 10, 20).unwrap()),
                1e-6,
                "centred rows",
            );
            let want: Vec<f32> = v(&z.sqr().unwrap().mean(1).unwrap())
                .chunks(d + 1)
                .flat_map(|c| c[..d].to_vec())
                .collect();
            let got: Vec<f32> = hb
                .variances(&cancel)
                .unwrap()
                .concat()
                .into_iter()
                .map(|x| x as f32)
                .collect();
            close(&got, &want, 1e-5, "variances");
        }
    }

    /// Online probes updated by the host kernel read and learn what the candle form does.
    #[test]
    fn host_online_update_matches_candle() {
        let dev = Device::Cpu;
        let specs = vec![
            ProbeSpec::full("a", 12),
            ProbeSpec::full("b", 12),
            ProbeSpec::full("c", 5),
        ];
        let mut fast = OnlineProbes::new(specs.clone(), 4, &dev, OnlineConfig::default()).unwrap();
        let mut slow = OnlineProbes::new(specs, 4, &dev, OnlineConfig::default())
            .unwrap()
            .without_host();
        let mut r = crate::rng::stream(5, "online");
        for step in 0..20 {
            let n = 32;
            let taps: Vec<Tensor> = [12, 12, 5]
                .iter()
                .map(|&d| {
                    Tensor::from_vec(crate::rng::normal_vec(&mut r, n * d, 2.0), (n, d), &dev)
                        .unwrap()
                        .affine(1.0, 0.5)
                        .unwrap()
                })
                .collect();
            let y: Vec<u32> = (0..n).map(|i| ((i + step) % 4) as u32).collect();
            let y = Tensor::from_vec(y, n, &dev).unwrap();
            let a = fast.update(&taps, &y).unwrap();
            let b = slow.update(&taps, &y).unwrap();
            for (x, z) in a.iter().zip(&b) {
                assert_eq!(x.batch_error, z.batch_error, "step {step}");
                assert!(
                    (x.batch_loss - z.batch_loss).abs() < 1e-4,
                    "step {step}: {x:?} {z:?}"
                );
            }
        }
        for (x, z) in fast.probes().unwrap().iter().zip(&slow.probes().unwrap()) {
            close(&x.weight, &z.weight, 1e-3, "weights");
            close(&x.bias, &z.bias, 1e-3, "bias");
        }
    }
}
