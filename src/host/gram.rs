//! The whitening's second moments read in place: each block of rows is centred into one reused
//! buffer and multiplied by itself in f32, only the tiles on and above the diagonal (the matrix
//! is symmetric), and the blocks are summed in f64. candle's product made a centred copy with
//! a ones column and a fresh product for every block, and computed both triangles: on
//! `untrained-mlp` it was the largest part of the converged fit.

use super::pass::Feature;

/// Rows per block: the products are f32 within a block, the sums across blocks f64 (a block's
/// rounding, about `sqrt(GRAM_BLOCK)` f32 epsilons of the diagonal, is well under the penalty
/// and jitter the whitening adds).
pub(crate) const GRAM_BLOCK: usize = 512;

/// Columns per tile of the upper triangle: a block's product is made one column tile at a
/// time, the rows above and on the diagonal only.
const TILE: usize = 32;

/// Centres the rows `x` (row-major, `d` a row) into `z` (row-major, `d + 1` a row) with `mean`,
/// a 1 in each row's last column.
#[inline(always)]
fn centre_block<E: Feature>(z: &mut [f32], x: &[E], mean: &[f32]) {
    let d = mean.len();
    for (zr, xr) in z.chunks_exact_mut(d + 1).zip(x.chunks_exact(d.max(1))) {
        for ((o, &v), &m) in zr.iter_mut().zip(xr).zip(mean) {
            *o = v.widen() - m;
        }
        zr[d] = 1.0;
    }
}

vectorised! {
    /// [`centre_block`], vectorised.
    fn centre_block_best<E: Feature>(z: &mut [f32], x: &[E], mean: &[f32]) = centre_block;
}

/// One column tile `c0..c1` of the upper triangle: its running sums (rows `0..c1`, row-major,
/// `c1 - c0` a row) and its block's f32 product.
struct Tile {
    c0: usize,
    c1: usize,
    acc: Vec<f64>,
    prod: Vec<f32>,
}

impl Tile {
    /// Adds the tile of `z^T z` to the sums, `z` row-major with `p` columns: made in f32 by
    /// gemm, whose sums for an entry are the same whatever the shape of the product around it
    /// (a test holds the tiles to candle's whole product, bit for bit).
    fn add(&mut self, z: &[f32], p: usize) {
        let (c0, c1) = (self.c0, self.c1);
        let (w, rows) = (c1 - c0, z.len() / p);
        assert!(self.prod.len() == c1 * w && rows * p == z.len() && c1 <= p);
        // SAFETY: the product is `c1 x w` over `rows`: its left factor is `z^T`'s rows `0..c1`
        // (element `(i, r)` at `z[r p + i]`), its right factor `z`'s columns `c0..c1` (element
        // `(r, j)` at `z[r p + c0 + j]`), written to `prod[i w + j]`; with `i < c1 <= p`,
        // `j < w` and `r < rows` every index lies inside the slices asserted above. gemm does
        // not read `prod` (`read_dst` false).
        unsafe {
            gemm::gemm(
                c1,
                w,
                rows,
                self.prod.as_mut_ptr(),
                1,
                w as isize,
                false,
                z.as_ptr(),
                p as isize,
                1,
                z.as_ptr().add(c0),
                1,
                p as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (a, &v) in self.acc.iter_mut().zip(&self.prod) {
            *a += f64::from(v);
        }
    }
}

/// Per row-major `n x d` matrix of `xs`, the mean over its rows of `[x - mean, 1]^T [x - mean,
/// 1]` with its `means` (`(d + 1) x (d + 1)`, row-major, both triangles): the second moments the
/// whitening factors. Blocks of [`GRAM_BLOCK`] rows, each product in f32, summed in f64 in the
/// order of the blocks, with a check for a stop between blocks; a block's column tiles go in
/// parallel. The numbers are those of candle's product of each whole block.
pub(crate) fn centred_gram<E: Feature>(
    xs: &[&[E]],
    means: &[Vec<f32>],
    d: usize,
    cancel: &crate::cancel::Cancel,
) -> candle_core::Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    let p = d + 1;
    xs.iter()
        .zip(means)
        .map(|(x, mean)| {
            let n = x.len() / d.max(1);
            let mut tiles: Vec<Tile> = (0..p)
                .step_by(TILE)
                .map(|c0| {
                    let c1 = (c0 + TILE).min(p);
                    Tile {
                        c0,
                        c1,
                        acc: vec![0f64; c1 * (c1 - c0)],
                        prod: vec![0f32; c1 * (c1 - c0)],
                    }
                })
                .collect();
            let mut z = vec![0f32; GRAM_BLOCK.min(n) * p];
            for block in x.chunks(GRAM_BLOCK * d.max(1)) {
                cancel.check_candle()?;
                let rows = block.len() / d.max(1);
                let z = &mut z[..rows * p];
                centre_block_best(z, block, mean);
                let z = &*z;
                tiles.par_iter_mut().for_each(|t| t.add(z, p));
            }
            let inv = 1.0 / n.max(1) as f64;
            let mut g = vec![0f64; p * p];
            for t in &tiles {
                let w = t.c1 - t.c0;
                for i in 0..t.c1 {
                    for j in t.c0.max(i)..t.c1 {
                        let v = t.acc[i * w + j - t.c0] * inv;
                        g[i * p + j] = v;
                        g[j * p + i] = v;
                    }
                }
            }
            Ok(g)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product against a direct f64 sum over every row, for widths that end mid-tile and a
    /// row count that ends mid-block, in f32 and in bfloat16.
    #[test]
    fn centred_gram_is_the_mean_of_the_outer_products() {
        let (n, cancel) = (1300, crate::cancel::Cancel::default());
        for d in [1, 5, 32, 45, 70] {
            let mut r = crate::rng::stream(d as u64, "gram-test");
            let x: Vec<f32> = crate::rng::normal_vec(&mut r, n * d, 1.0)
                .into_iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i % d) as f32) + 0.5 * (i % 3) as f32)
                .collect();
            let mean: Vec<f32> = (0..d).map(|j| 0.3 * j as f32 - 1.0).collect();
            let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let p = d + 1;
            for (got, rows) in [
                (
                    centred_gram(&[&x], std::slice::from_ref(&mean), d, &cancel).unwrap(),
                    x.clone(),
                ),
                (
                    centred_gram(&[&xb], std::slice::from_ref(&mean), d, &cancel).unwrap(),
                    xb.iter().map(|v| v.to_f32()).collect(),
                ),
            ] {
                let g = &got[0];
                let mut want = vec![0f64; p * p];
                for row in rows.chunks_exact(d) {
                    let z: Vec<f64> = row
                        .iter()
                        .zip(&mean)
                        .map(|(&v, &m)| f64::from(v - m))
                        .chain([1.0])
                        .collect();
                    for i in 0..p {
                        for j in 0..p {
                            want[i * p + j] += z[i] * z[j] / n as f64;
                        }
                    }
                }
                for i in 0..p {
                    for j in 0..p {
                        let (a, b) = (g[i * p + j], want[i * p + j]);
                        let scale = (want[i * p + i] * want[j * p + j]).sqrt();
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "d {d}, entry ({i}, {j}): {a} against {b}"
                        );
                    }
                }
            }
        }
    }

    /// Bit for bit the numbers of candle's product of each whole block with its ones column,
    /// summed in f64 block by block and scaled by `1 / n` (the form it replaced), for a width
    /// that ends mid-tile and a last block that is short.
    #[test]
    fn centred_gram_equals_candles_block_products_bit_for_bit() {
        use candle_core::{DType, Device, Tensor};
        let cancel = crate::cancel::Cancel::default();
        for (n, d) in [(1300, 45), (1100, 128)] {
            let mut r = crate::rng::stream(d as u64, "gram-bits");
            let x = crate::rng::normal_vec(&mut r, n * d, 2.0);
            let mean: Vec<f32> = (0..d).map(|j| 0.01 * j as f32).collect();
            let got = centred_gram(&[&x], std::slice::from_ref(&mean), d, &cancel).unwrap();
            let p = d + 1;
            let mut acc: Option<Tensor> = None;
            for start in (0..n).step_by(GRAM_BLOCK) {
                let len = GRAM_BLOCK.min(n - start);
                let z: Vec<f32> = x[start * d..(start + len) * d]
                    .chunks_exact(d)
                    .flat_map(|row| {
                        row.iter()
                            .zip(&mean)
                            .map(|(&v, &m)| v - m)
                            .chain([1.0])
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let t = Tensor::from_vec(z, (1, len, p), &Device::Cpu).unwrap();
                let s = t.transpose(1, 2).unwrap().matmul(&t).unwrap();
                let s = s.to_dtype(DType::F64).unwrap();
                acc = Some(match acc {
                    Some(a) => (a + s).unwrap(),
                    None => s,
                });
            }
            let want: Vec<f64> = acc
                .unwrap()
                .affine(1.0 / n as f64, 0.0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let differ = (0..p * p)
                .filter(|&i| got[0][i].to_bits() != want[i].to_bits() && got[0][i] != want[i])
                .count();
            assert_eq!(differ, 0, "n {n}, d {d}: {differ} entries differ");
        }
    }

    /// A stop between blocks ends the product with the cancellation error.
    #[test]
    fn centred_gram_stops_when_cancelled() {
        let cancel = crate::cancel::Cancel::default();
        cancel.cancel();
        let x = vec![1f32; 2000 * 3];
        let err = centred_gram(&[&x], &[vec![0.0; 3]], 3, &cancel).unwrap_err();
        let stop = crate::cancel::Cancelled.to_string();
        assert!(err.to_string().contains(&stop), "{err}");
    }
}
