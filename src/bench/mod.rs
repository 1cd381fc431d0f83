//! The benchmarks behind `probescope bench`: each times its subject against a baseline run in
//! the same invocation and prints the ratio. This file is `bench probes`, the converged fit of
//! all probes of one `untrained-mlp` dataset against the paper's procedure (minibatch RMSProp);
//! [`train`] is `bench train` (mnist-convnet's training with and without online probes, and a
//! converged snapshot against RMSProp), [`ui`] `bench ui`, [`acts`] `bench acts` and [`stop`]
//! `bench stop`.

pub mod acts;
pub mod stop;
pub mod train;
pub mod ui;

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

/// Residuals (probability less one-hot) below this in magnitude count as 0 in the RMSProp
/// procedures' gradients. Left in, a separated class's residuals fall to subnormal numbers,
/// and every product with them takes an Intel core's microcode assist: one product of the
/// procedure's shape (25,088 x 100 by 100 x 10) took 47 ms instead of 0.84 ms on a Xeon
/// (AMD's cores take no such time, so the baseline ran 3.2 times longer on the Xeon VM than
/// on an EPYC). Dropped, they change no step: RMSProp divides a gradient by `sqrt(v) + eps`,
/// with `eps` 1e-8, so a gradient under 1e-15 moves a weight by at most `lr` times 1e-7 of a
/// normal step's size. PyTorch's `set_flush_denormal` is the framework's switch for the same
/// slowdown.
const RMSPROP_FLOOR: f32 = 1e-15;

/// `p` with its entries below [`RMSPROP_FLOOR`] in magnitude set to 0.
fn floored(p: &Tensor) -> candle_core::Result<Tensor> {
    p.abs()?.ge(RMSPROP_FLOOR)?.where_cond(p, &p.zeros_like()?)
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
            let p = floored(
                &candle_nn::ops::softmax_last_dim(&zb.matmul(&theta)?)?.broadcast_sub(&yb)?,
            )?;
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

/// The paper's procedure for one probe, reading the features where they are stored (`x`:
/// `[n, d]`, f32 or bfloat16) and copying only each minibatch: features standardised with the
/// training statistics, zero initialisation, minibatch RMSProp (PyTorch's defaults: alpha 0.99,
/// eps 1e-8) with learning rate `lr`, `epochs` passes in a fresh random order each, no
/// penalty. Returns the probe in raw activation space.
#[allow(clippy::too_many_arguments)]
pub fn rmsprop_probe(
    x: &Tensor,
    y: &Tensor,
    classes: usize,
    epochs: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    cancel: &crate::cancel::Cancel,
) -> anyhow::Result<probe::LinearProbe> {
    let (n, d) = x.dims2()?;
    let dev = x.device().clone();
    let xf = |rows: &Tensor| -> candle_core::Result<Tensor> { rows.to_dtype(DType::F32) };
    // The training statistics, in blocks of rows: the mean, then the squares about it.
    let mut sum = Tensor::zeros((1, d), DType::F32, &dev)?;
    for b in cancel.blocks(n, 4096) {
        let (start, len) = b?;
        sum = (sum + xf(&x.narrow(0, start, len)?)?.sum_keepdim(0)?)?;
    }
    let mean = (sum / n as f64)?;
    let mut sq = Tensor::zeros((1, d), DType::F32, &dev)?;
    for b in cancel.blocks(n, 4096) {
        let (start, len) = b?;
        let part = xf(&x.narrow(0, start, len)?)?.broadcast_sub(&mean)?;
        sq = (sq + part.sqr()?.sum_keepdim(0)?)?;
    }
    let var = (sq / n as f64)?;
    let inv_std = var.sqrt()?.maximum(1e-30f32)?.recip()?;
    let yoh = probe::one_hot(y, classes)?;
    let mut w = Tensor::zeros((d, classes), DType::F32, &dev)?;
    let mut b = Tensor::zeros((1, classes), DType::F32, &dev)?;
    let (mut vw, mut vb) = (w.zeros_like()?, b.zeros_like()?);
    let mut rng = crate::rng::stream(seed, "rmsprop-baseline");
    let (alpha, eps) = (0.99, 1e-8);
    for _ in 0..epochs {
        let mut perm: Vec<u32> = (0..n as u32).collect();
        rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), &mut rng);
        for chunk in perm.chunks(batch) {
            cancel.check_candle()?;
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let z = xf(&x.index_select(&idx, 0)?)?
                .broadcast_sub(&mean)?
                .broadcast_mul(&inv_std)?;
            let logits = z.matmul(&w)?.broadcast_add(&b)?;
            let p = floored(
                &(candle_nn::ops::softmax_last_dim(&logits)? - yoh.index_select(&idx, 0)?)?,
            )?;
            let scale = 1.0 / chunk.len() as f64;
            let gw = z.t()?.matmul(&p)?.affine(scale, 0.0)?;
            let gb = p.sum_keepdim(0)?.affine(scale, 0.0)?;
            vw = ((&vw * alpha)? + (gw.sqr()? * (1.0 - alpha))?)?;
            vb = ((&vb * alpha)? + (gb.sqr()? * (1.0 - alpha))?)?;
            w = (&w - (gw / (vw.sqrt()? + eps)?)?.affine(lr, 0.0)?)?;
            b = (&b - (gb / (vb.sqrt()? + eps)?)?.affine(lr, 0.0)?)?;
        }
    }
    // Raw space: W / std per feature, and the bias less the mean's logits.
    let w_raw = w.broadcast_mul(&inv_std.t()?)?;
    let b_raw = (b - mean.matmul(&w_raw)?)?;
    Ok(probe::LinearProbe {
        width: d,
        classes,
        weight: w_raw.flatten_all()?.to_vec1()?,
        bias: b_raw.flatten_all()?.to_vec1()?,
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
    let draw = |seed: u64, stream: &str, n: usize, cancel: &crate::cancel::Cancel| {
        crate::data::sign_task(seed, stream, n, 128, &Device::Cpu, cancel)
    };
    let (train, test, _) = crate::presets::datasets::dataset_splits(
        &g,
        &specs,
        seed,
        0,
        (10_000, 10_000),
        &draw,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor zeroes the entries under 1e-15 in magnitude, either sign, and keeps the rest,
    /// the floor itself included, bit for bit.
    #[test]
    fn the_rmsprop_floor_zeroes_only_what_is_below_it() {
        let dev = Device::Cpu;
        let v = [
            1e-16f32, -9e-16, 1e-15, -1e-15, 2e-15, -0.5, 0.0, 1e-40, 0.9,
        ];
        let p = Tensor::from_slice(&v, (3, 3), &dev).unwrap();
        let got = floored(&p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [0.0f32, 0.0, 1e-15, -1e-15, 2e-15, -0.5, 0.0, 0.0, 0.9];
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    /// On two well-separated classes whose features sit far from zero at different scales, the
    /// one-probe RMSProp procedure learns them, and its probe, mapped back to raw space, still
    /// separates them on the raw features (a wrong mean or scale in the mapping would put the
    /// boundary far from the classes, at about 50% error).
    #[test]
    fn the_rmsprop_probe_learns_a_separable_task_in_raw_space() {
        let dev = Device::Cpu;
        let n = 400;
        let mut r = crate::rng::stream(1, "rmsprop-test");
        let noise = crate::rng::normal_vec(&mut r, n * 2, 1.0);
        let y: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        // Feature 0 carries the class (means 100 and 106, spread 1); feature 1 is noise on a
        // scale of 1,000.
        let x: Vec<f32> = (0..n)
            .flat_map(|i| {
                [
                    100.0 + 6.0 * y[i] as f32 + noise[2 * i],
                    5000.0 + 1000.0 * noise[2 * i + 1],
                ]
            })
            .collect();
        let x = Tensor::from_vec(x, (n, 2), &dev).unwrap();
        let y = Tensor::from_vec(y, n, &dev).unwrap();
        let cancel = crate::cancel::Cancel::default();
        let p = rmsprop_probe(&x, &y, 2, 20, 20, 1e-2, 0, &cancel).unwrap();
        let (err, _) = probe::evaluate(&p, &x, &y).unwrap();
        // Two classes three standard deviations apart: about 0.13% of each overlaps.
        assert!(err < 0.02, "training error {err}");
        // The class is read from feature 0, not the noise.
        assert!(
            (p.weight[0] - p.weight[1]).abs() > 10.0 * (p.weight[2] - p.weight[3]).abs(),
            "{:?}",
            p.weight
        );
    }
}
