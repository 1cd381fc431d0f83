//! Probing your own candle training loop with `probescope::Probes`.
//!
//! A small MLP (20 -> 64 -> 64 -> 4, tanh) written directly with candle-nn, trained with AdamW on
//! a synthetic 4-class task. Each step hands the hidden layers' activations to the probes (one
//! online update each); every 100 steps they are fitted to convergence on a fixed set of 2,000
//! samples and tested on 1,000 others. Everything goes to a run log:
//!
//! ```sh
//! cargo run --release --example custom_loop -- run.jsonl     # then, in another terminal:
//! probescope attach run.jsonl
//! ```

use anyhow::Result;
use candle_core::{DType, Module, Tensor};
use candle_nn::{linear, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use probescope::probe::ProbeReading;
use probescope::{Activations, Probes};

/// The model: plain candle-nn layers, nothing from probescope.
struct Mlp {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    out: candle_nn::Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(20, 64, vb.pp("fc1"))?,
            fc2: linear(64, 64, vb.pp("fc2"))?,
            out: linear(64, 4, vb.pp("out"))?,
        })
    }

    /// The logits and the hidden activations we want probed.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let h1 = self.fc1.forward(x)?.tanh()?;
        let h2 = self.fc2.forward(&h1)?.tanh()?;
        Ok((self.out.forward(&h2)?, h1, h2))
    }
}

/// The named activations of the model on `x`, for a converged snapshot.
fn activations(model: &Mlp, x: &Tensor, y: &Tensor) -> Result<Activations> {
    let (logits, h1, h2) = model.forward(x)?;
    Ok(Activations::new(y.clone())
        .tap("input", x.clone())
        .tap("h1", h1)
        .tap("h2", h2)
        .tap("logits", logits))
}

/// Trains for `steps` minibatches, recording to `log`; returns the last snapshot's readings.
fn run(log: &std::path::Path, steps: u64) -> Result<Vec<ProbeReading>> {
    // The GPU when probescope is built with `--features cuda` and one answers, else the CPU.
    let dev = probescope::cli::parse_device("auto")?;
    let data =
        probescope::data::argmax_task(7, "custom-loop", 8000, 20, 4, &dev, &Default::default())?;
    let (train, test) = (data.slice(0, 7000)?, data.slice(7000, 1000)?);
    let fixed = train.slice(0, 2000)?;

    let vm = VarMap::new();
    let model = Mlp::new(VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let mut opt = AdamW::new(
        vm.all_vars(),
        ParamsAdamW {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    let mut probes = Probes::new(
        &[("input", 20), ("h1", 64), ("h2", 64), ("logits", 4)],
        4,
        &dev,
    )?
    .total_steps(steps)
    .log_every(10)
    .record(log, "custom-loop mlp")?;

    let mut last = Vec::new();
    for step in 0..=steps {
        if step % 100 == 0 {
            last = probes.snapshot(
                step,
                &activations(&model, &fixed.x, &fixed.y)?,
                None,
                Some(&activations(&model, &test.x, &test.y)?),
            )?;
        }
        if step == steps {
            break;
        }
        let start = (step as usize * 64) % (train.len() - 64);
        let batch = train.slice(start, 64)?;
        let (logits, h1, h2) = model.forward(&batch.x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.y)?;
        opt.backward_step(&loss)?;
        probes.model_loss(f64::from(loss.to_scalar::<f32>()?));
        probes.observe(
            step + 1,
            &[
                ("input", &batch.x),
                ("h1", &h1),
                ("h2", &h2),
                ("logits", &logits),
            ],
            &batch.y,
        )?;
    }
    probes.finish()?;
    Ok(last)
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "custom_loop.jsonl".into());
    let readings = run(std::path::Path::new(&path), 1000)?;
    for (tap, r) in ["input", "h1", "h2", "logits"].iter().zip(&readings) {
        println!(
            "{tap:<7} train error {:.3}  test error {:.3}",
            r.train_error,
            r.test_error.unwrap_or(f64::NAN)
        );
    }
    println!("run log: {path} (probescope replay {path})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use probescope::runlog::{self, EndStatus, SnapshotKind};

    /// The example end to end, shorter: it trains, its probes read the task, and its run log
    /// is one that probescope reads.
    #[test]
    fn the_example_trains_and_writes_a_run_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let readings = super::run(&path, 300).unwrap();
        // The labels are the argmax of a linear map of the input: a linear probe on the input
        // does well, and so, after training, does one on the logits.
        assert!(readings[0].test_error.unwrap() < 0.25, "{readings:?}");
        assert!(readings[3].test_error.unwrap() < 0.25, "{readings:?}");
        let log = runlog::read(&path).unwrap();
        assert_eq!(log.header.preset, "custom-loop mlp");
        assert_eq!(log.header.probes.len(), 4);
        let converged: Vec<u64> = log
            .snapshots()
            .filter(|s| s.kind == SnapshotKind::Converged)
            .map(|s| s.step)
            .collect();
        assert_eq!(converged, vec![0, 100, 200, 300]);
        assert_eq!(log.end().map(|e| e.status), Some(EndStatus::Finished));
    }
}
