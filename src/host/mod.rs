//! Host kernels: one pass over a CPU tensor's memory where a chain of candle operations would
//! make several, each writing a fresh tensor (on two cores, a profile of `untrained-mlp` spent a
//! quarter of its cycles clearing the pages of such temporaries). Every kernel here has a candle
//! form that runs on other devices and types; the tests hold the two to the same numbers.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor};

mod conv;
mod pass;
mod pool;
mod rows;
pub(crate) use conv::conv2d;
pub(crate) use gram::{centred_gram, GRAM_BLOCK};
pub(crate) use pass::{coarse_available, scores_raw, softmax_fit_coarse, softmax_fit_raw, Feature};
pub(crate) use pool::max_pool2d;
pub(crate) use rows::RowSink;

/// `fn NAME(args) -> R = BODY;` (or `fn NAME<E: Bound>(args)`) defines `NAME`, which calls the
/// `#[inline(always)]` function `BODY` compiled for AVX2 and FMA when the machine has them (the
/// vector instructions the loops here are written for), and as built otherwise.
macro_rules! vectorised {
    ($(#[$m:meta])* fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$m])*
        fn $name $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn fast $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features `fast` is compiled for were detected on this machine.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

// After the macro, which they use.
mod chain;
mod gram;
pub(crate) use chain::{chain_forward, Step};

/// Calls `f` with the elements of `t` when it is an f32 tensor in CPU memory laid out
/// contiguously (a view of rows of a bigger tensor counts), and returns its result; `None`
/// otherwise.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    with_f32_all(&[t], |v| f(v[0]))
}

/// [`with_f32`] for several tensors at once: `None` unless every one qualifies.
pub(crate) fn with_f32_all<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Option<R> {
    let held: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut views = Vec::with_capacity(ts.len());
    for (storage, layout) in &held {
        let (start, end) = layout.contiguous_offsets()?;
        match &**storage {
            Storage::Cpu(CpuStorage::F32(v)) => views.push(&v[start..end]),
            _ => return None,
        }
    }
    Some(f(&views))
}

/// The elements of CPU tensors that hold stored features, for the kernels generic over
/// [`Feature`]: all f32 or all bfloat16.
pub(crate) enum Views<'a> {
    F32(Vec<&'a [f32]>),
    Bf16(Vec<&'a [half::bf16]>),
}

/// Calls `f` with the elements of `ts` when every one is a contiguous CPU tensor and all are f32
/// or all bfloat16; `None` otherwise.
pub(crate) fn with_views<R>(ts: &[&Tensor], f: impl FnOnce(Views<'_>) -> R) -> Option<R> {
    let held: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let (mut f32s, mut bf16s) = (Vec::new(), Vec::new());
    for (storage, layout) in &held {
        let (start, end) = layout.contiguous_offsets()?;
        match &**storage {
            Storage::Cpu(CpuStorage::F32(v)) => f32s.push(&v[start..end]),
            Storage::Cpu(CpuStorage::BF16(v)) => bf16s.push(&v[start..end]),
            _ => return None,
        }
    }
    match (f32s.is_empty(), bf16s.is_empty()) {
        (_, true) => Some(f(Views::F32(f32s))),
        (true, false) => Some(f(Views::Bf16(bf16s))),
        (false, false) => None,
    }
}

/// Asks the kernel to back the memory of `s` with huge pages (2 MB) where transparent huge
/// pages are enabled on request (`madvise`): a snapshot's fresh f32 features, gigabytes that are
/// written once, then fault in 512 times fewer pages. A hint: only the whole huge pages inside
/// `s` are named, and nothing changes in what the memory holds.
pub(crate) fn advise_huge_slice<T>(s: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (ptr, len) = (s.as_mut_ptr() as usize, std::mem::size_of_val(s));
        let first = ptr.next_multiple_of(HUGE);
        let last = (ptr + len) / HUGE * HUGE;
        if last > first {
            // SAFETY: the range lies inside `s`, which the caller holds, and MADV_HUGEPAGE
            // changes how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = s;
}

/// While alive, candle's CPU operations run on one thread each: for callers that run several
/// independent computations at once, one per core (two datasets of `untrained-mlp` side by
/// side, each splitting its products over both cores as well, ran 1.4x slower on two cores than
/// with one thread each). Candle reads its thread count from `RAYON_NUM_THREADS` before each
/// product; this sets it to 1 and puts the earlier value back on drop. Rust's own reads and
/// writes of the environment are serialised by the standard library.
pub(crate) struct SerialProducts(Option<std::ffi::OsString>);

impl SerialProducts {
    pub(crate) fn begin() -> Self {
        let was = std::env::var_os("RAYON_NUM_THREADS");
        std::env::set_var("RAYON_NUM_THREADS", "1");
        Self(was)
    }
}

impl Drop for SerialProducts {
    fn drop(&mut self) {
        match self.0.take() {
            Some(v) => std::env::set_var("RAYON_NUM_THREADS", v),
            None => std::env::remove_var("RAYON_NUM_THREADS"),
        }
    }
}

/// LeakyReLU with slope `s`: `x` where `x > 0`, `s x` elsewhere (for `s <= 1` this is
/// `max(x, s x)`, for `s > 1` `min(x, s x)`), in one pass on the CPU.
struct LeakyRelu(f32);

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky-relu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_operand("leaky-relu", (storage, layout))?;
        let mut out = Vec::with_capacity(x.len());
        leaky_into_best(x, self.0, out.spare_capacity_mut());
        // SAFETY: `leaky_into_best` wrote one value for each of `x`'s.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let slope = arg.gt(0f32)?.where_cond(
            &arg.ones_like()?,
            &arg.ones_like()?.affine(f64::from(self.0), 0.0)?,
        )?;
        Ok(Some(grad_res.mul(&slope)?))
    }
}

/// ReLU of `x` as candle computes it (`max(x, 0)`: a NaN becomes 0) where `x` is an f32 tensor
/// in CPU memory, in one pass split over the cores; `None` elsewhere. For reading features
/// only (it has no backward pass): candle's runs on one core, about 1 s of mnist-convnet's
/// 50,000-image snapshot while the other core waited.
pub(crate) fn relu(x: &Tensor) -> Option<candle_core::Result<Tensor>> {
    host_f32(x).then(|| x.apply_op1_no_bwd(&Relu))
}

/// See [`relu`].
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let x = f32_operand("relu", (storage, layout))?;
        let mut out = Vec::with_capacity(x.len());
        out.par_extend(x.par_iter().map(|&v| v.max(0f32)));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Writes LeakyReLU(`x`) with slope `s` to `out` (the same length).
#[inline(always)]
fn leaky_into(x: &[f32], s: f32, out: &mut [MaybeUninit<f32>]) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(if x > 0.0 { x } else { x * s });
    }
}

vectorised! {
    /// [`leaky_into`], vectorised.
    fn leaky_into_best(x: &[f32], s: f32, out: &mut [MaybeUninit<f32>]) = leaky_into;
}

/// Whether the host kernels can read `t` in place: an f32 tensor in CPU memory laid out
/// contiguously.
fn host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.layout().contiguous_offsets().is_some()
}

/// The elements of an f32 storage of a custom op (`op`, for the message), laid out
/// contiguously.
fn f32_operand<'a>(
    op: &str,
    (storage, layout): (&'a CpuStorage, &Layout),
) -> candle_core::Result<&'a [f32]> {
    let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        candle_core::bail!("{op}: a contiguous f32 tensor is expected");
    };
    Ok(&v[start..end])
}

/// [`f32_operand`] of the three storages of a custom op.
fn f32_operands<'a>(
    op: &str,
    x: (&'a CpuStorage, &Layout),
    w: (&'a CpuStorage, &Layout),
    b: (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    Ok((
        f32_operand(op, x)?,
        f32_operand(op, w)?,
        f32_operand(op, b)?,
    ))
}

/// LeakyReLU with slope `slope` (see [`LeakyRelu`]) as one host pass where `x` is an f32 tensor
/// in CPU memory; `None` elsewhere (the caller uses candle's operations).
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> Option<candle_core::Result<Tensor>> {
    host_f32(x).then(|| x.apply_op1(LeakyRelu(slope as f32)))
}

/// The products' parallelism as candle chooses it (see [`SerialProducts`]).
fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Writes `x W^T + b` (`x` row-major `m x k`, `W` `n x k`, `b` of `n`) to every one of `out`'s
/// `m x n` values (row-major) as one product that starts from the bias rows, where candle makes
/// the product and then a second pass to add the bias.
pub(crate) fn linear_into(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    out: &mut [MaybeUninit<f32>],
) {
    assert!(x.len() == m * k && w.len() == n * k && b.len() == n && out.len() == m * n);
    // A zero bias (an untrained layer's) adds nothing: gemm then writes the output without
    // reading it, and the buffer needs no bias rows first (the copy was 5% of
    // `untrained-mlp`). The sums are the same either way: zero plus the product is the product.
    let read_bias = k == 0 || b.iter().any(|&v| v != 0.0);
    if read_bias && m > 0 {
        // The bias rows, by doubling copies (one small copy per row costs more than the bytes).
        for (o, &v) in out.iter_mut().zip(b) {
            o.write(v);
        }
        let mut filled = n;
        while filled < m * n {
            let more = filled.min(m * n - filled);
            out.copy_within(..more, filled);
            filled += more;
        }
    }
    // SAFETY: `out` holds `m x n` row-major values, `x` is `m x k` row-major and `W^T` is read
    // through `w`'s `n x k` row-major buffer with swapped strides: every index gemm forms from
    // these sizes and strides lies inside the slices asserted above. Without `read_bias` (so
    // `k > 0`) gemm does not read the output and writes every one of its values; with it, every
    // value was written just above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            read_bias,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// `x W^T + b` (`x` `[m, k]`, `W` `[n, k]`, `b` `[n]`) as one product that starts from the bias
/// rows, where candle makes the product and then a second pass to add the bias.
struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
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
        let (x, w, b) = f32_operands("linear", (xs, xl), (ws, wl), (bs, bl))?;
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k2 != k || b.len() != n {
            candle_core::bail!(
                "linear: shapes {:?} {:?} {:?}",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        linear_into(x, w, b, (m, k, n), &mut out.spare_capacity_mut()[..m * n]);
        // SAFETY: `linear_into` wrote every one of the `m x n` values.
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.matmul(w)?), Some(g.t()?.matmul(x)?), Some(g.sum(0)?)))
    }
}

/// `x W^T + b` as one host product where `x` (`[m, k]`), `W` and `b` are f32 tensors in CPU
/// memory laid out contiguously; `None` elsewhere (the caller uses candle's operations).
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Option<candle_core::Result<Tensor>> {
    let host =
        [x, w, b].into_iter().all(host_f32) && x.rank() == 2 && w.rank() == 2 && b.rank() == 1;
    host.then(|| x.apply_op3(w, b, Linear))
}

/// Most classes for which [`softmax_fit`] is used: beyond, a row's `K` dot products are better
/// left to candle's blocked products.
pub(crate) const SOFTMAX_FIT_MAX_CLASSES: usize = 32;

/// Rows per task of [`softmax_fit`].
const FIT_ROWS: usize = 1024;

/// Rows per block of [`softmax_rows`]: the block's features are read twice (logits, then
/// gradient), the second time from cache.
const ROW_BLOCK: usize = 64;

/// Features per block of [`softmax_rows`]: the parameters' and the gradient's slices of a block
/// (`K` x 512 floats, 20 KB at ten classes) stay in the first-level cache across the block's
/// rows, where whole rows of a wide tap (25,088 features, 1 MB of parameters) would stream
/// them from the second level once a row.
const FEATURE_BLOCK: usize = 512;

/// One problem's softmax-regression pass over some rows: for the row-major `rows x p` matrix
/// `z`, the parameters `theta_t` (`K x p`, class-major, each class's minus the last class's) and
/// the labels, the summed cross-entropy, the summed gradient
/// `sum_i (softmax(z_i theta) - e_{y_i}) z_i^T` of the first `K - 1` classes added into `grad_t`
/// (`K x p`; the last class's is minus their sum), and the logits relative to the last class's
/// written to `logits` (`rows x K`). Rows go in blocks of [`ROW_BLOCK`], features in blocks of
/// [`FEATURE_BLOCK`].
#[inline(always)]
fn softmax_rows(
    z: &[f32],
    p: usize,
    theta_t: &[f32],
    labels: &[u32],
    grad_t: &mut [f32],
    logits: &mut [f32],
) -> f64 {
    let k = theta_t.len() / p;
    let mut loss = 0f64;
    let mut res = [0f32; ROW_BLOCK * SOFTMAX_FIT_MAX_CLASSES];
    for ((zb, yb), lb) in z
        .chunks(ROW_BLOCK * p)
        .zip(labels.chunks(ROW_BLOCK))
        .zip(logits.chunks_mut(ROW_BLOCK * k))
    {
        // Logits relative to the last class's (softmax does not change under a shift): one
        // dot product a row fewer.
        lb.fill(0.0);
        for f0 in (0..p).step_by(FEATURE_BLOCK) {
            let f1 = (f0 + FEATURE_BLOCK).min(p);
            for (row, l) in zb.chunks_exact(p).zip(lb.chunks_exact_mut(k)) {
                for (lc, th) in l.iter_mut().zip(theta_t.chunks_exact(p)).take(k - 1) {
                    *lc += dot(&row[f0..f1], &th[f0..f1]);
                }
            }
        }
        let rows = yb.len();
        loss += softmax_residuals(lb, yb, k, &mut res[..rows * k]);
        // The residuals of a row sum to zero, so the last class's gradient is minus the sum of
        // the others' (filled in by the caller): one pass a row fewer.
        for f0 in (0..p).step_by(FEATURE_BLOCK) {
            let f1 = (f0 + FEATURE_BLOCK).min(p);
            for (row, r) in zb.chunks_exact(p).zip(res.chunks_exact(k)) {
                for (g, &rc) in grad_t.chunks_exact_mut(p).zip(r).take(k - 1) {
                    for (gj, &zj) in g[f0..f1].iter_mut().zip(&row[f0..f1]) {
                        *gj += rc * zj;
                    }
                }
            }
        }
    }
    loss
}

/// The softmax residuals `softmax(l_i) - e_{y_i}` of the logits `lb` (rows of `k`) with labels
/// `yb`, written to `res` (rows of `k`); returns the summed cross-entropy. The exponentials and
/// logarithms go as flat passes over the block, which the compiler vectorises (a library call
/// each costs more than a row's dot product with two classes).
#[inline(always)]
fn softmax_residuals(lb: &[f32], yb: &[u32], k: usize, res: &mut [f32]) -> f64 {
    let rows = yb.len();
    let mut loss = 0f64;
    let (mut top, mut sum, mut lse) = ([0f32; ROW_BLOCK], [0f32; ROW_BLOCK], [0f32; ROW_BLOCK]);
    for ((t, l), r) in top
        .iter_mut()
        .zip(lb.chunks_exact(k))
        .zip(res.chunks_exact_mut(k))
    {
        *t = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for (rc, &lc) in r.iter_mut().zip(l) {
            *rc = lc - *t;
        }
    }
    for rc in res[..rows * k].iter_mut() {
        *rc = exp_fast(*rc);
    }
    for (s, r) in sum.iter_mut().zip(res.chunks_exact(k)).take(rows) {
        *s = r.iter().sum();
    }
    for (e, &s) in lse.iter_mut().zip(&sum).take(rows) {
        *e = ln_fast(s);
    }
    for (((l, &y), r), ((&t, &s), &e)) in lb
        .chunks_exact(k)
        .zip(yb)
        .zip(res.chunks_exact_mut(k))
        .zip(top.iter().zip(&sum).zip(&lse))
    {
        loss += f64::from(t - l[y as usize] + e);
        for (c, rc) in r.iter_mut().enumerate() {
            *rc = *rc / s - if c == y as usize { 1.0 } else { 0.0 };
        }
    }
    loss
}

/// `e^x` for `x <= 0` to about 2e-7 relative, branch-free so that a loop of them vectorises:
/// `2^n e^r` with `n` the nearest integer to `x / ln 2` and `e^r` (`|r| <= ln 2 / 2`) by its
/// Taylor polynomial of degree 7. Arguments below -86.5 give 0, as the library's `exp` does
/// below -104: never a subnormal result, whose arithmetic is a hundred times slower (a
/// probe whose logits grew apart in training slowed its steps eightfold).
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let under = x < -86.5;
    let x = x.clamp(-86.5, 0.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if under {
        0.0
    } else {
        e
    }
}

/// `ln s` for a positive normal `s`, to about 1e-7 relative, branch-free so that a loop of them
/// vectorises: `s = 2^e f` with `f` in `[sqrt(1/2), sqrt(2))`, and `ln f = 2 atanh(t)`,
/// `t = (f - 1) / (f + 1)`, by its series to `t^11`.
#[inline(always)]
fn ln_fast(s: f32) -> f32 {
    let bits = s.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut f = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = f > std::f32::consts::SQRT_2;
    f = if big { f * 0.5 } else { f };
    e += i32::from(big);
    let t = (f - 1.0) / (f + 1.0);
    let t2 = t * t;
    let series = 1.0
        + t2 * (1.0 / 3.0
            + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0)))));
    e as f32 * std::f32::consts::LN_2 + 2.0 * t * series
}

/// A dot product with eight running sums, which the compiler turns into vector instructions
/// (one running sum would have to follow the order of the additions).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

vectorised! {
    /// [`softmax_rows`], vectorised.
    fn softmax_rows_best(
        z: &[f32],
        p: usize,
        theta_t: &[f32],
        labels: &[u32],
        grad_t: &mut [f32],
        logits: &mut [f32],
    ) -> f64 = softmax_rows;
}

/// Softmax regression on a batch of problems in one pass over their features: `z` is
/// `[B, n, p]` row-major, `theta` `[B, p, K]`, `labels` the `n` classes (at least two, below
/// `K`). Returns per problem the mean cross-entropy, the mean gradient of it (`[B, p, K]`
/// row-major) and the logits (`[B, n, K]`) less each row's last logit: the same predictions,
/// errors and cross-entropy as the logits themselves. Rows are split into blocks handed to rayon, each with its own gradient sums.
pub(crate) fn softmax_fit(
    z: &[f32],
    theta: &[f32],
    labels: &[u32],
    b: usize,
    p: usize,
    k: usize,
) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let n = labels.len();
    let mut loss = vec![0f64; b];
    let mut grad = vec![0f32; b * p * k];
    let mut logits = vec![0f32; b * n * k];
    for (((zb, tb), gb), (lb, lossb)) in z
        .chunks_exact((n * p).max(1))
        .zip(theta.chunks_exact((p * k).max(1)))
        .zip(grad.chunks_exact_mut((p * k).max(1)))
        .zip(logits.chunks_exact_mut((n * k).max(1)).zip(loss.iter_mut()))
    {
        // Class-major parameters relative to the last class's, so that each relative logit is
        // one contiguous dot product.
        let mut theta_t = vec![0f32; k * p];
        for j in 0..p {
            for c in 0..k - 1 {
                theta_t[c * p + j] = tb[j * k + c] - tb[j * k + k - 1];
            }
        }
        let (l, g_t) = zb
            .par_chunks(FIT_ROWS * p)
            .zip(labels.par_chunks(FIT_ROWS))
            .zip(lb.par_chunks_mut(FIT_ROWS * k))
            .fold(
                || (0f64, vec![0f32; k * p]),
                |(l, mut g), ((zr, yr), lr)| {
                    let part = softmax_rows_best(zr, p, &theta_t, yr, &mut g, lr);
                    (l + part, g)
                },
            )
            .reduce(
                || (0f64, vec![0f32; k * p]),
                |(la, mut ga), (lb, gb)| {
                    ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
                    (la + lb, ga)
                },
            );
        let mut g_t = g_t;
        let (others, last) = g_t.split_at_mut((k - 1) * p);
        for (j, gl) in last.iter_mut().enumerate() {
            *gl = -others.chunks_exact(p).map(|g| g[j]).sum::<f32>();
        }
        *lossb = l / n.max(1) as f64;
        let inv = 1.0 / n.max(1) as f32;
        for j in 0..p {
            for c in 0..k {
                gb[j * k + c] = g_t[c * p + j] * inv;
            }
        }
    }
    (loss, grad, logits)
}

/// Adam's settings for one step of [`online_step`], the bias corrections folded in (see
/// `OnlineProbes::update`).
pub(crate) struct Adam {
    pub b1: f32,
    pub b2: f32,
    /// Learning rate times the bias corrections.
    pub step: f32,
    /// Epsilon times the second moment's bias correction.
    pub eps: f32,
    /// L2 penalty on the weights (not the bias row).
    pub l2: f32,
}

#[inline(always)]
fn adam_rows(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], l2: f32, a: &Adam) {
    for (((t, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
        let g = g + l2 * *t;
        *m = a.b1 * *m + (1.0 - a.b1) * g;
        *v = a.b2 * *v + (1.0 - a.b2) * g * g;
        *t -= a.step * *m / (v.sqrt() + a.eps);
    }
}

vectorised! {
    /// [`adam_rows`], vectorised.
    fn adam_rows_best(
        theta: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        l2: f32,
        a: &Adam,
    ) = adam_rows;
}

/// Each column's mean and (biased) variance of the row-major `n x d` matrix `x`; `inv` is 1/n.
#[inline(always)]
fn batch_moments(x: &[f32], d: usize, inv: f32) -> (Vec<f32>, Vec<f32>) {
    let mut bm = vec![0f32; d];
    for row in x.chunks_exact(d.max(1)) {
        bm.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
    }
    bm.iter_mut().for_each(|a| *a *= inv);
    let mut bv = vec![0f32; d];
    for row in x.chunks_exact(d.max(1)) {
        for ((a, &b), &mu) in bv.iter_mut().zip(row).zip(&bm) {
            *a += (b - mu) * (b - mu);
        }
    }
    bv.iter_mut().for_each(|a| *a *= inv);
    (bm, bv)
}

vectorised! {
    /// [`batch_moments`], vectorised.
    fn batch_moments_best(x: &[f32], d: usize, inv: f32) -> (Vec<f32>, Vec<f32>) = batch_moments;
}

/// `[(x - mean) * scale, 1]` of each row of the row-major `n x d` matrix `x`.
#[inline(always)]
fn standardised(x: &[f32], d: usize, mean: &[f32], scale: &[f32]) -> Vec<f32> {
    let mut z = Vec::with_capacity(x.len() / d.max(1) * (d + 1));
    for row in x.chunks_exact(d.max(1)) {
        z.extend(
            row.iter()
                .zip(mean)
                .zip(scale)
                .map(|((&v, &mu), &s)| (v - mu) * s),
        );
        z.push(1.0);
    }
    z
}

vectorised! {
    /// [`standardised`], vectorised.
    fn standardised_best(x: &[f32], d: usize, mean: &[f32], scale: &[f32]) -> Vec<f32> =
        standardised;
}

/// One online-probe step on the CPU for one probe, in place: `x` is the minibatch (`n x d`
/// row-major), `mean` and `var` the running statistics (taken from this batch when `seen` is
/// false, else moved towards it by `momentum`), `theta`, `m` and `v` the parameters on
/// standardised features and Adam's moments (`(d + 1) x K`, bias row last). Returns the
/// minibatch's wrong count and mean cross-entropy before the step. The same arithmetic as the
/// candle form in `OnlineProbes::update`, in a few passes and no temporaries of the
/// parameters' size.
#[allow(clippy::too_many_arguments)]
pub(crate) fn online_step(
    x: &[f32],
    d: usize,
    labels: &[u32],
    (mean, var, seen, momentum): (&mut [f32], &mut [f32], bool, f32),
    theta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    adam: &Adam,
) -> (f64, f64) {
    use rayon::prelude::*;
    let n = labels.len();
    let k = theta.len() / (d + 1);
    let inv = 1.0 / n.max(1) as f32;
    let (bm, bv) = batch_moments_best(x, d, inv);
    for ((mu, va), (b, w)) in mean.iter_mut().zip(var.iter_mut()).zip(bm.iter().zip(&bv)) {
        if seen {
            *mu = *mu * (1.0 - momentum) + b * momentum;
            *va = *va * (1.0 - momentum) + w * momentum;
        } else {
            (*mu, *va) = (*b, *w);
        }
    }
    // A feature whose spread is at rounding level of the largest counts as constant.
    let top = var.iter().fold(0f32, |a, &b| a.max(b.sqrt()));
    let floor = top * 1e-6 + 1e-30;
    let scale: Vec<f32> = var
        .iter()
        .map(|&w| {
            if w.sqrt() > floor {
                1.0 / w.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let z = standardised_best(x, d, mean, &scale);
    let (loss, grad, logits) = softmax_fit(&z, theta, labels, 1, d + 1, k);
    let wrong = logits
        .chunks_exact(k)
        .zip(labels)
        .filter(|(l, &y)| {
            let top = l
                .iter()
                .enumerate()
                .fold(0, |best, (c, &v)| if v > l[best] { c } else { best });
            top != y as usize
        })
        .count();
    let (tw, tb) = theta.split_at_mut(d * k);
    let (mw, mb) = m.split_at_mut(d * k);
    let (vw, vb) = v.split_at_mut(d * k);
    let (gw, gb) = grad.split_at(d * k);
    const CHUNK: usize = 1 << 14;
    tw.par_chunks_mut(CHUNK)
        .zip(mw.par_chunks_mut(CHUNK))
        .zip(vw.par_chunks_mut(CHUNK))
        .zip(gw.par_chunks(CHUNK))
        .for_each(|(((t, m), v), g)| adam_rows_best(t, m, v, g, adam.l2, adam));
    adam_rows_best(tb, mb, vb, gb, 0.0, adam);
    (wrong as f64, loss[0])
}

#[inline(always)]
fn norms_and_max_abs_rows(v: &[f32], cols: usize, max_abs: &mut [f32], norms: &mut [f32]) {
    for (row, n) in v.chunks_exact(cols.max(1)).zip(norms) {
        for (m, &x) in max_abs.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
        *n = dot(row, row).sqrt();
    }
}

vectorised! {
    /// [`norms_and_max_abs_rows`], vectorised.
    fn norms_and_max_abs_best(v: &[f32], cols: usize, max_abs: &mut [f32], norms: &mut [f32]) =
        norms_and_max_abs_rows;
}

/// Sum over rows of each row's Euclidean norm, and each column's largest absolute value, of
/// the row-major `rows x cols` matrix `v`.
pub(crate) fn norms_and_max_abs(v: &[f32], cols: usize) -> (f64, Vec<f32>) {
    let mut max_abs = vec![0f32; cols];
    let norm_sum = norms_and_max_abs_into(v, cols, &mut max_abs);
    (norm_sum, max_abs)
}

/// Rows per task of [`norms_and_max_abs_into`].
const NORM_ROWS: usize = 64;

/// [`norms_and_max_abs`], raising the running maxima `max_abs` (`cols` long) in place. Blocks of
/// rows are split over the cores; the row norms are then summed in f64 in the rows' order, so
/// the sum is the one a single loop makes (and a maximum does not depend on the order).
pub(crate) fn norms_and_max_abs_into(v: &[f32], cols: usize, max_abs: &mut [f32]) -> f64 {
    use rayon::prelude::*;
    let cols = cols.max(1);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = v
        .par_chunks(cols * NORM_ROWS)
        .map(|block| {
            let mut m = vec![0f32; max_abs.len()];
            let mut norms = vec![0f32; block.len() / cols];
            norms_and_max_abs_best(block, cols, &mut m, &mut norms);
            (norms, m)
        })
        .collect();
    let mut norm_sum = 0f64;
    for (norms, m) in &parts {
        for &n in norms {
            norm_sum += f64::from(n);
        }
        for (a, &b) in max_abs.iter_mut().zip(m) {
            *a = a.max(b);
        }
    }
    norm_sum
}

#[inline(always)]
fn shifted_sums(v: &[f32], d: usize, cols: usize, shift: &[f64], s1: &mut [f64], s2: &mut [f64]) {
    for row in v.chunks_exact(d.max(1)) {
        for (((&x, &m), a), b) in row[cols..][..s1.len()]
            .iter()
            .zip(shift)
            .zip(s1.iter_mut())
            .zip(s2.iter_mut())
        {
            let c = f64::from(x) - m;
            *a += c;
            *b += c * c;
        }
    }
}

vectorised! {
    /// [`shifted_sums`], vectorised.
    fn shifted_sums_best(
        v: &[f32],
        d: usize,
        cols: usize,
        shift: &[f64],
        s1: &mut [f64],
        s2: &mut [f64],
    ) = shifted_sums;
}

/// Columns per task of [`add_shifted_sums`].
const SHIFTED_COLS: usize = 2048;

/// Adds to `s1` and `s2` each column's sum of `x - shift` and of its square, over the rows of
/// the row-major `rows x d` matrix `v`, in f64, row after row: the same sums in the same order
/// as a plain loop, split over the cores by columns.
pub(crate) fn add_shifted_sums(v: &[f32], d: usize, shift: &[f64], s1: &mut [f64], s2: &mut [f64]) {
    use rayon::prelude::*;
    s1.par_chunks_mut(SHIFTED_COLS)
        .zip(s2.par_chunks_mut(SHIFTED_COLS))
        .enumerate()
        .for_each(|(t, (a, b))| {
            let cols = t * SHIFTED_COLS;
            shifted_sums_best(v, d, cols, &shift[cols..][..a.len()], a, b);
        });
}

/// Rows per block of the centring pass: a stop is checked, and a block handed to a thread,
/// per block.
const CENTRE_ROWS: usize = 256;

#[inline(always)]
fn column_sums<E: Feature>(block: &[E], d: usize, s: &mut [f64]) {
    for row in block.chunks_exact(d.max(1)) {
        for (a, &v) in s.iter_mut().zip(row) {
            *a += f64::from(v.widen());
        }
    }
}

vectorised! {
    /// [`column_sums`], vectorised.
    fn column_sums_best<E: Feature>(block: &[E], d: usize, s: &mut [f64]) = column_sums;
}

/// Adds to `s` the squares of the block's rows less `mean`, summed per column: in f32 within
/// the block (a few hundred rows), in f64 across blocks.
#[inline(always)]
fn centred_square_sums<E: Feature>(block: &[E], d: usize, mean: &[f32], s: &mut [f64]) {
    let mut part = vec![0f32; d];
    for row in block.chunks_exact(d.max(1)) {
        for ((a, &v), &m) in part.iter_mut().zip(row).zip(mean) {
            let z = v.widen() - m;
            *a += z * z;
        }
    }
    s.iter_mut()
        .zip(&part)
        .for_each(|(a, &b)| *a += f64::from(b));
}

vectorised! {
    /// [`centred_square_sums`], vectorised.
    fn centred_square_sums_best<E: Feature>(block: &[E], d: usize, mean: &[f32], s: &mut [f64]) = centred_square_sums;
}

#[inline(always)]
fn centre_rows<E: Feature>(out: &mut [f32], x: &[E], mean: &[f32], d: usize) {
    for (o, r) in out.chunks_exact_mut(d + 1).zip(x.chunks_exact(d.max(1))) {
        for ((o, &v), &m) in o.iter_mut().zip(r).zip(mean) {
            *o = v.widen() - m;
        }
        o[d] = 1.0;
    }
}

vectorised! {
    /// [`centre_rows`], vectorised.
    fn centre_rows_best<E: Feature>(out: &mut [f32], x: &[E], mean: &[f32], d: usize) = centre_rows;
}

/// Per matrix `i` of `xs` (row-major `n x d`), the column sums that `sum(block, i, sums)` adds
/// up over blocks of rows (in parallel, in f64), divided by `n`, with a check for a stop between
/// blocks.
fn block_column_means<E: Feature>(
    xs: &[&[E]],
    d: usize,
    cancel: &crate::cancel::Cancel,
    sum: impl Fn(&[E], usize, &mut [f64]) + Sync,
) -> candle_core::Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            let n = x.len() / d.max(1);
            // At most 32 groups of rows, fixed by `n`, summed block by block in order and then
            // added in order: the same rounding whatever the threads do.
            let group = n.div_ceil(32).max(CENTRE_ROWS);
            let parts = x
                .par_chunks(group * d.max(1))
                .map(|rows| {
                    let mut s = vec![0f64; d];
                    for block in rows.chunks(CENTRE_ROWS * d.max(1)) {
                        cancel.check_candle()?;
                        sum(block, i, &mut s);
                    }
                    Ok::<_, candle_core::Error>(s)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let mut sums = vec![0f64; d];
            for p in parts {
                sums.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
            }
            Ok(sums.into_iter().map(|s| s / n.max(1) as f64).collect())
        })
        .collect()
}

/// Each matrix's mean square about `means` per column (the variances, for the training means):
/// `xs` are row-major `n x d`, in parallel blocks of rows with a check for a stop between them.
pub(crate) fn centred_variances<E: Feature>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    d: usize,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<Vec<Vec<f64>>> {
    block_column_means(xs, d, cancel, |block, i, s| {
        centred_square_sums_best(block, d, &means[i], s)
    })
}

/// Each matrix's column means: `xs` are row-major `n x d`, the sums taken in f64 over blocks of
/// rows (in parallel), with a check for a stop between blocks.
pub(crate) fn column_means<E: Feature>(
    xs: &[&[E]],
    d: usize,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<Vec<Vec<f64>>> {
    block_column_means(xs, d, cancel, |block, _, s| column_sums_best(block, d, s))
}

/// `[x - mean, 1]` of each row-major `n x d` matrix of `xs` with its `means`, as one
/// `[xs.len(), n, d + 1]` buffer, written in parallel blocks of rows with a check for a stop
/// between blocks.
pub(crate) fn centred_with_ones<E: Feature>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    d: usize,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<Vec<f32>> {
    use rayon::prelude::*;
    let n = xs.first().map_or(0, |x| x.len() / d.max(1));
    let p = d + 1;
    let mut z = vec![0f32; xs.len() * n * p];
    for ((out, x), mean) in z.chunks_mut((n * p).max(1)).zip(xs).zip(means) {
        out.par_chunks_mut(CENTRE_ROWS * p)
            .zip(x.par_chunks(CENTRE_ROWS * d.max(1)))
            .try_for_each(|(out, x)| {
                cancel.check_candle()?;
                centre_rows_best(out, x, mean, d);
                Ok::<_, candle_core::Error>(())
            })?;
    }
    Ok(z)
}

/// The largest absolute difference between two tensors of one shape (for tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
        .unwrap()
}

/// The bits of every value of `t` read as f32 (exact for f32 and bfloat16), for the tests that
/// hold a host kernel to candle's numbers to the bit.
#[cfg(test)]
pub(crate) fn f32_bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a tensor readable as f32");
    v.iter().map(|x| x.to_bits()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The huge-page hint covers whole 2 MB pages inside the slice only, whatever its size or
    /// offset, and leaves what it holds alone.
    #[test]
    fn the_huge_page_hint_leaves_every_value_as_it_was() {
        let n = (5 << 20) / 4 + 3; // over two huge pages, not a multiple of one
        let mut v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let before = v.clone();
        advise_huge_slice(&mut v);
        advise_huge_slice(&mut v[100_003..1_100_003]);
        advise_huge_slice(&mut v[7..17]); // inside one page: no whole page
        advise_huge_slice(&mut v[..0]);
        assert_eq!(v, before);
        // Memory not yet written (a sink's reserve) reads back what is written after the hint.
        let mut fresh: Vec<f32> = Vec::with_capacity(n);
        advise_huge_slice(fresh.spare_capacity_mut());
        fresh.extend(before.iter().map(|x| x + 1.0));
        assert!(fresh.iter().zip(&before).all(|(a, b)| *a == b + 1.0));
    }

    /// The host ReLU gives candle's bits, signed zeros and NaNs included, and declines what
    /// it cannot read in place.
    #[test]
    fn relu_gives_candles_bits() {
        let dev = Device::Cpu;
        let mut v: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.5) / 37.0).collect();
        let special = [
            -0.0f32,
            0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-42,
            -1e-42,
        ];
        v[..special.len()].copy_from_slice(&special);
        let x = Tensor::from_vec(v, (100, 100), &dev).unwrap();
        let got = f32_bits(&relu(&x).unwrap().unwrap());
        assert_eq!(got, f32_bits(&x.relu().unwrap()));
        assert_eq!(got[..3], [0, 0, 0]);
        assert!(relu(&x.t().unwrap()).is_none());
        assert!(relu(&x.to_dtype(DType::BF16).unwrap()).is_none());
    }

    #[test]
    fn leaky_relu_matches_its_definition_and_its_gradient() {
        let dev = Device::Cpu;
        let xs = [-2.0f32, -0.5, 0.0, 0.25, 3.0];
        for slope in [0.5f64, 0.01, 2.0] {
            let x = Var::from_slice(&xs, 5, &dev).unwrap();
            let y = leaky_relu(x.as_tensor(), slope).unwrap().unwrap();
            let want: Vec<f32> = xs
                .iter()
                .map(|&v| if v > 0.0 { v } else { v * slope as f32 })
                .collect();
            assert_eq!(y.to_vec1::<f32>().unwrap(), want);
            // d/dx of sum(3 y) is 3 where x > 0 and 3 * slope elsewhere.
            let g = y
                .affine(3.0, 0.0)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gx: Vec<f32> = g.get(&x).unwrap().to_vec1().unwrap();
            let want: Vec<f32> = xs
                .iter()
                .map(|&v| if v > 0.0 { 3.0 } else { 3.0 * slope as f32 })
                .collect();
            assert_eq!(gx, want);
        }
        // Not contiguous: the caller falls back to candle's operations.
        let m = Tensor::from_slice(&[1f32, 2., 3., 4.], (2, 2), &dev).unwrap();
        assert!(leaky_relu(&m.t().unwrap(), 0.5).is_none());
    }

    #[test]
    fn centring_by_hand() {
        let cancel = crate::cancel::Cancel::default();
        // Two 3 x 2 matrices: column means (2, 20) and (0, -1).
        let a = [1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0];
        let b = [1.0f32, -1.0, -1.0, -1.0, 0.0, -1.0];
        let m = column_means(&[&a, &b], 2, &cancel).unwrap();
        assert_eq!(m, vec![vec![2.0, 20.0], vec![0.0, -1.0]]);
        let m32: Vec<Vec<f32>> = m
            .iter()
            .map(|v| v.iter().map(|&x| x as f32).collect())
            .collect();
        let z = centred_with_ones(&[&a, &b], &m32, 2, &cancel).unwrap();
        #[rustfmt::skip]
        let want = vec![
            -1.0, -10.0, 1.0,  0.0, 0.0, 1.0,  1.0, 10.0, 1.0,
            1.0, 0.0, 1.0,  -1.0, 0.0, 1.0,  0.0, 0.0, 1.0,
        ];
        assert_eq!(z, want);
    }

    #[test]
    fn linear_matches_candle_and_its_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_slice(&[1f32, 2., 3., -1., 0.5, 4.], (2, 3), &dev).unwrap();
        let w = Var::from_slice(&[0.5f32, -1., 2., 3., 0., 1.], (2, 3), &dev).unwrap();
        let b = Var::from_slice(&[10f32, -10.], 2, &dev).unwrap();
        let y = linear(&x, &w, &b).unwrap().unwrap();
        // Row 1: (0.5 - 2 + 6 + 10, 3 + 0 + 3 - 10); row 2: (-0.5 - 0.5 + 8 + 10, -3 + 4 - 10).
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![14.5, -4.0], vec![17.0, -9.0]]
        );
        // A zero bias takes the path where gemm writes a fresh buffer without reading it: the
        // products alone, whatever the allocator left in the memory (filled before it is freed).
        drop(vec![f32::NAN; 4096]);
        let zero = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let plain = linear(&x, &w, &zero).unwrap().unwrap();
        assert_eq!(
            plain.to_vec2::<f32>().unwrap(),
            vec![vec![4.5, 6.0], vec![7.0, 1.0]]
        );
        let reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let loss = |t: &Tensor| t.sqr().unwrap().sum_all().unwrap();
        let (g1, g2) = (
            loss(&y).backward().unwrap(),
            loss(&reference).backward().unwrap(),
        );
        for v in [&x, &w] {
            assert_eq!(
                g1.get(v).unwrap().to_vec2::<f32>().unwrap(),
                g2.get(v).unwrap().to_vec2::<f32>().unwrap()
            );
        }
        assert_eq!(
            g1.get(&b).unwrap().to_vec1::<f32>().unwrap(),
            g2.get(&b).unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn softmax_fit_by_hand() {
        // Rows (1, 1) and (2, 1) (a feature and the ones column), labels 0 and 1, zero
        // parameters: each class has probability 1/2, the loss is ln 2, and the residuals are
        // (-1/2, 1/2) and (1/2, -1/2). Mean gradient of class 0: (-1/2 * 1 + 1/2 * 2) / 2 = 1/4
        // on the feature, 0 on the bias; class 1 is its negative.
        let (loss, grad, logits) = softmax_fit(&[1.0, 1.0, 2.0, 1.0], &[0.0; 4], &[0, 1], 1, 2, 2);
        assert!((loss[0] - 2f64.ln()).abs() < 1e-7);
        assert_eq!(grad, vec![0.25, -0.25, 0.0, 0.0]);
        assert_eq!(logits, vec![0.0; 4]);
        // With the class-1 weight 1 on the feature: logits (0, 1) and (0, 2), relative to the
        // last class (-1, 0) and (-2, 0); loss ln(1 + e) - 0 for the first row (label 0, logit 0)
        // and ln(1 + e^-2) for the second.
        let (loss, _, logits) = softmax_fit(
            &[1.0, 1.0, 2.0, 1.0],
            &[0.0, 1.0, 0.0, 0.0],
            &[0, 1],
            1,
            2,
            2,
        );
        let want = ((1.0 + 1f64.exp()).ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((loss[0] - want).abs() < 1e-6, "{} vs {want}", loss[0]);
        assert_eq!(logits, vec![-1.0, 0.0, -2.0, 0.0]);
    }

    #[test]
    fn fast_exp_and_log_agree_with_the_library() {
        let mut worst = (0f64, 0f64);
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp_fast(x));
            if x >= -86.5 {
                worst.0 = worst.0.max((got - want).abs() / want);
                assert!(got >= f64::from(f32::MIN_POSITIVE), "subnormal e^{x}");
            } else {
                assert_eq!(got, 0.0);
            }
            let s = 1.0 + 40.0 * i as f32 / 200_000.0;
            let want = f64::from(s).ln();
            let got = f64::from(ln_fast(s));
            worst.1 = worst.1.max((got - want).abs() / want.max(1e-3));
        }
        assert!(worst.0 < 4e-7, "exp: largest relative error {}", worst.0);
        assert!(worst.1 < 4e-7, "ln: largest relative error {}", worst.1);
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(ln_fast(1.0), 0.0);
    }

    #[test]
    fn scores_by_hand() {
        // x = [[1, 2], [3, -1]], W = [[1, 0, 2], [0, 1, -1]], b = (0.5, 0, -1), means (1, 0):
        // the centred rows (0, 2) and (2, -1).
        let theta = [1.0, 0.0, 2.0, 0.0, 1.0, -1.0, 0.5, 0.0, -1.0];
        let out = scores_raw(
            &[&[1.0f32, 2.0, 3.0, -1.0][..]],
            &[vec![1.0, 0.0]],
            &theta,
            2,
            3,
        );
        assert_eq!(out, vec![0.5, 2.0, -3.0, 2.5, -1.0, 4.0]);
    }

    /// Split over the cores in blocks of rows, the sum of row norms is the single loop's, to
    /// the bit, and so are the maxima (a NaN is skipped, as `f32::max` skips it).
    #[test]
    fn norms_and_max_abs_in_blocks_are_the_single_loops() {
        let (rows, cols) = (5 * NORM_ROWS + 7, 37);
        let mut r = crate::rng::stream(3, "norms");
        let mut v = crate::rng::normal_vec(&mut r, rows * cols, 1.0);
        // Rows of very different sizes, so that the order of the f64 sum shows.
        for (i, row) in v.chunks_exact_mut(cols).enumerate() {
            let s = 10f32.powi((i * 7 % 31) as i32 - 15);
            row.iter_mut().for_each(|x| *x *= s);
        }
        v[5] = f32::NAN;
        v[cols + 2] = -1e30;
        let mut sum = 0f64;
        let mut max = vec![0.5f32; cols];
        let start = max.clone();
        for row in v.chunks_exact(cols) {
            sum += f64::from(dot(row, row).sqrt());
            for (m, &x) in max.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
        let mut got_max = start;
        let got = norms_and_max_abs_into(&v, cols, &mut got_max);
        assert_eq!(got.to_bits(), sum.to_bits());
        assert_eq!(got_max, max);
        assert_eq!(got_max[2], 1e30);
        // A norm of 2^55 first (its f64 neighbours are 8 apart), then rows of norm 1: one at a
        // time each is lost to rounding; summed in blocks first they would add up to 8 or more.
        let cols = 3;
        let mut v = vec![0f32; 4 * NORM_ROWS * cols];
        v[0] = 2f32.powi(55);
        for row in v.chunks_exact_mut(cols).skip(1) {
            row[1] = 1.0;
        }
        let got = norms_and_max_abs_into(&v, cols, &mut [0.0; 3]);
        assert_eq!(got, 2f64.powi(55));
    }

    #[test]
    fn norms_and_max_abs_by_hand() {
        // Rows (3, 4) and (0, -2): norms 5 and 2; column maxima 3 and 4.
        let (s, m) = norms_and_max_abs(&[3.0, 4.0, 0.0, -2.0], 2);
        assert_eq!(s, 7.0);
        assert_eq!(m, vec![3.0, 4.0]);
    }
}
