//! `untrained-mlp` (sec 3.3, Fig 3): probes on every layer of a deep MLP that is never trained.

use crate::graph::{Activation, Chain, Graph};
use crate::params::{ParamSpec, Params};
use crate::probe::ProbeSpec;

use super::{modelfile, Preset, RunCtx};

/// The MLP: `depth` layers of `width` units with LeakyReLU(`slope`), Glorot normal, and a
/// two-class linear output. Probes on the input and on every hidden layer's activation.
pub fn graph(depth: usize, width: usize, slope: f64) -> Graph {
    let mut c = Chain::new(vec![width]);
    for i in 1..=depth {
        c.linear(format!("fc{i:02}"), width, false).activation(
            format!("h{i:02}"),
            Activation::LeakyRelu { slope },
            true,
        );
    }
    c.linear("logits", 2, false);
    c.finish("logits", 2)
}

/// The preset.
pub struct UntrainedMlp;

impl UntrainedMlp {
    /// The model file that this preset runs with `p`: its MLP, the sign task with fresh data per
    /// dataset, and no training.
    pub fn file_text(&self, p: &Params) -> String {
        use crate::params::ParamValue as V;
        let mut train: Vec<(String, V)> = modelfile::train_values(p)
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "epochs" | "datasets"))
            .collect();
        train.push(("epochs".into(), V::Int(0)));
        train.push(("datasets".into(), V::Int(p.usize("datasets") as u64)));
        let comment = format!(
            "The built-in `untrained-mlp` preset at depth={} width={} slope={}, as the model file\n\
             it runs: `probescope run untrained-mlp` with these settings runs exactly this file.\n\
             [train] datasets = N draws N datasets, each with fresh data and fresh weights, and fits\n\
             converged probes on the untrained network. To change it, save it under a new name,\n\
             edit it and run it: probescope run my-untrained.toml\n",
            p.usize("depth"),
            p.usize("width"),
            p.f64("slope")
        );
        let about = format!(
            "sec 3.3, Fig 3: probes on every layer of an MLP of {} layers of {} units that is \
             never trained, over {} fresh datasets",
            p.usize("depth"),
            p.usize("width"),
            p.usize("datasets")
        );
        modelfile::generated(
            self,
            &about,
            &self.graph(p),
            &comment,
            (
                "sign",
                vec![
                    ("train".into(), V::Int(p.usize("train") as u64)),
                    ("test".into(), V::Int(p.usize("test") as u64)),
                ],
            ),
            train,
        )
    }
}

impl Preset for UntrainedMlp {
    fn name(&self) -> &'static str {
        "untrained-mlp"
    }

    fn about(&self) -> &'static str {
        "sec 3.3, Fig 3: probes on every layer of a deep MLP that is never trained; error climbs with depth"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("the paper's 100 datasets (about 30 s on 2 cores; datasets=20 for a quick look)")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int(
                "datasets",
                100,
                1,
                100_000,
                "toy datasets to average over (fresh data, w and weights each)",
            ),
            ParamSpec::int("depth", 32, 1, 1024, "hidden layers"),
            ParamSpec::int(
                "width",
                128,
                1,
                8192,
                "units per layer (and input dimension)",
            ),
            ParamSpec::float("slope", 0.5, -100.0, 100.0, "LeakyReLU negative slope"),
            ParamSpec::int(
                "train",
                10_000,
                2,
                10_000_000,
                "training samples per dataset",
            ),
            ParamSpec::int(
                "test",
                10_000,
                1,
                10_000_000,
                "held-out samples per dataset",
            ),
        ];
        p.extend(super::fit_params());
        p
    }

    fn graph(&self, p: &Params) -> Graph {
        graph(p.usize("depth"), p.usize("width"), p.f64("slope"))
    }

    fn probes(&self, _p: &Params, g: &Graph, _seed: u64) -> Vec<ProbeSpec> {
        super::probe_every_tap(g)
    }

    fn model_file(&self, p: &Params) -> Result<String, &'static str> {
        Ok(self.file_text(p))
    }

    /// Runs the model file of these parameters ([`UntrainedMlp::file_text`]), by the code that
    /// runs a user's file.
    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        modelfile::run_generated(self.name(), &self.file_text(p), ctx)
    }
}
