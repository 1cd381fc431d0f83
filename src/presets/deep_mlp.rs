//! `deep-mlp` (sec 3.6, Figs 6 to 8): 128 fully connected layers of 128 units (Glorot normal,
//! leaky ReLU) on MNIST, in three variants:
//! - `plain`: the chain alone. The signal shrinks layer after layer, and the paper's model fails
//!   to train.
//! - `aux`: a linear classifier head every 16 layers whose cross-entropy adds to the loss (these
//!   heads train the layers below them; they are not probes). The model trains.
//! - `skip`: layer 64 reads the concatenation of layer 63's output and the input, so the second
//!   half of the network can learn from the input directly and layers 1 to 63 are ignored.
//!
//! Converged snapshots at minibatches 0, 500 and 2,000 (aux: also 5,000), as in the figures, and
//! every `snapshot_every` minibatches for the "ripple" picture.

use crate::graph::{Activation, Graph, Init, Node, Op};
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::ProbeSpec;

use super::trained;
use super::{modelfile, Preset, RunCtx};

/// The preset.
pub struct DeepMlp;

/// The variants of sec 3.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// No help.
    Plain,
    /// Auxiliary heads.
    Aux,
    /// The skip connection to the middle layer.
    Skip,
}

impl Variant {
    fn of(p: &Params) -> Self {
        match p.text("variant") {
            "aux" => Variant::Aux,
            "skip" => Variant::Skip,
            _ => Variant::Plain,
        }
    }
}

/// Name of hidden layer `i` (1-based): `h001`, ...
pub fn layer_name(i: usize) -> String {
    format!("h{i:03}")
}

/// The chain: `depth` layers of `width` units reading `inputs` features, with `classes` outputs.
/// `skip_at = Some(k)`: layer k reads layer k-1 and the input concatenated. `aux_every = m > 0`:
/// an auxiliary head of loss weight `aux_weight` on every m-th layer (not the last).
#[allow(clippy::too_many_arguments)]
pub fn graph(
    inputs: usize,
    depth: usize,
    width: usize,
    classes: usize,
    slope: f64,
    skip_at: Option<usize>,
    aux_every: usize,
    aux_weight: f64,
) -> Graph {
    let mut nodes = vec![Node {
        name: "input".into(),
        op: Op::Input {
            shape: vec![inputs],
        },
        probe: true,
    }];
    let mut last = "input".to_string();
    for i in 1..=depth {
        if skip_at == Some(i) {
            nodes.push(Node {
                name: "skip".into(),
                op: Op::Concat {
                    inputs: vec![last, "input".into()],
                },
                probe: false,
            });
            last = "skip".into();
        }
        let fc = format!("fc{i:03}");
        nodes.push(Node {
            name: fc.clone(),
            op: Op::Linear {
                input: last,
                out: width,
                init: Init::GlorotNormal,
            },
            probe: false,
        });
        last = layer_name(i);
        nodes.push(Node {
            name: last.clone(),
            op: Op::Activation {
                input: fc,
                activation: Activation::LeakyRelu { slope },
            },
            probe: true,
        });
        if aux_every > 0 && i % aux_every == 0 && i < depth {
            nodes.push(Node {
                name: format!("aux{i:03}"),
                op: Op::AuxHead {
                    input: last.clone(),
                    weight: aux_weight,
                    init: Init::GlorotNormal,
                },
                probe: false,
            });
        }
    }
    nodes.push(Node {
        name: "logits".into(),
        op: Op::Linear {
            input: last,
            out: classes,
            init: Init::GlorotNormal,
        },
        probe: true,
    });
    Graph {
        nodes,
        output: "logits".into(),
        classes,
    }
}

impl DeepMlp {
    /// The model file that this preset runs with `p`: the graph the parameters make, and the
    /// training settings as a model file's `[train]`.
    pub fn file_text(&self, p: &Params) -> String {
        use crate::params::ParamValue as V;
        let mut train: Vec<(String, V)> = modelfile::train_values(p)
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "steps" | "snapshots" | "snapshot_every" | "lr"))
            .collect();
        train.push(("steps".into(), V::Int(steps_of(p) as u64)));
        train.push(("lr".into(), V::Float(lr_of(p))));
        train.push((
            "snapshots".into(),
            V::List(
                trained::snapshot_steps(
                    &p.list("snapshots"),
                    p.usize("snapshot_every"),
                    steps_of(p),
                )
                .into_iter()
                .map(|s| s as u64)
                .collect(),
            ),
        ));
        train.push(("epoch_snapshots".into(), V::Text("off".into())));
        let settings: Vec<String> = ["variant", "depth", "width", "slope"]
            .iter()
            .chain(if Variant::of(p) == Variant::Aux {
                &["aux_every", "aux_weight"][..]
            } else {
                &[]
            })
            .map(|k| format!("{k}={}", p.0[*k]))
            .collect();
        let comment = format!(
            "The built-in `deep-mlp` preset at {}, as the model file it runs:\n\
             `probescope run deep-mlp` with these settings runs exactly this file. To change it,\n\
             save it under a new name, edit it and run it: probescope run my-deep-mlp.toml\n",
            settings.join(" ")
        );
        let about = format!(
            "sec 3.6, Figs 6-8: {} layers of {} units on {}, variant {}",
            p.usize("depth"),
            p.usize("width"),
            p.text("dataset"),
            p.text("variant")
        );
        modelfile::generated(
            self,
            &about,
            &self.graph(p),
            &comment,
            (p.text("dataset"), Vec::new()),
            train,
        )
    }
}

/// Training steps when `steps=0`: the paper's last snapshot, 2,000 minibatches (aux: 5,000).
fn steps_of(p: &Params) -> usize {
    match (p.usize("steps"), Variant::of(p)) {
        (0, Variant::Aux) => 5_000,
        (0, _) => 2_000,
        (n, _) => n,
    }
}

/// The learning rate when `lr=0`: 1e-4, or 5e-5 for skip (see [`DeepMlp::params`]).
fn lr_of(p: &Params) -> f64 {
    match (p.f64("lr"), Variant::of(p)) {
        (lr, _) if lr > 0.0 => lr,
        (_, Variant::Skip) => 5e-5,
        _ => 1e-4,
    }
}

impl Preset for DeepMlp {
    fn name(&self) -> &'static str {
        "deep-mlp"
    }

    fn about(&self) -> &'static str {
        "sec 3.6, Figs 6-8: 128 layers of 128 units on MNIST; --set variant=plain|aux|skip"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("RMSProp at lr 1e-4 (skip 5e-5) without clipping: with it plain stays at the majority class, aux trains and skip shows Fig 8 (SGD at 0.01 clipped at 1, the earlier default, leaves skip untrained); 2,000 steps (aux 5,000) as the paper's last snapshot")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::choice(
                "variant",
                &["plain", "aux", "skip"],
                "plain, aux (a classifier head every aux_every layers) or skip (layer depth/2 also reads the input)",
            ),
            ParamSpec::int("depth", 128, 2, 4096, "hidden layers"),
            ParamSpec::int("width", 128, 1, 65_536, "units per hidden layer"),
            ParamSpec::float(
                "slope",
                0.5,
                0.0,
                1.0,
                "negative-side slope of the leaky ReLU",
            ),
            ParamSpec::int("aux_every", 16, 1, 4096, "layers between auxiliary heads (aux)"),
            ParamSpec::float("aux_weight", 1.0, 0.0, 100.0, "loss weight of each auxiliary head"),
            ParamSpec::int(
                "steps",
                0,
                0,
                100_000_000,
                "training minibatches (0: the paper's 2,000, or 5,000 for aux)",
            ),
            ParamSpec::list(
                "snapshots",
                &[0, 500, 2000, 5000],
                0,
                100_000_000,
                "minibatches at which to fit converged probes (those past the end are skipped)",
            ),
            ParamSpec::int(
                "snapshot_every",
                0,
                0,
                100_000_000,
                "also fit converged probes every this many minibatches (0: never; ~100 shows the ripple)",
            ),
        ];
        // RMSProp without clipping, at 1e-4 (skip: 5e-5): the recipe under which all three of
        // the paper's verdicts appear. SGD at 0.01 with clipping left skip untrained. At 1e-4
        // the skip model's loss spikes late in training, and where a spike falls just before
        // step 2,000 the model ends near .55 test error with its last layers no better than at
        // initialisation. Over seeds 0 to 5 (1,000 probe images; Fig 8's checks: layers 8 to
        // 63 gain under a tenth of what 64 to 128 gain, and every layer from 64 lower): at 1e-4
        // model test error .55 .36 .52 .31 .29 .33, and 3 seeds (0, 2, 3) fail a check; at 5e-5
        // .24 .26 .41 .30 .32 .27, every seed passing both. Batch 128 at 1e-4 stalled seed 0 at
        // .86; the rate halved each epoch trained skip's first half too (layers 8 to 63 gained
        // .058). Aux at 5e-5 trains too slowly (.265 model error at 2,000 steps), so it keeps 1e-4.
        p.extend(trained::training_params(64, 1e-4, 1.0, 0.0, 0.0, 50));
        for spec in &mut p {
            if spec.key == "lr" {
                *spec = ParamSpec::float(
                    "lr",
                    0.0,
                    0.0,
                    10.0,
                    "initial learning rate (0: 1e-4, or 5e-5 for skip, whose loss spikes late at 1e-4)",
                );
            }
            if spec.key == "optimizer" {
                *spec = ParamSpec::choice(
                    "optimizer",
                    &["rmsprop", "sgd", "adam"],
                    "rmsprop (PyTorch's: alpha 0.99, eps 1e-8; the default here), sgd (with \
                     momentum) or adam",
                );
            }
        }
        p
    }

    fn check(&self, p: &Params) -> Result<(), ParamError> {
        if Variant::of(p) == Variant::Skip && p.usize("depth") < 2 {
            return Err(ParamError(
                "--set variant=skip needs depth of at least 2".into(),
            ));
        }
        Ok(())
    }

    fn total_steps(&self, p: &Params) -> Option<u64> {
        Some(steps_of(p) as u64)
    }

    fn checkpoints(&self, _params: &Params) -> bool {
        true
    }

    fn check_data(&self, p: &Params, data_dir: &std::path::Path) -> Result<(), ParamError> {
        trained::check_data(p, data_dir)
    }

    fn graph(&self, p: &Params) -> Graph {
        let depth = p.usize("depth");
        let v = Variant::of(p);
        graph(
            28 * 28,
            depth,
            p.usize("width"),
            10,
            p.f64("slope"),
            (v == Variant::Skip).then_some(depth / 2),
            if v == Variant::Aux {
                p.usize("aux_every")
            } else {
                0
            },
            p.f64("aux_weight"),
        )
    }

    fn memory(
        &self,
        p: &Params,
        g: &Graph,
        probes: &[ProbeSpec],
    ) -> Option<trained::MemoryEstimate> {
        Some(trained::mnist_memory_estimate(p, g, probes))
    }

    fn probes(&self, _p: &Params, g: &Graph, _seed: u64) -> Vec<ProbeSpec> {
        super::probe_every_tap(g)
    }

    fn model_file(&self, p: &Params) -> Result<String, &'static str> {
        Ok(self.file_text(p))
    }

    /// Runs the model file of these parameters ([`DeepMlp::file_text`]), by the code that runs
    /// a user's file.
    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        modelfile::run_generated(self.name(), &self.file_text(p), ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variants_have_the_papers_shape() {
        let plain = graph(784, 128, 128, 10, 0.5, None, 0, 1.0);
        let taps = plain.taps().unwrap();
        assert_eq!(taps.len(), 130); // input, 128 layers, logits
        let aux = graph(784, 128, 128, 10, 0.5, None, 16, 1.0);
        let heads = aux
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::AuxHead { .. }))
            .count();
        assert_eq!(heads, 7); // after layers 16, 32, ..., 112
        let skip = graph(784, 128, 128, 10, 0.5, Some(64), 0, 1.0);
        let shapes = skip.shapes().unwrap();
        let i = skip.index_of("skip").unwrap();
        assert_eq!(shapes[i], vec![128 + 784]);
        assert_eq!(skip.nodes[i + 1].op.inputs(), vec!["skip"]);
        assert_eq!(skip.nodes[i].op.inputs(), vec!["h063", "input"]);
    }
}
