//! The coarse pass: [`super::softmax_fit_raw`] over bfloat16 features with the products in
//! bfloat16 too, on machines with AVX-512's bfloat16 dot product (`vdpbf16ps`: 32 products of
//! bfloat16 pairs added into 16 f32 sums by one instruction, and the features need no
//! widening). On AMD's Zen 4 that is twice the multiply-adds of an f32 FMA, and the pass 0.6x
//! the exact one's time; Intel's Xeons run it on one port, no faster than the exact pass, but
//! from Sapphire Rapids on they have AMX's tiles, which [`amx`] uses where Linux grants them
//! (0.4x the exact pass on a 2-core VM).
//!
//! The weights and the residuals are rounded to bfloat16 (8 bits, a relative 2^-9) and the sums
//! are kept in f32. So the pass gives the loss and gradient of a slightly different function:
//! the fit's first iterations, which move far, use it, and the solver finishes with the exact
//! pass (see `fit_batch` in `probe.rs`).
//!
//! The centring moves out of the products: `(x - m) w = x w - m w` for the logits, with `m w`
//! once per pass, and `sum_i r_i (x_i - m) = sum_i r_i x_i - m sum_i r_i` for the gradient, with
//! the rounded residuals' sums.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
mod amx;

use half::bf16;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::{
    block_residuals, block_rows, class_major, each_problem, start_logits, task_rows, Sums,
    MAX_CLASSES, ROW_BLOCK, SEGMENT,
};

/// Whether this machine has the instructions the coarse pass is written for.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Without x86-64's instructions, no coarse pass.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn softmax_fit_coarse(
    _: &[&[bf16]],
    _: &[Vec<f32>],
    _: &[f32],
    _: &[u32],
    _: usize,
    _: usize,
) -> Option<(Vec<f64>, Vec<f32>, Vec<f32>)> {
    None
}

/// [`super::softmax_fit_raw`] with the products in bfloat16 (see the module's comment); `None`
/// where the machine lacks the instructions ([`available`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn softmax_fit_coarse(
    xs: &[&[bf16]],
    means: &[Vec<f32>],
    theta: &[f32],
    labels: &[u32],
    d: usize,
    k: usize,
) -> Option<(Vec<f64>, Vec<f32>, Vec<f32>)> {
    fit_with(amx::available(), xs, means, theta, labels, d, k)
}

/// [`softmax_fit_coarse`] on AMX's tiles where `tiles` (and they hold the classes), else on
/// AVX-512 alone.
#[cfg(target_arch = "x86_64")]
fn fit_with(
    tiles: bool,
    xs: &[&[bf16]],
    means: &[Vec<f32>],
    theta: &[f32],
    labels: &[u32],
    d: usize,
    k: usize,
) -> Option<(Vec<f64>, Vec<f32>, Vec<f32>)> {
    if !available() || !(2..=MAX_CLASSES).contains(&k) {
        return None;
    }
    let n = labels.len();
    let kc = k - 1;
    let tiles = tiles && kc <= amx::MAX_REL_CLASSES;
    Some(each_problem(
        xs,
        means,
        theta,
        n,
        d,
        k,
        |x, mean, th, lb, gb| {
            let (theta_t, bias_t) = class_major(th, d, k, true);
            let wb: Vec<bf16> = theta_t.iter().map(|&v| bf16::from_f32(v)).collect();
            let wv = match tiles {
                true => amx::pair_weights(&wb, d, kc),
                false => Vec::new(),
            };
            // Each row's logits start from the bias less the means' products with the weights
            // as rounded.
            let base: Vec<f32> = (0..kc)
                .map(|c| {
                    let mw: f64 = wb[c * d..(c + 1) * d]
                        .iter()
                        .zip(mean)
                        .map(|(w, &m)| f64::from(w.to_f32()) * f64::from(m))
                        .sum();
                    (f64::from(bias_t[c]) - mw) as f32
                })
                .collect();
            // Fixed groups of rows, as the exact pass has them.
            let group = task_rows(n);
            let parts: Vec<(Sums, Vec<f64>)> = x
                .par_chunks(group * d.max(1))
                .zip(labels.par_chunks(group))
                .zip(lb.par_chunks_mut(group * k))
                .map(|((xr, yr), lr)| {
                    let mut s = Sums::new(kc, d);
                    let mut rsum = vec![0f64; kc];
                    let (gt, gb) = (&mut s.g_t, &mut s.g_b);
                    // SAFETY: `available` checked the instructions `pass_rows` is compiled for,
                    // and `amx::available` the tiles (which hold `kc` classes).
                    s.loss = unsafe {
                        match tiles {
                            true => {
                                amx::pass_rows(xr, d, &wb, &wv, &base, yr, gt, gb, &mut rsum, lr)
                            }
                            false => pass_rows(xr, d, &wb, &base, yr, gt, gb, &mut rsum, lr),
                        }
                    };
                    (s, rsum)
                })
                .collect();
            let mut rsum = vec![0f64; kc];
            let mut sums = Vec::with_capacity(parts.len());
            for (s, r) in parts {
                rsum.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
                sums.push(s);
            }
            let mut total = Sums::total(sums, kc, d);
            // The centring, out of the gradient's products.
            for (c, &r) in rsum.iter().enumerate() {
                let r = r as f32;
                for (g, &m) in total.g_t[c * d..(c + 1) * d].iter_mut().zip(mean) {
                    *g -= m * r;
                }
            }
            total.write(d, k, n, gb)
        },
    ))
}

/// Reinterprets 32 bfloat16 as the dot product's operand type.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 64 bytes of plain data; `__m512bh` is 32 bfloat16.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// One task's rows `x` (row stride `d`): adds to `lg` (rows of `k`) the logits less the last
/// class's, to `g_t` the gradient's products `sum_i r_i x_i` (class-major), to `g_b` the
/// residuals' sums and to `rsum` the sums of the residuals as rounded; returns the summed
/// cross-entropy. `wb` holds the `K - 1` classes' weights (relative to the last) in bfloat16,
/// `base` each class's bias less the means' products.
///
/// # Safety
/// The machine must have AVX-512F, AVX-512BW and AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn pass_rows(
    x: &[bf16],
    d: usize,
    wb: &[bf16],
    base: &[f32],
    labels: &[u32],
    g_t: &mut [f32],
    g_b: &mut [f32],
    rsum: &mut [f64],
    logits: &mut [f32],
) -> f64 {
    let kc = base.len();
    let k = kc + 1;
    let mut loss = 0f64;
    let mut res = [0f32; ROW_BLOCK * MAX_CLASSES];
    // The rounded residuals of each pair of rows, a class's pair in one 32-bit word: the first
    // row's in the low half (the dot product's even element), the second's in the high half.
    let mut pairs = [0u32; ROW_BLOCK / 2 * MAX_CLASSES];
    let rb = block_rows(d, 2);
    let mut parts = vec![_mm512_setzero_ps(); rb * kc];
    for (bi, ((xb, yb), lb)) in x
        .chunks(rb * d)
        .zip(labels.chunks(rb))
        .zip(logits.chunks_mut(rb * k))
        .enumerate()
    {
        // The next block's rows, which the gradient below asks for into the second-level
        // cache a column at a time while it works from that cache (the logits would otherwise
        // wait for them on memory).
        let next = x.get((bi + 1) * rb * d..).unwrap_or_default();
        let next = &next[..next.len().min(rb * d)];
        let rows = yb.len();
        start_logits(lb, base);
        block_logits(xb, d, wb, kc, k, lb, &mut parts);
        let res = &mut res[..rows * k];
        loss += block_residuals(lb, yb, res, g_b);
        let npairs = rows.div_ceil(2);
        for pi in 0..npairs {
            for c in 0..kc {
                let lo = bf16::from_f32(res[2 * pi * k + c]);
                let hi = match 2 * pi + 1 < rows {
                    true => bf16::from_f32(res[(2 * pi + 1) * k + c]),
                    false => bf16::ZERO,
                };
                rsum[c] += f64::from(lo.to_f32()) + f64::from(hi.to_f32());
                pairs[pi * kc + c] = u32::from(lo.to_bits()) | u32::from(hi.to_bits()) << 16;
            }
        }
        let pairs = &pairs[..npairs * kc];
        let mut j = 0;
        while j + 32 <= d {
            let mut c0 = 0;
            while c0 < kc {
                let c = (kc - c0).min(GRAD_CLASSES);
                macro_rules! tiles {
                    ($($n:literal)*) => {
                        match c {
                            // SAFETY: the caller's contract; `j + 32 <= d`.
                            $($n => unsafe { grad_tile::<$n>(xb, d, pairs, kc, c0, j, g_t) },)*
                            _ => unreachable!("a group of 1 to {GRAD_CLASSES} classes"),
                        }
                    };
                }
                tiles!(1 2 3 4 5 6 7 8 9);
                c0 += c;
            }
            for row in next.chunks_exact(d) {
                // SAFETY: `j < d`, within the row.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(row.as_ptr().add(j).cast()) };
            }
            j += 32;
        }
        for jj in j..d {
            for (pi, pr) in pairs.chunks_exact(kc).enumerate() {
                for (c, &w) in pr.iter().enumerate() {
                    let (lo, hi) = (bf16::from_bits(w as u16), bf16::from_bits((w >> 16) as u16));
                    let mut s = lo.to_f32() * xb[2 * pi * d + jj].to_f32();
                    if 2 * pi + 1 < rows {
                        s += hi.to_f32() * xb[(2 * pi + 1) * d + jj].to_f32();
                    }
                    g_t[c * d + jj] += s;
                }
            }
        }
    }
    loss
}

#[cfg(target_arch = "x86_64")]
/// Most classes of one logits tile of 4 rows: 20 running sums, 4 row vectors and a weights
/// vector.
const LOGIT_CLASSES: usize = 5;

#[cfg(target_arch = "x86_64")]
/// Most classes of one gradient tile: 2 x 9 running sums, 2 row vectors, their 2 interleavings
/// and the residuals' pair.
const GRAD_CLASSES: usize = 9;

/// Adds to the logits `lg` (`rows` x `k`) the products of the rows `x` with the first `kc`
/// classes of `wb`: tiles of 4 rows by up to [`LOGIT_CLASSES`] classes, a segment of features at
/// a time. Each row and class keeps a vector of 16 running sums across the segments in `parts`
/// (at least `rows` x `kc`), summed into its logit at the end (once a segment, the sums' adding
/// up cost a sixth of the products).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
fn block_logits(
    x: &[bf16],
    d: usize,
    wb: &[bf16],
    kc: usize,
    k: usize,
    lg: &mut [f32],
    parts: &mut [__m512],
) {
    let rows = lg.len() / k;
    let parts = &mut parts[..rows * kc];
    parts.fill(_mm512_setzero_ps());
    for f0 in (0..d).step_by(SEGMENT) {
        let seg = (f0, (f0 + SEGMENT).min(d));
        let mut r0 = 0;
        while r0 < rows {
            let four = rows - r0 >= 4;
            let (xr, lr, pr) = (&x[r0 * d..], &mut lg[r0 * k..], &mut parts[r0 * kc..]);
            let mut c0 = 0;
            while c0 < kc {
                let c = (kc - c0).min(LOGIT_CLASSES);
                macro_rules! tiles {
                    ($r:literal: $($n:literal)*) => {
                        match c {
                            // SAFETY: this function's features are the tile's.
                            $($n => unsafe {
                                logits_tile::<$r, $n>(xr, d, wb, (c0, kc), seg, k, lr, pr)
                            },)*
                            _ => unreachable!("a group of 1 to {LOGIT_CLASSES} classes"),
                        }
                    };
                }
                match four {
                    true => tiles!(4: 1 2 3 4 5),
                    false => tiles!(1: 1 2 3 4 5),
                }
                c0 += c;
            }
            r0 += if four { 4 } else { 1 };
        }
    }
    for (l, p) in lg.chunks_exact_mut(k).zip(parts.chunks_exact(kc)) {
        for (lc, pc) in l.iter_mut().zip(p) {
            *lc += _mm512_reduce_add_ps(*pc);
        }
    }
}

/// Adds to the running sums `part` (`kc` a row) of `R` rows `x` (row stride `d`) their
/// products with the classes `c0..c0 + C` of `wb` (class-major, `d` a class) over the features
/// `f0..f1`, and to their logits `lg` (`k` a row) the products of the features past the last
/// whole vector.
///
/// # Safety
/// The machine must have AVX-512F, AVX-512BW and AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn logits_tile<const R: usize, const C: usize>(
    x: &[bf16],
    d: usize,
    wb: &[bf16],
    (c0, kc): (usize, usize),
    (f0, f1): (usize, usize),
    k: usize,
    lg: &mut [f32],
    part: &mut [__m512],
) {
    assert!(x.len() >= (R - 1) * d + f1 && wb.len() >= (c0 + C) * d && lg.len() >= R * k);
    assert!(c0 + C <= kc && part.len() >= R * kc);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&part[r * kc + c0..][..C]);
    }
    let mut j = f0;
    // SAFETY: every read is within the lengths asserted above (`j + 32 <= f1`).
    unsafe {
        let (xp, wp) = (x.as_ptr(), wb.as_ptr());
        while j + 32 <= f1 {
            let mut z = [_mm512_setzero_si512(); R];
            for (r, zr) in z.iter_mut().enumerate() {
                *zr = _mm512_loadu_si512(xp.add(r * d + j).cast());
            }
            for c in 0..C {
                let w = bh(_mm512_loadu_si512(wp.add((c0 + c) * d + j).cast()));
                for (a, zr) in acc.iter_mut().zip(&z) {
                    a[c] = _mm512_dpbf16_ps(a[c], bh(*zr), w);
                }
            }
            j += 32;
        }
    }
    for (r, a) in acc.iter().enumerate() {
        part[r * kc + c0..][..C].copy_from_slice(a);
        if j == f1 {
            continue;
        }
        for c in 0..C {
            let w = &wb[(c0 + c) * d..];
            let mut s = 0f32;
            for jj in j..f1 {
                s += x[r * d + jj].to_f32() * w[jj].to_f32();
            }
            lg[r * k + c0 + c] += s;
        }
    }
}

/// Adds to the gradient `g_t` (class-major, `d` a class) of the classes `c0..c0 + C`, features
/// `j..j + 32`, the sums over the rows `x` (row stride `d`) of their rounded residuals (`pairs`,
/// `kc` a pair of rows) times their features.
///
/// # Safety
/// As for [`logits_tile`], with `j + 32 <= d`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn grad_tile<const C: usize>(
    x: &[bf16],
    d: usize,
    pairs: &[u32],
    kc: usize,
    c0: usize,
    j: usize,
    g_t: &mut [f32],
) {
    let rows = x.len() / d;
    let npairs = pairs.len() / kc;
    assert!(j + 32 <= d && npairs == rows.div_ceil(2) && c0 + C <= kc && g_t.len() >= kc * d);
    // SAFETY: every access is within the lengths asserted above.
    unsafe {
        let (xp, pp, gp) = (x.as_ptr(), pairs.as_ptr(), g_t.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; C];
        for pi in 0..npairs {
            let r0 = 2 * pi;
            // A lone last row pairs with itself; its pair's high residual is zero.
            let r1 = (r0 + 1).min(rows - 1);
            let a = _mm512_loadu_si512(xp.add(r0 * d + j).cast());
            let b = _mm512_loadu_si512(xp.add(r1 * d + j).cast());
            // Within each 128-bit lane, features 0..4 of the lane's 8 (lo) and 4..8 (hi), each
            // with the first row's value in the even half and the second's in the odd.
            let lo = bh(_mm512_unpacklo_epi16(a, b));
            let hi = bh(_mm512_unpackhi_epi16(a, b));
            for (c, s) in acc.iter_mut().enumerate() {
                let r = bh(_mm512_set1_epi32(*pp.add(pi * kc + c0 + c) as i32));
                s[0] = _mm512_dpbf16_ps(s[0], lo, r);
                s[1] = _mm512_dpbf16_ps(s[1], hi, r);
            }
        }
        // Back to the features' order: lane 4L + q of `lo` is feature 8L + q, of `hi` 8L + 4 + q.
        let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        let second =
            _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        for (c, s) in acc.iter().enumerate() {
            let g = gp.add((c0 + c) * d + j);
            let v0 = _mm512_permutex2var_ps(s[0], first, s[1]);
            let v1 = _mm512_permutex2var_ps(s[0], second, s[1]);
            _mm512_storeu_ps(g, _mm512_add_ps(_mm512_loadu_ps(g), v0));
            _mm512_storeu_ps(g.add(16), _mm512_add_ps(_mm512_loadu_ps(g.add(16)), v1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pass::tests::{problem, reference};

    /// The coarse pass is the exact pass of the parameters as it rounds them (each class's
    /// weights less the last class's, in bfloat16), up to its f32 sums and the rounding of the
    /// residuals: a plain f64 computation of that function agrees.
    #[test]
    fn the_coarse_pass_is_the_rounded_problem_computed_plainly() {
        if !available() {
            eprintln!("skipped: this machine has no AVX-512 bfloat16 dot product");
            return;
        }
        // Widths across the 32 features a product takes, a segment and a partial one; row
        // counts that leave a lone row, a partial tile of 4 and several blocks and tasks; class
        // counts across the tiles' 5 and 9.
        // On AMX machines both kernels: the tiles take blocks of 32 rows (16 past 12,800
        // features) and whole 32s of features, and hold up to 17 classes (past it, the AVX-512
        // pass runs).
        let kernels: &[bool] = if amx::available() {
            &[false, true]
        } else {
            eprintln!("this machine has no AMX tiles: the AVX-512 kernel alone");
            &[false]
        };
        for (tiles, (n, d, k)) in kernels.iter().flat_map(|&t| {
            [
                (131, 37, 10),
                (67, 64, 2),
                (9, 1061, 11),
                (2101, 96, 3),
                (5, 1, 3),
                (40, 2048, 7),
                (96, 1061, 10),
                (64, 64, 17),
                (70, 96, 18),
                (33, 31, 4),
                (40, 12850, 10),
            ]
            .map(|c| (t, c))
        }) {
            let (x, mean, theta, y) = problem(n, d, k, (n * d + k) as u64);
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let xw: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
            // The parameters as the pass rounds them: relative to the last class, the weights in
            // bfloat16, the biases as they are.
            let mut rounded = theta.clone();
            for row in rounded.chunks_exact_mut(k).take(d) {
                let last = row[k - 1];
                for v in &mut row[..k - 1] {
                    *v = bf16::from_f32(*v - last).to_f32();
                }
                row[k - 1] = 0.0;
            }
            let (want_loss, want_grad, want_logits) = reference(&xw, &mean, &rounded, &y, d, k);
            let means = std::slice::from_ref(&mean);
            let (loss, grad, logits) =
                fit_with(tiles, &[&xb[..]], means, &theta, &y, d, k).unwrap();
            let what = format!("n {n} d {d} k {k} tiles {tiles}");
            assert!(
                (loss[0] - want_loss).abs() < 1e-4 * want_loss.max(1.0),
                "{what} loss {} vs {want_loss}",
                loss[0]
            );
            // The residuals' rounding (2^-9 of each, 2^-8 allowed for the f32 residuals'
            // rounding the other way) is all that separates the gradients: each entry within
            // the sum of its terms' rounding, the last class's within the others' sum.
            let mut bound = vec![1e-5f64; d * k];
            for (i, l) in want_logits.iter().enumerate() {
                let top = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = l.iter().map(|v| (v - top).exp()).sum();
                for c in 0..k - 1 {
                    let r = (l[c] - top).exp() / s - f64::from(u8::from(c == y[i] as usize));
                    for j in 0..d {
                        let z = f64::from(xw[i * d + j] - mean[j]);
                        let e = (r * z).abs() / 256.0 / n as f64;
                        bound[j * k + c] += e;
                        bound[j * k + k - 1] += e;
                    }
                }
            }
            for (i, (g, w)) in grad.iter().zip(&want_grad).take(d * k).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= bound[i],
                    "{what} grad {i} (feature {}, class {}): {g} vs {w}",
                    i / k,
                    i % k
                );
            }
            for (i, (g, w)) in grad.iter().zip(&want_grad).enumerate().skip(d * k) {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "{what} bias grad {i}: {g} vs {w}"
                );
            }
            // The logits: f32 sums of up to `d / 32 + 32` additions each (a product's 32 pairs,
            // then one sum a step of 32 features), each rounding within 2^-24 of the sum of the
            // terms' sizes so far.
            let steps = (d / 32 + 32) as f64;
            for (i, (g, w)) in logits.chunks_exact(k).zip(&want_logits).enumerate() {
                for c in 0..k {
                    let want = w[c] - w[k - 1];
                    let size: f64 = (0..d)
                        .map(|j| {
                            let (xv, mv) = (f64::from(xw[i * d + j]), f64::from(mean[j]));
                            (xv.abs() + mv.abs()) * f64::from(rounded[j * k + c]).abs()
                        })
                        .sum();
                    let bound = 1e-4 * want.abs().max(1.0) + steps * size * 2f64.powi(-24);
                    assert!(
                        (g[c] as f64 - want).abs() < bound,
                        "{what} logit {i},{c}: {} vs {want} (bound {bound})",
                        g[c]
                    );
                }
            }
        }
    }

    /// Not a test: the coarse pass against the exact one on bfloat16 features
    /// (`cargo test --release -- --ignored --nocapture coarse_speed`).
    #[test]
    #[ignore]
    fn coarse_speed() {
        for (n, d, k) in [(4096, 25088, 10), (8192, 6272, 10), (20000, 3136, 10)]
            .into_iter()
            .take(if std::env::var("AMX_WIDE").is_ok() {
                1
            } else {
                3
            })
        {
            let (x, mean, theta, y) = problem(n, d, k, 3);
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let time = |f: &dyn Fn()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..5 {
                    f();
                }
                t.elapsed().as_secs_f64() / 5.0
            };
            let means = std::slice::from_ref(&mean);
            let exact = time(&|| {
                std::hint::black_box(super::super::softmax_fit_raw(
                    &[&xb[..]],
                    means,
                    &theta,
                    &y,
                    d,
                    k,
                ));
            });
            let coarse = |tiles: bool| {
                time(&|| {
                    std::hint::black_box(fit_with(tiles, &[&xb[..]], means, &theta, &y, d, k));
                })
            };
            let avx = coarse(false);
            print!(
                "n {n} d {d}: exact {:.1} ms, coarse AVX-512 {:.1} ms ({:.2}x)",
                exact * 1e3,
                avx * 1e3,
                avx / exact
            );
            match amx::available() {
                true => {
                    let tiles = coarse(true);
                    println!(", AMX {:.1} ms ({:.2}x)", tiles * 1e3, tiles / exact);
                }
                false => println!(),
            }
        }
    }
}
