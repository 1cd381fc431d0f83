//! `probescope bench probes`: the converged fit of all probes of one `untrained-mlp` dataset
//! against the paper's procedure (minibatch RMSProp) run in the same invocation.

use std::fmt::Write;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::presets::untrained_mlp;
use crate::probe::{self, FitConfig, ProbeSpec, Split};

/// Train and test errors per probe from one procedure.
pub struct Errors {
    /// Per probe.
    pub train: Vec<f64>,
    /// Per probe.
    pub test: Vec<f64>,
}

/// The paper's procedure, batched over all probes at once (the fastest honest form of it):
/// features standardised with the training split's statistics, zero initialisation, minibatch
/// RMSProp (PyTorch's defaults: alpha 0.99, eps 1e-8) with learning rate `lr`, `epochs` passes
/// in a fresh random order each, no penalty.
pub fn rmsprop(
    train: &Split,
    test: &Split,
    classes: usize,
    epochs: usize,
    batch: usize,
    lr: f64,
    seed: u64,
) -> candle_core::Result<Errors> {
    let x = Tensor::stack(&train.x, 0)?;
    let (b, n, d) = x.dims3()?;
    let dev = x.device().clone();
    let ones = Tensor::ones((b, 1, n), DType::F32, &dev)?;
    let mean = ones.matmul(&x)?.affine(1.0 / n as f64, 0.0)?;
    let xc = x.broadcast_sub(&mean)?;
    let std = ones
        .matmul(&xc.sqr()?)?
        .affine(1.0 / n as f64, 0.0)?
        .sqrt()?
        .maximum(1e-30f32)?;
    let standardise = |x: &Tensor| -> candle_core::Result<Tensor> {
        let z = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let (b, n, _) = z.dims3()?;
        Tensor::cat(&[&z, &Tensor::ones((b, n, 1), DType::F32, &dev)?], 2)
    };
    let z = standardise(&x)?;
    let yoh = probe::one_hot(&train.y, classes)?;
    let mut theta = Tensor::zeros((b, d + 1, classes), DType::F32, &dev)?;
    let mut v = theta.zeros_like()?;
    let mut rng = crate::rng::stream(seed, "rmsprop-baseline");
    let (alpha, eps) = (0.99, 1e-8);
    for _ in 0..epochs {
        let mut perm: Vec<u32> = (0..n as u32).collect();
        rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), &mut rng);
        let perm = Tensor::from_vec(perm, n, &dev)?;
        let zs = z.index_select(&perm, 1)?;
        let ys = yoh.index_select(&perm, 0)?;
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            let zb = zs.narrow(1, start, len)?;
            let yb = ys.narrow(0, start, len)?;
            let p = candle_nn::ops::softmax_last_dim(&zb.matmul(&theta)?)?.broadcast_sub(&yb)?;
            let g = p
                .transpose(1, 2)?
                .contiguous()?
                .matmul(&zb)?
                .transpose(1, 2)?
                .affine(1.0 / len as f64, 0.0)?;
            v = ((&v * alpha)? + (g.sqr()? * (1.0 - alpha))?)?;
            theta = (&theta - (g / (v.sqrt()? + eps)?)?.affine(lr, 0.0)?)?;
        }
    }
    let err = |z: &Tensor, y: &Tensor| probe::errors(&z.matmul(&theta)?, y);
    let zt = standardise(&Tensor::stack(&test.x, 0)?)?;
    Ok(Errors {
        train: err(&z, &train.y)?,
        test: err(&zt, &test.y)?,
    })
}

/// Runs the benchmark and returns its report.
pub fn probes(seed: u64, epochs: usize) -> anyhow::Result<String> {
    let dev = Device::Cpu;
    let g = untrained_mlp::graph(32, 128, 0.5);
    let specs: Vec<ProbeSpec> = g
        .taps()?
        .iter()
        .map(|t| ProbeSpec::full(&t.name, t.features))
        .collect();
    let (train, test, _) = untrained_mlp::dataset_splits(
        &g,
        &specs,
        seed,
        0,
        10_000,
        10_000,
        &dev,
        &Default::default(),
    )?;
    let cfg = FitConfig::default();
    // Warm-up: first touches of memory and thread pools are not the solver's cost.
    let _ = probe::fit_converged(&train, None, Some(&test), 2, None, &cfg)?;
    let t = Instant::now();
    let ours = probe::fit_converged(&train, None, Some(&test), 2, None, &cfg)?;
    let ours_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let base = rmsprop(&train, &test, 2, epochs, 100, 1e-3, seed)?;
    let base_s = t.elapsed().as_secs_f64();

    let mut out = String::new();
    writeln!(out, "bench probes: {} probes, 10,000 train + 10,000 test samples x 128 features, 2 classes (untrained-mlp dataset, seed {seed})", specs.len())?;
    writeln!(
        out,
        "{:<7} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "probe", "ours train", "rms train", "ours test", "rms test", "iters"
    )?;
    let mut worst_train: f64 = 0.0;
    let mut worst_test: f64 = 0.0;
    for (i, s) in specs.iter().enumerate() {
        let r = &ours[i].reading;
        let te = r.test_error.unwrap_or(f64::NAN);
        worst_train = worst_train.max((r.train_error - base.train[i]).abs());
        worst_test = worst_test.max((te - base.test[i]).abs());
        writeln!(
            out,
            "{:<7} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>6}",
            s.name, r.train_error, base.train[i], te, base.test[i], r.iterations
        )?;
    }
    writeln!(
        out,
        "largest |ours - rmsprop|: train error {worst_train:.4}, test error {worst_test:.4}"
    )?;
    writeln!(out, "converged fit (L-BFGS, whitened): {ours_s:.3} s")?;
    writeln!(out, "RMSProp baseline ({epochs} epochs, batch 100, lr 1e-3, batched over probes): {base_s:.3} s")?;
    writeln!(out, "speed-up: {:.1}x", base_s / ours_s)?;
    Ok(out)
}
