//! Probes on taps that are an affine function of a narrower tap.
//!
//! A convolution's output before its activation, `f = A x + c`, is a linear map of the tap it
//! reads. A probe on `f` has logits `(f - mean_f) W + b = (x - mean_x) (A^T W) + b`. So the
//! solver can read the narrower features `x` and move the weights through `A`: a pass for the
//! 25,088 features of `conv1_preact` then reads the 784 of the input image. The fit is the same
//! problem, in the same coordinates, with the same preconditioner (each feature's variance of
//! `f`, gathered while the forward pass makes `f`), so it takes the same steps up to rounding,
//! and `f` is never stored.

use std::sync::Arc;

use candle_core::{DType, Tensor};

/// A linear map `x -> A x` from one tap's features to another's, applied to rows: the
/// transforms the solver needs to move a probe's weights between the two taps.
#[derive(Debug, Clone)]
pub enum TapMap {
    /// A fully connected layer: `A` is its weight `[out, in]`.
    Dense {
        /// `[out, in]`.
        weight: Tensor,
    },
    /// A 2-d convolution with stride 1 and zero padding `padding` on `[c, h, w]` inputs: `A`
    /// is the convolution with `weight` (`[c_out, c_in, k, k]`), no bias.
    Conv {
        /// `[c_out, c_in, k, k]`.
        weight: Tensor,
        /// The adjoint's kernel: `weight` with its channels swapped and its taps reversed.
        flipped: Tensor,
        /// Zero padding on each side.
        padding: usize,
        /// One input sample's shape `[c_in, h, w]`.
        input: [usize; 3],
    },
}

impl TapMap {
    /// The map of a fully connected layer with weight `[out, in]`.
    pub fn dense(weight: &Tensor) -> candle_core::Result<Self> {
        // A copy: a model's weights are updated in place as it trains. Detached: a copy of a
        // trainable variable records its operation, and so would everything the solver
        // computes from it, each iteration holding on to the last (2.7 GB over 35 iterations
        // of conv1_preact's warm-started fit).
        Ok(Self::Dense {
            weight: weight.detach().to_dtype(DType::F32)?.contiguous()?.copy()?,
        })
    }

    /// The map of a stride-1 convolution with `weight` (`[c_out, c_in, k, k]`) and zero
    /// padding `padding` on inputs of shape `input` (`[c_in, h, w]`); `None` where the
    /// padding is wider than the kernel can read (no adjoint by a plain convolution).
    pub fn conv(
        weight: &Tensor,
        padding: usize,
        input: [usize; 3],
    ) -> candle_core::Result<Option<Self>> {
        // Detached, as in `dense`.
        let weight = weight.detach().to_dtype(DType::F32)?.contiguous()?.copy()?;
        let (_, ci, kh, kw) = weight.dims4()?;
        if kh != kw || padding >= kh || ci != input[0] {
            return Ok(None);
        }
        let flipped = weight.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
        Ok(Some(Self::Conv {
            weight,
            flipped,
            padding,
            input,
        }))
    }

    /// Rows `x` (`[k, in]`) mapped: `[k, out]`, each row `A x`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense { weight } => x.matmul(&weight.t()?),
            Self::Conv {
                weight,
                padding,
                input,
                ..
            } => {
                let k = x.dim(0)?;
                let img = x.reshape((k, input[0], input[1], input[2]))?;
                conv(&img, weight, *padding)?.flatten_from(1)
            }
        }
    }

    /// Rows `y` (`[k, out]`) mapped back by the adjoint: `[k, in]`, each row `A^T y`.
    pub fn adjoint(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense { weight } => y.matmul(weight),
            Self::Conv {
                weight,
                flipped,
                padding,
                input,
            } => {
                // The adjoint of a stride-1 convolution is the convolution with the reversed
                // kernel, channels swapped, and the padding that restores the input's size.
                let (k, co, kh) = (y.dim(0)?, weight.dim(0)?, weight.dim(2)?);
                let (oh, ow) = (
                    input[1] + 2 * padding + 1 - kh,
                    input[2] + 2 * padding + 1 - kh,
                );
                let img = y.reshape((k, co, oh, ow))?;
                conv(&img, flipped, kh - 1 - padding)?.flatten_from(1)
            }
        }
    }
}

/// `conv2d(x, w)` without bias, on the host kernel where it can run (f32, CPU), else candle's.
fn conv(x: &Tensor, w: &Tensor, padding: usize) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let zero = Tensor::zeros(w.dim(0)?, DType::F32, w.device())?;
    match crate::host::conv2d(&x, w, &zero, 1, padding) {
        Some(y) => y,
        None => x.conv2d(w, padding, 1, 1, 1),
    }
}

/// A probe whose tap is an affine function `f = A x + c` of another probe's tap `x`, fitted
/// through `x`'s features (see the module's text).
#[derive(Debug, Clone)]
pub struct AffineTap {
    /// The probe whose features `x` this probe's are a map of (an index into the same
    /// [`super::Split`]s; a probe of full width, stored as usual).
    pub base: usize,
    /// `A`.
    pub map: Arc<TapMap>,
    /// `c` (`[out]`).
    pub offset: Tensor,
    /// Each feature's variance on the training split, about its mean (the per-feature
    /// standardisation the solver works in).
    pub var: Vec<f64>,
}

/// Each column's mean and variance over rows added chunk by chunk, summed in f64 about the
/// first chunk's means (so a feature far from zero keeps its small spread).
#[derive(Debug, Default, Clone)]
pub struct Moments {
    shift: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    n: usize,
}

impl Moments {
    /// Adds the rows of `x` (`[k, d]`).
    pub fn add(&mut self, x: &Tensor) -> candle_core::Result<()> {
        let x = x.to_dtype(DType::F32)?.flatten_from(1)?;
        let (k, d) = x.dims2()?;
        if k == 0 {
            return Ok(());
        }
        // Read in place on the host; elsewhere, a copy.
        match crate::host::with_f32(&x, |v| self.add_rows(v, k, d)) {
            Some(r) => r,
            None => self.add_rows(&x.flatten_all()?.to_vec1()?, k, d),
        }
    }

    /// Adds `k` rows of `d` features, `v` row-major.
    fn add_rows(&mut self, v: &[f32], k: usize, d: usize) -> candle_core::Result<()> {
        if self.n == 0 {
            self.shift = vec![0.0; d];
            for row in v.chunks_exact(d) {
                for (s, &x) in self.shift.iter_mut().zip(row) {
                    *s += f64::from(x);
                }
            }
            self.shift.iter_mut().for_each(|s| *s /= k as f64);
            self.s1 = vec![0.0; d];
            self.s2 = vec![0.0; d];
        } else if self.shift.len() != d {
            candle_core::bail!(
                "rows of {d} features added to moments of {}",
                self.shift.len()
            );
        }
        crate::host::add_shifted_sums(v, d, &self.shift, &mut self.s1, &mut self.s2);
        self.n += k;
        Ok(())
    }

    /// Rows added so far.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Each column's variance about its mean (the mean square of the centred values).
    pub fn variances(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.s1
            .iter()
            .zip(&self.s2)
            .map(|(&s1, &s2)| (s2 / n - (s1 / n) * (s1 / n)).max(0.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The maps hold detached copies of a model's trainable weights: what the solver computes
    /// through them records no operations (before, each iteration of a fit through a trained
    /// convolution held on to the last, 93 MB an iteration on mnist-convnet's conv1_preact).
    #[test]
    fn maps_of_trainable_weights_record_no_operations() {
        let w = candle_core::Var::from_tensor(&random(&[3, 2, 3, 3], 1)).unwrap();
        let conv = TapMap::conv(w.as_tensor(), 1, [2, 4, 4]).unwrap().unwrap();
        let dense =
            TapMap::dense(&candle_core::Var::from_tensor(&random(&[5, 32], 2)).unwrap()).unwrap();
        let x = random(&[2, 32], 3);
        let y = random(&[2, 48], 4);
        for out in [
            conv.apply(&x).unwrap(),
            conv.adjoint(&y).unwrap(),
            dense.apply(&x).unwrap(),
        ] {
            assert!(!out.track_op(), "an output records its operation");
        }
        // The same numbers as through the variable itself.
        let direct = x
            .reshape((2, 2, 4, 4))
            .unwrap()
            .conv2d(w.as_tensor(), 1, 1, 1, 1)
            .unwrap()
            .flatten_from(1)
            .unwrap();
        assert!(crate::host::max_abs_diff(&conv.apply(&x).unwrap(), &direct) < 1e-5);
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::stream(seed, "affine-test");
        let n: usize = shape.iter().product();
        Tensor::from_vec(crate::rng::normal_vec(&mut r, n, 1.0), shape, &Device::Cpu).unwrap()
    }

    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        a.to_dtype(DType::F64)
            .unwrap()
            .mul(&b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// `<A x, y> = <x, A^T y>` for random `x` and `y`, and `A x` is the layer's own output less
    /// its bias (candle's convolution, a plain product).
    #[test]
    fn the_adjoint_is_the_transpose() {
        for (i, &(ci, h, w, co, k, pad)) in [
            (1, 28, 28, 32, 5, 2),
            (3, 9, 7, 4, 3, 1),
            (2, 6, 5, 3, 3, 0),
            (2, 5, 5, 2, 5, 4),
            (1, 1, 1, 1, 1, 0),
        ]
        .iter()
        .enumerate()
        {
            let weight = random(&[co, ci, k, k], 10 + i as u64);
            let map = TapMap::conv(&weight, pad, [ci, h, w]).unwrap().unwrap();
            let x = random(&[3, ci * h * w], 20 + i as u64);
            let ax = map.apply(&x).unwrap();
            let want = x
                .reshape((3, ci, h, w))
                .unwrap()
                .conv2d(&weight, pad, 1, 1, 1)
                .unwrap()
                .flatten_from(1)
                .unwrap();
            let diff = (&ax - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "case {i}: A x");
            let y = random(&[3, ax.dim(1).unwrap()], 30 + i as u64);
            let aty = map.adjoint(&y).unwrap();
            assert_eq!(aty.dims(), x.dims(), "case {i}");
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            assert!(
                (l - r).abs() < 1e-4 * l.abs().max(1.0),
                "case {i}: {l} vs {r}"
            );
        }
        let weight = random(&[7, 4], 1);
        let map = TapMap::dense(&weight).unwrap();
        let (x, y) = (random(&[2, 4], 2), random(&[2, 7], 3));
        let (l, r) = (
            dot(&map.apply(&x).unwrap(), &y),
            dot(&x, &map.adjoint(&y).unwrap()),
        );
        assert!((l - r).abs() < 1e-5 * l.abs().max(1.0));
        // Padding the kernel cannot reach is refused.
        assert!(TapMap::conv(&random(&[1, 1, 3, 3], 4), 3, [1, 4, 4])
            .unwrap()
            .is_none());
    }

    /// Chunked moments equal the two-pass mean and variance, also for a column far from zero.
    #[test]
    fn moments_match_two_passes() {
        let x: Vec<f32> = (0..60)
            .map(|i| {
                let r = (i / 3) as f32;
                match i % 3 {
                    0 => r,
                    1 => 1e4 + 0.01 * r,
                    _ => -2.0,
                }
            })
            .collect();
        let x = Tensor::from_vec(x, (20, 3), &Device::Cpu).unwrap();
        let mut m = Moments::default();
        for (start, len) in [(0, 7), (7, 1), (8, 7), (15, 5)] {
            m.add(&x.narrow(0, start, len).unwrap()).unwrap();
        }
        assert_eq!(m.count(), 20);
        let v = m.variances();
        // Column 0 holds 0..20: variance (20^2 - 1) / 12.
        assert!((v[0] - 399.0 / 12.0).abs() < 1e-9, "{}", v[0]);
        // Column 1: 1e4 + 0.01 r in f32 (steps of about 0.00098 at 1e4).
        let col: Vec<f64> = (0..20)
            .map(|r| f64::from(1e4f32 + 0.01 * r as f32))
            .collect();
        let mean = col.iter().sum::<f64>() / 20.0;
        let want = col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / 20.0;
        assert!(
            (v[1] - want).abs() < 1e-9 * want.max(1e-12),
            "{} vs {want}",
            v[1]
        );
        assert_eq!(v[2], 0.0);
    }
}
