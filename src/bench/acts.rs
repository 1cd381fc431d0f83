//! `probescope bench acts`: what `probescope probe` costs beyond the solver. The same
//! activations are fitted twice in one invocation: as tensors already in memory (the solver
//! alone, the baseline) and from a safetensors file through the whole `probe` path (layout
//! checks, NaN scan, memory-mapped reads, statistics, the fit, the records).

use std::fmt::Write;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::acts::{self, Source};
use crate::presets::{RunCtx, RunOptions};
use crate::probe::{self, FitConfig, Split};
use crate::report::Collect;
use crate::runlog::Record;

/// The benchmark's sizes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Samples in the file (80% train, 10% validation, 10% test, by a split array).
    pub samples: usize,
    /// Taps.
    pub taps: usize,
    /// Features per tap.
    pub width: usize,
    /// Seed of the synthetic activations.
    pub seed: u64,
}

const CLASSES: usize = 10;
const LATENT: usize = 32;

/// Synthetic activations: a latent code z (`LATENT` normals per sample) whose first `CLASSES`
/// entries' argmax is the class; tap k is tanh(z A_k) plus noise that grows with k, so the
/// probes' errors differ from tap to tap. Returns the taps `[n, width]` and the labels.
fn activations(s: &Sizes, dev: &Device) -> candle_core::Result<(Vec<Tensor>, Tensor)> {
    let mut rng = crate::rng::stream(s.seed, "bench-acts");
    let z = Tensor::from_vec(
        crate::rng::normal_vec(&mut rng, s.samples * LATENT, 1.0),
        (s.samples, LATENT),
        dev,
    )?;
    let y = z.narrow(1, 0, CLASSES)?.argmax(1)?;
    let mut taps = Vec::with_capacity(s.taps);
    for k in 0..s.taps {
        let a = Tensor::from_vec(
            crate::rng::normal_vec(&mut rng, LATENT * s.width, 1.0 / (LATENT as f64).sqrt()),
            (LATENT, s.width),
            dev,
        )?;
        let noise = Tensor::from_vec(
            crate::rng::normal_vec(&mut rng, s.samples * s.width, 0.2 * (k + 1) as f64),
            (s.samples, s.width),
            dev,
        )?;
        taps.push((z.matmul(&a)?.tanh()? + noise)?);
    }
    Ok((taps, y))
}

/// Runs the benchmark and returns its report.
pub fn run(s: &Sizes) -> anyhow::Result<String> {
    let dev = Device::Cpu;
    let (taps, y) = activations(s, &dev)?;
    let n = s.samples;
    let split: Vec<u8> = (0..n)
        .map(|i| match i % 10 {
            8 => 1,
            9 => 2,
            _ => 0,
        })
        .collect();
    let dir = tempfile_dir()?;
    let path = dir.join("acts.safetensors");
    let t = Instant::now();
    {
        let mut named: Vec<(String, Tensor)> = taps
            .iter()
            .enumerate()
            .map(|(k, x)| (format!("layer{k:02}"), x.clone()))
            .collect();
        named.push(("labels".into(), y.to_dtype(DType::I64)?));
        named.push(("split".into(), Tensor::from_vec(split.clone(), n, &dev)?));
        let named: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        candle_core::safetensors::save(&named, &path)?;
    }
    let write_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();

    // The baseline: the solver alone on the same samples, already in memory.
    let rows = |which: u8| -> candle_core::Result<Tensor> {
        let idx: Vec<u32> = (0..n as u32)
            .filter(|&i| split[i as usize] == which)
            .collect();
        Tensor::from_vec(idx.clone(), idx.len(), &dev)
    };
    let part = |which: u8| -> candle_core::Result<Split> {
        let idx = rows(which)?;
        Ok(Split {
            x: taps
                .iter()
                .map(|x| x.index_select(&idx, 0))
                .collect::<candle_core::Result<_>>()?,
            y: y.index_select(&idx, 0)?,
        })
    };
    let (tr, va, te) = (part(0)?, part(1)?, part(2)?);
    let cfg = FitConfig::default();
    let t = Instant::now();
    let base = probe::fit_converged(&tr, Some(&va), Some(&te), CLASSES, None, &cfg)?;
    let base_s = t.elapsed().as_secs_f64();
    drop((tr, va, te));

    // The whole `probescope probe` path on the file.
    let t = Instant::now();
    let src = Source {
        path: path.clone(),
        labels: "labels".into(),
        ..Source::default()
    };
    let (preset, params) = acts::prepare(&src, &[])?;
    preset.check_data(&params, &path)?;
    let mut sink = Collect::default();
    let mut ctx = RunCtx {
        device: dev.clone(),
        seed: 0,
        sink: &mut sink,
        started: Instant::now(),
        controls: Default::default(),
        opts: RunOptions::default(),
    };
    preset.run(&params, &mut ctx)?;
    let probe_s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    let snap = sink
        .records
        .iter()
        .find_map(|r| match r {
            Record::Snapshot(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the probe run recorded no snapshot"))?;
    let mut out = String::new();
    writeln!(
        out,
        "bench acts: {} taps x {} features x {} samples ({:.0} MB safetensors file, written in \
         {write_s:.1} s), {CLASSES} classes",
        s.taps,
        s.width,
        n,
        bytes as f64 / 1e6
    )?;
    writeln!(
        out,
        "{:<8} {:>10} {:>10} {:>6}",
        "tap", "solver", "probe", "iters"
    )?;
    let mut worst: f64 = 0.0;
    for (k, (b, r)) in base.iter().zip(&snap.probes).enumerate() {
        let (eb, er) = (
            b.reading.test_error.unwrap_or(f64::NAN),
            r.reading.test_error.unwrap_or(f64::NAN),
        );
        worst = worst.max((eb - er).abs());
        writeln!(
            out,
            "layer{k:02}  {eb:>10.4} {er:>10.4} {:>6}",
            r.reading.iterations
        )?;
    }
    writeln!(out, "largest |solver - probe| test error: {worst:.4}")?;
    writeln!(out, "solver alone (tensors in memory): {base_s:.2} s")?;
    writeln!(
        out,
        "probescope probe (file, checks, reads, fit): {probe_s:.2} s = {:.2}x the solver alone",
        probe_s / base_s
    )?;
    Ok(out)
}

/// A fresh folder under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "probescope-bench-acts-{}-{}",
        std::process::id(),
        crate::runlog::unix_now()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
