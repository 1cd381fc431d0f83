//! `feature-subset` (appendix A.1): probes that read only a fixed random subset of a huge
//! layer's features.
//!
//! The data: x ~ N(0, I_dim), y = argmax(x W) with W ~ N(0, 1) of shape `dim x classes`. The
//! only tap is the input; one probe per subset size reads that many of its features.

use candle_core::Tensor;

use crate::data;
use crate::graph::{Chain, Graph};
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::{self, ProbeSpec, Split};
use crate::runlog::{Record, Snapshot, SnapshotKind};

use super::{Preset, RunCtx};

/// The preset.
pub struct FeatureSubset;

impl Preset for FeatureSubset {
    fn name(&self) -> &'static str {
        "feature-subset"
    }

    fn about(&self) -> &'static str {
        "appendix A.1: probes on random subsets of a wide layer's features; error against subset size"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("scaled to seconds; the paper's size is dim=100000 classes=1000 subsets=1000 (about 10 GB), where a probe on 1,000 features fits its training set (train 0) and predicts nothing held out (chance), so the paper's \"about 4%\" can only be a training error on more samples")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int(
                "dim",
                1_000,
                1,
                10_000_000,
                "features of the layer (the paper: 100,000)",
            ),
            ParamSpec::int("classes", 10, 2, 100_000, "classes (the paper: 1,000)"),
            ParamSpec::list(
                "subsets",
                &[10, 30, 100, 300, 1_000],
                1,
                10_000_000,
                "subset sizes, one probe each (the paper: 1,000)",
            ),
            ParamSpec::int("train", 10_000, 2, 10_000_000, "training samples"),
            ParamSpec::int("test", 10_000, 1, 10_000_000, "held-out samples"),
        ];
        p.extend(super::fit_params());
        p
    }

    fn check(&self, p: &Params) -> Result<(), ParamError> {
        let dim = p.usize("dim");
        if let Some(&s) = p.list("subsets").iter().find(|&&s| s > dim) {
            return Err(ParamError(format!(
                "--set subsets: a subset of {s} features is larger than the layer's {dim} features (dim); use sizes up to {dim}"
            )));
        }
        Ok(())
    }

    fn model_file(&self, _p: &Params) -> Result<String, &'static str> {
        Err(
            "it fits probes on random subsets of one wide layer's features, with no model to \
             train; in a model file, [data] kind = \"argmax\" is its task and --set subset=N \
             reads every tap wider than N through N random features",
        )
    }

    fn graph(&self, p: &Params) -> Graph {
        // The model is only its input: the layer being probed. Its output layer is never trained.
        let mut c = Chain::new(vec![p.usize("dim")]);
        c.linear("logits", p.usize("classes"), false);
        c.finish("logits", p.usize("classes"))
    }

    fn probes(&self, p: &Params, _g: &Graph, seed: u64) -> Vec<ProbeSpec> {
        let dim = p.usize("dim");
        p.list("subsets")
            .iter()
            .map(|&s| ProbeSpec::random_subset(format!("input[{s}]"), "input", dim, s, seed))
            .collect()
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let g = self.graph(p);
        let specs = self.probes(p, &g, ctx.seed);
        let fit = ctx.fit_config(p);
        let (ntr, nte, classes) = (p.usize("train"), p.usize("test"), p.usize("classes"));
        let ds = data::argmax_task(
            ctx.seed,
            "data",
            ntr + nte,
            p.usize("dim"),
            classes,
            &ctx.device,
            &ctx.cancel(),
        )?;
        let xs: Vec<Tensor> = specs
            .iter()
            .map(|s| s.select(&ds.x))
            .collect::<candle_core::Result<_>>()?;
        let train = Split {
            x: xs
                .iter()
                .map(|x| x.narrow(0, 0, ntr))
                .collect::<candle_core::Result<_>>()?,
            y: ds.y.narrow(0, 0, ntr)?,
        };
        let test = Split {
            x: xs
                .iter()
                .map(|x| x.narrow(0, ntr, nte))
                .collect::<candle_core::Result<_>>()?,
            y: ds.y.narrow(0, ntr, nte)?,
        };
        ctx.sink.progress(&format!(
            "feature-subset: fitting {} probes on {ntr} samples of {} features, {classes} classes",
            specs.len(),
            p.usize("dim")
        ));
        let fitted = probe::fit_converged(&train, None, Some(&test), classes, None, &fit)?;
        let snap = Snapshot {
            step: 0,
            label: "subsets".into(),
            kind: SnapshotKind::Converged,
            dataset: Some(0),
            epoch: None,
            probes: super::converged_readings(&specs, &fitted, None),
            model: None,
            elapsed_s: ctx.elapsed(),
            alerts: Vec::new(),
        };
        ctx.record(Record::Snapshot(snap.clone()))?;
        ctx.sink.progress(
            "The paper's \"about 4%\" (D=100,000, K=1,000, 1,000 features) is a training error: with more \
             parameters than samples per class the probe fits its training set; the test error shows \
             what the subset generalises.",
        );
        ctx.record(Record::Summary(super::summarise(
            "feature-subset: probe error against subset size",
            &specs,
            &[&snap],
        )))
    }
}
