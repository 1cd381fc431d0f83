//! The converged fit's pass over a tap's features, read as they are stored (f32, or bfloat16
//! widened as it is read) and centred as they are read: no centred copy of the features is
//! made, so a fit holds nothing the size of its features beyond the features themselves.
//!
//! The products are register-blocked: a tile of 4 rows x 3 classes of logits (2 classes
//! without AVX-512) keeps its running sums in registers while the features stream past, and a
//! tile of 4 classes x 2 vectors of features does the same for the gradient, so that each
//! number read from memory feeds several multiply-adds (a dot product per row and class reads
//! two numbers per multiply-add and ran at a tenth of the machine's speed).

use rayon::prelude::*;

mod coarse;
pub(crate) use coarse::{available as coarse_available, softmax_fit_coarse};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A stored feature: f32, or bfloat16 widened to f32 as it is read.
pub(crate) trait Feature: Copy + Send + Sync {
    /// The value as f32.
    fn widen(self) -> f32;

    /// Sixteen values from `p`, widened.
    ///
    /// # Safety
    /// `p` must point to sixteen readable values, and the machine must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Feature for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Feature for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract; a bfloat16 is the high half of its f32.
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        }
    }
}

/// Most rows per block: a block's logits are finished (every feature read) before its
/// softmax, and its gradient is summed after, reading the block a second time.
const ROW_BLOCK: usize = 64;

/// Bytes of stored features per block, so that the gradient's second read of a block finds it
/// in the second-level cache (64 rows of a 25,088-wide tap are 6 MB; measured on that tap, 16
/// rows made the bfloat16 pass 1.3x faster, and narrow taps were best with 64).
const BLOCK_BYTES: usize = 512 << 10;

/// Rows per block of features `d` wide, `bytes` each: a multiple of 4 from 16 to [`ROW_BLOCK`].
fn block_rows(d: usize, bytes: usize) -> usize {
    (BLOCK_BYTES / (d * bytes).max(1)).clamp(16, ROW_BLOCK) / 4 * 4
}

/// Features per segment of the logits: the parameters' slice of a segment (`K - 1` x 1,024
/// floats, 36 KB at ten classes) stays in cache while the block's rows stream past it.
const SEGMENT: usize = 1024;

/// Fewest rows per task handed to rayon (each task keeps its own gradient sums).
const TASK_ROWS: usize = 1024;

/// Most tasks of a pass: with more rows the tasks grow, so that their gradient sums (`K - 1` x
/// width floats each) stay a small multiple of the parameters.
const MAX_TASKS: usize = 32;

/// Rows per task of a pass over `n` rows: fixed by `n` alone, so the sums are grouped the same
/// way on any machine.
fn task_rows(n: usize) -> usize {
    n.div_ceil(MAX_TASKS).max(TASK_ROWS)
}

/// Most classes of the pass (the tiles' per-row buffers are sized for it).
pub(crate) const MAX_CLASSES: usize = super::SOFTMAX_FIT_MAX_CLASSES;

/// `a b + c`, as one fused instruction where the machine has FMA (`F`).
#[inline(always)]
fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `L` features of the row `x` from `at`, widened, less their means.
#[inline(always)]
fn load<E: Feature, const L: usize>(x: &[E], mean: &[f32], at: usize) -> [f32; L] {
    let (xs, ms) = (&x[at..at + L], &mean[at..at + L]);
    let mut out = [0f32; L];
    for l in 0..L {
        out[l] = xs[l].widen() - ms[l];
    }
    out
}

/// Adds to the logits `lg` (`R` rows of `k`) of the rows `x` (row stride `d`) their products with
/// the classes `c0..c0 + C` of `theta_t` (class-major, `d` a class) over the features `f0..f1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn logits_tile<E: Feature, const R: usize, const C: usize, const L: usize, const F: bool>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    c0: usize,
    (f0, f1): (usize, usize),
    k: usize,
    lg: &mut [f32],
) {
    let mut acc = [[[0f32; L]; C]; R];
    let mut j = f0;
    while j + L <= f1 {
        let mut z = [[0f32; L]; R];
        for (r, zr) in z.iter_mut().enumerate() {
            *zr = load::<E, L>(&x[r * d..], mean, j);
        }
        for c in 0..C {
            let t = &theta_t[(c0 + c) * d + j..][..L];
            for r in 0..R {
                for l in 0..L {
                    acc[r][c][l] = madd::<F>(z[r][l], t[l], acc[r][c][l]);
                }
            }
        }
        j += L;
    }
    for r in 0..R {
        for c in 0..C {
            let mut s: f32 = acc[r][c].iter().sum();
            let t = &theta_t[(c0 + c) * d..];
            for jj in j..f1 {
                s = madd::<F>(x[r * d + jj].widen() - mean[jj], t[jj], s);
            }
            lg[r * k + c0 + c] += s;
        }
    }
}

/// Adds to the gradient `g_t` (class-major, `d` a class) of the classes `c0..c0 + C` the sums
/// over the rows `x` (row stride `d`) of their residuals `res` (`k` a row) times their features
/// `j..j + V L`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_tile<E: Feature, const C: usize, const V: usize, const L: usize, const F: bool>(
    x: &[E],
    d: usize,
    mean: &[f32],
    res: &[f32],
    k: usize,
    c0: usize,
    j: usize,
    g_t: &mut [f32],
) {
    let mut acc = [[[0f32; L]; V]; C];
    for (row, r) in x.chunks_exact(d).zip(res.chunks_exact(k)) {
        let mut z = [[0f32; L]; V];
        for (v, zv) in z.iter_mut().enumerate() {
            *zv = load::<E, L>(row, mean, j + v * L);
        }
        for c in 0..C {
            let s = r[c0 + c];
            for v in 0..V {
                for l in 0..L {
                    acc[c][v][l] = madd::<F>(s, z[v][l], acc[c][v][l]);
                }
            }
        }
    }
    for c in 0..C {
        for v in 0..V {
            let g = &mut g_t[(c0 + c) * d + j + v * L..][..L];
            for l in 0..L {
                g[l] += acc[c][v][l];
            }
        }
    }
}

/// [`logits_tile`] with AVX-512 registers (16 lanes), where the generic form's running sums
/// did not stay in registers.
///
/// # Safety
/// The machine must have AVX-512F and FMA; the slices must hold what [`logits_tile`] reads.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn logits_tile16<E: Feature, const R: usize, const C: usize>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    c0: usize,
    (f0, f1): (usize, usize),
    k: usize,
    lg: &mut [f32],
) {
    assert!(x.len() >= (R - 1) * d + f1 && mean.len() >= f1 && theta_t.len() >= (c0 + C) * d);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut j = f0;
    // SAFETY: every read below is within the lengths asserted above (`j + 16 <= f1`).
    unsafe {
        let (xp, mp, tp) = (x.as_ptr(), mean.as_ptr(), theta_t.as_ptr());
        while j + 16 <= f1 {
            let m = _mm512_loadu_ps(mp.add(j));
            let mut z = [_mm512_setzero_ps(); R];
            for (r, zr) in z.iter_mut().enumerate() {
                *zr = _mm512_sub_ps(E::load16(xp.add(r * d + j)), m);
            }
            for c in 0..C {
                let t = _mm512_loadu_ps(tp.add((c0 + c) * d + j));
                for (a, zr) in acc.iter_mut().zip(&z) {
                    a[c] = _mm512_fmadd_ps(*zr, t, a[c]);
                }
            }
            j += 16;
        }
    }
    for r in 0..R {
        for c in 0..C {
            let mut s = _mm512_reduce_add_ps(acc[r][c]);
            let t = &theta_t[(c0 + c) * d..];
            for jj in j..f1 {
                s = (x[r * d + jj].widen() - mean[jj]).mul_add(t[jj], s);
            }
            lg[r * k + c0 + c] += s;
        }
    }
}

/// [`grad_tile`] with AVX-512 registers, two vectors of 16 features.
///
/// # Safety
/// As for [`logits_tile16`], with `j + 32 <= d`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn grad_tile16<E: Feature, const C: usize>(
    x: &[E],
    d: usize,
    mean: &[f32],
    res: &[f32],
    k: usize,
    c0: usize,
    j: usize,
    g_t: &mut [f32],
) {
    let rows = x.len() / d;
    assert!(j + 32 <= d && mean.len() >= d && res.len() >= rows * k && g_t.len() >= (c0 + C) * d);
    // SAFETY: every access below is within the lengths asserted above.
    unsafe {
        let (xp, rp, gp) = (x.as_ptr(), res.as_ptr(), g_t.as_mut_ptr());
        let m0 = _mm512_loadu_ps(mean.as_ptr().add(j));
        let m1 = _mm512_loadu_ps(mean.as_ptr().add(j + 16));
        let mut acc = [[_mm512_setzero_ps(); 2]; C];
        for r in 0..rows {
            let row = xp.add(r * d + j);
            let z0 = _mm512_sub_ps(E::load16(row), m0);
            let z1 = _mm512_sub_ps(E::load16(row.add(16)), m1);
            for (c, a) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*rp.add(r * k + c0 + c));
                a[0] = _mm512_fmadd_ps(s, z0, a[0]);
                a[1] = _mm512_fmadd_ps(s, z1, a[1]);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            let g = gp.add((c0 + c) * d + j);
            _mm512_storeu_ps(g, _mm512_add_ps(_mm512_loadu_ps(g), a[0]));
            _mm512_storeu_ps(g.add(16), _mm512_add_ps(_mm512_loadu_ps(g.add(16)), a[1]));
        }
    }
}

/// Adds to the logits `lg` (`rows` x `k`, already holding the biases) the products of the
/// centred rows `x` with the first `kc` classes of `theta_t`: tiles of 4 rows by `CG` classes
/// (up to [`LOGIT_TILE_CLASSES`] in the AVX-512 build with the wide tiles, `W`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block_logits<E: Feature, const CG: usize, const L: usize, const F: bool, const W: bool>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    kc: usize,
    k: usize,
    lg: &mut [f32],
) {
    let rows = lg.len() / k;
    // The wide tiles, in the AVX-512 build that asks for them (see [`WIDE_TILE_MIN`]).
    let group = if W && L == 16 && F {
        LOGIT_TILE_CLASSES
    } else {
        CG
    };
    for f0 in (0..d).step_by(SEGMENT) {
        let seg = (f0, (f0 + SEGMENT).min(d));
        let mut r0 = 0;
        while r0 < rows {
            let four = rows - r0 >= 4;
            let (xr, lr) = (&x[r0 * d..], &mut lg[r0 * k..]);
            let mut c0 = 0;
            while c0 < kc {
                let c = (kc - c0).min(group);
                macro_rules! tile {
                    ($r:literal, $c:literal) => {{
                        #[cfg(target_arch = "x86_64")]
                        if L == 16 && F {
                            // SAFETY: `L == 16 && F` only in the dispatch's AVX-512 build.
                            unsafe {
                                logits_tile16::<E, $r, $c>(xr, d, mean, theta_t, c0, seg, k, lr)
                            };
                            c0 += c;
                            continue;
                        }
                        logits_tile::<E, $r, $c, L, F>(xr, d, mean, theta_t, c0, seg, k, lr)
                    }};
                }
                // Groups of 4 and 5 classes only come with `W`: without it these arms are
                // never compiled in, and the narrow build is as before the wide tiles.
                match (four, c) {
                    (true, 1) => tile!(4, 1),
                    (true, 2) => tile!(4, 2),
                    (true, 4) if W => tile!(4, 4),
                    (true, 5) if W => tile!(4, 5),
                    (true, _) => tile!(4, 3),
                    (false, 1) => tile!(1, 1),
                    (false, 2) => tile!(1, 2),
                    (false, 4) if W => tile!(1, 4),
                    (false, 5) if W => tile!(1, 5),
                    (false, _) => tile!(1, 3),
                }
                c0 += c;
            }
            r0 += if four { 4 } else { 1 };
        }
    }
}

/// Fewest classes (less the last) for which the AVX-512 tiles take more classes at once: 4 rows
/// by up to [`LOGIT_TILE_CLASSES`] classes for the logits, 2 vectors of features by up to
/// [`GRAD_TILE_CLASSES`] classes for the gradient. Each vector of a row's features is then
/// widened and centred once per 5 or 9 classes instead of once per 3 or 4; the sums and their
/// order are the same. Measured (`pass_speed`, a 25,088-wide bfloat16 tap, 10 classes, eight
/// alternating rounds on two cores): 23.9 to 42.8 ms a pass (median 29.6) against 30.5 to
/// 36.5 ms (median 33.6) with the tiles of 3 and 4 classes.
const WIDE_TILE_MIN: usize = 5;

/// Most classes of one AVX-512 logits tile of 4 rows when there are many: 20 running sums, 4
/// row vectors, the parameters' and the means' vectors (26 of the 32 registers).
const LOGIT_TILE_CLASSES: usize = 5;

/// Most classes of one AVX-512 gradient tile: 2 x 9 running sums, the row's 2 vectors, their 2
/// means and the residual (23 registers).
const GRAD_TILE_CLASSES: usize = 9;

/// Sets each row of a block's logits `lb` (rows of `K`) to `start` in its first `K - 1`
/// classes (the biases, relative to the last class) and 0 in the last.
#[inline(always)]
fn start_logits(lb: &mut [f32], start: &[f32]) {
    let kc = start.len();
    for l in lb.chunks_exact_mut(kc + 1) {
        l[..kc].copy_from_slice(start);
        l[kc] = 0.0;
    }
}

/// The softmax residuals of a block's finished logits `lb` (labels `yb`) written to `res`, and
/// their sums over the rows added to the biases' gradient `gbias` (`K - 1`); returns the summed
/// cross-entropy.
#[inline(always)]
fn block_residuals(lb: &[f32], yb: &[u32], res: &mut [f32], gbias: &mut [f32]) -> f64 {
    let k = gbias.len() + 1;
    let loss = super::softmax_residuals(lb, yb, k, res);
    for r in res.chunks_exact(k) {
        for (g, &rc) in gbias.iter_mut().zip(r) {
            *g += rc;
        }
    }
    loss
}

/// One problem's softmax-regression pass over some rows (see [`softmax_fit_raw`]), with the
/// parameters relative to the last class (`theta_t`: `K - 1` classes of `d`; `bias_t`: `K - 1`):
/// the summed cross-entropy is returned, the summed gradient of the first `K - 1` classes added
/// to `grad_t` and `gbias`, and the logits less the last class's written to `logits`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pass_rows<E: Feature, const CG: usize, const L: usize, const F: bool, const W: bool>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    bias_t: &[f32],
    labels: &[u32],
    grad_t: &mut [f32],
    gbias: &mut [f32],
    logits: &mut [f32],
) -> f64 {
    let kc = bias_t.len();
    let k = kc + 1;
    let mut loss = 0f64;
    let mut res = [0f32; ROW_BLOCK * MAX_CLASSES];
    let rb = block_rows(d, std::mem::size_of::<E>());
    for ((xb, yb), lb) in x
        .chunks(rb * d)
        .zip(labels.chunks(rb))
        .zip(logits.chunks_mut(rb * k))
    {
        let rows = yb.len();
        start_logits(lb, bias_t);
        block_logits::<E, CG, L, F, W>(xb, d, mean, theta_t, kc, k, lb);
        let res = &mut res[..rows * k];
        loss += block_residuals(lb, yb, res, gbias);
        // Segments of 2 vectors of features by 4 classes; the block's segment stays in the
        // first-level cache across the class groups.
        const V: usize = 2;
        let mut j = 0;
        while j + V * L <= d {
            let mut c0 = 0;
            while c0 < kc {
                #[cfg(target_arch = "x86_64")]
                if W && L == 16 && F {
                    let c = (kc - c0).min(GRAD_TILE_CLASSES);
                    macro_rules! tiles {
                        ($($n:literal)*) => {
                            match c {
                                $($n => {
                                    // SAFETY: `L == 16 && F` only in the dispatch's AVX-512 build.
                                    unsafe { grad_tile16::<E, $n>(xb, d, mean, res, k, c0, j, grad_t) }
                                })*
                                _ => unreachable!("a group of 1 to {GRAD_TILE_CLASSES} classes"),
                            }
                        };
                    }
                    tiles!(1 2 3 4 5 6 7 8 9);
                    c0 += c;
                    continue;
                }
                let c = (kc - c0).min(4);
                macro_rules! tile {
                    ($c:literal) => {{
                        #[cfg(target_arch = "x86_64")]
                        if L == 16 && F {
                            // SAFETY: `L == 16 && F` only in the dispatch's AVX-512 build.
                            unsafe { grad_tile16::<E, $c>(xb, d, mean, res, k, c0, j, grad_t) };
                            c0 += c;
                            continue;
                        }
                        grad_tile::<E, $c, V, L, F>(xb, d, mean, res, k, c0, j, grad_t)
                    }};
                }
                match c {
                    1 => tile!(1),
                    2 => tile!(2),
                    3 => tile!(3),
                    _ => tile!(4),
                }
                c0 += c;
            }
            j += V * L;
        }
        for jj in j..d {
            for (row, r) in xb.chunks_exact(d).zip(res.chunks_exact(k)) {
                let z = row[jj].widen() - mean[jj];
                for (c, &rc) in r[..kc].iter().enumerate() {
                    grad_t[c * d + jj] = madd::<F>(rc, z, grad_t[c * d + jj]);
                }
            }
        }
    }
    loss
}

/// The logits `(x - mean) theta_t^T + bias` of the rows `x`, `k` classes (`theta_t` class-major,
/// `d` a class), written to `out` (`k` a row).
#[inline(always)]
fn scores_rows<E: Feature, const CG: usize, const L: usize, const F: bool, const W: bool>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let k = bias.len();
    for o in out.chunks_exact_mut(k) {
        o.copy_from_slice(bias);
    }
    let rb = block_rows(d, std::mem::size_of::<E>());
    for (xb, ob) in x.chunks(rb * d).zip(out.chunks_mut(rb * k)) {
        block_logits::<E, CG, L, F, W>(xb, d, mean, theta_t, k, k, ob);
    }
}

/// Calls `$f::<E, CG, L, F, W>($args)` (`W`: the wide tiles) compiled for the best vector
/// instructions this machine has:
/// AVX-512 (16 lanes, tiles of 3 classes, or wider from [`WIDE_TILE_MIN`] classes), AVX2 with
/// FMA (8 lanes, tiles of 2 classes), or as built.
macro_rules! dispatch {
    ($f:ident::<$e:ty>($wide:expr; $($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn v4<E: Feature>(wide: bool, $($arg: $ty),*) $(-> $ret)? {
                // The wide tiles are a build of their own, so the narrow one compiles as
                // before them.
                if wide {
                    $f::<E, 3, 16, true, true>($($arg),*)
                } else {
                    $f::<E, 3, 16, true, false>($($arg),*)
                }
            }
            #[target_feature(enable = "avx2,fma")]
            fn v3<E: Feature>($($arg: $ty),*) $(-> $ret)? {
                $f::<E, 2, 8, true, false>($($arg),*)
            }
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features `v4` is compiled for were detected on this machine.
                return unsafe { v4::<$e>($wide, $($arg),*) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: as above, for `v3`.
                return unsafe { v3::<$e>($($arg),*) };
            }
        }
        $f::<$e, 2, 8, false, false>($($arg),*)
    }};
}

#[allow(clippy::too_many_arguments)]
fn pass_rows_best<E: Feature>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    bias_t: &[f32],
    labels: &[u32],
    grad_t: &mut [f32],
    gbias: &mut [f32],
    logits: &mut [f32],
) -> f64 {
    dispatch!(pass_rows::<E>(
        bias_t.len() >= WIDE_TILE_MIN;
        x: &[E],
        d: usize,
        mean: &[f32],
        theta_t: &[f32],
        bias_t: &[f32],
        labels: &[u32],
        grad_t: &mut [f32],
        gbias: &mut [f32],
        logits: &mut [f32]
    ) -> f64)
}

fn scores_rows_best<E: Feature>(
    x: &[E],
    d: usize,
    mean: &[f32],
    theta_t: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    dispatch!(scores_rows::<E>(
        bias.len() >= WIDE_TILE_MIN;
        x: &[E],
        d: usize,
        mean: &[f32],
        theta_t: &[f32],
        bias: &[f32],
        out: &mut [f32]
    ))
}

/// One problem's parameters `th` (`[d + 1, K]` row-major, the bias row last) as the tiles read
/// them: class-major weights (`d` a class) and the biases; with `relative`, each class's less
/// the last class's, for the first `K - 1` classes (softmax does not change under the shift,
/// and the last class's logit is then 0: one dot product a row fewer).
fn class_major(th: &[f32], d: usize, k: usize, relative: bool) -> (Vec<f32>, Vec<f32>) {
    let kc = if relative { k - 1 } else { k };
    let less = |row: &[f32]| if relative { row[k - 1] } else { 0.0 };
    let mut theta_t = vec![0f32; kc * d];
    for (j, row) in th.chunks_exact(k).take(d).enumerate() {
        for c in 0..kc {
            theta_t[c * d + j] = row[c] - less(row);
        }
    }
    let b = &th[d * k..(d + 1) * k];
    let bias = (0..kc).map(|c| b[c] - less(b)).collect();
    (theta_t, bias)
}

/// One task's sums of a pass over its rows (see [`softmax_fit_raw`]): the cross-entropy, the
/// gradient of the first `K - 1` classes (class-major, `d` a class) and of their biases.
pub(super) struct Sums {
    pub(super) loss: f64,
    pub(super) g_t: Vec<f32>,
    pub(super) g_b: Vec<f32>,
}

impl Sums {
    pub(super) fn new(kc: usize, d: usize) -> Self {
        Self {
            loss: 0.0,
            g_t: vec![0f32; kc * d],
            g_b: vec![0f32; kc],
        }
    }

    /// The tasks' sums added in order (the same rounding whatever the threads did).
    pub(super) fn total(parts: Vec<Sums>, kc: usize, d: usize) -> Self {
        let mut all = Self::new(kc, d);
        for p in parts {
            all.loss += p.loss;
            all.g_t.iter_mut().zip(&p.g_t).for_each(|(a, b)| *a += b);
            all.g_b.iter_mut().zip(&p.g_b).for_each(|(a, b)| *a += b);
        }
        all
    }

    /// Writes the mean gradient over `n` rows to `gb` (`[d + 1, K]`, the bias row last) and
    /// returns the mean cross-entropy. The residuals of a row sum to zero: the last class's
    /// gradient is minus the others'.
    pub(super) fn write(&self, d: usize, k: usize, n: usize, gb: &mut [f32]) -> f64 {
        let kc = k - 1;
        let inv = 1.0 / n.max(1) as f32;
        for j in 0..d {
            let row = &mut gb[j * k..(j + 1) * k];
            let mut last = 0f32;
            for (c, r) in row[..kc].iter_mut().enumerate() {
                let g = self.g_t[c * d + j];
                *r = g * inv;
                last -= g;
            }
            row[kc] = last * inv;
        }
        let row = &mut gb[d * k..];
        row[..kc]
            .iter_mut()
            .zip(&self.g_b)
            .for_each(|(r, g)| *r = g * inv);
        row[kc] = -self.g_b.iter().sum::<f32>() * inv;
        self.loss / n.max(1) as f64
    }
}

/// Softmax regression on a batch of problems of one width, in one pass over each problem's
/// stored features: `xs[b]` is problem b's `[n, d]` row-major features, `means[b]` their
/// training means (the problem is fitted on `x - mean`, which is centred on the fly), `theta`
/// the parameters `[B, d + 1, K]` in centred coordinates (the last row the bias), `labels` the
/// `n` classes (below `K`, at least two classes). Returns per problem the mean cross-entropy,
/// its mean gradient (`[B, d + 1, K]`) and the logits (`[B, n, K]`) less each row's last logit:
/// the same predictions, errors and cross-entropy as the logits themselves.
pub(crate) fn softmax_fit_raw<E: Feature>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    theta: &[f32],
    labels: &[u32],
    d: usize,
    k: usize,
) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    let n = labels.len();
    let kc = k - 1;
    each_problem(xs, means, theta, n, d, k, |x, mean, th, lb, gb| {
        let (theta_t, bias_t) = class_major(th, d, k, true);
        // Fixed groups of rows, each summed in order, and the groups' sums added in order: the
        // same rounding whatever the threads do (rayon's fold and reduce group the rows as the
        // work is stolen, and an early-stopped fit can follow a last-bit difference elsewhere:
        // two runs of one build differed by 0.1 points on a probe).
        let group = task_rows(n);
        let parts: Vec<Sums> = x
            .par_chunks(group * d.max(1))
            .zip(labels.par_chunks(group))
            .zip(lb.par_chunks_mut(group * k))
            .map(|((xr, yr), lr)| {
                let mut s = Sums::new(kc, d);
                s.loss = pass_rows_best(
                    xr, d, mean, &theta_t, &bias_t, yr, &mut s.g_t, &mut s.g_b, lr,
                );
                s
            })
            .collect();
        Sums::total(parts, kc, d).write(d, k, n, gb)
    })
}

/// Calls `one(x, mean, th, lb, gb)` for each problem of a batch ([`softmax_fit_raw`]'s
/// arguments): its features, means and parameters (`[d + 1, K]`), where to write its logits
/// (`[n, K]`) and its gradient (`[d + 1, K]`); `one` returns its mean cross-entropy. Returns the
/// problems' cross-entropies, gradients and logits.
fn each_problem<E>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    theta: &[f32],
    n: usize,
    d: usize,
    k: usize,
    one: impl Fn(&[E], &[f32], &[f32], &mut [f32], &mut [f32]) -> f64,
) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    let (b, p) = (xs.len(), d + 1);
    let mut loss = vec![0f64; b];
    let mut grad = vec![0f32; b * p * k];
    let mut logits = vec![0f32; b * n * k];
    for (((x, mean), (th, gb)), (lb, lossb)) in xs
        .iter()
        .zip(means)
        .zip(theta.chunks_exact(p * k).zip(grad.chunks_exact_mut(p * k)))
        .zip(logits.chunks_exact_mut((n * k).max(1)).zip(loss.iter_mut()))
    {
        *lossb = one(x, mean, th, lb, gb);
    }
    (loss, grad, logits)
}

/// The logits `[B, n, K]` of a batch of problems in centred coordinates: `(x_b - means[b])
/// W_b + bias_b`, with `theta` `[B, d + 1, K]` (the last row the bias) as in
/// [`softmax_fit_raw`].
pub(crate) fn scores_raw<E: Feature>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    theta: &[f32],
    d: usize,
    k: usize,
) -> Vec<f32> {
    let p = d + 1;
    let n = xs.first().map_or(0, |x| x.len() / d.max(1));
    let mut out = vec![0f32; xs.len() * n * k];
    for ((x, mean), (th, ob)) in xs.iter().zip(means).zip(
        theta
            .chunks_exact(p * k)
            .zip(out.chunks_exact_mut((n * k).max(1))),
    ) {
        let (theta_t, bias) = class_major(th, d, k, false);
        ob.par_chunks_mut(TASK_ROWS * k)
            .zip(x.par_chunks(TASK_ROWS * d.max(1)))
            .for_each(|(o, xr)| scores_rows_best(xr, d, mean, &theta_t, &bias, o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random features (some rows shifted far from zero, so centring matters), means, parameters
    /// and labels.
    pub(super) fn problem(
        n: usize,
        d: usize,
        k: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..n * d)
            .map(|i| rng.random_range(-1.0..1.0f32) + (i % d) as f32 * 0.01)
            .collect();
        let mean: Vec<f32> = (0..d)
            .map(|j| (0..n).map(|i| x[i * d + j] as f64).sum::<f64>() as f32 / n as f32)
            .collect();
        let theta: Vec<f32> = (0..(d + 1) * k)
            .map(|_| rng.random_range(-0.5..0.5f32))
            .collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
        (x, mean, theta, y)
    }

    /// The same pass in f64, written plainly: logits, softmax, cross-entropy and gradient.
    pub(super) fn reference(
        x: &[f32],
        mean: &[f32],
        theta: &[f32],
        y: &[u32],
        d: usize,
        k: usize,
    ) -> (f64, Vec<f64>, Vec<Vec<f64>>) {
        let n = y.len();
        let mut loss = 0.0;
        let mut grad = vec![0f64; (d + 1) * k];
        let mut logits = Vec::new();
        for i in 0..n {
            let z: Vec<f64> = (0..d)
                .map(|j| (x[i * d + j] - mean[j]) as f64)
                .chain([1.0])
                .collect();
            let l: Vec<f64> = (0..k)
                .map(|c| (0..=d).map(|j| z[j] * theta[j * k + c] as f64).sum())
                .collect();
            let top = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = l.iter().map(|v| (v - top).exp()).sum();
            loss += top + s.ln() - l[y[i] as usize];
            for c in 0..k {
                let r = (l[c] - top).exp() / s - if c == y[i] as usize { 1.0 } else { 0.0 };
                for j in 0..=d {
                    grad[j * k + c] += r * z[j] / n as f64;
                }
            }
            logits.push(l);
        }
        (loss / n as f64, grad, logits)
    }

    /// `got` (rows of `K`) against the reference logits `want`, each row less its last logit
    /// where `relative` (as the pass writes them), as they are otherwise (as the scores are).
    fn assert_logits(what: &str, got: &[f32], want: &[Vec<f64>], relative: bool) {
        for (i, (g, w)) in got.chunks_exact(want[0].len()).zip(want).enumerate() {
            let shift = if relative { w[w.len() - 1] } else { 0.0 };
            for (c, (&gc, &wc)) in g.iter().zip(w).enumerate() {
                let want = wc - shift;
                assert!(
                    (gc as f64 - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{what} logit {i},{c}: {gc} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_pass_matches_a_plain_f64_computation() {
        // Widths around the vector and segment lengths, class counts around the tiles', row
        // counts that leave partial tiles, blocks and tasks.
        for (n, d, k) in [
            (130, 37, 10),
            (67, 16, 2),
            (5, 1, 3),
            (1100, 48, 11),
            (70, 1030, 4),
            (9, 64, 5),
        ] {
            let (x, mean, theta, y) = problem(n, d, k, (n * d * k) as u64);
            let (want_loss, want_grad, want_logits) = reference(&x, &mean, &theta, &y, d, k);
            let (loss, grad, logits) =
                softmax_fit_raw(&[&x[..]], std::slice::from_ref(&mean), &theta, &y, d, k);
            let what = format!("n {n} d {d} k {k}");
            assert!(
                (loss[0] - want_loss).abs() < 1e-4 * want_loss.max(1.0),
                "{what} loss"
            );
            let top = want_grad.iter().fold(0f64, |a, b| a.max(b.abs()));
            for (i, (g, w)) in grad.iter().zip(&want_grad).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-4 * top.max(1.0),
                    "{what} grad {i}: {g} vs {w}"
                );
            }
            assert_logits(&what, &logits, &want_logits, true);
            let s = scores_raw(&[&x[..]], std::slice::from_ref(&mean), &theta, d, k);
            assert_logits(&what, &s, &want_logits, false);
        }
    }

    #[test]
    fn bfloat16_features_read_as_their_f32_values() {
        let (n, d, k) = (150, 70, 10);
        let (x, mean, theta, y) = problem(n, d, k, 7);
        let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let widened: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
        let (l16, g16, lg16) =
            softmax_fit_raw(&[&xb[..]], std::slice::from_ref(&mean), &theta, &y, d, k);
        let (l32, g32, lg32) = softmax_fit_raw(
            &[&widened[..]],
            std::slice::from_ref(&mean),
            &theta,
            &y,
            d,
            k,
        );
        assert_eq!(l16, l32);
        assert_eq!(g16, g32);
        assert_eq!(lg16, lg32);
    }

    #[test]
    fn a_batch_is_its_problems_one_by_one() {
        let (n, d, k) = (200, 33, 10);
        let (x1, m1, t1, y) = problem(n, d, k, 1);
        let (x2, m2, t2, _) = problem(n, d, k, 2);
        let theta: Vec<f32> = t1.iter().chain(&t2).copied().collect();
        let (l, g, lg) = softmax_fit_raw(
            &[&x1[..], &x2[..]],
            &[m1.clone(), m2.clone()],
            &theta,
            &y,
            d,
            k,
        );
        let (la, ga, lga) = softmax_fit_raw(&[&x1[..]], &[m1], &t1, &y, d, k);
        let (lb, gb, lgb) = softmax_fit_raw(&[&x2[..]], &[m2], &t2, &y, d, k);
        assert_eq!(l, [la[0], lb[0]]);
        assert_eq!(g, [ga, gb].concat());
        assert_eq!(lg, [lga, lgb].concat());
    }

    /// The portable tiles (the AVX2 build's and the one for machines without vector FMA),
    /// which the dispatch only picks on machines without AVX-512: the same numbers as the
    /// plain f64 computation, called directly so that every machine tests them.
    #[test]
    fn the_portable_tiles_match_a_plain_f64_computation() {
        for (n, d, k) in [(130, 37, 10), (67, 48, 2), (70, 1030, 4)] {
            let (x, mean, theta, y) = problem(n, d, k, (n + d + k) as u64);
            let (want_loss, want_grad, want_logits) = reference(&x, &mean, &theta, &y, d, k);
            let kc = k - 1;
            let (theta_t, bias_t) = class_major(&theta, d, k, true);
            let (full_t, bias) = class_major(&theta, d, k, false);
            for fma in [false, true] {
                let (mut g, mut gb, mut lg) =
                    (vec![0f32; kc * d], vec![0f32; kc], vec![0f32; n * k]);
                let loss = if fma {
                    pass_rows::<f32, 2, 8, true, false>(
                        &x, d, &mean, &theta_t, &bias_t, &y, &mut g, &mut gb, &mut lg,
                    )
                } else {
                    pass_rows::<f32, 2, 8, false, false>(
                        &x, d, &mean, &theta_t, &bias_t, &y, &mut g, &mut gb, &mut lg,
                    )
                };
                let what = format!("n {n} d {d} k {k} fma {fma}");
                let loss = loss / n as f64;
                assert!(
                    (loss - want_loss).abs() < 1e-4 * want_loss.max(1.0),
                    "{what}"
                );
                let top = want_grad.iter().fold(0f64, |a, b| a.max(b.abs()));
                for j in 0..d {
                    for c in 0..kc {
                        let got = g[c * d + j] as f64 / n as f64;
                        // Relative to the last class, as the pass sums them.
                        let want = want_grad[j * k + c];
                        assert!(
                            (got - want).abs() < 1e-4 * top.max(1.0),
                            "{what} grad {j},{c}"
                        );
                    }
                }
                for (c, &v) in gb.iter().enumerate() {
                    let want = want_grad[d * k + c];
                    assert!((v as f64 / n as f64 - want).abs() < 1e-4, "{what} bias {c}");
                }
                assert_logits(&what, &lg, &want_logits, true);
                let mut out = vec![0f32; n * k];
                if fma {
                    scores_rows::<f32, 2, 8, true, false>(&x, d, &mean, &full_t, &bias, &mut out);
                } else {
                    scores_rows::<f32, 2, 8, false, false>(&x, d, &mean, &full_t, &bias, &mut out);
                }
                assert_logits(&what, &out, &want_logits, false);
            }
        }
    }

    /// The wide AVX-512 tiles sum each row and class's logit, and each feature and class's
    /// gradient, in the order a tile of one class does (as the narrower tiles before them did):
    /// the same bits, so that a fit follows the same path as before.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_wide_tiles_give_the_bits_of_one_class_tiles() {
        if !(std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        fn check<E: Feature>(x: &[E], mean: &[f32], d: usize, k: usize, what: &str) {
            let rows = x.len() / d;
            let mut rng = rand::rngs::StdRng::seed_from_u64(5);
            let kc = k - 1;
            let theta_t: Vec<f32> = (0..kc * d)
                .map(|_| rng.random_range(-0.5..0.5f32))
                .collect();
            let res: Vec<f32> = (0..rows * k)
                .map(|_| rng.random_range(-1.0..1.0f32))
                .collect();
            let (mut wide, mut one) = (vec![0f32; rows * k], vec![0f32; rows * k]);
            let (mut gwide, mut gone) = (vec![0f32; kc * d], vec![0f32; kc * d]);
            // SAFETY: AVX-512F and FMA were detected above; the slices are the sizes the tiles
            // read (rows x d features, kc x d parameters, rows x k logits and residuals).
            unsafe {
                block_logits::<E, 3, 16, true, true>(x, d, mean, &theta_t, kc, k, &mut wide);
                for f0 in (0..d).step_by(SEGMENT) {
                    let seg = (f0, (f0 + SEGMENT).min(d));
                    for r in 0..rows {
                        for c in 0..kc {
                            let (xr, lr) = (&x[r * d..], &mut one[r * k..]);
                            logits_tile16::<E, 1, 1>(xr, d, mean, &theta_t, c, seg, k, lr);
                        }
                    }
                }
                let mut j = 0;
                while j + 32 <= d {
                    grad_tile16::<E, GRAD_TILE_CLASSES>(x, d, mean, &res, k, 0, j, &mut gwide);
                    grad_tile16::<E, 1>(x, d, mean, &res, k, GRAD_TILE_CLASSES, j, &mut gwide);
                    for c in 0..kc {
                        grad_tile16::<E, 1>(x, d, mean, &res, k, c, j, &mut gone);
                    }
                    j += 32;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&one), "{what}: logits");
            assert_eq!(bits(&gwide), bits(&gone), "{what}: gradient");
            assert!(wide.iter().any(|&v| v != 0.0) && gwide.iter().any(|&v| v != 0.0));
        }
        // Ten classes less the last one past a full gradient tile, rows that leave a partial
        // tile of 4, widths across a segment and a partial vector.
        let (n, d, k) = (7, 1061, GRAD_TILE_CLASSES + 2);
        let (x, mean, _, _) = problem(n, d, k, 21);
        check(&x, &mean, d, k, "f32");
        let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
        check(&xb, &mean, d, k, "bf16");
    }

    /// The sums are grouped by the number of rows alone: one, two and three threads give the
    /// same bits (a fit that stops early can follow a last-bit difference).
    #[test]
    fn the_pass_gives_the_same_bits_on_any_number_of_threads() {
        let (n, d, k) = (5000, 40, 10);
        let (x, mean, theta, y) = problem(n, d, k, 11);
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let fit =
                        softmax_fit_raw(&[&x[..]], std::slice::from_ref(&mean), &theta, &y, d, k);
                    let xs = [&x[..]];
                    let vars = crate::host::centred_variances(
                        &xs,
                        std::slice::from_ref(&mean),
                        d,
                        &crate::cancel::Cancel::default(),
                    )
                    .unwrap();
                    (fit, vars)
                })
        };
        let one = on(1);
        assert_eq!(one, on(2));
        assert_eq!(one, on(3));
    }

    /// Not a test: the pass against the dot-product kernel it replaces, on a conv1-wide tap
    /// (`cargo test --release -- --ignored --nocapture pass_speed`).
    #[test]
    #[ignore]
    fn pass_speed() {
        for (n, d, k) in [
            (4096, 25088, 10),
            (20000, 784, 10),
            (20000, 128, 10),
            (10000, 128, 2),
        ] {
            let (x, mean, theta, y) = problem(n, d, k, 3);
            let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let mut z = Vec::with_capacity(n * (d + 1));
            for row in x.chunks_exact(d) {
                z.extend(row.iter().zip(&mean).map(|(a, m)| a - m));
                z.push(1.0);
            }
            let time = |f: &dyn Fn()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    f();
                }
                t.elapsed().as_secs_f64() / 3.0
            };
            let old = time(&|| {
                std::hint::black_box(crate::host::softmax_fit(&z, &theta, &y, 1, d + 1, k));
            });
            let new = time(&|| {
                std::hint::black_box(softmax_fit_raw(
                    &[&x[..]],
                    std::slice::from_ref(&mean),
                    &theta,
                    &y,
                    d,
                    k,
                ));
            });
            let b16 = time(&|| {
                std::hint::black_box(softmax_fit_raw(
                    &[&xb[..]],
                    std::slice::from_ref(&mean),
                    &theta,
                    &y,
                    d,
                    k,
                ));
            });
            let gflop = (n * d * (k - 1) * 4) as f64 / 1e9;
            println!(
                "n {n} d {d}: dot kernel {:.1} ms ({:.1} GFLOP/s), tiles f32 {:.1} ms ({:.1}), bf16 {:.1} ms ({:.1})",
                old * 1e3, gflop / old, new * 1e3, gflop / new, b16 * 1e3, gflop / b16
            );
        }
    }
}
