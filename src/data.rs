//! Synthetic datasets for the paper's toy experiments, drawn from seeded streams.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;

use crate::cancel::Cancel;
use crate::rng;

/// Samples and labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `[n, ...]` f32 samples.
    pub x: Tensor,
    /// `[n]` u32 class labels.
    pub y: Tensor,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.dims()[0]
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start .. start + len`.
    pub fn slice(&self, start: usize, len: usize) -> candle_core::Result<Dataset> {
        Ok(Dataset {
            x: self.x.narrow(0, start, len)?,
            y: self.y.narrow(0, start, len)?,
            classes: self.classes,
        })
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[u32]) -> candle_core::Result<Dataset> {
        let i = Tensor::from_slice(idx, idx.len(), self.x.device())?;
        Ok(Dataset {
            x: self.x.index_select(&i, 0)?,
            y: self.y.index_select(&i, 0)?,
            classes: self.classes,
        })
    }
}

/// `n` samples of x ~ N(0, I_dim) as a `[n, dim]` tensor. Drawn in blocks of rows, checking
/// `cancel` between them (the paper's feature-subset size is 2 billion draws); the numbers are
/// the stream's, whatever the blocks.
pub fn gaussian(
    rng: &mut StdRng,
    n: usize,
    dim: usize,
    device: &Device,
    cancel: &Cancel,
) -> candle_core::Result<Tensor> {
    let mut v = Vec::with_capacity(n * dim);
    for b in cancel.blocks(n, DRAW_BLOCK / dim.max(1)) {
        let (_, k) = b?;
        v.extend(rng::normal_vec(rng, k * dim, 1.0));
    }
    Tensor::from_vec(v, (n, dim), device)
}

/// Draws between two checks for a stop in [`gaussian`].
const DRAW_BLOCK: usize = 1 << 22;

/// `x w`, in blocks of rows with a check for a stop between them.
fn scores(x: &Tensor, w: &Tensor, cancel: &Cancel) -> candle_core::Result<Tensor> {
    let (n, dim) = x.dims2()?;
    let rows = DRAW_BLOCK / dim.max(1);
    if rows >= n {
        return x.matmul(w);
    }
    let parts = cancel
        .blocks(n, rows)
        .map(|b| b.and_then(|(start, k)| x.narrow(0, start, k)?.matmul(w)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// Labels `argmax_k (x W)_k` of scores `[n, K]` (K = 1 means the sign: label 1 where the score is positive).
pub fn labels_from_scores(scores: &Tensor) -> candle_core::Result<Tensor> {
    if scores.dim(1)? == 1 {
        scores
            .squeeze(1)?
            .gt(0f32)?
            .to_dtype(candle_core::DType::U32)
    } else {
        scores.argmax(1)
    }
}

/// The untrained-MLP task (sec 3.3): x ~ N(0, I_dim), y = 1 if x.w > 0 else 0, with w ~ N(0, I).
pub fn sign_task(
    seed: u64,
    stream: &str,
    n: usize,
    dim: usize,
    device: &Device,
    cancel: &Cancel,
) -> candle_core::Result<Dataset> {
    let mut r = rng::stream(seed, stream);
    let w = Tensor::from_vec(rng::normal_vec(&mut r, dim, 1.0), (dim, 1), device)?;
    let x = gaussian(&mut r, n, dim, device, cancel)?;
    let y = labels_from_scores(&scores(&x, &w, cancel)?)?;
    Ok(Dataset { x, y, classes: 2 })
}

/// The feature-subset task (appendix A.1): x ~ N(0, I_dim), y = argmax(x W) with W ~ N(0, 1)
/// of shape `dim x classes`.
pub fn argmax_task(
    seed: u64,
    stream: &str,
    n: usize,
    dim: usize,
    classes: usize,
    device: &Device,
    cancel: &Cancel,
) -> candle_core::Result<Dataset> {
    let mut r = rng::stream(seed, stream);
    let w = Tensor::from_vec(
        rng::normal_vec(&mut r, dim * classes, 1.0),
        (dim, classes),
        device,
    )?;
    let x = gaussian(&mut r, n, dim, device, cancel)?;
    let y = labels_from_scores(&scores(&x, &w, cancel)?)?;
    Ok(Dataset { x, y, classes })
}

/// The bifurcation task (sec 3.2): x = [a, b] with a, b ~ N(0, I_half) and
/// y = 1 if a.u + ratio * b.v > 0, with u, v drawn once per dataset and scaled to unit norm.
///
/// A linear classifier that sees only `a` has error atan(ratio) / pi; one that sees only `b`
/// has atan(1 / ratio) / pi; one that sees both can reach zero.
pub fn two_source_task(
    seed: u64,
    stream: &str,
    n: usize,
    half: usize,
    ratio: f64,
    device: &Device,
    cancel: &Cancel,
) -> candle_core::Result<Dataset> {
    let mut r = rng::stream(seed, stream);
    let unit = |v: Vec<f32>| -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    };
    let u = unit(rng::normal_vec(&mut r, half, 1.0));
    let v: Vec<f32> = unit(rng::normal_vec(&mut r, half, 1.0))
        .into_iter()
        .map(|x| x * ratio as f32)
        .collect();
    let w = Tensor::from_vec([u, v].concat(), (2 * half, 1), device)?;
    let x = gaussian(&mut r, n, 2 * half, device, cancel)?;
    let y = labels_from_scores(&scores(&x, &w, cancel)?)?;
    Ok(Dataset { x, y, classes: 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_task_is_balanced_and_reproducible() {
        let a = sign_task(5, "d0", 4000, 16, &Device::Cpu, &Cancel::new()).unwrap();
        let b = sign_task(5, "d0", 4000, 16, &Device::Cpu, &Cancel::new()).unwrap();
        let ya: Vec<u32> = a.y.to_vec1().unwrap();
        assert_eq!(ya, b.y.to_vec1::<u32>().unwrap());
        let ones = ya.iter().filter(|&&v| v == 1).count() as f64 / 4000.0;
        assert!((ones - 0.5).abs() < 0.04, "{ones}");
    }

    #[test]
    fn argmax_labels_match_a_host_argmax() {
        let d = argmax_task(1, "t", 50, 8, 5, &Device::Cpu, &Cancel::new()).unwrap();
        let y: Vec<u32> = d.y.to_vec1().unwrap();
        assert_eq!(y.len(), 50);
        assert!(y.iter().all(|&c| c < 5));
    }

    #[test]
    fn gaussian_draws_the_streams_numbers_in_blocks_and_stops_when_cancelled() {
        // 3 x 2^21 draws: two blocks of rows, and the same numbers as one plain draw.
        let (n, dim) = (3, 1 << 21);
        let x = gaussian(
            &mut rng::stream(4, "g"),
            n,
            dim,
            &Device::Cpu,
            &Cancel::new(),
        )
        .unwrap();
        let plain = rng::normal_vec(&mut rng::stream(4, "g"), n * dim, 1.0);
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), plain);
        let stop = Cancel::new();
        stop.cancel();
        assert!(gaussian(&mut rng::stream(4, "g"), n, dim, &Device::Cpu, &stop).is_err());
    }
}
