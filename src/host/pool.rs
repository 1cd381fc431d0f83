//! 2-d max pooling for reading a model's features: candle's CPU max pooling walks every window
//! on one thread; here the channel planes are split over the cores, each window read with the
//! same comparisons in the same order, so the outputs are candle's to the bit (a NaN first in
//! its window stays, a later one is passed over). On `mnist-convnet` candle's pooling of the
//! first convolution's 25,088 features took 1.6 s of a 50,000-image pass on two cores.
//!
//! It has no backward pass: [`crate::graph::Model::infer_until`] uses it, and training keeps
//! candle's pooling (and so its numbers).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Max pooling with a square `kernel` and `stride`, no padding.
struct MaxPool2d {
    kernel: usize,
    stride: usize,
}

/// Fewest planes per task handed to rayon (a plane of `mnist-convnet`'s first convolution is
/// 784 numbers).
const TASK_PLANES: usize = 64;

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max-pool2d-host"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::f32_operand("max-pool2d", (storage, layout))?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        if k == 0 || s == 0 || k > h || k > w {
            candle_core::bail!("max-pool2d: a {k}x{k} window, stride {s}, on a {h}x{w} input");
        }
        let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
        let mut out = vec![0f32; n * c * oh * ow];
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .with_min_len(TASK_PLANES)
                .for_each(|(dst, plane)| pool_plane(plane, w, (k, s), dst, ow));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// `v` raised to `x` where `v < x`: candle's step, so a NaN already held stays and a NaN offered
/// is passed over.
#[inline(always)]
fn raise(v: f32, x: f32) -> f32 {
    if v < x {
        x
    } else {
        v
    }
}

/// Pools one channel plane (`w` wide) into `dst` (rows of `ow`): each window from its first
/// number, then its rows in order, each row's numbers in order.
fn pool_plane(plane: &[f32], w: usize, (k, s): (usize, usize), dst: &mut [f32], ow: usize) {
    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
        if k == 2 && s == 2 {
            // The usual 2x2 window, without the general loop's bounds.
            let top = plane[2 * oy * w..][..2 * ow].chunks_exact(2);
            let bottom = plane[(2 * oy + 1) * w..][..2 * ow].chunks_exact(2);
            for (o, (a, b)) in row.iter_mut().zip(top.zip(bottom)) {
                *o = raise(raise(raise(a[0], a[1]), b[0]), b[1]);
            }
            continue;
        }
        for (ox, o) in row.iter_mut().enumerate() {
            let (y0, x0) = (oy * s, ox * s);
            let mut largest = plane[y0 * w + x0];
            for iy in y0..y0 + k {
                for &v in &plane[iy * w + x0..][..k] {
                    largest = raise(largest, v);
                }
            }
            *o = largest;
        }
    }
}

/// `x.max_pool2d_with_stride(kernel, stride)` (`x` `[n, c, h, w]`) on the host where `x` is an
/// f32 tensor in CPU memory laid out contiguously; `None` elsewhere (the caller uses candle's).
/// The result carries no gradient.
pub(crate) fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
) -> Option<candle_core::Result<Tensor>> {
    (super::host_f32(x) && x.rank() == 4)
        .then(|| Ok(x.apply_op1_no_bwd(&MaxPool2d { kernel, stride })?.detach()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The host pooling against candle's, bit for bit: windows of 1 to 3 with strides that
    /// leave rows and columns out, overlapping windows, and inputs holding NaN, infinities and
    /// signed zeros (where the order of the comparisons decides the result).
    #[test]
    fn matches_candle_to_the_bit() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        for (i, &(n, c, h, w, k, s)) in [
            (3, 4, 28, 28, 2, 2),
            (2, 3, 7, 9, 2, 2),
            (1, 2, 5, 6, 3, 2),
            (2, 1, 6, 5, 2, 1),
            (1, 1, 3, 3, 3, 3),
            (1, 70, 4, 4, 1, 1),
        ]
        .iter()
        .enumerate()
        {
            let mut r = crate::rng::stream(i as u64, "pool-test");
            let mut v = crate::rng::uniform_vec(&mut r, n * c * h * w, 1.0);
            for (j, x) in v.iter_mut().enumerate() {
                if j % 7 == 3 {
                    *x = specials[(j / 7) % specials.len()];
                }
            }
            let x = Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap();
            let ours = max_pool2d(&x, k, s).unwrap().unwrap();
            let theirs = x.max_pool2d_with_stride(k, s).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            assert_eq!(
                crate::host::f32_bits(&ours),
                crate::host::f32_bits(&theirs),
                "case {i}"
            );
        }
    }

    /// Not a test: the host pooling against candle's on a 500-image chunk of mnist-convnet's
    /// first convolution (`cargo test --release -- --ignored --nocapture pool_speed`).
    #[test]
    #[ignore]
    fn pool_speed() {
        let mut r = crate::rng::stream(1, "pool-speed");
        let v = crate::rng::uniform_vec(&mut r, 500 * 32 * 28 * 28, 1.0);
        let x = Tensor::from_vec(v, (500, 32, 28, 28), &Device::Cpu).unwrap();
        let time = |f: &dyn Fn() -> Tensor| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..10 {
                std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() / 10.0
        };
        let theirs = time(&|| x.max_pool2d_with_stride(2, 2).unwrap());
        let ours = time(&|| max_pool2d(&x, 2, 2).unwrap().unwrap());
        println!(
            "500 x 32 x 28 x 28, 2x2 windows: candle {:.1} ms, host {:.1} ms ({:.1}x)",
            theirs * 1e3,
            ours * 1e3,
            theirs / ours
        );
    }

    /// A view of a larger tensor's rows is read where it starts; other types go to candle.
    #[test]
    fn reads_views_and_declines_other_types() {
        let mut r = crate::rng::stream(9, "pool-test");
        let v = crate::rng::uniform_vec(&mut r, 4 * 2 * 6 * 6, 1.0);
        let x = Tensor::from_vec(v, (4, 2, 6, 6), &Device::Cpu).unwrap();
        let part = x.narrow(0, 1, 2).unwrap();
        let ours = max_pool2d(&part, 2, 2).unwrap().unwrap();
        let theirs = part.max_pool2d_with_stride(2, 2).unwrap();
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = theirs.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
        let half = x.to_dtype(candle_core::DType::BF16).unwrap();
        assert!(max_pool2d(&half, 2, 2).is_none());
    }
}
