//! Probing your own candle training loop: [`Probes`].
//!
//! Your code computes the model; at each step it hands [`Probes::observe`] the activations it
//! wants probed, by name, and the minibatch's labels (one online update of every probe), and now
//! and then hands [`Probes::snapshot`] the activations of a fixed set of samples (probes fitted to
//! convergence, warm-started from the previous snapshot). With [`Probes::record`], every reading
//! goes to a run log that `probescope attach RUN.jsonl` shows live in the terminal UI from
//! another terminal, and that `replay`, `export`, `compare` and `status` read afterwards.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use probescope::{Activations, Probes};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dev = Device::Cpu;
//! // Two layers of your model, 6 and 3 features wide, on a 2-class task.
//! let mut probes = Probes::new(&[("hidden", 6), ("out", 3)], 2, &dev)?;
//! let x = Tensor::randn(0f32, 1f32, (64, 6), &dev)?;
//! let y = x.narrow(1, 0, 1)?.squeeze(1)?.gt(0f32)?.to_dtype(candle_core::DType::U32)?;
//! let h = x.tanh()?; // stand-ins for your layers' outputs
//! let o = h.narrow(1, 0, 3)?;
//! for step in 1..=20 {
//!     let readings = probes.observe(step, &[("hidden", &h), ("out", &o)], &y)?;
//!     assert_eq!(readings.len(), 2);
//! }
//! let fixed = Activations::new(y.clone()).tap("hidden", h.clone()).tap("out", o.clone());
//! let converged = probes.snapshot(20, &fixed, None, None)?;
//! // `hidden` keeps the sign of x's first column: a linear probe reads it off.
//! assert!(converged[0].train_error < 0.05);
//! probes.finish()?;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use crate::alerts::Watch;
use crate::graph::{Graph, Node, Op};
use crate::probe::{
    self, FitConfig, LinearProbe, OnlineConfig, OnlineProbes, OnlineReading, ProbeReading,
    ProbeSpec, Split,
};
use crate::runlog::{
    End, EndStatus, ModelMetrics, Record, RunHeader, RunLogWriter, Snapshot, SnapshotKind,
    SCHEMA_VERSION,
};

/// Named activations of a fixed set of samples and their labels, for [`Probes::snapshot`].
#[derive(Debug, Clone)]
pub struct Activations {
    taps: Vec<(String, Tensor)>,
    labels: Tensor,
}

impl Activations {
    /// No activations yet; `labels` are the samples' classes (`[n]`, u32).
    pub fn new(labels: Tensor) -> Self {
        Self {
            taps: Vec::new(),
            labels,
        }
    }

    /// Adds the activations of the tap `name` (`[n, ...]`, flattened per sample).
    pub fn tap(mut self, name: impl Into<String>, x: Tensor) -> Self {
        self.taps.push((name.into(), x));
        self
    }
}

/// Linear probes on the layers of a model that your own code trains (see the [module
/// documentation](self) for an example).
pub struct Probes {
    header: RunHeader,
    device: Device,
    online: OnlineProbes,
    log: Option<RunLogWriter>,
    log_every: u64,
    warm: Option<Vec<LinearProbe>>,
    watch: Watch,
    loss: Option<f64>,
    started: Instant,
    finished: bool,
}

impl Probes {
    /// Probes on the taps `(name, features per sample)`, for a task of `classes` classes, on
    /// `device`. The taps are taken to follow one another, in this order, for the UI's diagram.
    pub fn new(taps: &[(&str, usize)], classes: usize, device: &Device) -> anyhow::Result<Self> {
        if taps.is_empty() {
            bail!("Probes::new: give at least one tap (name, features)");
        }
        if classes < 2 {
            bail!("Probes::new: {classes} classes; a classification task has at least 2");
        }
        // A chain; the graph's own check refuses a repeated name or a width of 0.
        let nodes: Vec<Node> = taps
            .iter()
            .enumerate()
            .map(|(i, &(name, width))| Node {
                name: name.to_string(),
                op: Op::External {
                    inputs: if i == 0 {
                        vec![]
                    } else {
                        vec![taps[i - 1].0.to_string()]
                    },
                    shape: vec![width],
                },
                probe: true,
            })
            .collect();
        let graph = Graph {
            output: taps[taps.len() - 1].0.to_string(),
            nodes,
            classes,
        };
        graph.shapes().context("Probes::new")?;
        let specs: Vec<ProbeSpec> = taps
            .iter()
            .map(|&(name, width)| ProbeSpec::full(name, width))
            .collect();
        let header = RunHeader {
            schema_version: SCHEMA_VERSION,
            probescope_version: env!("CARGO_PKG_VERSION").into(),
            preset: "custom".into(),
            params: Default::default(),
            seed: 0,
            device: crate::device::device_name(device),
            graph,
            probes: specs.clone(),
            fit: FitConfig::default(),
            started_unix: crate::runlog::unix_now(),
            total_steps: None,
        };
        Ok(Self {
            watch: Watch::new(&header),
            online: OnlineProbes::new(specs, classes, device, OnlineConfig::default())?,
            header,
            device: device.clone(),
            log: None,
            log_every: 1,
            warm: None,
            loss: None,
            started: Instant::now(),
            finished: false,
        })
    }

    /// Says that tap `tap` reads `inputs` (earlier taps) rather than the tap before it: how a
    /// model with branches is drawn (two taps reading one, a concatenation reading two). Call it
    /// before [`Probes::record`], which writes the layout into the run log.
    pub fn reads(mut self, tap: &str, inputs: &[&str]) -> anyhow::Result<Self> {
        if self.log.is_some() {
            bail!("Probes::reads(`{tap}`): call it before Probes::record");
        }
        let mut graph = self.header.graph.clone();
        let node = graph
            .nodes
            .iter_mut()
            .find(|n| n.name == tap)
            .with_context(|| {
                format!(
                    "Probes::reads: `{tap}` is not one of the taps ({})",
                    self.tap_names()
                )
            })?;
        if let Op::External { inputs: ins, .. } = &mut node.op {
            *ins = inputs.iter().map(|s| s.to_string()).collect();
        }
        graph.shapes().context("Probes::reads")?;
        self.header.graph = graph;
        self.watch = Watch::new(&self.header);
        Ok(self)
    }

    /// The converged fits' settings (L2 penalty, iterations, selectivity, transfer...).
    pub fn with_fit(mut self, fit: FitConfig) -> Self {
        self.header.fit = fit;
        self
    }

    /// The online probes' settings (learning rate, smoothing, L2); resets them.
    pub fn with_online(mut self, cfg: OnlineConfig) -> anyhow::Result<Self> {
        self.online = OnlineProbes::new(
            self.header.probes.clone(),
            self.header.graph.classes,
            &self.device,
            cfg,
        )?;
        Ok(self)
    }

    /// Total training steps, for the UI's progress bar.
    pub fn total_steps(mut self, steps: u64) -> Self {
        self.header.total_steps = Some(steps);
        self
    }

    /// Writes online readings to the run log every `steps` steps (default 1).
    pub fn log_every(mut self, steps: u64) -> Self {
        self.log_every = steps.max(1);
        self
    }

    /// Records to a new run log at `path` under the run name `name` (shown in the UI's status
    /// bar); an existing file is never overwritten.
    pub fn record(mut self, path: impl AsRef<Path>, name: &str) -> anyhow::Result<Self> {
        let path = path.as_ref();
        self.header.preset = name.to_string();
        let mut log = RunLogWriter::create(path, false)?;
        log.write(&Record::Run(self.header.clone()))
            .with_context(|| format!("writing {}", path.display()))?;
        self.log = Some(log);
        Ok(self)
    }

    /// The model's loss at this step, shown with the next snapshot.
    pub fn model_loss(&mut self, loss: f64) {
        self.loss = Some(loss);
    }

    /// The taps' tensors in probe order, checked against the probes' names and widths.
    fn ordered<'a>(&self, given: &[(&str, &'a Tensor)]) -> anyhow::Result<Vec<&'a Tensor>> {
        for (name, _) in given {
            if !self.header.probes.iter().any(|s| s.tap == *name) {
                bail!(
                    "activation `{name}` is not one of the probed taps ({})",
                    self.tap_names()
                );
            }
        }
        self.header
            .probes
            .iter()
            .map(|s| {
                let (_, x) = given.iter().find(|(n, _)| *n == s.tap).with_context(|| {
                    format!("no activation given for tap `{}`", s.tap)
                })?;
                let width: usize = x.dims().iter().skip(1).product();
                if width != s.features {
                    bail!(
                        "tap `{}` has {width} features per sample ({:?}), but its probe was made for {}",
                        s.tap,
                        x.dims(),
                        s.features
                    );
                }
                Ok(*x)
            })
            .collect()
    }

    fn tap_names(&self) -> String {
        self.header
            .probes
            .iter()
            .map(|s| s.tap.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn write(&mut self, mut snap: Snapshot) -> anyhow::Result<()> {
        snap.alerts = self
            .watch
            .push(&snap)
            .into_iter()
            .map(|a| a.message)
            .collect();
        if let Some(log) = &mut self.log {
            log.write(&Record::Snapshot(snap))?;
        }
        Ok(())
    }

    fn snapshot_record(
        &self,
        step: u64,
        kind: SnapshotKind,
        probes: Vec<crate::runlog::TapReading>,
    ) -> Snapshot {
        Snapshot {
            step,
            label: format!("step {step}"),
            kind,
            dataset: None,
            epoch: None,
            probes,
            model: self.loss.map(|loss| ModelMetrics {
                loss,
                train_error: None,
                test_error: None,
            }),
            elapsed_s: self.started.elapsed().as_secs_f64(),
            alerts: Vec::new(),
        }
    }

    /// One online update of every probe on a minibatch: `taps` names each probed tap's
    /// activations (`[n, ...]`; detached here, so the probes never change your model), `labels`
    /// its classes (`[n]`, u32). Returns each probe's error and loss on this minibatch, measured
    /// before the update, and the smoothed error.
    pub fn observe(
        &mut self,
        step: u64,
        taps: &[(&str, &Tensor)],
        labels: &Tensor,
    ) -> anyhow::Result<Vec<OnlineReading>> {
        let xs: Vec<Tensor> = self
            .ordered(taps)?
            .into_iter()
            .map(Tensor::detach)
            .collect();
        let readings = self.online.update(&xs, labels)?;
        if step.is_multiple_of(self.log_every) {
            let probes = crate::presets::online_readings(
                &self.header.probes,
                &readings,
                self.online.steps(),
            );
            let snap = self.snapshot_record(step, SnapshotKind::Online, probes);
            self.write(snap)?;
        }
        Ok(readings)
    }

    /// Probes fitted to convergence on `train` (early-stopped on `val` when given, tested on
    /// `test` when given), each warm-started from the previous snapshot. Returns the readings in
    /// the order of the taps given to [`Probes::new`].
    pub fn snapshot(
        &mut self,
        step: u64,
        train: &Activations,
        val: Option<&Activations>,
        test: Option<&Activations>,
    ) -> anyhow::Result<Vec<ProbeReading>> {
        let split = |a: &Activations| -> anyhow::Result<Split> {
            let given: Vec<(&str, &Tensor)> = a.taps.iter().map(|(n, x)| (n.as_str(), x)).collect();
            let x = self
                .ordered(&given)?
                .into_iter()
                .zip(&self.header.probes)
                .map(|(x, s)| s.select(x))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Split {
                x,
                y: a.labels.clone(),
            })
        };
        let tr = split(train)?;
        let va = val.map(split).transpose()?;
        let te = test.map(split).transpose()?;
        let stats =
            tr.x.iter()
                .map(probe::activation_stats)
                .collect::<candle_core::Result<Vec<_>>>()?;
        let fitted = probe::fit_converged(
            &tr,
            va.as_ref(),
            te.as_ref(),
            self.header.graph.classes,
            self.warm.as_deref(),
            &self.header.fit,
        )?;
        let probes = crate::presets::converged_readings(&self.header.probes, &fitted, Some(&stats));
        let snap = self.snapshot_record(step, SnapshotKind::Converged, probes);
        self.write(snap)?;
        self.warm = Some(fitted.iter().map(|f| f.probe.clone()).collect());
        Ok(fitted.into_iter().map(|f| f.reading).collect())
    }

    /// The online probes as they are now, in raw activation space, in tap order.
    pub fn online_probes(&self) -> anyhow::Result<Vec<LinearProbe>> {
        Ok(self.online.probes()?)
    }

    fn end(&mut self, status: EndStatus, message: Option<String>) -> anyhow::Result<()> {
        self.finished = true;
        if let Some(log) = &mut self.log {
            log.write(&Record::End(End {
                status,
                message,
                elapsed_s: self.started.elapsed().as_secs_f64(),
                step: None,
                peak_rss: crate::memory::peak_rss(),
            }))?;
        }
        Ok(())
    }

    /// Ends the run log with "finished". (Dropped without it, the log ends "stopped", or
    /// "failed" while panicking, so `probescope attach` knows the run is over.)
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.end(EndStatus::Finished, None)
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        if !self.finished && self.log.is_some() {
            let (status, why) = if std::thread::panicking() {
                (EndStatus::Failed, "the training program panicked")
            } else {
                (EndStatus::Stopped, "ended without Probes::finish")
            };
            let _ = self.end(status, Some(why.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_described_with_reads_and_bad_names_are_refused() {
        let dev = Device::Cpu;
        let taps = [("x", 8), ("left", 4), ("right", 4), ("both", 8)];
        let p = Probes::new(&taps, 2, &dev)
            .unwrap()
            .reads("right", &["x"])
            .unwrap()
            .reads("both", &["left", "right"])
            .unwrap();
        let reads = |name: &str| {
            let g = &p.header.graph;
            g.nodes[g.index_of(name).unwrap()].op.inputs().join(",")
        };
        assert_eq!(reads("left"), "x");
        assert_eq!(reads("right"), "x");
        assert_eq!(reads("both"), "left,right");
        let e = Probes::new(&taps, 2, &dev)
            .unwrap()
            .reads("both", &["lfet"])
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("reads `lfet`, which is not a node defined before it"));
        let e = Probes::new(&taps, 2, &dev)
            .unwrap()
            .reads("nope", &["x"])
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("`nope` is not one of the taps (x, left, right, both)"));
        // A repeated name and a width of 0 are refused by the graph's own check.
        let e = Probes::new(&[("x", 8), ("x", 4)], 2, &dev).err().unwrap();
        assert!(
            format!("{e:#}").contains("node name `x` is used twice"),
            "{e:#}"
        );
        let e = Probes::new(&[("x", 8), ("y", 0)], 2, &dev).err().unwrap();
        assert!(
            format!("{e:#}").contains("node `y`: external shape [0]"),
            "{e:#}"
        );
    }
}
