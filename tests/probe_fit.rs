//! The converged and online probe fits against independent computations.

use candle_core::{Device, Tensor};
use probescope::probe::{self, FitConfig, OnlineConfig, OnlineProbes, ProbeSpec, Split};
use probescope::rng;

/// A small two-class problem whose classes overlap: x ~ N(0, I_d) scaled per feature, y from a
/// noisy linear rule.
fn overlapping(n: usize, d: usize, seed: u64, scales: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng::stream(seed, "overlap");
    let x = rng::normal_vec(&mut r, n * d, 1.0);
    let noise = rng::normal_vec(&mut r, n, 1.0);
    let y = (0..n)
        .map(|i| {
            let s: f32 = (0..d).map(|j| x[i * d + j] * (j as f32 + 1.0)).sum();
            u32::from(s + 2.0 * noise[i] > 0.3)
        })
        .collect();
    let x = x
        .iter()
        .enumerate()
        .map(|(k, v)| v * scales[k % d] + 0.5 * scales[k % d])
        .collect();
    (x, y)
}

fn split(x: &[f32], y: &[u32], d: usize) -> Split {
    let n = y.len();
    Split {
        x: vec![Tensor::from_slice(x, (n, d), &Device::Cpu).unwrap()],
        y: Tensor::from_slice(y, n, &Device::Cpu).unwrap(),
    }
}

/// The objective the fit minimises, in f64, for raw weights `w` (`d x K`, K = `b.len()`) and
/// bias `b`: mean cross-entropy + l2/2 * sum_j var_j |w_j|^2.
fn objective(x: &[f32], y: &[u32], d: usize, w: &[f64], b: &[f64], l2: f64) -> f64 {
    let (n, k) = (y.len(), b.len());
    let var: Vec<f64> = (0..d)
        .map(|j| {
            let m = (0..n).map(|i| x[i * d + j] as f64).sum::<f64>() / n as f64;
            (0..n)
                .map(|i| (x[i * d + j] as f64 - m).powi(2))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mut ce = 0.0;
    for i in 0..n {
        let z: Vec<f64> = (0..k)
            .map(|c| {
                b[c] + (0..d)
                    .map(|j| x[i * d + j] as f64 * w[j * k + c])
                    .sum::<f64>()
            })
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        ce += lse - z[y[i] as usize];
    }
    let reg: f64 = (0..d)
        .map(|j| var[j] * (0..k).map(|c| w[j * k + c].powi(2)).sum::<f64>())
        .sum();
    ce / n as f64 + l2 / 2.0 * reg
}

/// An independent solver: plain gradient descent in f64 on standardised features, many steps.
fn reference_solution(x: &[f32], y: &[u32], d: usize, l2: f64) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| x[i * d + j] as f64).sum::<f64>() / n as f64)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| {
            ((0..n)
                .map(|i| (x[i * d + j] as f64 - mean[j]).powi(2))
                .sum::<f64>()
                / n as f64)
                .sqrt()
        })
        .collect();
    let z: Vec<f64> = (0..n * d)
        .map(|k| (x[k] as f64 - mean[k % d]) / sd[k % d])
        .collect();
    let mut w = vec![0f64; d * 2];
    let mut b = [0f64; 2];
    for _ in 0..20_000 {
        let mut gw = vec![0f64; d * 2];
        let mut gb = [0f64; 2];
        for i in 0..n {
            let s: Vec<f64> = (0..2)
                .map(|k| b[k] + (0..d).map(|j| z[i * d + j] * w[j * 2 + k]).sum::<f64>())
                .collect();
            let m = s[0].max(s[1]);
            let e = [(s[0] - m).exp(), (s[1] - m).exp()];
            for k in 0..2 {
                let p = e[k] / (e[0] + e[1]) - f64::from(u32::from(y[i] as usize == k));
                gb[k] += p / n as f64;
                for j in 0..d {
                    gw[j * 2 + k] += p * z[i * d + j] / n as f64;
                }
            }
        }
        for k in 0..d * 2 {
            w[k] -= 1.0 * (gw[k] + l2 * w[k]);
        }
        for k in 0..2 {
            b[k] -= 1.0 * gb[k];
        }
    }
    // Back to raw features: z_j = (x_j - mean_j) / sd_j.
    let w_raw: Vec<f64> = (0..d * 2).map(|k| w[k] / sd[k / 2]).collect();
    let b_raw: Vec<f64> = (0..2)
        .map(|c| b[c] - (0..d).map(|j| mean[j] * w_raw[j * 2 + c]).sum::<f64>())
        .collect();
    (w_raw, b_raw)
}

#[test]
fn converged_fit_matches_an_independent_gradient_descent_solution() {
    let d = 3;
    let (x, y) = overlapping(300, d, 1, &[1.0, 3.0, 0.2]);
    let l2 = 0.05;
    let cfg = FitConfig {
        l2,
        ..FitConfig::default()
    };
    let fitted = probe::fit_converged(&split(&x, &y, d), None, None, 2, None, &cfg).unwrap();
    let p = &fitted[0].probe;
    let w: Vec<f64> = p.weight.iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = p.bias.iter().map(|&v| v as f64).collect();
    let (w_ref, b_ref) = reference_solution(&x, &y, d, l2);
    let ours = objective(&x, &y, d, &w, &b, l2);
    let reference = objective(&x, &y, d, &w_ref, &b_ref, l2);
    assert!(
        (ours - reference).abs() < 1e-5,
        "objective {ours} vs reference {reference}"
    );
    // Softmax logits are defined up to a shift per sample; compare the class differences.
    for j in 0..d {
        let ours = w[j * 2 + 1] - w[j * 2];
        let theirs = w_ref[j * 2 + 1] - w_ref[j * 2];
        assert!(
            (ours - theirs).abs() < 2e-3 * (1.0 + theirs.abs()),
            "feature {j}: {ours} vs {theirs}"
        );
    }
    assert!(fitted[0].reading.converged);
    assert!((fitted[0].reading.train_loss - reference).abs() < 0.05);
}

#[test]
fn separable_data_reaches_zero_training_error() {
    let mut r = rng::stream(3, "sep");
    let n = 400;
    let x = rng::normal_vec(&mut r, n * 5, 1.0);
    let y: Vec<u32> = (0..n)
        .map(|i| u32::from(x[i * 5] - x[i * 5 + 3] > 0.0))
        .collect();
    let f = probe::fit_converged(
        &split(&x, &y, 5),
        None,
        None,
        2,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    assert_eq!(f[0].reading.train_error, 0.0);
}

#[test]
fn errors_do_not_depend_on_the_scale_of_the_features() {
    let d = 4;
    let (x, y) = overlapping(500, d, 2, &[1.0, 1.0, 1.0, 1.0]);
    let tiny: Vec<f32> = x.iter().map(|v| v * 1e-7).collect();
    let cfg = FitConfig::default();
    let a = probe::fit_converged(&split(&x, &y, d), None, None, 2, None, &cfg).unwrap();
    let b = probe::fit_converged(&split(&tiny, &y, d), None, None, 2, None, &cfg).unwrap();
    assert_eq!(a[0].reading.train_error, b[0].reading.train_error);
    assert!((a[0].reading.train_loss - b[0].reading.train_loss).abs() < 1e-4);
    // The raw weights scale inversely with the features.
    for (wa, wb) in a[0].probe.weight.iter().zip(&b[0].probe.weight) {
        assert!(
            (wa - wb * 1e-7).abs() < 1e-3 * wa.abs().max(1e-2),
            "{wa} vs {}",
            wb * 1e-7
        );
    }
}

#[test]
fn batched_fit_of_many_probes_equals_fitting_each_alone() {
    let d = 3;
    let (x1, y) = overlapping(300, d, 4, &[1.0, 2.0, 3.0]);
    let x2: Vec<f32> = x1.iter().map(|v| v.tanh()).collect();
    let both = Split {
        x: vec![
            Tensor::from_slice(&x1, (300, d), &Device::Cpu).unwrap(),
            Tensor::from_slice(&x2, (300, d), &Device::Cpu).unwrap(),
        ],
        y: Tensor::from_slice(&y, 300, &Device::Cpu).unwrap(),
    };
    let cfg = FitConfig::default();
    let together = probe::fit_converged(&both, None, None, 2, None, &cfg).unwrap();
    let alone = probe::fit_converged(&split(&x2, &y, d), None, None, 2, None, &cfg).unwrap();
    assert_eq!(
        together[1].reading.train_error,
        alone[0].reading.train_error
    );
    assert!((together[1].reading.train_loss - alone[0].reading.train_loss).abs() < 1e-5);
}

#[test]
fn a_warm_start_from_the_optimum_stays_there() {
    let d = 3;
    let (x, y) = overlapping(300, d, 5, &[1.0, 1.0, 1.0]);
    let s = split(&x, &y, d);
    let cfg = FitConfig::default();
    let cold = probe::fit_converged(&s, None, None, 2, None, &cfg).unwrap();
    let warm_from = vec![cold[0].probe.clone()];
    let warm = probe::fit_converged(&s, None, None, 2, Some(&warm_from), &cfg).unwrap();
    assert!(
        warm[0].reading.iterations <= 2,
        "{} iterations",
        warm[0].reading.iterations
    );
    assert_eq!(warm[0].reading.train_error, cold[0].reading.train_error);
}

#[test]
fn the_raw_probe_reproduces_the_reported_errors() {
    let d = 3;
    let (x, y) = overlapping(400, d, 6, &[2.0, 0.5, 1.0]);
    let (xt, yt) = overlapping(400, d, 7, &[2.0, 0.5, 1.0]);
    let f = probe::fit_converged(
        &split(&x, &y, d),
        Some(&split(&xt, &yt, d)),
        Some(&split(&xt, &yt, d)),
        2,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    let te = split(&xt, &yt, d);
    let (err, _) = probe::evaluate(&f[0].probe, &te.x[0], &te.y).unwrap();
    assert_eq!(Some(err), f[0].reading.test_error);
    assert_eq!(f[0].reading.val_error, f[0].reading.test_error);
}

#[test]
fn online_probes_learn_a_linear_rule_from_minibatches() {
    let d = 6;
    let spec = ProbeSpec::full("x", d);
    let mut online = OnlineProbes::new(
        vec![spec],
        2,
        &Device::Cpu,
        OnlineConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut r = rng::stream(9, "online");
    let mut last = 1.0;
    for _ in 0..300 {
        let x = rng::normal_vec(&mut r, 64 * d, 1.0);
        let y: Vec<u32> = (0..64)
            .map(|i| u32::from(x[i * d] + 0.5 * x[i * d + 2] > 0.0))
            .collect();
        let xt = Tensor::from_slice(&x, (64, d), &Device::Cpu).unwrap();
        let yt = Tensor::from_slice(&y, 64, &Device::Cpu).unwrap();
        last = online.update(&[xt], &yt).unwrap()[0].smoothed_error;
    }
    assert!(last < 0.1, "smoothed online error {last}");
    // The exported raw-space probe classifies fresh data as well.
    let x = rng::normal_vec(&mut r, 1000 * d, 1.0);
    let y: Vec<u32> = (0..1000)
        .map(|i| u32::from(x[i * d] + 0.5 * x[i * d + 2] > 0.0))
        .collect();
    let (err, _) = probe::evaluate(
        &online.probes().unwrap()[0],
        &Tensor::from_slice(&x, (1000, d), &Device::Cpu).unwrap(),
        &Tensor::from_slice(&y, 1000, &Device::Cpu).unwrap(),
    )
    .unwrap();
    assert!(err < 0.1, "held-out error {err}");
}

/// One online update from zero parameters, computed by hand in f64: the features standardised
/// with the minibatch's own mean and (population) standard deviation, uniform softmax (loss
/// ln K), gradient z^T (1/K - y) / n, and Adam's first step moves every parameter by the
/// learning rate against the sign of its gradient.
#[test]
fn one_online_update_matches_a_hand_computation() {
    let (n, d, k, lr) = (8usize, 3usize, 3usize, 0.01f64);
    let mut r = rng::stream(4, "hand");
    let x = rng::normal_vec(&mut r, n * d, 2.0);
    let y: Vec<u32> = (0..n as u32).map(|i| (i * 5 + 1) % k as u32).collect();
    let mut online = OnlineProbes::new(
        vec![ProbeSpec::full("x", d)],
        k,
        &Device::Cpu,
        OnlineConfig {
            lr,
            ..Default::default()
        },
    )
    .unwrap();
    let xt = Tensor::from_slice(&x, (n, d), &Device::Cpu).unwrap();
    let yt = Tensor::from_slice(&y, n, &Device::Cpu).unwrap();
    let got = online.update(&[xt], &yt).unwrap()[0];
    assert!((got.batch_loss - (k as f64).ln()).abs() < 1e-6, "{got:?}");

    let xr = &x;
    let col = |j: usize| (0..n).map(move |i| f64::from(xr[i * d + j]));
    let mean: Vec<f64> = (0..d).map(|j| col(j).sum::<f64>() / n as f64).collect();
    let std: Vec<f64> = (0..d)
        .map(|j| (col(j).map(|v| (v - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt())
        .collect();
    let sign = |g: f64| if g > 0.0 { 1.0 } else { -1.0 };
    let probe = &online.probes().unwrap()[0];
    let mut bias = vec![0f64; k];
    for (c, bias_c) in bias.iter_mut().enumerate() {
        let resid = |i: usize| 1.0 / k as f64 - f64::from(u8::from(y[i] as usize == c));
        let gb: f64 = (0..n).map(resid).sum::<f64>() / n as f64;
        *bias_c = -lr * sign(gb);
        for j in 0..d {
            let gw: f64 = (0..n)
                .map(|i| (f64::from(x[i * d + j]) - mean[j]) / std[j] * resid(i))
                .sum::<f64>()
                / n as f64;
            // Raw space: w / std, and the bias absorbs -mean w / std.
            let w = -lr * sign(gw) / std[j];
            *bias_c -= mean[j] * w;
            let have = f64::from(probe.weight[j * k + c]);
            assert!((have - w).abs() < 1e-5, "w[{j},{c}] {have} vs {w}");
        }
    }
    for (c, (have, want)) in probe.bias.iter().zip(&bias).enumerate() {
        let have = f64::from(*have);
        assert!((have - want).abs() < 1e-5, "b[{c}] {have} vs {want}");
    }
}

/// Probes of one width are updated as one batch: the readings and the probes are those of each
/// probe updated alone.
#[test]
fn grouped_online_probes_equal_each_probe_alone() {
    let specs = vec![
        ProbeSpec::full("a", 5),
        ProbeSpec::full("b", 3),
        ProbeSpec::full("c", 5),
    ];
    let mut r = rng::stream(6, "groups");
    let batches: Vec<(Vec<Tensor>, Tensor)> = (0..30)
        .map(|_| {
            let taps = [5, 3, 5]
                .iter()
                .map(|&w| {
                    Tensor::from_vec(rng::normal_vec(&mut r, 32 * w, 1.5), (32, w), &Device::Cpu)
                        .unwrap()
                })
                .collect();
            let y: Vec<u32> = (0..32).map(|i| (i * 7 % 4) as u32).collect();
            (taps, Tensor::from_vec(y, 32, &Device::Cpu).unwrap())
        })
        .collect();
    let cfg = OnlineConfig::default();
    let mut all = OnlineProbes::new(specs.clone(), 4, &Device::Cpu, cfg.clone()).unwrap();
    let mut alone: Vec<OnlineProbes> = specs
        .iter()
        .map(|s| OnlineProbes::new(vec![s.clone()], 4, &Device::Cpu, cfg.clone()).unwrap())
        .collect();
    for (taps, y) in &batches {
        let together = all.update(taps, y).unwrap();
        for (i, one) in alone.iter_mut().enumerate() {
            let single = one.update(&taps[i..=i], y).unwrap()[0];
            let t = together[i];
            assert_eq!(t.batch_error, single.batch_error, "probe {i}");
            assert!((t.batch_loss - single.batch_loss).abs() < 1e-6, "probe {i}");
            assert!((t.smoothed_error - single.smoothed_error).abs() < 1e-12);
        }
    }
    for (i, one) in alone.iter().enumerate() {
        let (a, b) = (&all.probes().unwrap()[i], &one.probes().unwrap()[0]);
        assert_eq!(a.width, b.width);
        for (x, y) in a
            .weight
            .iter()
            .zip(&b.weight)
            .chain(a.bias.iter().zip(&b.bias))
        {
            assert!((x - y).abs() < 1e-5, "probe {i}: {x} vs {y}");
        }
    }
}

#[test]
fn feature_subsets_are_reproducible_from_the_seed_and_select_those_columns() {
    let a = ProbeSpec::random_subset("p", "t", 100, 10, 42);
    let b = ProbeSpec::random_subset("p", "t", 100, 10, 42);
    let c = ProbeSpec::random_subset("p", "t", 100, 10, 43);
    assert_eq!(a, b);
    assert_ne!(a.subset, c.subset);
    assert_eq!(a.width(), 10);
    let x: Vec<f32> = (0..300).map(|v| v as f32).collect();
    let t = Tensor::from_slice(&x, (3, 100), &Device::Cpu).unwrap();
    let sel: Vec<Vec<f32>> = a.select(&t).unwrap().to_vec2().unwrap();
    let idx = a.subset.unwrap();
    for (k, &j) in idx.iter().enumerate() {
        assert_eq!(sel[2][k], 200.0 + j as f32);
    }
    // A subset as large as the layer is the whole layer.
    assert_eq!(ProbeSpec::random_subset("p", "t", 10, 10, 1).subset, None);
}

#[test]
fn confusion_matrix_counts_the_raw_probes_predictions() {
    let d = 3;
    let (x, y) = overlapping(400, d, 8, &[1.0, 3.0, 0.2]);
    let (xt, yt) = overlapping(300, d, 9, &[1.0, 3.0, 0.2]);
    let f = probe::fit_converged(
        &split(&x, &y, d),
        None,
        Some(&split(&xt, &yt, d)),
        2,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    let m = f[0]
        .reading
        .confusion
        .clone()
        .expect("two classes: a confusion matrix");
    // Rows: true class counts of the test split.
    for (c, row) in m.iter().enumerate() {
        let count = yt.iter().filter(|&&v| v as usize == c).count() as u32;
        assert_eq!(row.iter().sum::<u32>(), count);
    }
    // Off-diagonal mass is the test error.
    let wrong = m[0][1] + m[1][0];
    assert_eq!(Some(f64::from(wrong) / 300.0), f[0].reading.test_error);
    // The same counts from the raw probe's predictions, on the host in f64 (a near-tie may
    // flip one sample between f32 and f64).
    let p = &f[0].probe;
    let mut host = [[0u32; 2]; 2];
    for (i, &t) in yt.iter().enumerate() {
        let logit = |k: usize| {
            (0..d)
                .map(|j| f64::from(xt[i * d + j]) * f64::from(p.weight[j * 2 + k]))
                .sum::<f64>()
                + f64::from(p.bias[k])
        };
        let pred = usize::from(logit(1) > logit(0));
        host[t as usize][pred] += 1;
    }
    let diff: u32 = (0..2)
        .flat_map(|r| (0..2).map(move |c| (r, c)))
        .map(|(r, c)| m[r][c].abs_diff(host[r][c]))
        .sum();
    assert!(diff <= 2, "device {m:?} vs host {host:?}");
}

/// A collapsed layer: 128 features that are all (almost) one scalar s times a fixed vector plus
/// a large common offset, so only rounding separates them. The whitened fit must stay finite;
/// its error can be no better than a threshold on s (s carries the label, with 20% flipped).
#[test]
fn a_collapsed_layer_of_collinear_features_gets_a_finite_fit() {
    let (n, d) = (4000, 128);
    let mut r = rng::stream(3, "collapsed");
    let s = rng::normal_vec(&mut r, n, 1.0);
    let dir = rng::normal_vec(&mut r, d, 1.0);
    let noise = rng::normal_vec(&mut r, n * d, 1.0);
    let flip = rng::uniform_vec(&mut r, n, 1.0);
    let mut x = vec![0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            x[i * d + j] = 0.1 + 1e-4 * s[i] * dir[j] + 1e-9 * noise[i * d + j];
        }
    }
    let y: Vec<u32> = (0..n)
        .map(|i| ((s[i] > 0.0) != (flip[i].abs() < 0.2)) as u32)
        .collect();
    let f = probe::fit_converged(
        &split(&x, &y, d),
        None,
        None,
        2,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    let rd = &f[0].reading;
    assert!(rd.train_loss.is_finite() && rd.converged, "{rd:?}");
    assert!(f[0].probe.weight.iter().all(|w| w.is_finite()));
    // About the 20% of flipped labels (a threshold on s is the best there is).
    assert!((rd.train_error - 0.2).abs() < 0.03, "{}", rd.train_error);
}

/// Control labels are uniform over the classes and the same on every call.
#[test]
fn control_labels_are_fixed_and_uniform() {
    let a = probe::control_labels(10_000, 4, &Device::Cpu).unwrap();
    let b = probe::control_labels(10_000, 4, &Device::Cpu).unwrap();
    let (a, b) = (a.to_vec1::<u32>().unwrap(), b.to_vec1::<u32>().unwrap());
    assert_eq!(a, b);
    for c in 0..4 {
        let share = a.iter().filter(|&&v| v == c).count() as f64 / a.len() as f64;
        // Binomial standard deviation at n = 10,000 is 0.0043: five of them.
        assert!((share - 0.25).abs() < 0.022, "class {c}: {share}");
    }
}

/// Selectivity (Hewitt & Liang): high-dimensional random features let a linear probe fit any
/// labelling (n points in general position in more than n dimensions are separable in every
/// way), so the control twin fits as well as the real probe: low error, low selectivity. Two
/// informative features cannot memorise random labels: the control error stays near chance
/// (0.5), so the same low error is highly selective.
#[test]
fn selectivity_is_low_for_memorising_features_and_high_for_informative_ones() {
    let cfg = FitConfig {
        control: true,
        ..FitConfig::default()
    };
    let (n, wide) = (200, 400);
    let mut r = rng::stream(3, "selectivity");
    let x = rng::normal_vec(&mut r, n * wide, 1.0);
    let y: Vec<u32> = (0..n).map(|i| u32::from(x[i * wide] > 0.0)).collect();
    let f = probe::fit_converged(&split(&x, &y, wide), None, None, 2, None, &cfg).unwrap();
    let rd = &f[0].reading;
    let control = rd.control_error.expect("a control twin");
    assert!(rd.train_error < 0.01, "train error {}", rd.train_error);
    assert!(control < 0.01, "control error {control}");
    assert!((control - rd.train_error).abs() < 0.02);

    let n = 1000;
    let x2 = rng::normal_vec(&mut r, n * 2, 1.0);
    let y2: Vec<u32> = (0..n)
        .map(|i| u32::from(x2[i * 2] + 0.1 * x2[i * 2 + 1] > 0.0))
        .collect();
    let f = probe::fit_converged(&split(&x2, &y2, 2), None, None, 2, None, &cfg).unwrap();
    let rd = &f[0].reading;
    let control = rd.control_error.unwrap();
    assert!(rd.train_error < 0.02, "train error {}", rd.train_error);
    // With 3 parameters on 1,000 random labels the best fit stays within a few standard
    // deviations (0.016) of chance.
    assert!(control > 0.42, "control error {control}");
    assert!(control - rd.train_error > 0.4);
    // Without `control`, no twin.
    let f = probe::fit_converged(
        &split(&x2, &y2, 2),
        None,
        None,
        2,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    assert_eq!(f[0].reading.control_error, None);
}

/// The transfer matrix: a probe on its own tap gives its own test error, on another tap of the
/// same width what applying it there directly gives, and nothing across widths.
#[test]
fn transfer_of_a_probe_to_its_own_tap_is_its_own_error() {
    let (n, nt) = (600, 300);
    let mut r = rng::stream(11, "transfer");
    let base = rng::normal_vec(&mut r, (n + nt) * 5, 1.0);
    let y: Vec<u32> = (0..n + nt)
        .map(|i| u32::from(base[i * 5] + 0.5 * base[i * 5 + 1] > 0.0))
        .collect();
    // Tap a: the features; tap b: the same, noisier and with two coordinates swapped; tap c:
    // three of them.
    let noise = rng::normal_vec(&mut r, (n + nt) * 5, 0.7);
    let b: Vec<f32> = (0..(n + nt) * 5)
        .map(|k| {
            let (i, j) = (k / 5, k % 5);
            let src = match j {
                0 => 1,
                1 => 0,
                j => j,
            };
            base[i * 5 + src] + noise[k]
        })
        .collect();
    let c: Vec<f32> = (0..(n + nt) * 3)
        .map(|k| base[(k / 3) * 5 + k % 3])
        .collect();
    let dev = Device::Cpu;
    let part = |v: &[f32], d: usize, from: usize, len: usize| {
        Tensor::from_slice(&v[from * d..(from + len) * d], (len, d), &dev).unwrap()
    };
    let mk = |from: usize, len: usize| Split {
        x: vec![
            part(&base, 5, from, len),
            part(&b, 5, from, len),
            part(&c, 3, from, len),
        ],
        y: Tensor::from_slice(&y[from..from + len], len, &dev).unwrap(),
    };
    let (train, test) = (mk(0, n), mk(n, nt));
    let cfg = FitConfig {
        transfer: true,
        ..FitConfig::default()
    };
    let f = probe::fit_converged(&train, None, Some(&test), 2, None, &cfg).unwrap();
    for i in 0..3 {
        let row = f[i].reading.transfer.as_ref().expect("a transfer row");
        let own = row[i].unwrap();
        assert!(
            (own - f[i].reading.test_error.unwrap()).abs() < 1e-6,
            "probe {i}"
        );
        for (j, entry) in row.iter().enumerate() {
            let same_width = (i == 2) == (j == 2);
            assert_eq!(entry.is_some(), same_width, "[{i}][{j}]");
            if let Some(e) = *entry {
                let (direct, _) = probe::evaluate(&f[i].probe, &test.x[j], &test.y).unwrap();
                assert!(
                    (e - direct).abs() < 1e-6,
                    "[{i}][{j}]: {e} against {direct}"
                );
            }
        }
    }
    // The probe of a, on b (whose two informative coordinates are swapped), does worse than on a.
    let row = f[0].reading.transfer.as_ref().unwrap();
    assert!(row[1].unwrap() > row[0].unwrap() + 0.05, "{row:?}");
}

/// Drift: with a warm start, the starting probe (the previous snapshot's) is applied to the new
/// features; on unchanged features it does as well as the refit, on shuffled ones much worse.
#[test]
fn drift_applies_the_previous_probe_to_the_new_features() {
    let d = 6;
    let (x, y) = overlapping(800, d, 21, &[1.0; 6]);
    let (xt, yt) = overlapping(400, d, 22, &[1.0; 6]);
    let (train, test) = (split(&x, &y, d), split(&xt, &yt, d));
    let cfg = FitConfig {
        transfer: true,
        ..FitConfig::default()
    };
    let first = probe::fit_converged(&train, None, Some(&test), 2, None, &cfg).unwrap();
    assert_eq!(first[0].reading.drift_error, None, "no previous probe");
    let old = vec![first[0].probe.clone()];
    let again = probe::fit_converged(&train, None, Some(&test), 2, Some(&old), &cfg).unwrap();
    let drift = again[0].reading.drift_error.unwrap();
    let (direct, _) = probe::evaluate(&old[0], &test.x[0], &test.y).unwrap();
    assert!((drift - direct).abs() < 1e-6, "{drift} against {direct}");
    assert!((drift - again[0].reading.test_error.unwrap()).abs() < 0.01);
    // The layer's code changes (its features reversed in order): the old probe fails there.
    let rev = |v: &[f32]| -> Vec<f32> {
        v.chunks(d)
            .flat_map(|r| r.iter().rev().copied().collect::<Vec<_>>())
            .collect()
    };
    let (train2, test2) = (split(&rev(&x), &y, d), split(&rev(&xt), &yt, d));
    let moved = probe::fit_converged(&train2, None, Some(&test2), 2, Some(&old), &cfg).unwrap();
    let r = &moved[0].reading;
    assert!(
        r.drift_error.unwrap() > r.test_error.unwrap() + 0.1,
        "drift {:?} own {:?}",
        r.drift_error,
        r.test_error
    );
}

#[test]
fn a_warm_start_far_from_the_new_optimum_fits_as_well_as_a_cold_start() {
    // The previous snapshot's probe on features that have since changed: units that were
    // nearly constant (a conv layer's border, a dead unit) have come alive. The probe fitted
    // on standardised features gave those units raw weights a thousand times too large for
    // their new spread, so its logits on the new features are huge and wrong. A warm start is
    // a hint; the fit must still reach what a cold start reaches (measured before the fix: a
    // conv tap warm-started across 300 training steps stopped at loss 921, cold 0.17).
    let (n, d, classes) = (3000, 256, 10);
    let mut r = rng::stream(13, "far");
    let (x, xv) = (
        rng::normal_vec(&mut r, n * d, 1.0),
        rng::normal_vec(&mut r, n * d, 1.0),
    );
    let w = rng::normal_vec(&mut r, d * classes, 1.0);
    let label = |x: &[f32]| -> Vec<u32> {
        (0..x.len() / d)
            .map(|i| {
                let s: Vec<f32> = (0..classes)
                    .map(|k| (0..d).map(|j| x[i * d + j] * w[j * classes + k]).sum())
                    .collect();
                (0..classes).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap() as u32
            })
            .collect()
    };
    let (y, yv) = (label(&x), label(&xv));
    let t = |x: &[f32], y: &[u32]| Split {
        x: vec![Tensor::from_slice(x, (y.len(), d), &Device::Cpu).unwrap()],
        y: Tensor::from_slice(y, y.len(), &Device::Cpu).unwrap(),
    };
    // Wide taps are fitted without whitening: the solver's hard case.
    let cfg = FitConfig {
        whiten_max: 0,
        ..FitConfig::default()
    };
    // Before: the first half of the units barely moved (spread 1e-3).
    let quiet: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(k, v)| if k % d < d / 2 { v * 1e-3 } else { *v })
        .collect();
    let before = probe::fit_converged(&t(&quiet, &y), None, None, classes, None, &cfg).unwrap();
    let (tr, va) = (t(&x, &y), t(&xv, &yv));
    let cold = probe::fit_converged(&tr, Some(&va), None, classes, None, &cfg).unwrap();
    let hint = vec![before[0].probe.clone()];
    // The hint is far worse than no hint on the new features (ln 10 = 2.3 for the zero start).
    let (_, hint_loss) = probe::evaluate(&hint[0], &tr.x[0], &tr.y).unwrap();
    assert!(hint_loss > 100.0, "{hint_loss}");
    let warm = probe::fit_converged(&tr, Some(&va), None, classes, Some(&hint), &cfg).unwrap();
    let (c, w) = (&cold[0].reading, &warm[0].reading);
    assert!(
        w.train_loss <= c.train_loss + 0.02,
        "warm loss {} vs cold {}",
        w.train_loss,
        c.train_loss
    );
    assert!(
        w.val_error.unwrap() <= c.val_error.unwrap() + 0.01,
        "warm {w:?} vs cold {c:?}"
    );
}

/// A probe on a convolution's output fitted through the convolution's input (the weights moved
/// through the map and its adjoint) takes the same steps as the same probe fitted on the
/// convolution's output itself: the same iterations and errors, and the same raw probe up to
/// rounding. So do the control twins. The base probe is untouched.
#[test]
fn a_probe_through_an_affine_map_is_the_probe_on_the_mapped_features() {
    use probescope::probe::{AffineTap, Moments, TapMap};
    use std::sync::Arc;
    let dev = Device::Cpu;
    let (c, h, w, co, k, classes) = (2usize, 5usize, 5usize, 6usize, 3usize, 3usize);
    let din = c * h * w;
    let mut r = rng::stream(11, "affine-fit");
    let weight = Tensor::from_vec(
        rng::normal_vec(&mut r, co * c * k * k, 0.5),
        (co, c, k, k),
        &dev,
    )
    .unwrap();
    let bias = Tensor::from_vec(rng::normal_vec(&mut r, co, 1.0), co, &dev).unwrap();
    let rule = rng::normal_vec(&mut r, co * h * w * classes, 1.0);
    let make = |n: usize, seed: u64| {
        let mut r = rng::stream(seed, "affine-data");
        let x = Tensor::from_vec(rng::normal_vec(&mut r, n * din, 1.0), (n, din), &dev).unwrap();
        let f = x
            .reshape((n, c, h, w))
            .unwrap()
            .conv2d(&weight, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
            .unwrap()
            .flatten_from(1)
            .unwrap();
        let fv: Vec<Vec<f32>> = f.to_vec2().unwrap();
        let noise = rng::normal_vec(&mut r, n * classes, 6.0);
        let y: Vec<u32> = fv
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let s: Vec<f32> = (0..classes)
                    .map(|q| {
                        row.iter()
                            .enumerate()
                            .map(|(j, v)| v * rule[j * classes + q])
                            .sum::<f32>()
                            + noise[i * classes + q]
                    })
                    .collect();
                (0..classes).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap() as u32
            })
            .collect();
        (x, f, Tensor::from_vec(y, n, &dev).unwrap())
    };
    let (xtr, ftr, ytr) = make(800, 1);
    let (xva, fva, yva) = make(400, 2);
    let (xte, fte, yte) = make(400, 3);
    let mut moments = Moments::default();
    moments.add(&ftr.narrow(0, 0, 300).unwrap()).unwrap();
    moments.add(&ftr.narrow(0, 300, 500).unwrap()).unwrap();
    let tap = AffineTap {
        base: 0,
        map: Arc::new(TapMap::conv(&weight, 1, [c, h, w]).unwrap().unwrap()),
        offset: bias
            .reshape((co, 1))
            .unwrap()
            .broadcast_as((co, h * w))
            .unwrap()
            .flatten_all()
            .unwrap(),
        var: moments.variances(),
    };
    // The low-rank preconditioner off: with it this small problem takes 5 iterations or fewer,
    // too few for the comparison to say much (its own test is further below).
    let cfg = FitConfig {
        whiten_max: 40,
        control: true,
        rank: 0,
        ..Default::default()
    };
    let empty = |n: usize| Tensor::zeros((n, 0), candle_core::DType::F32, &dev).unwrap();
    let both = |x: &Tensor, f: &Tensor, y: &Tensor| Split {
        x: vec![x.clone(), f.clone()],
        y: y.clone(),
    };
    let explicit = probe::fit_converged(
        &both(&xtr, &ftr, &ytr),
        Some(&both(&xva, &fva, &yva)),
        Some(&both(&xte, &fte, &yte)),
        classes,
        None,
        &cfg,
    )
    .unwrap();
    let through = probe::fit_converged_affine(
        &both(&xtr, &empty(800), &ytr),
        Some(&both(&xva, &empty(400), &yva)),
        Some(&both(&xte, &empty(400), &yte)),
        classes,
        None,
        &cfg,
        &[None, Some(tap)],
    )
    .unwrap();
    let (e, t) = (&explicit[1], &through[1]);
    assert!(e.reading.iterations > 5, "{}", e.reading.iterations);
    assert_eq!(e.reading.iterations, t.reading.iterations);
    assert_eq!(e.reading.train_error, t.reading.train_error);
    assert_eq!(e.reading.val_error, t.reading.val_error);
    assert_eq!(e.reading.test_error, t.reading.test_error);
    assert_eq!(e.reading.control_error, t.reading.control_error);
    assert_eq!(e.reading.confusion, t.reading.confusion);
    assert!(
        e.reading.test_error.unwrap() < 0.5,
        "{:?}",
        e.reading.test_error
    );
    let top = e.probe.weight.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in e.probe.weight.iter().zip(&t.probe.weight) {
        assert!((a - b).abs() <= 1e-3 * top, "{a} vs {b}");
    }
    for (a, b) in e.probe.bias.iter().zip(&t.probe.bias) {
        assert!((a - b).abs() <= 1e-3 * top.max(1.0), "{a} vs {b}");
    }
    // The same raw probe scores the mapped features as the fit reported.
    let (err, _) = probe::evaluate(&t.probe, &fte, &yte).unwrap();
    assert!((err - t.reading.test_error.unwrap()).abs() < 1e-9);
    assert_eq!(explicit[0].probe.weight, through[0].probe.weight);
    assert_eq!(
        explicit[0].reading.test_error,
        through[0].reading.test_error
    );
}

/// Wide features (over `whiten_max`) made from a few strong shared directions plus weak
/// independent noise: the correlated case the low-rank preconditioner is for.
fn correlated(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let planted = 8;
    let mut r = rng::stream(seed, "correlated");
    let dirs = rng::normal_vec(&mut r, planted * d, 1.0);
    let lat = rng::normal_vec(&mut r, n * planted, 1.0);
    let noise = rng::normal_vec(&mut r, n * d, 0.3);
    let x: Vec<f32> = (0..n * d)
        .map(|e| {
            let (i, j) = (e / d, e % d);
            (0..planted)
                .map(|c| lat[i * planted + c] * dirs[c * d + j])
                .sum::<f32>()
                + noise[e]
        })
        .collect();
    // Three classes from the latent factors and one noise feature.
    let y = (0..n)
        .map(|i| {
            let s = lat[i * planted] + 0.5 * lat[i * planted + 1] + noise[i * d + 3];
            if s < -0.5 {
                0
            } else if s < 0.5 {
                1
            } else {
                2
            }
        })
        .collect();
    (x, y)
}

#[test]
fn the_low_rank_preconditioner_reaches_the_same_optimum_in_fewer_iterations() {
    // Without a validation split each fit runs to the unique optimum of its strictly convex
    // objective, so the preconditioner may change the path but not the answer.
    let (n, d) = (1500, 1100);
    let (x, y) = correlated(n, d, 2);
    let train = split(&x, &y, d);
    let fit = |rank: usize| {
        let cfg = FitConfig {
            rank,
            l2: 1e-2,
            ..FitConfig::default()
        };
        assert!(d > cfg.whiten_max, "the diagonal preconditioner's width");
        probe::fit_converged(&train, None, None, 3, None, &cfg)
            .unwrap()
            .remove(0)
    };
    let (plain, low) = (fit(0), fit(64));
    assert!(plain.reading.converged && low.reading.converged);
    // The same objective value (computed here, in f64, from the raw weights)...
    let obj = |f: &probe::Fitted| {
        let w: Vec<f64> = f.probe.weight.iter().map(|&v| f64::from(v)).collect();
        let b: Vec<f64> = f.probe.bias.iter().map(|&v| f64::from(v)).collect();
        objective(&x, &y, d, &w, &b, 1e-2)
    };
    let (a, b) = (obj(&plain), obj(&low));
    assert!((a - b).abs() < 1e-4 * a.max(1e-3), "objective {a} vs {b}");
    // ...the same predictions...
    assert!(
        (plain.reading.train_error - low.reading.train_error).abs() <= 2.0 / n as f64,
        "train error {} vs {}",
        plain.reading.train_error,
        low.reading.train_error
    );
    // ...in fewer passes over the features (measured: 24 against 85).
    assert!(
        low.reading.iterations * 10 < plain.reading.iterations * 8,
        "iterations: {} with the low-rank preconditioner, {} without",
        low.reading.iterations,
        plain.reading.iterations
    );
}

#[test]
fn a_wide_probe_on_a_single_training_row_gets_a_fit() {
    // One row: the low-rank preconditioner has nothing to estimate and stands aside.
    let d = 1100;
    let (x, y) = correlated(3, d, 4);
    let train = split(&x[..d], &y[..1], d);
    let test = split(&x[d..], &y[1..], d);
    let fitted = probe::fit_converged(&train, None, Some(&test), 3, None, &FitConfig::default())
        .unwrap()
        .remove(0);
    assert_eq!(fitted.reading.train_error, 0.0);
    assert!(fitted.reading.test_error.unwrap().is_finite());
}
