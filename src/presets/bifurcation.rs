//! `bifurcation` (sec 3.2): one input, two branches that see different halves of it, merged by a
//! concatenation, then the output layer.
//!
//! The data: x = [a, b], y = 1 if a.u + ratio * b.v > 0 (see [`data::two_source_task`]). Whatever
//! a branch computes, a classifier that sees only `a` errs at least atan(ratio) / pi of the time
//! and one that sees only `b` at least atan(1 / ratio) / pi, while the concatenation can reach
//! zero: three different errors, the concatenation's the lowest.

use candle_core::{DType, Tensor};
use candle_nn::{Optimizer, VarBuilder};

use crate::data::{self, Dataset};
use crate::graph::{Activation, Graph, Init, Model, Node, Op};
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::{self, FitConfig, LinearProbe, OnlineConfig, OnlineProbes, ProbeSpec, Split};
use crate::runlog::{ModelMetrics, Record, Snapshot, SnapshotKind};

use super::{Preset, RunCtx};

/// The preset.
pub struct Bifurcation;

/// The smallest error any classifier of one half of the input can reach: atan(r) / pi for the
/// half whose signal is r times weaker than the other's.
pub fn half_error_bound(ratio_of_other_to_this: f64) -> f64 {
    ratio_of_other_to_this.atan() / std::f64::consts::PI
}

fn branch(nodes: &mut Vec<Node>, prefix: &str, input: &str, depth: usize, width: usize) -> String {
    let mut last = input.to_string();
    for i in 1..=depth {
        let pre = format!("{prefix}{i}_pre");
        nodes.push(Node {
            name: pre.clone(),
            op: Op::Linear {
                input: last,
                out: width,
                init: Init::GlorotNormal,
            },
            probe: false,
        });
        last = format!("{prefix}{i}");
        nodes.push(Node {
            name: last.clone(),
            op: Op::Activation {
                input: pre,
                activation: Activation::Tanh,
            },
            probe: true,
        });
    }
    last
}

/// The two-branch graph: `half` inputs to each branch.
pub fn graph(half: usize, upper: (usize, usize), lower: (usize, usize)) -> Graph {
    let mut nodes = vec![Node {
        name: "input".into(),
        op: Op::Input {
            shape: vec![2 * half],
        },
        probe: true,
    }];
    for (name, start) in [("upper_in", 0), ("lower_in", half)] {
        nodes.push(Node {
            name: name.into(),
            op: Op::Narrow {
                input: "input".into(),
                start,
                len: half,
            },
            probe: true,
        });
    }
    let up = branch(&mut nodes, "upper", "upper_in", upper.0, upper.1);
    let lo = branch(&mut nodes, "lower", "lower_in", lower.0, lower.1);
    nodes.push(Node {
        name: "concat".into(),
        op: Op::Concat {
            inputs: vec![up, lo],
        },
        probe: true,
    });
    nodes.push(Node {
        name: "logits".into(),
        op: Op::Linear {
            input: "concat".into(),
            out: 2,
            init: Init::GlorotNormal,
        },
        probe: true,
    });
    Graph {
        nodes,
        output: "logits".into(),
        classes: 2,
    }
}

fn features(g: &Graph, specs: &[ProbeSpec], outs: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
    specs
        .iter()
        .map(|s| s.select(&outs[g.index_of(&s.tap).expect("known tap")]))
        .collect()
}

/// Converged probes on the model as it is now: fitted on `train`, tested on `test`.
pub(crate) fn converged_snapshot(
    model: &Model,
    specs: &[ProbeSpec],
    train: &Dataset,
    test: &Dataset,
    warm: Option<&[LinearProbe]>,
    fit: &FitConfig,
) -> candle_core::Result<(
    Vec<probe::Fitted>,
    Vec<probe::ActivationStats>,
    ModelMetrics,
)> {
    let g = model.graph();
    let outs_tr = model.forward(&train.x)?;
    let outs_te = model.forward(&test.x)?;
    let tr = Split {
        x: features(g, specs, &outs_tr)?,
        y: train.y.clone(),
    };
    let te = Split {
        x: features(g, specs, &outs_te)?,
        y: test.y.clone(),
    };
    let stats =
        tr.x.iter()
            .map(probe::activation_stats)
            .collect::<candle_core::Result<Vec<_>>>()?;
    let fitted = probe::fit_converged(&tr, None, Some(&te), train.classes, warm, fit)?;
    let err = |logits: &Tensor, y: &Tensor| -> candle_core::Result<f64> {
        Ok(probe::errors(&logits.unsqueeze(0)?, y)?[0])
    };
    let metrics = ModelMetrics {
        loss: model.loss(&outs_tr, &train.y)?.to_scalar::<f32>()? as f64,
        train_error: Some(err(model.logits(&outs_tr), &train.y)?),
        test_error: Some(err(model.logits(&outs_te), &test.y)?),
    };
    Ok((fitted, stats, metrics))
}

impl Preset for Bifurcation {
    fn name(&self) -> &'static str {
        "bifurcation"
    }

    fn about(&self) -> &'static str {
        "sec 3.2: two branches see different halves of the input; probes on each branch and on their concatenation"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("probes reach the closed-form limits atan(ratio)/pi (upper) and atan(1/ratio)/pi (lower) after 1,500 Adam steps, the concatenation far below both")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int("half", 16, 1, 100_000, "input features per branch"),
            ParamSpec::float(
                "ratio",
                0.6,
                0.01,
                100.0,
                "signal strength of the lower half relative to the upper",
            ),
            ParamSpec::int(
                "upper_depth",
                3,
                1,
                256,
                "layers of the upper (deep, narrow) branch",
            ),
            ParamSpec::int(
                "upper_width",
                8,
                1,
                8192,
                "units per layer of the upper branch",
            ),
            ParamSpec::int(
                "lower_depth",
                1,
                1,
                256,
                "layers of the lower (shallow, wide) branch",
            ),
            ParamSpec::int(
                "lower_width",
                64,
                1,
                8192,
                "units per layer of the lower branch",
            ),
            ParamSpec::int("steps", 1500, 0, 10_000_000, "training steps (minibatches)"),
            ParamSpec::int("batch", 100, 1, 100_000, "minibatch size"),
            ParamSpec::float("lr", 3e-3, 1e-9, 10.0, "Adam learning rate"),
            ParamSpec::int(
                "log_every",
                50,
                1,
                10_000_000,
                "steps between online-probe snapshots",
            ),
            ParamSpec::int("train", 5_000, 2, 10_000_000, "training samples"),
            ParamSpec::int("test", 5_000, 1, 10_000_000, "held-out samples"),
        ];
        p.extend(super::fit_params());
        p
    }

    fn check(&self, p: &Params) -> Result<(), ParamError> {
        if p.usize("batch") > p.usize("train") {
            return Err(ParamError(format!(
                "--set batch={}: the minibatch is larger than the {} training samples",
                p.usize("batch"),
                p.usize("train")
            )));
        }
        Ok(())
    }

    fn model_file(&self, _p: &Params) -> Result<String, &'static str> {
        Err(
            "it runs its own loop (Adam on minibatches of the whole training set, no validation \
             split, converged probes at the start and the end against the closed-form bounds); a \
             model file with [data] kind = \"two_halves\" trains a graph like it by the model \
             files' loop",
        )
    }

    fn graph(&self, p: &Params) -> Graph {
        graph(
            p.usize("half"),
            (p.usize("upper_depth"), p.usize("upper_width")),
            (p.usize("lower_depth"), p.usize("lower_width")),
        )
    }

    fn probes(&self, _p: &Params, g: &Graph, _seed: u64) -> Vec<ProbeSpec> {
        super::probe_every_tap(g)
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let dev = ctx.device.clone();
        let g = self.graph(p);
        let specs = self.probes(p, &g, ctx.seed);
        let fit = ctx.fit_config(p);
        let (ntr, nte) = (p.usize("train"), p.usize("test"));
        let all = data::two_source_task(
            ctx.seed,
            "data",
            ntr + nte,
            p.usize("half"),
            p.f64("ratio"),
            &dev,
            &ctx.cancel(),
        )?;
        let (train, test) = (all.slice(0, ntr)?, all.slice(ntr, nte)?);
        let vm = g.init_varmap(ctx.seed, &dev)?;
        let model =
            Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev))?.stop_on(ctx.cancel());
        ctx.sink.progress(&format!(
            "bifurcation: the best possible error of a probe seeing only the upper half is {:.3}, only the lower half {:.3}",
            half_error_bound(p.f64("ratio")),
            half_error_bound(1.0 / p.f64("ratio"))
        ));

        let mut summaries = Vec::new();
        ctx.at_step(0);
        let (init, stats, metrics) = converged_snapshot(&model, &specs, &train, &test, None, &fit)?;
        let snap = snapshot(
            0,
            "init",
            &specs,
            &init,
            Some(stats),
            Some(metrics),
            ctx.elapsed(),
        );
        ctx.sink.progress(&line(&snap));
        ctx.record(Record::Snapshot(snap.clone()))?;
        summaries.push(snap);

        let mut opt = candle_nn::AdamW::new(
            vm.all_vars(),
            candle_nn::ParamsAdamW {
                lr: p.f64("lr"),
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let mut online = OnlineProbes::new(specs.clone(), 2, &dev, OnlineConfig::default())?;
        let batch = p.usize("batch");
        let steps = p.usize("steps");
        let mut order: Vec<u32> = Vec::new();
        let mut rng = crate::rng::stream(ctx.seed, "minibatches");
        for step in 1..=steps {
            ctx.at_step(step as u64 - 1);
            ctx.check_stop()?;
            if order.len() < batch {
                let mut perm: Vec<u32> = (0..ntr as u32).collect();
                rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), &mut rng);
                order = perm;
            }
            if ctx.take_snapshot_request() {
                // Asked for from the UI: converge every probe on the model as it is now.
                let warm: Vec<LinearProbe> = init.iter().map(|f| f.probe.clone()).collect();
                let (fitted, stats, metrics) =
                    converged_snapshot(&model, &specs, &train, &test, Some(&warm), &fit)?;
                let label = format!("step {}", step - 1);
                let snap = snapshot(
                    step as u64 - 1,
                    &label,
                    &specs,
                    &fitted,
                    Some(stats),
                    Some(metrics),
                    ctx.elapsed(),
                );
                ctx.sink.progress(&line(&snap));
                ctx.record(Record::Snapshot(snap))?;
            }
            let idx: Vec<u32> = order.drain(..batch).collect();
            let mb = train.select(&idx)?;
            let outs = model.forward(&mb.x)?;
            let loss = model.loss(&outs, &mb.y)?;
            opt.backward_step(&loss)?;
            let last_loss = loss.to_scalar::<f32>()? as f64;
            if !last_loss.is_finite() {
                anyhow::bail!(
                    "training diverged at step {step} (loss {last_loss}); lower --set lr"
                );
            }
            let taps: Vec<Tensor> = specs
                .iter()
                .map(|s| outs[g.index_of(&s.tap).expect("known tap")].detach())
                .collect();
            let readings = online.update(&taps, &mb.y)?;
            if step % p.usize("log_every") == 0 || step == steps {
                let probes = super::online_readings(&specs, &readings, online.steps());
                let snap = Snapshot {
                    step: step as u64,
                    label: format!("step {step}"),
                    kind: SnapshotKind::Online,
                    dataset: None,
                    epoch: None,
                    probes,
                    model: Some(ModelMetrics {
                        loss: last_loss,
                        train_error: None,
                        test_error: None,
                    }),
                    elapsed_s: ctx.elapsed(),
                    alerts: Vec::new(),
                };
                ctx.sink.progress(&format!(
                    "step {step}/{steps}: model loss {last_loss:.4}; online probe error concat {:.3}",
                    snap.probes[specs.iter().position(|s| s.name == "concat").unwrap_or(0)]
                        .reading
                        .train_error
                ));
                ctx.record(Record::Snapshot(snap))?;
            }
        }
        let warm: Vec<LinearProbe> = init.iter().map(|f| f.probe.clone()).collect();
        let (trained, stats, metrics) =
            converged_snapshot(&model, &specs, &train, &test, Some(&warm), &fit)?;
        let snap = snapshot(
            steps as u64,
            "trained",
            &specs,
            &trained,
            Some(stats),
            Some(metrics),
            ctx.elapsed(),
        );
        ctx.sink.progress(&line(&snap));
        ctx.record(Record::Snapshot(snap.clone()))?;
        summaries.push(snap);
        for s in &summaries {
            ctx.record(Record::Summary(super::summarise(
                &format!("bifurcation: {} (step {})", s.label, s.step),
                &specs,
                &[s],
            )))?;
        }
        Ok(())
    }
}

fn snapshot(
    step: u64,
    label: &str,
    specs: &[ProbeSpec],
    fitted: &[probe::Fitted],
    stats: Option<Vec<probe::ActivationStats>>,
    model: Option<ModelMetrics>,
    elapsed_s: f64,
) -> Snapshot {
    Snapshot {
        step,
        label: label.into(),
        kind: SnapshotKind::Converged,
        dataset: None,
        epoch: None,
        probes: super::converged_readings(specs, fitted, stats.as_deref()),
        model,
        elapsed_s,
        alerts: Vec::new(),
    }
}

fn line(s: &Snapshot) -> String {
    let get = |name: &str| {
        s.probes
            .iter()
            .find(|r| r.probe == name)
            .and_then(|r| r.reading.test_error)
            .unwrap_or(f64::NAN)
    };
    let last = |prefix: &str| {
        s.probes
            .iter()
            .rev()
            .find(|r| r.probe.starts_with(prefix) && !r.probe.ends_with("_in"))
            .and_then(|r| r.reading.test_error)
            .unwrap_or(f64::NAN)
    };
    format!(
        "{} (step {}): probe test error upper branch {:.3}, lower branch {:.3}, concat {:.3}",
        s.label,
        s.step,
        last("upper"),
        last("lower"),
        get("concat")
    )
}
