//! A chain of linear layers and LeakyReLUs run for its features, a block of rows at a time,
//! each layer's block written straight into the matrix that keeps it (or, for a layer that is
//! not kept, into a small buffer that the next layer reads from the cache). The generic pass
//! writes every layer's output over all rows as a fresh tensor and reads it back from memory,
//! and a caller that wants the taps then copies them out of it.

use std::mem::MaybeUninit;

/// One layer of a chain.
pub(crate) enum Step<'a> {
    /// `x W^T + b`: `w` row-major `out x in`, `b` of `out`.
    Linear {
        /// The weights.
        w: &'a [f32],
        /// The bias.
        b: &'a [f32],
        /// Outputs a row.
        out: usize,
    },
    /// LeakyReLU with this slope (see `super::leaky_into`).
    Leaky(f32),
}

/// Runs the `n` rows of `x` (row-major, `d` a row) through `steps`, `rows` rows at a time (the
/// last block takes the remainder too) with a check for a stop between blocks, and returns the
/// outputs (row-major, `n` rows) of the steps whose `keep` is set, `None` for the others. The
/// numbers are those of the layers' host kernels over all rows at once (the same
/// `super::linear_into` and `super::leaky_into`): gemm sums a row's products in the same order whatever the rows beside
/// it, but for products of a handful of rows, which no block here is unless `n` is.
pub(crate) fn chain_forward(
    x: &[f32],
    d: usize,
    steps: &[Step<'_>],
    keep: &[bool],
    rows: usize,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<Vec<Option<Vec<f32>>>> {
    let n = x.len() / d.max(1);
    let mut widths = Vec::with_capacity(steps.len());
    let mut width = d;
    for step in steps {
        if let Step::Linear { w, b, out } = step {
            if w.len() != out * width || b.len() != *out {
                candle_core::bail!(
                    "chain: a linear layer of {out} x {width} has {} weights and {} biases",
                    w.len(),
                    b.len()
                );
            }
            width = *out;
        }
        widths.push(width);
    }
    if x.len() != n * d || keep.len() != steps.len() {
        candle_core::bail!("chain: {} inputs for rows of {d}", x.len());
    }
    let rows = rows.max(1);
    // Kept outputs fill their capacity block by block; the others reuse a block's buffer.
    let mut kept: Vec<Option<Vec<f32>>> = widths
        .iter()
        .zip(keep)
        .map(|(&w, &k)| k.then(|| Vec::with_capacity(n * w)))
        .collect();
    let mut scratch: Vec<Vec<MaybeUninit<f32>>> = widths
        .iter()
        .zip(keep)
        .map(|(&w, &k)| {
            let len = if k { 0 } else { (2 * rows).min(n) * w };
            std::iter::repeat_with(MaybeUninit::uninit)
                .take(len)
                .collect()
        })
        .collect();
    let mut start = 0;
    while start < n {
        cancel.check_candle()?;
        let len = match n - start {
            left if left < 2 * rows => left,
            _ => rows,
        };
        // The block's input: the rows of `x`, then each step's output.
        let mut input: *const f32 = x[start * d..].as_ptr();
        let mut in_width = d;
        for (s, step) in steps.iter().enumerate() {
            let w = widths[s];
            let out: &mut [MaybeUninit<f32>] = match &mut kept[s] {
                Some(v) => &mut v.spare_capacity_mut()[start * w..(start + len) * w],
                None => &mut scratch[s][..len * w],
            };
            // SAFETY: `input` points to the `len x in_width` block written by the previous
            // step (or to rows of `x`), which lives in a buffer other than `out` (each step
            // has its own) and is neither moved nor freed while the block runs.
            let src = unsafe { std::slice::from_raw_parts(input, len * in_width) };
            match step {
                Step::Linear { w: wt, b, out: m } => {
                    super::linear_into(src, wt, b, (len, in_width, *m), out)
                }
                Step::Leaky(slope) => super::leaky_into_best(src, *slope, out),
            }
            input = out.as_ptr().cast::<f32>();
            in_width = w;
        }
        start += len;
    }
    Ok(kept
        .into_iter()
        .zip(&widths)
        .map(|(v, &w)| {
            v.map(|mut v| {
                // SAFETY: every block wrote all of its `len x w` outputs, and the blocks
                // cover rows `0..n`.
                unsafe { v.set_len(n * w) };
                v
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a direct computation in f64 over all rows: two linear layers (one with a bias)
    /// and LeakyReLUs, a block size that does not divide the rows, kept and unkept steps.
    #[test]
    fn the_chain_matches_a_direct_computation() {
        let (n, d, h) = (37, 5, 7);
        let mut r = crate::rng::stream(3, "chain-test");
        let x = crate::rng::normal_vec(&mut r, n * d, 1.0);
        let w1 = crate::rng::normal_vec(&mut r, h * d, 0.5);
        let b1 = vec![0f32; h];
        let w2 = crate::rng::normal_vec(&mut r, 3 * h, 0.5);
        let b2 = vec![0.25f32, -1.0, 2.0];
        let steps = [
            Step::Linear {
                w: &w1,
                b: &b1,
                out: h,
            },
            Step::Leaky(0.5),
            Step::Linear {
                w: &w2,
                b: &b2,
                out: 3,
            },
            Step::Leaky(0.1),
        ];
        let keep = [false, true, true, true];
        let got = chain_forward(&x, d, &steps, &keep, 8, &Default::default()).unwrap();
        assert!(got[0].is_none());
        let leaky = |v: f64, s: f64| if v > 0.0 { v } else { v * s };
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let z1: Vec<f64> = (0..h)
                .map(|j| {
                    (0..d)
                        .map(|k| f64::from(row[k]) * f64::from(w1[j * d + k]))
                        .sum()
                })
                .collect();
            let a1: Vec<f64> = z1.iter().map(|&v| leaky(v, 0.5)).collect();
            let z2: Vec<f64> = (0..3)
                .map(|j| {
                    f64::from(b2[j])
                        + (0..h)
                            .map(|k| a1[k] * f64::from(w2[j * h + k]))
                            .sum::<f64>()
                })
                .collect();
            let a2: Vec<f64> = z2.iter().map(|&v| leaky(v, 0.1)).collect();
            for (got, want) in [(&got[1], &a1), (&got[2], &z2), (&got[3], &a2)] {
                let got = got.as_ref().unwrap();
                let w = want.len();
                for j in 0..w {
                    let g = f64::from(got[i * w + j]);
                    assert!(
                        (g - want[j]).abs() < 1e-5,
                        "row {i}, {j}: {g} against {}",
                        want[j]
                    );
                }
            }
        }
    }
}
