//! The coarse pass on Intel's Advanced Matrix Extensions (AMX, Sapphire Rapids and later): one
//! `tdpbf16ps` multiplies a 16 x 32 bfloat16 tile by a 32 x 16 one into 16 x 16 f32 sums, 16
//! times the products of an AVX-512 `vdpbf16ps`, in about 16 cycles. The products stop being
//! the pass's cost: it waits on the memory that streams the features past them (on a 2-core
//! Xeon VM, the pass reads 20 to 25 GB/s, against 28 for a plain read).
//!
//! The same function as [`super::pass_rows`] (weights and residuals rounded to bfloat16, sums
//! in f32), summed in another order, a block of 16 or 32 rows at a time ([`block_rows`]):
//! - the logits are a tile of 16 rows by the `K - 1` classes for each 16 rows, adding the
//!   products of 32 features at a time: the rows are read straight from the stored features,
//!   the weights from a copy laid out as the instruction reads its second operand (pairs of
//!   features side by side for each class);
//! - the gradient is the residuals (classes by the block's rows) times the rows, 32 features
//!   at a time: the rows are interleaved in pairs into a small buffer (the second operand's
//!   layout again), and the two halves of 16 features come out in the interleaving's order,
//!   which the end of the pass undoes.
//!
//! Rows past the last whole block, and features past the last whole 32, take the AVX-512 pass
//! and plain products.
//!
//! Linux hands the tiles' 8 KB of state to a process only when asked (`arch_prctl`), which
//! [`available`] does once.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use half::bf16;

use crate::host::pass::{block_residuals, start_logits};

/// Features of one product: a tile row of 32 bfloat16.
const STEP: usize = 32;

/// Most classes the tiles hold (relative to the last: `K - 1`).
pub(super) const MAX_REL_CLASSES: usize = 16;

/// Whether this machine and system run AMX bfloat16 products for this process: the CPU has
/// them, the system saves their state (XCR0), and Linux granted this process that state.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !super::available() || !cfg!(target_os = "linux") {
            return false;
        }
        // Leaf 7's EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
        let leaf7 = __cpuid_count(7, 0);
        if __get_cpuid_max(0).0 < 7 || leaf7.edx >> 22 & 1 == 0 || leaf7.edx >> 24 & 1 == 0 {
            return false;
        }
        // SAFETY: AVX-512 (checked above) implies OSXSAVE, so XGETBV runs.
        let xcr0 = unsafe { _xgetbv(0) };
        // Bits 17 and 18: the tiles' configuration and data.
        if xcr0 & (3 << 17) != 3 << 17 {
            return false;
        }
        request_tiles()
    })
}

/// Asks Linux for the tiles' state for this process (`ARCH_REQ_XCOMP_PERM` with
/// `XFEATURE_XTILEDATA`); false where it refuses.
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes what the process may use.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tiles() -> bool {
    false
}

/// The weights `wb` (`kc` classes of `d`, bfloat16) as the logits' second operand: for each
/// pair of features of the whole 32s, the `kc` classes' pairs side by side.
pub(super) fn pair_weights(wb: &[bf16], d: usize, kc: usize) -> Vec<bf16> {
    let whole = d / STEP * STEP;
    let mut out = vec![bf16::ZERO; whole * kc];
    for (j2, row) in out.chunks_exact_mut(2 * kc).enumerate() {
        for c in 0..kc {
            row[2 * c] = wb[c * d + 2 * j2];
            row[2 * c + 1] = wb[c * d + 2 * j2 + 1];
        }
    }
    out
}

/// The tiles' shapes (palette 1): rows and bytes a row of each of the 8 tiles.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl Config {
    /// The pass's tiles for `kc` classes and blocks of `rows` (16 or 32):
    /// - 0, 1: the logits of a block's halves of 16 rows (by `kc` f32);
    /// - 2: 16 rows of 32 features; 3: the weights of 32 features (16 pairs by `kc` pairs);
    /// - 4, 5: the gradient of 16 features for `kc` classes (the interleaving's two halves);
    /// - 6: the residuals (`kc` classes by the block's rows); 7: the block's rows' 16
    ///   features, in pairs of rows.
    fn new(kc: usize, rows: usize) -> Self {
        let narrow = (4 * kc) as u16;
        let mut c = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        let tiles = [
            (16, narrow),
            (16, narrow),
            (16, 64),
            (16, narrow),
            (kc as u8, 64),
            (kc as u8, 64),
            (kc as u8, 2 * rows as u16),
            ((rows / 2) as u8, 64),
        ];
        for (t, (rows, colsb)) in tiles.into_iter().enumerate() {
            c.rows[t] = rows;
            c.colsb[t] = colsb;
        }
        c
    }
}

/// 64-byte aligned scratch for the tiles' operands.
#[repr(C, align(64))]
struct Scratch {
    /// Two buffers of a block's 32 features in pairs of rows: the unpacks' low halves, then
    /// their high halves.
    rows: [[[u16; MAX_ROWS * 16]; 2]; 2],
    /// The residuals in bfloat16, a class's rows to a 64-byte row.
    res: [[u16; MAX_ROWS]; MAX_REL_CLASSES],
}

/// Where the gradient of feature `f` of a 32 (0..32) sits after the pairs' interleaving: the
/// unpacks take, in each 128-bit lane L, features `8L..8L + 4` into the first tile's columns
/// `4L..4L + 4` and `8L + 4..8L + 8` into the second's.
fn interleaved(f: usize) -> usize {
    let (lane, q) = (f / 8, f % 8);
    if q < 4 {
        4 * lane + q
    } else {
        16 + 4 * lane + q - 4
    }
}

/// Rows of a block of features `d` wide: 32, or 16 where 32 rows would not stay in the
/// second-level cache with the gradient's sums and the weights between the block's logits and
/// its gradient.
fn block_rows(d: usize) -> usize {
    if MAX_ROWS * d * 2 <= BLOCK_BYTES {
        MAX_ROWS
    } else {
        16
    }
}

/// Steps of 32 features the logits ask for their rows ahead.
const LOGITS_AHEAD: usize = 8;

/// Steps the gradient asks for its rows and sums ahead.
const GRAD_AHEAD: usize = 2;

/// Most rows of a block: two tiles of 16.
const MAX_ROWS: usize = 32;

/// Bytes of a block of 32 rows that stays in the second-level cache (2 MB on the Xeons with
/// AMX) beside the gradient's sums and the weights.
const BLOCK_BYTES: usize = 800 << 10;

/// [`super::pass_rows`]' contract with the weights also as [`pair_weights`] lays them out
/// (`wv`). Blocks of 16 or 32 rows run on the tiles, the rest on [`super::pass_rows`].
///
/// # Safety
/// [`available`] must have returned true, and `kc = base.len()` be at most
/// [`MAX_REL_CLASSES`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(super) unsafe fn pass_rows(
    x: &[bf16],
    d: usize,
    wb: &[bf16],
    wv: &[bf16],
    base: &[f32],
    labels: &[u32],
    g_t: &mut [f32],
    g_b: &mut [f32],
    rsum: &mut [f64],
    logits: &mut [f32],
) -> f64 {
    let kc = base.len();
    let k = kc + 1;
    let rows = labels.len();
    let whole = d / STEP * STEP;
    assert!((1..=MAX_REL_CLASSES).contains(&kc) && x.len() == rows * d);
    assert!(wb.len() == kc * d && wv.len() == whole * kc && g_t.len() == kc * d);
    assert!(g_b.len() == kc && rsum.len() == kc && logits.len() == rows * k);
    let rb = block_rows(d);
    // Features narrower than one product take the AVX-512 pass.
    let blocks = if whole == 0 { 0 } else { rows / rb };
    let mut loss = 0f64;
    if blocks > 0 {
        // The gradient of the whole 32s, in the interleaving's order within each 32.
        let mut gi = vec![0f32; kc * whole];
        let mut scratch = Scratch {
            rows: [[[0; MAX_ROWS * 16]; 2]; 2],
            res: [[0; MAX_ROWS]; MAX_REL_CLASSES],
        };
        let mut res = [0f32; MAX_ROWS * (MAX_REL_CLASSES + 1)];
        let config = Config::new(kc, rb);
        // SAFETY: `available` said the tiles run here; the configuration is 64 valid bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
        let (xs, ls, gs) = (2 * d, 4 * k, 4 * whole);
        let steps = whole / STEP;
        for b in 0..blocks {
            let xb = &x[b * rb * d..(b + 1) * rb * d];
            let lb = &mut logits[b * rb * k..(b + 1) * rb * k];
            let yb = &labels[b * rb..(b + 1) * rb];
            let next = x.get((b + 1) * rb * d..).unwrap_or_default();
            let next = &next[..next.len().min(rb * d)];
            start_logits(lb, base);
            // SAFETY: the tiles read 16 rows of `kc` floats at stride `k` from the block's
            // logits, 16 rows of 32 features at stride `d` from its rows, and 16 pairs of
            // `kc` classes from the weights' copy, all within the lengths asserted above.
            unsafe {
                let (xp, lp, wp) = (xb.as_ptr(), lb.as_mut_ptr(), wv.as_ptr());
                let lp2 = lp.add(16 * k);
                asm!(
                    "tileloadd tmm0, [{a} + {s}*1]",
                    a = in(reg) lp, s = in(reg) ls,
                    options(nostack, readonly)
                );
                if rb == 32 {
                    asm!(
                        "tileloadd tmm1, [{a} + {s}*1]",
                        a = in(reg) lp2, s = in(reg) ls,
                        options(nostack, readonly)
                    );
                }
                for t in 0..steps {
                    let j = t * STEP;
                    // The rows 8 steps on (past the block's end, the next block's first),
                    // asked for into the second-level cache: the tiles' loads would otherwise
                    // wait on memory for each of the 16 rows.
                    let ahead = j + LOGITS_AHEAD * STEP;
                    let (src, at) = match ahead < whole {
                        true => (xb, ahead),
                        false => (next, ahead - whole),
                    };
                    if at < whole {
                        for row in src.chunks_exact(d) {
                            _mm_prefetch::<_MM_HINT_T1>(row.as_ptr().add(at).cast());
                        }
                    }
                    asm!(
                        "tileloadd tmm3, [{w} + {ws}*1]",
                        "tileloadd tmm2, [{x0} + {xs}*1]",
                        "tdpbf16ps tmm0, tmm2, tmm3",
                        w = in(reg) wp.add(j * kc), ws = in(reg) 4 * kc,
                        x0 = in(reg) xp.add(j), xs = in(reg) xs,
                        options(nostack, readonly)
                    );
                    if rb == 32 {
                        asm!(
                            "tileloadd tmm2, [{x1} + {xs}*1]",
                            "tdpbf16ps tmm1, tmm2, tmm3",
                            x1 = in(reg) xp.add(16 * d + j), xs = in(reg) xs,
                            options(nostack, readonly)
                        );
                    }
                }
                asm!(
                    "tilestored [{a} + {s}*1], tmm0",
                    a = in(reg) lp, s = in(reg) ls,
                    options(nostack)
                );
                if rb == 32 {
                    asm!(
                        "tilestored [{a} + {s}*1], tmm1",
                        a = in(reg) lp2, s = in(reg) ls,
                        options(nostack)
                    );
                }
            }
            if whole < d {
                for (r, l) in lb.chunks_exact_mut(k).enumerate() {
                    let xr = &xb[r * d..(r + 1) * d];
                    for (c, lc) in l[..kc].iter_mut().enumerate() {
                        let w = &wb[c * d..(c + 1) * d];
                        let mut s = 0f32;
                        for jj in whole..d {
                            s += xr[jj].to_f32() * w[jj].to_f32();
                        }
                        *lc += s;
                    }
                }
            }
            let res = &mut res[..rb * k];
            loss += block_residuals(lb, yb, res, g_b);
            for (c, (line, sum)) in scratch.res.iter_mut().zip(rsum.iter_mut()).enumerate() {
                for (r, v) in line[..rb].iter_mut().enumerate() {
                    let h = bf16::from_f32(res[r * k + c]);
                    *sum += f64::from(h.to_f32());
                    *v = h.to_bits();
                }
            }
            // SAFETY: the residuals' tile reads `kc` rows of the block's rows' bfloat16 from
            // `scratch.res`.
            unsafe {
                asm!(
                    "tileloadd tmm6, [{r} + {s}*1]",
                    r = in(reg) scratch.res.as_ptr(), s = in(reg) 2 * MAX_ROWS,
                    options(nostack, readonly)
                );
            }
            // One 32 of features behind the interleaving, so that the tiles read a buffer
            // whose stores have landed (a tile load right after the stores waits for them).
            for t in 0..=steps {
                if t < steps {
                    let j = t * STEP;
                    // SAFETY: each pair of rows reads 32 features from `j + 32 <= d`.
                    unsafe {
                        let xp = xb.as_ptr();
                        let buf = &mut scratch.rows[t % 2];
                        let (lo, hi) = (buf[0].as_mut_ptr(), buf[1].as_mut_ptr());
                        for p in 0..rb / 2 {
                            let a = _mm512_loadu_si512(xp.add(2 * p * d + j).cast());
                            let b = _mm512_loadu_si512(xp.add((2 * p + 1) * d + j).cast());
                            _mm512_store_si512(lo.add(32 * p).cast(), _mm512_unpacklo_epi16(a, b));
                            _mm512_store_si512(hi.add(32 * p).cast(), _mm512_unpackhi_epi16(a, b));
                        }
                    }
                    // The rows and the gradient's sums 2 steps on, into the first-level cache.
                    if t + GRAD_AHEAD < steps {
                        let ja = j + GRAD_AHEAD * STEP;
                        for row in xb.chunks_exact(d) {
                            // SAFETY: `ja < whole`, within the row.
                            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(ja).cast()) };
                        }
                        for c in 0..kc {
                            // SAFETY: `ja + 16 < whole`, within the class's sums.
                            unsafe {
                                let g = gi.as_ptr().add(c * whole + ja);
                                _mm_prefetch::<_MM_HINT_T0>(g.cast());
                                _mm_prefetch::<_MM_HINT_T0>(g.add(16).cast());
                            }
                        }
                    }
                }
                if t == 0 {
                    continue;
                }
                let j = (t - 1) * STEP;
                let buf = &scratch.rows[(t - 1) % 2];
                // SAFETY: the gradient's tiles read and write `kc` rows of 16 floats at
                // stride `whole` from column `j` (and `j + 16`) of `gi`; the rows' tile reads
                // the buffer written a step before.
                unsafe {
                    let g = gi.as_mut_ptr().add(j);
                    asm!(
                        "tileloadd tmm4, [{g0} + {gs}*1]",
                        "tileloadd tmm5, [{g1} + {gs}*1]",
                        "tileloadd tmm7, [{lo} + {rs}*1]",
                        "tdpbf16ps tmm4, tmm6, tmm7",
                        "tileloadd tmm7, [{hi} + {rs}*1]",
                        "tdpbf16ps tmm5, tmm6, tmm7",
                        "tilestored [{g0} + {gs}*1], tmm4",
                        "tilestored [{g1} + {gs}*1], tmm5",
                        g0 = in(reg) g, g1 = in(reg) g.add(16), gs = in(reg) gs,
                        lo = in(reg) buf[0].as_ptr(),
                        hi = in(reg) buf[1].as_ptr(),
                        rs = in(reg) 64usize,
                        options(nostack)
                    );
                }
            }
            if whole < d {
                for (r, xr) in xb.chunks_exact(d).enumerate() {
                    for c in 0..kc {
                        let rc = bf16::from_bits(scratch.res[c][r]).to_f32();
                        let g = &mut g_t[c * d..(c + 1) * d];
                        for jj in whole..d {
                            g[jj] += rc * xr[jj].to_f32();
                        }
                    }
                }
            }
        }
        // SAFETY: gives the tiles' state back (the thread's next user loads its own shapes).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
        for (gc, ic) in g_t.chunks_exact_mut(d).zip(gi.chunks_exact(whole)) {
            for (g32, i32) in gc.chunks_exact_mut(STEP).zip(ic.chunks_exact(STEP)) {
                for (f, g) in g32.iter_mut().enumerate() {
                    *g += i32[interleaved(f)];
                }
            }
        }
    }
    let done = blocks * rb;
    if done < rows {
        // SAFETY: the caller's contract includes the AVX-512 pass's.
        loss += unsafe {
            super::pass_rows(
                &x[done * d..],
                d,
                wb,
                base,
                &labels[done..],
                g_t,
                g_b,
                rsum,
                &mut logits[done * k..],
            )
        };
    }
    loss
}
