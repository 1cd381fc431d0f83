//! A 2-d convolution for reading a model's features: each sample's patches laid out as rows
//! (im2col) in a buffer that stays in cache, and one matrix product per sample that writes the
//! sample's output channels in place. Candle's CPU convolution builds its patches transposed,
//! multiplies them through its generic matrix product and copies the result out element by
//! element; on `mnist-convnet`'s second convolution it ran at about a third of this (measured in
//! `conv_speed`), and the forward passes were a third of a converged snapshot's time.
//!
//! Convolutions that read few numbers per output (`ci x kh x kw` up to [`DIRECT_MAX_K`], stride
//! 1, as `mnist-convnet`'s first: 25), where the matrix product spent its time packing its
//! operands, take a direct kernel on AVX-512: each output row of 4 channels is a few vectors
//! of running sums, one fused multiply-add per weight and vector, in the patches' column order
//! from zero and the bias added last, as the product's kernel does: the same bits.
//!
//! Wider stride-1 convolutions whose output rows fit one vector (`mnist-convnet`'s second: 800
//! numbers an output, rows of 14) take a tiled kernel on AVX-512: tiles of 3 output rows by 8
//! channels read the padded sample in place, with no patch rows, and the weights packed once a
//! call. Building the patches and packing them for the product had cost as much as the
//! product itself; this takes about half the product path's time (`conv_speed`). Its sums run
//! over all of an output's products at once, where the product splits them in blocks, so its
//! outputs may differ from the product path's in the last bits.
//!
//! It has no backward pass: [`crate::graph::Model::infer_until`] uses it, and training keeps
//! candle's convolution (and so its numbers).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `conv2d(x, W) + b` with square stride and zero padding, dilation 1, one group.
struct Conv2d {
    stride: usize,
    padding: usize,
    /// Whether the direct kernels may take it (the tests compare them with the product).
    direct: bool,
}

/// The output size along one axis.
fn out_len(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (input + 2 * padding)
        .checked_sub(kernel)
        .map(|span| span / stride + 1)
}

/// Writes the patches of one sample `x` (`[ci, ih, iw]`) as the rows of `col`: a row per output
/// pixel (`oh x ow`, row-major), its columns in the weights' order (channel, kernel row, kernel
/// column), zero where the kernel reads padding.
#[allow(clippy::too_many_arguments)]
fn patches(
    x: &[f32],
    (ci, ih, iw): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (oh, ow): (usize, usize),
    stride: usize,
    padding: usize,
    col: &mut [f32],
) {
    let kk = ci * kh * kw;
    for (p, row) in col.chunks_exact_mut(kk).take(oh * ow).enumerate() {
        let (oy, ox) = (p / ow, p % ow);
        for c in 0..ci {
            for ky in 0..kh {
                let seg = &mut row[(c * kh + ky) * kw..][..kw];
                let iy = (oy * stride + ky).wrapping_sub(padding);
                if iy >= ih {
                    seg.fill(0.0);
                    continue;
                }
                let xrow = &x[(c * ih + iy) * iw..][..iw];
                let x0 = ox * stride;
                if x0 >= padding && x0 - padding + kw <= iw {
                    seg.copy_from_slice(&xrow[x0 - padding..][..kw]);
                } else {
                    for (kx, s) in seg.iter_mut().enumerate() {
                        let ix = (x0 + kx).wrapping_sub(padding);
                        *s = if ix < iw { xrow[ix] } else { 0.0 };
                    }
                }
            }
        }
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-host"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = super::f32_operands("conv2d", (xs, xl), (ws, wl), (bs, bl))?;
        let (n, ci, ih, iw) = xl.shape().dims4()?;
        let (co, ci2, kh, kw) = wl.shape().dims4()?;
        let (s, pad) = (self.stride, self.padding);
        let (Some(oh), Some(ow)) = (out_len(ih, kh, s, pad), out_len(iw, kw, s, pad)) else {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel is larger than the padded {ih}x{iw} input"
            );
        };
        if ci2 != ci || b.len() != co || s == 0 {
            candle_core::bail!(
                "conv2d: shapes {:?} {:?} {:?}, stride {s}",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let (pix, kk) = (oh * ow, ci * kh * kw);
        let mut out = vec![0f32; n * co * pix];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((n, co, oh, ow))));
        }
        // The direct kernels: the narrow one reads the weights as they are, the tiled one a
        // copy packed for its tiles (`fits` and `fits_tiled` never both say yes).
        let tiled = self.direct && direct::fits_tiled((ci, kh, kw), ow, s);
        if tiled || (self.direct && direct::fits((ci, kh, kw), ow, s)) {
            let packed = tiled.then(|| direct::pack_tiles(w, co, kk));
            let padded = (ci, ih + 2 * pad, iw + 2 * pad);
            out.par_chunks_mut(co * pix)
                .zip(x.par_chunks(ci * ih * iw))
                .for_each_init(
                    || vec![0f32; padded.0 * padded.1 * padded.2],
                    |buf, (dst, xs)| {
                        direct::pad_into(xs, (ci, ih, iw), pad, buf);
                        let weights = match &packed {
                            Some(p) => direct::Weights::Packed(p),
                            None => direct::Weights::Plain(w),
                        };
                        // SAFETY: `fits` or `fits_tiled` checked the instructions and the
                        // shapes; the tiled kernel gets the weights packed for these channels.
                        unsafe { direct::sample(buf, padded, weights, b, (kh, kw), (oh, ow), dst) };
                    },
                );
            return Ok((CpuStorage::F32(out), Shape::from((n, co, oh, ow))));
        }
        // One sample a task, each thread with its own patch buffer (a sample's patches: 627 KB
        // for mnist-convnet's second convolution, in the second-level cache). Tasks of several
        // samples, multiplied at once, were no faster (measured).
        out.par_chunks_mut(co * pix)
            .zip(x.par_chunks(ci * ih * iw))
            .for_each_init(
                || vec![0f32; pix * kk],
                |col, (dst, xs)| {
                    patches(xs, (ci, ih, iw), (kh, kw), (oh, ow), s, pad, col);
                    for (row, &bias) in dst.chunks_exact_mut(pix).zip(b) {
                        row.fill(bias);
                    }
                    // SAFETY: `dst` is `co x pix` row-major; the weights are `co x kk`
                    // row-major; `col` is `pix x kk` row-major, read as the `kk x pix` right
                    // operand through swapped strides. Every index gemm forms from these sizes
                    // and strides lies inside the slices, whose lengths are these products.
                    unsafe {
                        gemm::gemm(
                            co,
                            pix,
                            kk,
                            dst.as_mut_ptr(),
                            1,
                            pix as isize,
                            true,
                            w.as_ptr(),
                            1,
                            kk as isize,
                            col.as_ptr(),
                            kk as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((n, co, oh, ow))))
    }
}

/// Most numbers an output reads (`ci x kh x kw`) for the direct kernel.
const DIRECT_MAX_K: usize = 64;

/// The direct kernel for convolutions that read few numbers per output (see the module's
/// comment).
mod direct {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Most outputs a row (4 vectors of 16).
    const MAX_OW: usize = 64;

    /// Channels of running sums at once.
    const CHANNELS: usize = 4;

    /// The padded sample's `(ci, ph, pw)`, the kernel's `(kh, kw)` and the output's `(oh, ow)`.
    #[derive(Clone, Copy)]
    struct Sizes {
        padded: (usize, usize, usize),
        kernel: (usize, usize),
        out: (usize, usize),
    }

    /// Whether this machine has the instructions both direct kernels use.
    fn machine() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether the direct kernel takes a convolution of these kernel sizes, output width and
    /// stride on this machine.
    pub(super) fn fits((ci, kh, kw): (usize, usize, usize), ow: usize, stride: usize) -> bool {
        machine()
            && stride == 1
            && ci * kh * kw <= super::DIRECT_MAX_K
            && (1..=MAX_OW).contains(&ow)
    }

    /// Whether the tiled kernel ([`sample_tiled`]) takes a convolution of these kernel sizes,
    /// output width and stride on this machine: one that reads more numbers an output than
    /// [`fits`] takes, with output rows of at most one vector.
    pub(super) fn fits_tiled(
        (ci, kh, kw): (usize, usize, usize),
        ow: usize,
        stride: usize,
    ) -> bool {
        machine() && stride == 1 && ci * kh * kw > super::DIRECT_MAX_K && (1..=16).contains(&ow)
    }

    /// Output channels of a tile of [`sample_tiled`].
    const TILE_CHANNELS: usize = 8;

    /// Output rows of a tile of [`sample_tiled`].
    const TILE_ROWS: usize = 3;

    // `sample_tiled` lists the smaller tiles left at the edges for these sizes.
    const _: () = assert!(TILE_CHANNELS == 8 && TILE_ROWS == 3);

    /// The weights `[co, kk]` (row-major) as [`sample_tiled`] reads them: in groups of
    /// [`TILE_CHANNELS`] channels (the last group what is left), each group `[kk, channels]`,
    /// so that a step reads its channels' weights from one place.
    pub(super) fn pack_tiles(w: &[f32], co: usize, kk: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(co * kk);
        for c0 in (0..co).step_by(TILE_CHANNELS) {
            let group = &w[c0 * kk..(c0 + TILE_CHANNELS).min(co) * kk];
            for k in 0..kk {
                out.extend(group.chunks_exact(kk).map(|row| row[k]));
            }
        }
        out
    }

    /// One sample's convolution, stride 1, output rows of at most 16: `x` is the padded
    /// sample (`[ci, ph, pw]`), `packed` the weights from [`pack_tiles`], `b` the biases, `dst`
    /// the output `[co, oh, ow]`. Each tile is [`TILE_ROWS`] output rows of [`TILE_CHANNELS`]
    /// channels: per weight position, a vector load for each row and a broadcast for each
    /// channel feed one fused multiply-add per (row, channel), so the products, not the loads,
    /// set the pace (one row of many channels, as [`sample_narrow`] does, waits on its broadcasts).
    /// Each output is its products in the weights' order summed from zero, then the bias.
    ///
    /// # Safety
    /// [`fits_tiled`] must have said yes, with `ph = oh + kh - 1`, `pw = ow + kw - 1` and
    /// `packed` from [`pack_tiles`] of `co = b.len()` channels of `ci * kh * kw` weights.
    #[cfg(target_arch = "x86_64")]
    unsafe fn sample_tiled(
        x: &[f32],
        padded: (usize, usize, usize),
        packed: &[f32],
        b: &[f32],
        kernel: (usize, usize),
        (oh, ow): (usize, usize),
        dst: &mut [f32],
    ) {
        let co = b.len();
        let kk = padded.0 * kernel.0 * kernel.1;
        let sizes = Sizes {
            padded,
            kernel,
            out: (oh, ow),
        };
        // The tile of `$r` rows from `oy0` and `$c` channels from `c0`.
        macro_rules! tile {
            ($r:expr, $c:expr, $c0:expr, $oy0:expr) => {
                // SAFETY: the caller's contract, with `$c0 + $c <= co` and `$oy0 + $r <= oh`.
                unsafe { tile::<{ $r }, { $c }>(x, sizes, &packed[$c0 * kk..], b, $c0, $oy0, dst) }
            };
        }
        macro_rules! by_rows {
            ($c:expr, $c0:expr) => {
                for oy0 in (0..oh).step_by(TILE_ROWS) {
                    match oh - oy0 {
                        1 => tile!(1, $c, $c0, oy0),
                        2 => tile!(2, $c, $c0, oy0),
                        _ => tile!(TILE_ROWS, $c, $c0, oy0),
                    }
                }
            };
        }
        for c0 in (0..co).step_by(TILE_CHANNELS) {
            match co - c0 {
                1 => by_rows!(1, c0),
                2 => by_rows!(2, c0),
                3 => by_rows!(3, c0),
                4 => by_rows!(4, c0),
                5 => by_rows!(5, c0),
                6 => by_rows!(6, c0),
                7 => by_rows!(7, c0),
                _ => by_rows!(TILE_CHANNELS, c0),
            }
        }
    }

    /// Output rows `oy0..oy0 + R` of channels `c0..c0 + C`; `packed` starts at their group.
    ///
    /// # Safety
    /// As for [`sample_tiled`], with `c0 + C <= co` and `oy0 + R <= oh`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: &[f32],
        sizes: Sizes,
        packed: &[f32],
        b: &[f32],
        c0: usize,
        oy0: usize,
        dst: &mut [f32],
    ) {
        let ((ci, ph, pw), (kh, kw), (oh, ow)) = (sizes.padded, sizes.kernel, sizes.out);
        let kk = ci * kh * kw;
        assert!(ph == oh + kh - 1 && pw == ow + kw - 1 && x.len() >= ci * ph * pw);
        assert!((1..=16).contains(&ow) && oy0 + R <= oh && c0 + C <= b.len());
        assert!(packed.len() >= kk * C && dst.len() >= b.len() * oh * ow);
        let mask = ((1u32 << ow) - 1) as u16;
        // SAFETY: a row's load reads lanes `kx + lane` for lanes under `ow` (the mask), so at
        // most `kw - 1 + ow - 1 < pw`, within the padded row `(c, oy + ky)` with
        // `oy + ky < oh + kh - 1 = ph`; the weights read are the group's `kk x C`; the stores
        // write `ow` outputs of rows `oy0..oy0 + R` of channels `c0..c0 + C`.
        unsafe {
            let (xp, dp) = (x.as_ptr(), dst.as_mut_ptr());
            let mut wq = packed.as_ptr();
            let mut acc = [[_mm512_setzero_ps(); R]; C];
            for c in 0..ci {
                for ky in 0..kh {
                    let row = xp.add((c * ph + oy0 + ky) * pw);
                    for kx in 0..kw {
                        let mut xv = [_mm512_setzero_ps(); R];
                        for (r, xv) in xv.iter_mut().enumerate() {
                            *xv = _mm512_maskz_loadu_ps(mask, row.add(r * pw + kx));
                        }
                        for (j, a) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*wq.add(j));
                            for (av, xv) in a.iter_mut().zip(&xv) {
                                *av = _mm512_fmadd_ps(wv, *xv, *av);
                            }
                        }
                        wq = wq.add(C);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let bias = _mm512_set1_ps(b[c0 + j]);
                for (r, av) in a.iter().enumerate() {
                    let out = dp.add(((c0 + j) * oh + oy0 + r) * ow);
                    _mm512_mask_storeu_ps(out, mask, _mm512_add_ps(bias, *av));
                }
            }
        }
    }

    /// Writes one sample `x` (`[ci, ih, iw]`) into `buf` (`[ci, ih + 2 pad, iw + 2 pad]`) with
    /// zeros around it.
    pub(super) fn pad_into(
        x: &[f32],
        (ci, ih, iw): (usize, usize, usize),
        pad: usize,
        buf: &mut [f32],
    ) {
        let (ph, pw) = (ih + 2 * pad, iw + 2 * pad);
        buf.fill(0.0);
        for c in 0..ci {
            for y in 0..ih {
                buf[(c * ph + y + pad) * pw + pad..][..iw]
                    .copy_from_slice(&x[(c * ih + y) * iw..][..iw]);
            }
        }
    }

    /// The weights a direct kernel reads.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) enum Weights<'a> {
        /// As they are, `[co, ci, kh, kw]`: the narrow kernel ([`sample_narrow`]).
        Plain(&'a [f32]),
        /// Packed by [`pack_tiles`]: the tiled kernel ([`sample_tiled`]).
        Packed(&'a [f32]),
    }

    /// One sample's convolution, stride 1, by the direct kernel its weights are laid out for
    /// (see [`Weights`]): `x` is the padded sample (`[ci, ph, pw]`), `b` the biases, `dst` the
    /// output `[co, oh, ow]`.
    ///
    /// # Safety
    /// As for the kernel it takes.
    pub(super) unsafe fn sample(
        x: &[f32],
        padded: (usize, usize, usize),
        weights: Weights,
        b: &[f32],
        kernel: (usize, usize),
        out: (usize, usize),
        dst: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match weights {
                Weights::Packed(packed) => sample_tiled(x, padded, packed, b, kernel, out, dst),
                Weights::Plain(w) => sample_narrow(x, padded, w, b, kernel, out, dst),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, padded, weights, b, kernel, out, dst);
            unreachable!("`fits` and `fits_tiled` say no off x86-64")
        }
    }

    /// One sample's convolution, stride 1: `x` is the padded sample (`[ci, ph, pw]`), `w` the
    /// weights `[co, ci, kh, kw]`, `b` the biases, `dst` the output `[co, oh, ow]`.
    ///
    /// # Safety
    /// [`fits`] must have said yes, with `ph = oh + kh - 1` and `pw = ow + kw - 1`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn sample_narrow(
        x: &[f32],
        padded: (usize, usize, usize),
        w: &[f32],
        b: &[f32],
        kernel: (usize, usize),
        (oh, ow): (usize, usize),
        dst: &mut [f32],
    ) {
        let co = b.len();
        let shape = Sizes {
            padded,
            kernel,
            out: (oh, ow),
        };
        // Channels `c0..c0 + $c`, with the row's vectors of 16 as a constant.
        macro_rules! by_width {
            ($c:expr, $c0:expr) => {
                // SAFETY: the caller's contract, with `$c0 + $c <= co`.
                unsafe {
                    match ow.div_ceil(16) {
                        1 => rows::<1, { $c }>(x, shape, w, b, $c0, dst),
                        2 => rows::<2, { $c }>(x, shape, w, b, $c0, dst),
                        3 => rows::<3, { $c }>(x, shape, w, b, $c0, dst),
                        _ => rows::<4, { $c }>(x, shape, w, b, $c0, dst),
                    }
                }
            };
        }
        let mut c0 = 0;
        while c0 + CHANNELS <= co {
            by_width!(CHANNELS, c0);
            c0 += CHANNELS;
        }
        for c in c0..co {
            by_width!(1, c);
        }
    }

    /// The output rows of channels `c0..c0 + C`, `V` vectors of 16 a row.
    ///
    /// # Safety
    /// As for [`sample_narrow`], with `V = ceil(ow / 16)` and `c0 + C <= co`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows<const V: usize, const C: usize>(
        x: &[f32],
        sizes: Sizes,
        w: &[f32],
        b: &[f32],
        c0: usize,
        dst: &mut [f32],
    ) {
        let ((ci, ph, pw), (kh, kw), (oh, ow)) = (sizes.padded, sizes.kernel, sizes.out);
        let kk = ci * kh * kw;
        assert!(ph == oh + kh - 1 && pw == ow + kw - 1 && x.len() >= ci * ph * pw);
        assert!(V == ow.div_ceil(16) && c0 + C <= b.len() && w.len() >= b.len() * kk);
        assert!(dst.len() >= b.len() * oh * ow);
        // The last vector's lanes within the row.
        let last = (1u32 << (ow - 16 * (V - 1))) - 1;
        let mask = |v: usize| if v + 1 == V { last as u16 } else { u16::MAX };
        // SAFETY: a row's vector `v` reads lanes `kx + 16 v + lane` for lanes under
        // `ow - 16 v` (the mask), so at most `kw - 1 + ow - 1 < pw`, within the padded row; the
        // stores write `ow` outputs of a row.
        unsafe {
            let (xp, wp, dp) = (x.as_ptr(), w.as_ptr(), dst.as_mut_ptr());
            for oy in 0..oh {
                let mut acc = [[_mm512_setzero_ps(); V]; C];
                for c in 0..ci {
                    for ky in 0..kh {
                        let row = xp.add((c * ph + oy + ky) * pw);
                        for kx in 0..kw {
                            let mut xv = [_mm512_setzero_ps(); V];
                            for (v, xv) in xv.iter_mut().enumerate() {
                                *xv = _mm512_maskz_loadu_ps(mask(v), row.add(kx + 16 * v));
                            }
                            let at = (c * kh + ky) * kw + kx;
                            for (cb, a) in acc.iter_mut().enumerate() {
                                let wv = _mm512_set1_ps(*wp.add((c0 + cb) * kk + at));
                                for (av, xv) in a.iter_mut().zip(&xv) {
                                    *av = _mm512_fmadd_ps(wv, *xv, *av);
                                }
                            }
                        }
                    }
                }
                for (cb, a) in acc.iter().enumerate() {
                    let bias = _mm512_set1_ps(b[c0 + cb]);
                    let out = dp.add(((c0 + cb) * oh + oy) * ow);
                    for (v, av) in a.iter().enumerate() {
                        _mm512_mask_storeu_ps(out.add(16 * v), mask(v), _mm512_add_ps(bias, *av));
                    }
                }
            }
        }
    }
}

/// `conv2d(x, W) + b` (`x` `[n, ci, h, w]`, `W` `[co, ci, kh, kw]`, `b` `[co]`) on the host
/// where all three are f32 tensors in CPU memory laid out contiguously; `None` elsewhere (the
/// caller uses candle's). The result carries no gradient.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    padding: usize,
) -> Option<candle_core::Result<Tensor>> {
    let host = [x, w, b].into_iter().all(super::host_f32)
        && x.rank() == 4
        && w.rank() == 4
        && b.rank() == 1
        && stride > 0;
    host.then(|| {
        Ok(x.apply_op3(
            w,
            b,
            Conv2d {
                stride,
                padding,
                direct: true,
            },
        )?
        .detach())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::stream(seed, "conv-test");
        let n: usize = shape.iter().product();
        Tensor::from_vec(crate::rng::uniform_vec(&mut r, n, 1.0), shape, &Device::Cpu).unwrap()
    }

    /// The host convolution against candle's, over shapes with and without padding, strides 1
    /// to 3, one and several channels, non-square inputs, and kernels that read only padding at
    /// the edges.
    #[test]
    fn matches_candle() {
        for (i, &(n, ci, ih, iw, co, k, stride, pad)) in [
            (3, 1, 28, 28, 32, 5, 1, 2),
            (2, 32, 14, 14, 64, 5, 1, 2),
            (2, 3, 9, 7, 4, 3, 2, 1),
            (1, 2, 5, 6, 3, 3, 3, 0),
            (2, 2, 4, 4, 2, 5, 1, 3),
            (1, 1, 1, 1, 1, 1, 1, 0),
        ]
        .iter()
        .enumerate()
        {
            let x = random(&[n, ci, ih, iw], i as u64);
            let w = random(&[co, ci, k, k], 100 + i as u64);
            let b = random(&[co], 200 + i as u64);
            let ours = conv2d(&x, &w, &b, stride, pad).unwrap().unwrap();
            let theirs = x
                .conv2d(&w, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            let diff = crate::host::max_abs_diff(&ours, &theirs);
            // Sums of up to 800 products of numbers in [-1, 1]: f32 rounding in another order.
            assert!(diff < 1e-4, "case {i}: largest difference {diff}");
        }
    }

    /// The direct kernel gives the matrix product's bits: over one and several channels, row
    /// widths across the vectors of 16 (a partial one, four whole), channel counts that leave
    /// lone channels after the groups of 4, kernels that read only padding at the edges. (On a
    /// tiny product, 2 channels of 36 outputs, the gemm crate takes another path, and 88 of
    /// the 144 outputs differed in their last bits; `matches_candle` covers that shape.)
    #[test]
    fn the_direct_kernel_gives_the_products_bits() {
        let mut checked = 0;
        for (i, &(n, ci, ih, iw, co, k, pad)) in [
            (3, 1, 28, 28, 32, 5, 2),
            (2, 2, 9, 7, 6, 3, 1),
            (2, 3, 4, 64, 5, 3, 1),
            (1, 1, 6, 17, 7, 1, 0),
            (2, 2, 4, 4, 8, 5, 3),
            (2, 2, 4, 4, 32, 5, 3),
            (2, 2, 12, 12, 32, 5, 3),
            (2, 2, 28, 28, 2, 5, 3),
            (2, 1, 28, 28, 2, 5, 3),
            (1, 7, 5, 33, 9, 3, 1),
        ]
        .iter()
        .enumerate()
        {
            let ow = iw + 2 * pad + 1 - k;
            if !direct::fits((ci, k, k), ow, 1) {
                eprintln!("case {i}: the direct kernel does not run on this machine");
                continue;
            }
            let x = random(&[n, ci, ih, iw], 300 + i as u64);
            let w = random(&[co, ci, k, k], 400 + i as u64);
            let b = random(&[co], 500 + i as u64);
            let run = |direct| {
                let op = Conv2d {
                    stride: 1,
                    padding: pad,
                    direct,
                };
                let y = x.apply_op3(&w, &b, op).unwrap();
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let (ours, product) = (run(true), run(false));
            assert_eq!(ours.len(), product.len());
            for (j, (a, p)) in ours.iter().zip(&product).enumerate() {
                assert_eq!(a.to_bits(), p.to_bits(), "case {i}, output {j}: {a} vs {p}");
            }
            checked += 1;
        }
        eprintln!("{checked} cases checked");
    }

    /// The tiled kernel against the convolution's sums taken plainly in f64: each output is
    /// within the rounding of a sum of its `ci kh kw` products and the bias (at most `kk + 1`
    /// roundings of `2^-24` relative to the sum of the terms' magnitudes). The cases cover
    /// `mnist-convnet`'s second convolution, channel counts that leave 1 to 7 after the groups
    /// of 8 (and none), output heights that leave 0 to 2 rows after the groups of 3, rows of 1
    /// and of 16, non-square inputs and kernels, and kernels that read only padding at the
    /// edges.
    #[test]
    fn the_tiled_kernel_sums_what_the_convolution_says() {
        let mut checked = 0;
        for (i, &(n, ci, ih, iw, co, (kh, kw), pad)) in [
            (2, 32, 14, 14, 64, (5, 5), 2),
            (1, 8, 5, 9, 7, (3, 3), 1),
            (2, 3, 7, 16, 11, (5, 5), 2),
            (1, 5, 6, 1, 9, (5, 3), 1),
            (1, 9, 3, 6, 10, (3, 3), 0),
            (1, 16, 9, 4, 12, (1, 5), 2),
            (1, 5, 1, 2, 14, (5, 5), 3),
            (1, 3, 6, 4, 5, (5, 5), 2),
        ]
        .iter()
        .enumerate()
        {
            let (oh, ow) = (ih + 2 * pad + 1 - kh, iw + 2 * pad + 1 - kw);
            assert!(
                ci * kh * kw > DIRECT_MAX_K && ow <= 16,
                "case {i} is not a tiled shape"
            );
            if !direct::fits_tiled((ci, kh, kw), ow, 1) {
                eprintln!("case {i}: the tiled kernel does not run on this machine");
                continue;
            }
            let x = random(&[n, ci, ih, iw], 600 + i as u64);
            let w = random(&[co, ci, kh, kw], 700 + i as u64);
            let b = random(&[co], 800 + i as u64);
            let op = Conv2d {
                stride: 1,
                padding: pad,
                direct: true,
            };
            let y = x.apply_op3(&w, &b, op).unwrap();
            assert_eq!(y.dims(), &[n, co, oh, ow], "case {i}");
            let ours = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ws = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bs = b.to_vec1::<f32>().unwrap();
            let kk = ci * kh * kw;
            let mut at = 0;
            for s in 0..n {
                for o in 0..co {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (mut sum, mut mag) = (bs[o] as f64, bs[o].abs() as f64);
                            for c in 0..ci {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let (iy, ix) = (oy + ky, ox + kx);
                                        if iy < pad || ix < pad || iy - pad >= ih || ix - pad >= iw
                                        {
                                            continue;
                                        }
                                        let xv = xs[((s * ci + c) * ih + iy - pad) * iw + ix - pad];
                                        let wv = ws[((o * ci + c) * kh + ky) * kw + kx];
                                        sum += xv as f64 * wv as f64;
                                        mag += (xv as f64 * wv as f64).abs();
                                    }
                                }
                            }
                            let bound = (kk + 1) as f64 * mag * f64::powi(2.0, -24) + 1e-30;
                            let got = ours[at] as f64;
                            assert!(
                                (got - sum).abs() <= bound,
                                "case {i}, sample {s}, channel {o}, ({oy}, {ox}): {got} vs {sum} (bound {bound:e})"
                            );
                            at += 1;
                        }
                    }
                }
            }
            checked += 1;
        }
        eprintln!("{checked} cases checked");
    }

    /// A hand example: a 3x3 input, a 2x2 kernel of ones, padding 1, stride 2: each output is
    /// the sum of the input numbers under the kernel, plus the bias.
    #[test]
    fn by_hand() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), (1, 1, 3, 3), &dev).unwrap();
        let w = Tensor::ones((1, 1, 2, 2), DType::F32, &dev).unwrap();
        let b = Tensor::new(&[0.5f32], &dev).unwrap();
        let y = conv2d(&x, &w, &b, 2, 1).unwrap().unwrap();
        // Padded input rows: 0 0 0 0 0 / 0 1 2 3 0 / 0 4 5 6 0 / 0 7 8 9 0 / 0 0 0 0 0; windows
        // at (0,0), (0,2), (2,0), (2,2): 1, 2 + 3, 4 + 7, 5 + 6 + 8 + 9.
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.5, 5.5, 11.5, 28.5]
        );
    }

    /// The convolutions of `mnist-convnet` on 512 samples, this kernel against candle's, the
    /// same invocation: `cargo test --release -- --ignored conv_speed --nocapture`.
    #[test]
    #[ignore]
    fn conv_speed() {
        for (ci, hw, co) in [(1, 28, 32), (32, 14, 64)] {
            let x = random(&[512, ci, hw, hw], 1);
            let w = random(&[co, ci, 5, 5], 2);
            let b = random(&[co], 3);
            let time = |f: &dyn Fn() -> Tensor| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    std::hint::black_box(f());
                }
                t.elapsed().as_secs_f64() / 3.0
            };
            let theirs = time(&|| {
                x.conv2d(&w, 2, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&b.reshape((1, co, 1, 1)).unwrap())
                    .unwrap()
            });
            let ours = time(&|| conv2d(&x, &w, &b, 1, 2).unwrap().unwrap());
            let gflop = (512 * hw * hw * co * ci * 25 * 2) as f64 / 1e9;
            println!(
                "{ci}->{co} channels, {hw}x{hw}: candle {:.1} ms ({:.1} GFLOP/s), host {:.1} ms ({:.1} GFLOP/s), {:.2}x",
                theirs * 1e3,
                gflop / theirs,
                ours * 1e3,
                gflop / ours,
                theirs / ours
            );
        }
    }
}
