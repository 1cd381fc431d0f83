//! `mnist-convnet` (sec 3.4, Figs 4 and 5): the convolutional network of TensorFlow's MNIST
//! tutorial (`models/image/mnist/convolutional.py`), with a probe on each side of every
//! convolution, activation and pooling, trained for 10 epochs on MNIST.
//!
//! conv 5x5x32 (SAME) -> ReLU -> max-pool 2x2 -> conv 5x5x64 -> ReLU -> max-pool 2x2 -> fc 512 ->
//! ReLU -> fc 10, trained as the tutorial does: minibatches of 64, SGD with momentum 0.9, learning
//! rate 0.01 decayed by 0.95 each epoch, L2 5e-4. The tutorial's dropout on fc1 and its
//! truncated-normal initialisation are left out (He-normal weights, no dropout): with these
//! defaults the paper's verdicts already appear (`probescope paper`), and earlier run logs stay
//! comparable. Converged probes at initialisation and after every epoch.

use crate::graph::{Activation, Graph, Init, Node, Op};
use crate::params::{ParamError, ParamSpec, Params};
use crate::probe::ProbeSpec;

use super::trained::{self, Plan};
use super::{Preset, RunCtx};

/// The preset.
pub struct MnistConvnet;

fn node(name: &str, op: Op, probe: bool) -> Node {
    Node {
        name: name.into(),
        op,
        probe,
    }
}

/// The tutorial's network: 10 taps from the input to the logits.
pub fn graph() -> Graph {
    let conv = |input: &str, out_channels| Op::Conv2d {
        input: input.into(),
        out_channels,
        kernel: 5,
        stride: 1,
        padding: 2,
        init: Init::HeNormal,
    };
    let relu = |input: &str| Op::Activation {
        input: input.into(),
        activation: Activation::Relu,
    };
    let pool = |input: &str| Op::MaxPool2d {
        input: input.into(),
        kernel: 2,
        stride: 2,
    };
    Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![1, 28, 28],
                },
                true,
            ),
            node("conv1_preact", conv("input", 32), true),
            node("conv1_postact", relu("conv1_preact"), true),
            node("pool1", pool("conv1_postact"), true),
            node("conv2_preact", conv("pool1", 64), true),
            node("conv2_postact", relu("conv2_preact"), true),
            node("pool2", pool("conv2_postact"), true),
            node(
                "flat",
                Op::Flatten {
                    input: "pool2".into(),
                },
                false,
            ),
            node(
                "fc1_preact",
                Op::Linear {
                    input: "flat".into(),
                    out: 512,
                    init: Init::HeNormal,
                },
                true,
            ),
            node("fc1_postact", relu("fc1_preact"), true),
            node(
                "logits",
                Op::Linear {
                    input: "fc1_postact".into(),
                    out: 10,
                    init: Init::GlorotNormal,
                },
                true,
            ),
        ],
        output: "logits".into(),
        classes: 10,
    }
}

impl Preset for MnistConvnet {
    fn name(&self) -> &'static str {
        "mnist-convnet"
    }

    fn about(&self) -> &'static str {
        "sec 3.4, Figs 4-5: the MNIST convnet, probes before and after every conv, ReLU and pool, over 10 epochs"
    }

    fn defaults_note(&self) -> Option<&'static str> {
        Some("the tutorial's training (SGD momentum 0.9, lr 0.01 x 0.95 per epoch, L2 5e-4, batch 64; He-normal init, no dropout): after one epoch every tap from conv1_postact is lower than at initialisation (Fig 5); probe_train=50000 gives the paper's input error (about 8%, 12% with the default 10,000)")
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int("epochs", 10, 0, 10_000, "training epochs"),
            trained::snapshot_every_param(),
            ParamSpec::int(
                "subset",
                0,
                0,
                1_000_000,
                "features per probe on taps wider than this, drawn at random (0 = all)",
            ),
        ];
        p.extend(trained::training_params(64, 0.01, 0.95, 5e-4, 0.0, 100));
        p
    }

    fn total_steps(&self, p: &Params) -> Option<u64> {
        // Both datasets have 60,000 training images, of which 10,000 are kept for validation.
        let per_epoch = (60_000 - crate::mnist::VALIDATION) / p.usize("batch");
        Some((p.usize("epochs") * per_epoch.max(1)) as u64)
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn check_data(&self, p: &Params, data_dir: &std::path::Path) -> Result<(), ParamError> {
        trained::check_data(p, data_dir)
    }

    fn graph(&self, _p: &Params) -> Graph {
        graph()
    }

    fn memory(
        &self,
        p: &Params,
        g: &Graph,
        probes: &[ProbeSpec],
    ) -> Option<trained::MemoryEstimate> {
        Some(trained::mnist_memory_estimate(p, g, probes))
    }

    fn probes(&self, p: &Params, g: &Graph, seed: u64) -> Vec<ProbeSpec> {
        super::probes_with_subset(g, p.usize("subset"), seed)
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let g = self.graph(p);
        let specs = self.probes(p, &g, ctx.seed);
        let total = self.total_steps(p).unwrap_or(0) as usize;
        let snapshot_steps = trained::snapshot_steps(total, p.usize("snapshot_every"));
        let plan = Plan {
            epochs: Some(p.usize("epochs")),
            snapshot_steps,
            snapshot_each_epoch: true,
            ..Plan::from_params(p, false)
        };
        trained::run(self.name(), &plan, p, &g, &specs, ctx)
    }
}
