//! The CUDA back end against the CPU: the same probes, model and training step give the same
//! numbers. Built only with `--features cuda`; each test needs a GPU (`cuda:0`).
//!
//! Tolerances: cuBLAS and the CPU's matrix kernels add f32 products in different orders, so
//! single results differ by a few ulps (relative 1e-6). A converged fit minimises a strictly
//! convex objective (the L2 term), so both devices approach the same unique optimum, and the
//! readings can differ only through samples that lie within that rounding of a decision
//! boundary: a handful in thousands. The tests allow 3 samples of difference in an error
//! (0.0015 on 2,000 samples) and 1e-3 relative in a loss; a wrong kernel or a lost update moves
//! them by far more.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use probescope::data::{self, Dataset};
use probescope::graph::Model;
use probescope::presets;
use probescope::probe::{self, FitConfig, OnlineConfig, OnlineProbes, ProbeSpec, Split};
use probescope::train::{Optim, OptimKind};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need CUDA device 0")
}

/// A 10-class argmax task made on the CPU, so both devices see bit-identical inputs.
fn task(n: usize, dim: usize, stream: &str) -> Dataset {
    data::argmax_task(3, stream, n, dim, 10, &Device::Cpu, &Default::default()).unwrap()
}

fn on(d: &Dataset, dev: &Device) -> Dataset {
    Dataset {
        x: d.x.to_device(dev).unwrap(),
        y: d.y.to_device(dev).unwrap(),
        classes: d.classes,
    }
}

fn splits(dim: usize, dev: &Device) -> (Split, Split, Split) {
    // One task, cut in three: the labels follow the same rule.
    let all = on(&task(6000, dim, "gpu"), dev);
    let cut = |a: usize, n: usize| {
        let x = all.x.narrow(0, a, n).unwrap();
        Split {
            x: vec![x.clone(), x.sqr().unwrap()],
            y: all.y.narrow(0, a, n).unwrap(),
        }
    };
    (cut(0, 2000), cut(2000, 2000), cut(4000, 2000))
}

fn close_error(a: f64, b: f64, n: usize, what: &str) {
    assert!(
        (a - b).abs() <= 3.0 / n as f64 + 1e-12,
        "{what}: cpu {a} vs gpu {b}"
    );
}

fn close_loss(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
        "{what}: cpu {a} vs gpu {b}"
    );
}

fn converged_on(dim: usize, dev: &Device, cfg: &FitConfig) -> Vec<probe::Fitted> {
    // No validation split: early stopping could pick a different iteration on a rounding
    // difference, while the optimum itself is unique.
    let (tr, _, te) = splits(dim, dev);
    probe::fit_converged(&tr, None, Some(&te), 10, None, cfg).unwrap()
}

#[test]
fn converged_probes_agree_between_cpu_and_gpu() {
    // 64 features: the whitened solver; 1,500: the diagonal one.
    for dim in [64, 1500] {
        let cfg = FitConfig::default();
        let cpu = converged_on(dim, &Device::Cpu, &cfg);
        let gpu = converged_on(dim, &gpu(), &cfg);
        for (k, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let (c, g) = (&c.reading, &g.reading);
            let what = format!("{dim} features, probe {k}");
            close_error(c.train_error, g.train_error, 2000, &format!("{what} train"));
            close_error(
                c.test_error.unwrap(),
                g.test_error.unwrap(),
                2000,
                &format!("{what} test"),
            );
            close_loss(c.train_loss, g.train_loss, &format!("{what} train loss"));
            // With 64 features the task is learnable from the features themselves (probe 0;
            // their squares lose the signs; 1,500 features on 2,000 samples overfit): a probe
            // that never trained would sit near 0.9.
            if k == 0 && dim == 64 {
                assert!(c.test_error.unwrap() < 0.5, "{what}: {c:?}");
            }
        }
    }
}

#[test]
fn bf16_activations_keep_the_errors_within_a_fifth_of_a_point() {
    let f32_fit = converged_on(256, &gpu(), &FitConfig::default());
    let (tr, _, te) = splits(256, &gpu());
    let half = |s: Split| Split {
        x: s.x
            .iter()
            .map(|x| x.to_dtype(DType::BF16).unwrap())
            .collect(),
        y: s.y,
    };
    let bf16_fit = probe::fit_converged(
        &half(tr),
        None,
        Some(&half(te)),
        10,
        None,
        &FitConfig::default(),
    )
    .unwrap();
    for (a, b) in f32_fit.iter().zip(&bf16_fit) {
        let (a, b) = (a.reading.test_error.unwrap(), b.reading.test_error.unwrap());
        assert!((a - b).abs() <= 0.002, "f32 {a} vs bf16 {b}");
    }
}

#[test]
fn online_probes_agree_between_cpu_and_gpu() {
    let d = task(64 * 200, 100, "online");
    // Two probes of one width (updated as one batch) and one of another.
    let spec = vec![
        ProbeSpec::full("x", 100),
        ProbeSpec::full("2x", 100),
        ProbeSpec::full("x50", 50),
    ];
    let run = |dev: &Device| {
        let d = on(&d, dev);
        let mut p = OnlineProbes::new(spec.clone(), 10, dev, OnlineConfig::default()).unwrap();
        let mut last = Vec::new();
        for b in 0..200 {
            let x = d.x.narrow(0, b * 64, 64).unwrap();
            let y = d.y.narrow(0, b * 64, 64).unwrap();
            let taps = [
                x.clone(),
                x.affine(2.0, 1.0).unwrap(),
                x.narrow(1, 0, 50).unwrap(),
            ];
            last = p.update(&taps, &y).unwrap();
        }
        let w: Vec<f32> = p
            .probes()
            .unwrap()
            .iter()
            .flat_map(|q| q.weight.clone())
            .collect();
        (last, w)
    };
    let (c, cw) = run(&Device::Cpu);
    let (g, gw) = run(&gpu());
    for (k, (c, g)) in c.iter().zip(&g).enumerate() {
        close_error(
            c.smoothed_error,
            g.smoothed_error,
            64,
            &format!("probe {k} smoothed error"),
        );
        close_loss(c.batch_loss, g.batch_loss, &format!("probe {k} batch loss"));
    }
    let num: f32 = cw.iter().zip(&gw).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f32 = cw.iter().map(|a| a * a).sum();
    assert!(
        (num / den).sqrt() < 1e-3,
        "weights differ by {}",
        (num / den).sqrt()
    );
    assert!(c[0].smoothed_error < 0.6, "{c:?}");
}

/// The fused kernels (`OnlineConfig::fused`, the default on a GPU) against candle's operations
/// on the same GPU: the same arithmetic, so the same readings and weights up to rounding. The
/// taps cover several feature blocks (2,000 features), a strided view, a random subset and a
/// constant feature (the std floor); the batch of 512 spans two blocks of logits (5,120 of
/// them).
#[test]
fn fused_online_kernels_match_candle_operations() {
    let dev = gpu();
    for batch in [64usize, 512] {
        let steps = 30;
        let d = on(&task(batch * steps, 2000, "fused"), &dev);
        let spec = vec![
            ProbeSpec::full("wide", 2000),
            ProbeSpec::full("strided", 50),
            ProbeSpec::full("constant", 300),
            ProbeSpec::random_subset("wide/64", "wide", 2000, 64, 5),
        ];
        let run = |fused: bool| {
            let cfg = OnlineConfig {
                fused,
                ..OnlineConfig::default()
            };
            let mut p = OnlineProbes::new(spec.clone(), 10, &dev, cfg).unwrap();
            let mut readings = Vec::new();
            for b in 0..steps {
                let x = d.x.narrow(0, b * batch, batch).unwrap();
                let y = d.y.narrow(0, b * batch, batch).unwrap();
                let constant = (Tensor::ones((batch, 1), DType::F32, &dev).unwrap() * 3.0).unwrap();
                let taps = [
                    x.clone(),
                    x.narrow(1, 100, 50).unwrap(),
                    Tensor::cat(&[&x.narrow(1, 0, 299).unwrap(), &constant], 1).unwrap(),
                    x.clone(),
                ];
                readings.push(p.update(&taps, &y).unwrap());
            }
            (readings, p.probes().unwrap())
        };
        let (fr, fp) = run(true);
        let (or, op) = run(false);
        for (step, (f, o)) in fr.iter().zip(&or).enumerate() {
            for (k, (f, o)) in f.iter().zip(o).enumerate() {
                let what = format!("batch {batch}, step {step}, probe {k}");
                close_error(o.batch_error, f.batch_error, batch, &what);
                close_loss(o.batch_loss, f.batch_loss, &what);
            }
        }
        for (k, (f, o)) in fp.iter().zip(&op).enumerate() {
            assert_eq!((f.width, f.classes), (o.width, o.classes));
            let num: f32 = f
                .weight
                .iter()
                .chain(&f.bias)
                .zip(o.weight.iter().chain(&o.bias))
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            let den: f32 = o.weight.iter().chain(&o.bias).map(|a| a * a).sum();
            assert!(den > 0.0, "batch {batch}, probe {k}: no step was taken");
            assert!(
                (num / den).sqrt() < 1e-3,
                "batch {batch}, probe {k}: weights differ by {}",
                (num / den).sqrt()
            );
        }
    }
}

#[test]
fn the_mnist_convnet_trains_the_same_on_cpu_and_gpu() {
    let g = presets::default_graph("mnist-convnet").unwrap();
    let x = Tensor::rand(0f32, 1f32, (64, 1, 28, 28), &Device::Cpu).unwrap();
    let y: Vec<u32> = (0..64).map(|i| (i * 7 % 10) as u32).collect();
    let y = Tensor::from_vec(y, 64, &Device::Cpu).unwrap();
    let run = |dev: &Device| {
        let vm = g.init_varmap(0, dev).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, dev)).unwrap();
        let mut opt = Optim::new(&vm, OptimKind::Sgd { momentum: 0.9 }, 0.01, 5e-4).unwrap();
        let (x, y) = (x.to_device(dev).unwrap(), y.to_device(dev).unwrap());
        let mut losses = Vec::new();
        for _ in 0..5 {
            let outs = m.forward(&x).unwrap();
            let loss = m.loss(&outs, &y).unwrap();
            opt.backward_step(&loss).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap() as f64);
        }
        let logits: Vec<f32> = m
            .forward(&x)
            .unwrap()
            .last()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (losses, logits)
    };
    let (cl, cx) = run(&Device::Cpu);
    let (gl, gx) = run(&gpu());
    for (k, (a, b)) in cl.iter().zip(&gl).enumerate() {
        close_loss(*a, *b, &format!("loss at step {k}"));
    }
    let num: f32 = cx.iter().zip(&gx).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f32 = cx.iter().map(|a| a * a).sum();
    assert!(
        (num / den).sqrt() < 1e-3,
        "logits differ by {}",
        (num / den).sqrt()
    );
    // Five steps on one batch lower its loss: the step did something.
    assert!(cl[4] < cl[0], "{cl:?}");
}
