//! Seeded random streams: every random draw in a run comes from the run's seed and a stream name,
//! so a run is reproducible and independent draws (data, weights, subsets) do not share a stream.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A generator for the named stream `stream` of the run seeded with `seed`.
pub fn stream(seed: u64, stream: &str) -> StdRng {
    // FNV-1a over the name, mixed with the seed by splitmix64: stable across platforms and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(h)))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` draws from N(0, std^2).
pub fn normal_vec(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.sample::<f64, _>(StandardNormal) * std) as f32)
        .collect()
}

/// `n` draws from U(-limit, limit).
pub fn uniform_vec(rng: &mut StdRng, n: usize, limit: f64) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-limit..limit) as f32)
        .collect()
}

/// A sorted random subset of `k` distinct indices out of `0..n`.
pub fn subset(rng: &mut StdRng, n: usize, k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = rand::seq::index::sample(rng, n, k)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_stream_give_the_same_draws_and_other_streams_differ() {
        let a = normal_vec(&mut stream(7, "data"), 5, 1.0);
        let b = normal_vec(&mut stream(7, "data"), 5, 1.0);
        let c = normal_vec(&mut stream(7, "weights"), 5, 1.0);
        let d = normal_vec(&mut stream(8, "data"), 5, 1.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn subset_is_sorted_distinct_and_in_range() {
        let s = subset(&mut stream(1, "s"), 100, 30);
        assert_eq!(s.len(), 30);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.iter().all(|&i| i < 100));
    }
}
