//! The model graph: named nodes whose outputs are probe taps.
//!
//! One [`Graph`] value drives the forward pass ([`Model::forward`]), is written into the run log
//! (serde), and is what the UI draws. Nodes refer to their inputs by name and may only refer to
//! nodes listed before them, so the node list is already in topological order.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Module, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::rng;

/// An element-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// x for x > 0, slope * x otherwise.
    LeakyRelu {
        /// Slope on the negative side, in (0, 1) usually (the paper's untrained MLP uses 0.5).
        slope: f64,
    },
    /// tanh(x)
    Tanh,
}

impl Activation {
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Activation::LeakyRelu { slope } = self {
            // One host pass on the CPU (see `host::leaky_relu`).
            if let Some(y) = crate::host::leaky_relu(x, *slope) {
                return y;
            }
        }
        match self {
            Activation::Relu => x.relu(),
            // max(x, slope x) for slopes up to 1: two passes, where candle_nn's leaky_relu takes several.
            Activation::LeakyRelu { slope } if *slope <= 1.0 => x.maximum(&x.affine(*slope, 0.0)?),
            Activation::LeakyRelu { slope } => x.minimum(&x.affine(*slope, 0.0)?),
            Activation::Tanh => x.tanh(),
        }
    }

    /// Short name for tables and the diagram.
    pub fn label(&self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu { slope } => format!("leaky_relu({slope})"),
            Activation::Tanh => "tanh".into(),
        }
    }

    /// Whether units of this activation can be "dead" (output exactly zero).
    pub fn can_die(&self) -> bool {
        matches!(self, Activation::Relu)
    }
}

/// How a layer's weights are drawn. Biases always start at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// N(0, 2 / (fan_in + fan_out)): Glorot & Bengio (2010), the paper's choice.
    #[default]
    GlorotNormal,
    /// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    GlorotUniform,
    /// N(0, 2 / fan_in): He et al. (2015), for ReLU networks.
    HeNormal,
    /// N(0, 1 / fan_in): LeCun.
    LecunNormal,
}

impl Init {
    fn draw(
        &self,
        rng: &mut rand::rngs::StdRng,
        n: usize,
        fan_in: usize,
        fan_out: usize,
    ) -> Vec<f32> {
        let (fi, fo) = (fan_in as f64, fan_out as f64);
        match self {
            Init::GlorotNormal => rng::normal_vec(rng, n, (2.0 / (fi + fo)).sqrt()),
            Init::GlorotUniform => rng::uniform_vec(rng, n, (6.0 / (fi + fo)).sqrt()),
            Init::HeNormal => rng::normal_vec(rng, n, (2.0 / fi).sqrt()),
            Init::LecunNormal => rng::normal_vec(rng, n, (1.0 / fi).sqrt()),
        }
    }
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn unit_weight() -> f64 {
    1.0
}

/// What a node computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The model's input; `shape` is one sample's shape: `[features]` or `[channels, height, width]`.
    Input {
        /// Shape of one sample.
        shape: Vec<usize>,
    },
    /// Fully connected layer `W x + b` on a flat input.
    Linear {
        /// Name of the input node.
        input: String,
        /// Number of output units.
        out: usize,
        /// Weight initialisation.
        #[serde(default)]
        init: Init,
    },
    /// 2-d convolution on `[channels, height, width]` input.
    Conv2d {
        /// Name of the input node.
        input: String,
        /// Number of filters.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (`kernel / 2` keeps the size: TensorFlow's SAME for odd kernels).
        #[serde(default)]
        padding: usize,
        /// Weight initialisation.
        #[serde(default)]
        init: Init,
    },
    /// Element-wise activation.
    Activation {
        /// Name of the input node.
        input: String,
        /// Which non-linearity.
        activation: Activation,
    },
    /// 2-d max pooling with a square window.
    MaxPool2d {
        /// Name of the input node.
        input: String,
        /// Window size.
        kernel: usize,
        /// Stride (usually equal to the window).
        stride: usize,
    },
    /// Flattens `[c, h, w]` into `[c * h * w]`.
    Flatten {
        /// Name of the input node.
        input: String,
    },
    /// Features `start .. start + len` of a flat input: how a branch sees part of the input.
    Narrow {
        /// Name of the input node.
        input: String,
        /// First feature.
        start: usize,
        /// Number of features.
        len: usize,
    },
    /// Concatenation of flat inputs along the feature axis: where branches merge.
    Concat {
        /// Names of the input nodes, in order.
        inputs: Vec<String>,
    },
    /// Auxiliary linear classifier head: its cross-entropy, times `weight`, adds to the model's
    /// loss (sec 3.6). Unlike a probe, it does train the layers below it.
    AuxHead {
        /// Name of the input node.
        input: String,
        /// Weight of this head's loss in the model loss.
        #[serde(default = "unit_weight")]
        weight: f64,
        /// Weight initialisation.
        #[serde(default)]
        init: Init,
    },
    /// Dropout (Srivastava et al., 2014): while training, each feature is zeroed with
    /// probability `p` and the rest scaled by `1 / (1 - p)`; the identity everywhere else (the
    /// probes' snapshots, the model's test error). The masks come from the run's seed and the
    /// step, so a run and its resumption drop the same features.
    Dropout {
        /// Name of the input node.
        input: String,
        /// Probability of dropping a feature, in [0, 1).
        p: f64,
    },
    /// Layer normalisation (Ba et al., 2016) of a flat input: each sample's features centred
    /// and scaled to unit variance, then a learned per-feature scale and shift (`NAME.weight`,
    /// `NAME.bias`, starting at 1 and 0).
    LayerNorm {
        /// Name of the input node.
        input: String,
    },
    /// A layer computed by the user's own code (see [`crate::Probes`]): probescope knows only its
    /// name, what it reads and the shape of its output, so it can draw and probe it but cannot
    /// run it.
    External {
        /// Names of the input nodes (none for a model's first layer).
        #[serde(default)]
        inputs: Vec<String>,
        /// Shape of one sample's output.
        shape: Vec<usize>,
    },
}

impl Op {
    /// The names of the nodes this one reads.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Op::Input { .. } => vec![],
            Op::Concat { inputs } | Op::External { inputs, .. } => {
                inputs.iter().map(String::as_str).collect()
            }
            Op::Linear { input, .. }
            | Op::Conv2d { input, .. }
            | Op::Activation { input, .. }
            | Op::MaxPool2d { input, .. }
            | Op::Flatten { input }
            | Op::Dropout { input, .. }
            | Op::LayerNorm { input }
            | Op::Narrow { input, .. }
            | Op::AuxHead { input, .. } => vec![input.as_str()],
        }
    }

    /// Short kind name ("linear", "conv2d", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::Activation { .. } => "activation",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::Flatten { .. } => "flatten",
            Op::Dropout { .. } => "dropout",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::AuxHead { .. } => "aux_head",
            Op::External { .. } => "external",
        }
    }
}

/// One named node of the graph. Its output is a tap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name; also the parameter prefix (`vb.pp(name)`).
    pub name: String,
    /// What the node computes.
    #[serde(flatten)]
    pub op: Op,
    /// Whether a probe is attached to this node's output.
    #[serde(default = "yes")]
    pub probe: bool,
}

/// A model as a list of named nodes in topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The nodes, each after all of its inputs.
    pub nodes: Vec<Node>,
    /// Name of the node whose output is the model's logits.
    pub output: String,
    /// Number of classes of the task.
    pub classes: usize,
}

/// Something wrong with a graph's structure or shapes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// Two nodes share a name.
    #[error("node name `{0}` is used twice; give every node its own name")]
    DuplicateName(String),
    /// A node reads a node that is not defined before it.
    #[error("node `{node}` reads `{input}`, which is not a node defined before it")]
    UnknownInput {
        /// The reading node.
        node: String,
        /// The missing name.
        input: String,
    },
    /// The graph has no input node, or the first node is not one.
    #[error("the first node must be the input, and only the first")]
    BadInput,
    /// A shape does not fit.
    #[error("node `{node}`: {problem}")]
    Shape {
        /// The node.
        node: String,
        /// What does not fit.
        problem: String,
    },
    /// The output node does not exist or is not a linear layer with `classes` outputs.
    #[error("output `{0}` must name a linear node with one output per class")]
    BadOutput(String),
}

/// What the UI and the run log know about a tap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapInfo {
    /// Node name.
    pub name: String,
    /// Node kind ("linear", "activation", ...).
    pub kind: String,
    /// Output shape of one sample.
    pub shape: Vec<usize>,
    /// Number of features a probe on it sees (product of the shape).
    pub features: usize,
}

impl Graph {
    /// Checks names, references and shapes; returns each node's per-sample output shape.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, GraphError> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            if index.contains_key(node.name.as_str()) {
                return Err(GraphError::DuplicateName(node.name.clone()));
            }
            // The input comes first; a user's own model (external layers) may start with one.
            let first_ok = matches!(node.op, Op::Input { .. } | Op::External { .. });
            if matches!(node.op, Op::Input { .. }) && i > 0 || i == 0 && !first_ok {
                return Err(GraphError::BadInput);
            }
            let mut ins = Vec::new();
            for input in node.op.inputs() {
                match index.get(input) {
                    Some(&j) => ins.push(shapes[j].clone()),
                    None => {
                        return Err(GraphError::UnknownInput {
                            node: node.name.clone(),
                            input: input.to_string(),
                        })
                    }
                }
            }
            let shape = self.node_shape(node, &ins)?;
            index.insert(node.name.as_str(), i);
            shapes.push(shape);
        }
        match index
            .get(self.output.as_str())
            .map(|&i| (&self.nodes[i].op, &shapes[i]))
        {
            Some((Op::Linear { out, .. }, _)) if *out == self.classes => Ok(shapes),
            // The user's own model: its output is its own business.
            Some((Op::External { .. }, _)) => Ok(shapes),
            _ => Err(GraphError::BadOutput(self.output.clone())),
        }
    }

    /// Per node, about what computing its output costs for one sample: multiply-adds for a
    /// linear layer or convolution, one operation per output number elsewhere (activations,
    /// pooling, copies), nothing for a layer the user's own code runs. For choosing which taps
    /// share a forward pass; empty for a graph that does not check.
    pub fn forward_costs(&self) -> Vec<f64> {
        let Ok(shapes) = self.shapes() else {
            return Vec::new();
        };
        let size = |s: &[usize]| s.iter().product::<usize>() as f64;
        self.nodes
            .iter()
            .zip(&shapes)
            .map(|(node, out)| {
                let input = node
                    .op
                    .inputs()
                    .first()
                    .and_then(|n| self.index_of(n))
                    .map_or(&[][..], |k| shapes[k].as_slice());
                match &node.op {
                    Op::Linear { .. } | Op::AuxHead { .. } => size(input) * size(out),
                    Op::Conv2d { kernel, .. } => {
                        let channels = input.first().copied().unwrap_or(1) as f64;
                        size(out) * channels * (kernel * kernel) as f64
                    }
                    Op::External { .. } | Op::Input { .. } => 0.0,
                    _ => size(out),
                }
            })
            .collect()
    }

    fn node_shape(&self, node: &Node, ins: &[Vec<usize>]) -> Result<Vec<usize>, GraphError> {
        let err = |problem: String| GraphError::Shape {
            node: node.name.clone(),
            problem,
        };
        let flat = |s: &Vec<usize>| -> Result<usize, GraphError> {
            match s.as_slice() {
                [f] => Ok(*f),
                _ => Err(err(format!(
                    "expects a flat input, got shape {s:?}; put a flatten node before it"
                ))),
            }
        };
        let positive = |what: &str, v: usize| -> Result<(), GraphError> {
            if v == 0 {
                Err(err(format!("{what} must be at least 1")))
            } else {
                Ok(())
            }
        };
        Ok(match &node.op {
            Op::External { shape, .. } => {
                if shape.is_empty() || shape.contains(&0) {
                    return Err(err(format!(
                        "external shape {shape:?} must have at least one axis, all at least 1"
                    )));
                }
                shape.clone()
            }
            Op::Input { shape } => {
                if shape.is_empty() || shape.contains(&0) || !(shape.len() == 1 || shape.len() == 3)
                {
                    return Err(err(format!(
                        "input shape {shape:?} must be [features] or [channels, height, width], all at least 1"
                    )));
                }
                shape.clone()
            }
            Op::Linear { out, .. } => {
                flat(&ins[0])?;
                positive("out", *out)?;
                vec![*out]
            }
            Op::AuxHead { weight, .. } => {
                flat(&ins[0])?;
                if !(weight.is_finite() && *weight >= 0.0) {
                    return Err(err(format!(
                        "weight {weight} must be finite and not negative"
                    )));
                }
                vec![self.classes]
            }
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                let [_, h, w] = ins[0].as_slice() else {
                    return Err(err(format!(
                        "expects [channels, height, width] input, got {:?}",
                        ins[0]
                    )));
                };
                positive("out_channels", *out_channels)?;
                positive("kernel", *kernel)?;
                positive("stride", *stride)?;
                if h + 2 * padding < *kernel || w + 2 * padding < *kernel {
                    return Err(err(format!(
                        "kernel {kernel} is larger than the padded input {h}x{w}"
                    )));
                }
                let oh = (h + 2 * padding - kernel) / stride + 1;
                let ow = (w + 2 * padding - kernel) / stride + 1;
                vec![*out_channels, oh, ow]
            }
            Op::Activation { activation, .. } => {
                if let Activation::LeakyRelu { slope } = activation {
                    if !slope.is_finite() {
                        return Err(err(format!("leaky_relu slope {slope} must be finite")));
                    }
                }
                ins[0].clone()
            }
            Op::MaxPool2d { kernel, stride, .. } => {
                let [c, h, w] = ins[0].as_slice() else {
                    return Err(err(format!(
                        "expects [channels, height, width] input, got {:?}",
                        ins[0]
                    )));
                };
                positive("kernel", *kernel)?;
                positive("stride", *stride)?;
                if h < kernel || w < kernel {
                    return Err(err(format!(
                        "window {kernel} is larger than the input {h}x{w}"
                    )));
                }
                vec![*c, (h - kernel) / stride + 1, (w - kernel) / stride + 1]
            }
            Op::Flatten { .. } => vec![ins[0].iter().product()],
            Op::Dropout { p, .. } => {
                if !(0.0..1.0).contains(p) {
                    return Err(err(format!("dropout p = {p} must be in [0, 1)")));
                }
                ins[0].clone()
            }
            Op::LayerNorm { .. } => vec![flat(&ins[0])?],
            Op::Narrow { start, len, .. } => {
                let f = flat(&ins[0])?;
                positive("len", *len)?;
                if start + len > f {
                    return Err(err(format!(
                        "features {start}..{} are outside the input's {f}",
                        start + len
                    )));
                }
                vec![*len]
            }
            Op::Concat { inputs } => {
                if inputs.is_empty() {
                    return Err(err("concat needs at least one input".into()));
                }
                let mut total = 0;
                for s in ins {
                    total += flat(s)?;
                }
                vec![total]
            }
        })
    }

    /// The taps that carry a probe, in node order.
    pub fn taps(&self) -> Result<Vec<TapInfo>, GraphError> {
        let shapes = self.shapes()?;
        Ok(self
            .nodes
            .iter()
            .zip(shapes)
            .filter(|(n, _)| n.probe)
            .map(|(n, shape)| TapInfo {
                name: n.name.clone(),
                kind: n.op.kind().to_string(),
                features: shape.iter().product(),
                shape,
            })
            .collect())
    }

    /// The earlier node whose output node `node`'s is a wider affine map of: `node` is a
    /// stride-1 convolution (padding narrower than its kernel) or a fully connected layer with
    /// more outputs than inputs, and its input, read through any flattening (which moves no
    /// feature), has fewer features. `None` for any other node.
    pub fn affine_source(&self, node: usize) -> Option<usize> {
        let shapes = self.shapes().ok()?;
        let width = |k: usize| shapes[k].iter().product::<usize>();
        let n = self.nodes.get(node)?;
        let ok = match &n.op {
            Op::Conv2d {
                stride,
                padding,
                kernel,
                ..
            } => *stride == 1 && padding < kernel,
            Op::Linear { .. } => true,
            _ => false,
        };
        let mut from = self.index_of(n.op.inputs().first()?)?;
        while let Op::Flatten { input } = &self.nodes[from].op {
            from = self.index_of(input)?;
        }
        (ok && width(node) > width(from)).then_some(from)
    }

    /// Index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Fan-in, fan-out and weight shape of a node with parameters.
    pub(crate) fn param_shape(
        node: &Node,
        input: &[usize],
        classes: usize,
    ) -> Option<(usize, usize, Vec<usize>)> {
        match &node.op {
            Op::Linear { out, .. } => Some((input[0], *out, vec![*out, input[0]])),
            Op::AuxHead { .. } => Some((input[0], classes, vec![classes, input[0]])),
            Op::LayerNorm { .. } => Some((input[0], input[0], vec![input[0]])),
            Op::Conv2d {
                out_channels,
                kernel,
                ..
            } => {
                let c = input[0];
                let k2 = kernel * kernel;
                Some((
                    c * k2,
                    out_channels * k2,
                    vec![*out_channels, c, *kernel, *kernel],
                ))
            }
            _ => None,
        }
    }

    fn init_of(node: &Node) -> Init {
        match &node.op {
            Op::Linear { init, .. } | Op::Conv2d { init, .. } | Op::AuxHead { init, .. } => *init,
            _ => Init::default(),
        }
    }

    /// A [`VarMap`] holding freshly initialised parameters (`NAME.weight`, `NAME.bias`), drawn from
    /// `seed`: the same seed gives the same model on every machine.
    pub fn init_varmap(&self, seed: u64, device: &Device) -> candle_core::Result<VarMap> {
        let shapes = self.shapes().map_err(candle_core::Error::wrap)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().expect("varmap lock");
            for node in &self.nodes {
                let Some(input) = node.op.inputs().first().and_then(|n| self.index_of(n)) else {
                    continue;
                };
                let Some((fan_in, fan_out, wshape)) =
                    Self::param_shape(node, &shapes[input], self.classes)
                else {
                    continue;
                };
                let w = if matches!(node.op, Op::LayerNorm { .. }) {
                    Tensor::ones(wshape.as_slice(), DType::F32, device)?
                } else {
                    let mut r = rng::stream(seed, &format!("init/{}", node.name));
                    let n: usize = wshape.iter().product();
                    let w = Self::init_of(node).draw(&mut r, n, fan_in, fan_out);
                    Tensor::from_vec(w, wshape.as_slice(), device)?
                };
                let b = Tensor::zeros(wshape[0], DType::F32, device)?;
                data.insert(format!("{}.weight", node.name), Var::from_tensor(&w)?);
                data.insert(format!("{}.bias", node.name), Var::from_tensor(&b)?);
            }
        }
        Ok(varmap)
    }
}

enum Layer {
    None,
    Linear(candle_nn::Linear),
    Conv(candle_nn::Conv2d),
    Norm(candle_nn::LayerNorm),
}

/// A [`Graph`] with its parameters, ready to run.
pub struct Model {
    graph: Graph,
    layers: Vec<Layer>,
    inputs: Vec<Vec<usize>>,
    output: usize,
    cancel: crate::cancel::Cancel,
}

impl Model {
    /// Builds the model, taking parameters from `vb` the candle way (`vb.pp(node).get(..)`).
    pub fn new(graph: &Graph, vb: VarBuilder) -> candle_core::Result<Self> {
        let shapes = graph.shapes().map_err(candle_core::Error::wrap)?;
        let mut layers = Vec::with_capacity(graph.nodes.len());
        let mut inputs = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let ins: Vec<usize> = node
                .op
                .inputs()
                .iter()
                .map(|n| graph.index_of(n).expect("validated"))
                .collect();
            let layer = match (
                &node.op,
                Graph::param_shape(
                    node,
                    ins.first().map(|&i| shapes[i].as_slice()).unwrap_or(&[]),
                    graph.classes,
                ),
            ) {
                (Op::Linear { .. } | Op::AuxHead { .. }, Some((_, out, wshape))) => {
                    let vb = vb.pp(&node.name);
                    Layer::Linear(candle_nn::Linear::new(
                        vb.get(wshape.as_slice(), "weight")?,
                        Some(vb.get(out, "bias")?),
                    ))
                }
                (
                    Op::Conv2d {
                        stride, padding, ..
                    },
                    Some((_, _, wshape)),
                ) => {
                    let vb = vb.pp(&node.name);
                    let cfg = candle_nn::Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        ..Default::default()
                    };
                    Layer::Conv(candle_nn::Conv2d::new(
                        vb.get(wshape.as_slice(), "weight")?,
                        Some(vb.get(wshape[0], "bias")?),
                        cfg,
                    ))
                }
                (Op::LayerNorm { .. }, Some((_, out, _))) => {
                    let vb = vb.pp(&node.name);
                    Layer::Norm(candle_nn::LayerNorm::new(
                        vb.get(out, "weight")?,
                        vb.get(out, "bias")?,
                        1e-5,
                    ))
                }
                (Op::External { .. }, _) => candle_core::bail!(
                    "node `{}` is an external layer (computed by your own code), which \
                     probescope cannot run; feed its output to probescope::Probes instead",
                    node.name
                ),
                _ => Layer::None,
            };
            layers.push(layer);
            inputs.push(ins);
        }
        let output = graph.index_of(&graph.output).expect("validated");
        Ok(Self {
            graph: graph.clone(),
            layers,
            inputs,
            output,
            cancel: Default::default(),
        })
    }

    /// Every pass of this model checks `cancel` before each node and stops with
    /// [`crate::cancel::Cancelled`] once it is set (a pass of a deep model on many samples can
    /// take seconds).
    pub fn stop_on(mut self, cancel: crate::cancel::Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The graph this model runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the model on a batch `x` (`[batch, ..input shape]`) and returns every node's output,
    /// in node order. The output node's entry is the logits.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_until(x, self.layers.len() - 1)
    }

    /// Like [`Model::forward`], but stops after node `last`: the outputs of nodes `0..=last`.
    /// Nodes only read earlier ones, so these are exactly the full pass's first outputs.
    pub fn forward_until(&self, x: &Tensor, last: usize) -> candle_core::Result<Vec<Tensor>> {
        self.pass(x, last, None, false)
    }

    /// Like [`Model::forward_until`], for reading features only: no gradient flows back through
    /// the outputs. On a CPU its convolutions run on the host kernel (`crate::host::conv2d`),
    /// two to three times faster than candle's, their sums rounded in another order; its max
    /// pooling and ReLUs on host kernels too, with candle's numbers.
    pub fn infer_until(&self, x: &Tensor, last: usize) -> candle_core::Result<Vec<Tensor>> {
        self.pass(x, last, None, true)
    }

    /// The forward pass of a training step: like [`Model::forward`], with dropout on, its
    /// masks drawn from `seed` and `step`.
    pub fn forward_train(
        &self,
        x: &Tensor,
        seed: u64,
        step: u64,
    ) -> candle_core::Result<Vec<Tensor>> {
        self.pass(x, self.layers.len() - 1, Some((seed, step)), false)
    }

    fn pass(
        &self,
        x: &Tensor,
        last: usize,
        train: Option<(u64, u64)>,
        infer: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(last + 1);
        for (i, node) in self.graph.nodes.iter().enumerate().take(last + 1) {
            self.cancel.check_candle()?;
            let inp = |k: usize| &outs[self.inputs[i][k]];
            let y = match (&node.op, &self.layers[i]) {
                (Op::Input { .. }, _) => x.clone(),
                (_, Layer::Linear(l)) => match l
                    .bias()
                    .and_then(|b| crate::host::linear(inp(0), l.weight(), b))
                {
                    Some(y) => y?,
                    None => l.forward(inp(0))?,
                },
                (_, Layer::Conv(c)) => {
                    let cfg = c.config();
                    let host = match c.bias() {
                        Some(b) if infer && cfg.dilation == 1 && cfg.groups == 1 => {
                            crate::host::conv2d(inp(0), c.weight(), b, cfg.stride, cfg.padding)
                        }
                        _ => None,
                    };
                    match host {
                        Some(y) => y?,
                        None => c.forward(inp(0))?,
                    }
                }
                (_, Layer::Norm(n)) => n.forward(inp(0))?,
                (Op::Dropout { p, .. }, _) => match train {
                    Some((seed, step)) if *p > 0.0 => {
                        let x = inp(0);
                        let mut r = rng::stream(seed, &format!("dropout/{}/{step}", node.name));
                        let keep = 1.0 - *p;
                        let mask: Vec<f32> = rng::uniform_vec(&mut r, x.elem_count(), 1.0)
                            .into_iter()
                            .map(|u| {
                                if f64::from(u + 1.0) / 2.0 < keep {
                                    (1.0 / keep) as f32
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)?
                    }
                    _ => inp(0).clone(),
                },
                (Op::Activation { activation, .. }, _) => {
                    let host = match (infer, activation) {
                        (true, Activation::Relu) => crate::host::relu(inp(0)),
                        _ => None,
                    };
                    match host {
                        Some(y) => y?,
                        None => activation.apply(inp(0))?,
                    }
                }
                (Op::MaxPool2d { kernel, stride, .. }, _) => {
                    let host = match infer {
                        true => crate::host::max_pool2d(inp(0), *kernel, *stride),
                        false => None,
                    };
                    match host {
                        Some(y) => y?,
                        None => inp(0).max_pool2d_with_stride(*kernel, *stride)?,
                    }
                }
                (Op::Flatten { .. }, _) => inp(0).flatten_from(1)?,
                // Contiguous: a narrowed view has the parent's row stride, which candle's CUDA
                // matmul refuses.
                (Op::Narrow { start, len, .. }, _) => {
                    inp(0).narrow(1, *start, *len)?.contiguous()?
                }
                (Op::Concat { .. }, _) => {
                    let parts: Vec<&Tensor> = (0..self.inputs[i].len()).map(inp).collect();
                    Tensor::cat(&parts, 1)?
                }
                _ => candle_core::bail!("node `{}` has no parameters loaded", node.name),
            };
            outs.push(y);
        }
        Ok(outs)
    }

    /// The outputs of the nodes `keep` (indices, at most `last`) on the samples `x`, for reading
    /// features, where nodes `0..=last` are a chain of linear layers and LeakyReLUs on the host
    /// (f32, CPU, each node reading the one before): run in blocks of `rows` samples, each kept
    /// node's block written straight into its matrix (see `host::chain_forward`), the
    /// same numbers as [`Model::forward_until`] for blocks of more than a few rows. `None` for
    /// any other model or input.
    pub fn chain_outputs(
        &self,
        x: &Tensor,
        last: usize,
        keep: &[usize],
        rows: usize,
    ) -> Option<candle_core::Result<Vec<Tensor>>> {
        use crate::host::Step;
        let nodes = self.graph.nodes.get(..=last)?;
        if !matches!(nodes.first()?.op, Op::Input { .. }) || x.rank() != 2 || keep.is_empty() {
            return None;
        }
        // The chain's parameters, in node order (node 0 is the input).
        let mut params: Vec<&Tensor> = Vec::new();
        let mut kinds: Vec<Option<f32>> = Vec::new();
        for (i, node) in nodes.iter().enumerate().skip(1) {
            if self.inputs[i].as_slice() != [i - 1] {
                return None;
            }
            match (&node.op, &self.layers[i]) {
                (Op::Linear { .. }, Layer::Linear(l)) => {
                    params.push(l.weight());
                    params.push(l.bias()?);
                    kinds.push(None);
                }
                (
                    Op::Activation {
                        activation: Activation::LeakyRelu { slope },
                        ..
                    },
                    _,
                ) => kinds.push(Some(*slope as f32)),
                _ => return None,
            }
        }
        // `with_f32_all` declines tensors that are not f32 in CPU memory.
        let mut all: Vec<&Tensor> = vec![x];
        all.extend(&params);
        let (n, d) = x.dims2().ok()?;
        // Node 0 is `x` itself; the chain's steps are nodes `1..=last`.
        let mut keep_flags = vec![false; last];
        for &k in keep {
            if k > 0 {
                *keep_flags.get_mut(k - 1)? = true;
            }
        }
        let outs = crate::host::with_f32_all(&all, |v| {
            let mut p = v[1..].iter();
            let steps: Vec<Step<'_>> = kinds
                .iter()
                .map(|k| match k {
                    Some(slope) => Step::Leaky(*slope),
                    None => {
                        let (w, b) = (p.next().expect("a weight"), p.next().expect("a bias"));
                        Step::Linear { w, b, out: b.len() }
                    }
                })
                .collect();
            crate::host::chain_forward(v[0], d, &steps, &keep_flags, rows, &self.cancel)
        })?;
        let shapes = match self.graph.shapes() {
            Ok(s) => s,
            Err(e) => return Some(Err(candle_core::Error::wrap(e))),
        };
        Some(outs.and_then(|outs| {
            let made: Vec<Option<Tensor>> = outs
                .into_iter()
                .enumerate()
                .map(|(s, v)| {
                    let w: usize = shapes[s + 1].iter().product();
                    v.map(|v| Tensor::from_vec(v, (n, w), x.device()))
                        .transpose()
                })
                .collect::<candle_core::Result<_>>()?;
            Ok(keep
                .iter()
                .map(|&k| match k {
                    0 => x.clone(),
                    k => made[k - 1].clone().expect("a kept output"),
                })
                .collect())
        }))
    }

    /// Where node `node`'s output is an affine map `A x + c` of an earlier node's output `x`
    /// that is wider than `x` (see [`Graph::affine_source`]): that node, `A` with the layer's
    /// weights as they are now, and `c` (`[features]`). `None` for any other node.
    pub fn affine_input(
        &self,
        node: usize,
    ) -> candle_core::Result<Option<(usize, crate::probe::TapMap, Tensor)>> {
        let Some(from) = self.graph.affine_source(node) else {
            return Ok(None);
        };
        let shapes = self.graph.shapes().map_err(candle_core::Error::wrap)?;
        let (map, offset) = match &self.layers[node] {
            Layer::Conv(c) => {
                // `affine_source` has checked the stride (the graph sets no dilation or groups).
                let (Some(bias), [ci, h, w]) = (c.bias(), shapes[from].as_slice()) else {
                    return Ok(None);
                };
                let padding = c.config().padding;
                let Some(map) = crate::probe::TapMap::conv(c.weight(), padding, [*ci, *h, *w])?
                else {
                    return Ok(None);
                };
                let per = shapes[node][1..].iter().product::<usize>();
                let offset = bias
                    .to_dtype(DType::F32)?
                    .unsqueeze(1)?
                    .broadcast_as((bias.dim(0)?, per))?
                    .flatten_all()?;
                (map, offset)
            }
            Layer::Linear(l) => {
                let Some(bias) = l.bias() else {
                    return Ok(None);
                };
                (
                    crate::probe::TapMap::dense(l.weight())?,
                    bias.to_dtype(DType::F32)?,
                )
            }
            _ => return Ok(None),
        };
        Ok(Some((from, map, offset.detach().copy()?)))
    }

    /// The logits among the outputs of [`Model::forward`].
    pub fn logits<'a>(&self, outs: &'a [Tensor]) -> &'a Tensor {
        &outs[self.output]
    }

    /// The training loss: cross-entropy of the logits plus each auxiliary head's weighted
    /// cross-entropy. `y` holds class indices (u32).
    pub fn loss(&self, outs: &[Tensor], y: &Tensor) -> candle_core::Result<Tensor> {
        let mut loss = candle_nn::loss::cross_entropy(&outs[self.output], y)?;
        for (i, node) in self.graph.nodes.iter().enumerate() {
            if let Op::AuxHead { weight, .. } = node.op {
                if weight > 0.0 {
                    let aux = candle_nn::loss::cross_entropy(&outs[i], y)?;
                    loss = (loss + aux.affine(weight, 0.0)?)?;
                }
            }
        }
        Ok(loss)
    }
}

/// A graph builder for the common chain-of-layers case.
pub struct Chain {
    nodes: Vec<Node>,
}

impl Chain {
    /// Starts a graph with an input node called `input`.
    pub fn new(shape: Vec<usize>) -> Self {
        Self {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input { shape },
                probe: true,
            }],
        }
    }

    /// Name of the last node added.
    pub fn last(&self) -> String {
        self.nodes.last().expect("chain has an input").name.clone()
    }

    /// Adds a node; its input is the node named in `op`.
    pub fn push(&mut self, name: impl Into<String>, op: Op, probe: bool) -> &mut Self {
        self.nodes.push(Node {
            name: name.into(),
            op,
            probe,
        });
        self
    }

    /// Adds a linear layer reading the last node.
    pub fn linear(&mut self, name: impl Into<String>, out: usize, probe: bool) -> &mut Self {
        let input = self.last();
        self.push(
            name,
            Op::Linear {
                input,
                out,
                init: Init::GlorotNormal,
            },
            probe,
        )
    }

    /// Adds an activation reading the last node.
    pub fn activation(
        &mut self,
        name: impl Into<String>,
        activation: Activation,
        probe: bool,
    ) -> &mut Self {
        let input = self.last();
        self.push(name, Op::Activation { input, activation }, probe)
    }

    /// Finishes the graph; `output` names the logits node.
    pub fn finish(self, output: impl Into<String>, classes: usize) -> Graph {
        Graph {
            nodes: self.nodes,
            output: output.into(),
            classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Graph {
        let mut c = Chain::new(vec![4]);
        c.linear("fc1", 3, false)
            .activation("h1", Activation::LeakyRelu { slope: 0.5 }, true)
            .linear("logits", 2, true);
        c.finish("logits", 2)
    }

    #[test]
    fn forward_matches_a_hand_computation() {
        let g = mlp();
        let dev = Device::Cpu;
        let vm = g.init_varmap(3, &dev).unwrap();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let m = Model::new(&g, vb).unwrap();
        let x = Tensor::new(&[[1f32, -2., 0.5, 3.]], &dev).unwrap();
        let outs = m.forward(&x).unwrap();
        assert_eq!(outs.len(), 4);
        let w1: Vec<Vec<f32>> = vm.data().lock().unwrap()["fc1.weight"].to_vec2().unwrap();
        let xs = [1f32, -2., 0.5, 3.];
        let h: Vec<f32> = w1
            .iter()
            .map(|row| {
                let z: f32 = row.iter().zip(xs).map(|(a, b)| a * b).sum();
                if z > 0.0 {
                    z
                } else {
                    0.5 * z
                }
            })
            .collect();
        let got: Vec<f32> = outs[2].flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in h.iter().zip(got) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// The host chain gives every kept node exactly the generic pass's outputs (blocks that do
    /// not divide the rows, a nonzero bias, the input kept too), and declines a model that is
    /// not a chain of linear layers and LeakyReLUs. (With blocks of 16 rows or fewer, gemm sums
    /// some products in another order: hence blocks of at least `rows`.)
    #[test]
    fn chain_outputs_equal_the_generic_pass_bit_for_bit() {
        let dev = Device::Cpu;
        let g = crate::presets::untrained_mlp::graph(3, 24, 0.5);
        let vm = g.init_varmap(5, &dev).unwrap();
        {
            // A bias that is not zero takes the path that starts from the bias rows.
            let data = vm.data().lock().unwrap();
            let b = Tensor::new(&[0.5f32; 24], &dev).unwrap();
            data["fc02.bias"].set(&b).unwrap();
        }
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let mut r = crate::rng::stream(9, "chain-graph-test");
        let x =
            Tensor::from_vec(crate::rng::normal_vec(&mut r, 50 * 24, 1.0), (50, 24), &dev).unwrap();
        let keep: Vec<usize> = ["input", "h01", "fc02", "h03"]
            .iter()
            .map(|n| g.index_of(n).unwrap())
            .collect();
        let last = *keep.iter().max().unwrap();
        let want = m.forward_until(&x, last).unwrap();
        // Blocks of 20 rows: the last takes the other 10 as well.
        let got = m.chain_outputs(&x, last, &keep, 20).unwrap().unwrap();
        for (t, &k) in got.iter().zip(&keep) {
            let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = want[k].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a.len(), b.len());
            assert!(
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "node {k} differs"
            );
        }
        // A tanh has no host step: the generic pass runs it.
        let mut c = Chain::new(vec![4]);
        c.linear("fc", 3, false)
            .activation("t", Activation::Tanh, true)
            .linear("out", 2, false);
        let g = c.finish("out", 2);
        let vm = g.init_varmap(1, &dev).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        assert!(m.chain_outputs(&x, 2, &[2], 7).is_none());
        assert!(m.chain_outputs(&x, 1, &[1], 7).is_some());
    }

    #[test]
    fn glorot_normal_weights_have_the_right_spread() {
        let mut c = Chain::new(vec![200]);
        c.linear("fc", 300, true);
        let g = c.finish("fc", 300);
        let vm = g.init_varmap(1, &Device::Cpu).unwrap();
        let w: Vec<f32> = vm.data().lock().unwrap()["fc.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let var = w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        // 2 / (200 + 300) = 0.004; 60,000 draws put the sample variance within 2%.
        assert!((var / 0.004 - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn shapes_flow_through_conv_pool_flatten_and_concat() {
        let g = Graph {
            nodes: vec![
                Node {
                    name: "input".into(),
                    op: Op::Input {
                        shape: vec![1, 28, 28],
                    },
                    probe: true,
                },
                Node {
                    name: "conv".into(),
                    op: Op::Conv2d {
                        input: "input".into(),
                        out_channels: 4,
                        kernel: 5,
                        stride: 1,
                        padding: 2,
                        init: Init::GlorotNormal,
                    },
                    probe: true,
                },
                Node {
                    name: "pool".into(),
                    op: Op::MaxPool2d {
                        input: "conv".into(),
                        kernel: 2,
                        stride: 2,
                    },
                    probe: true,
                },
                Node {
                    name: "flat".into(),
                    op: Op::Flatten {
                        input: "pool".into(),
                    },
                    probe: true,
                },
                Node {
                    name: "a".into(),
                    op: Op::Narrow {
                        input: "flat".into(),
                        start: 0,
                        len: 10,
                    },
                    probe: true,
                },
                Node {
                    name: "cat".into(),
                    op: Op::Concat {
                        inputs: vec!["flat".into(), "a".into()],
                    },
                    probe: true,
                },
                Node {
                    name: "out".into(),
                    op: Op::Linear {
                        input: "cat".into(),
                        out: 3,
                        init: Init::HeNormal,
                    },
                    probe: true,
                },
            ],
            output: "out".into(),
            classes: 3,
        };
        let s = g.shapes().unwrap();
        assert_eq!(s[1], vec![4, 28, 28]);
        assert_eq!(s[2], vec![4, 14, 14]);
        assert_eq!(s[3], vec![784]);
        assert_eq!(s[5], vec![794]);
        let vm = g.init_varmap(0, &Device::Cpu).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let outs = m.forward(&x).unwrap();
        assert_eq!(outs[5].dims(), &[2, 794]);
        assert_eq!(m.logits(&outs).dims(), &[2, 3]);
        // A partial pass gives the same first outputs.
        let x = Tensor::rand(0f32, 1f32, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let full = m.forward(&x).unwrap();
        let part = m.forward_until(&x, 2).unwrap();
        assert_eq!(part.len(), 3);
        for (a, b) in part.iter().zip(&full) {
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b);
        }
        // The pass for reading features (the host convolution) gives the same outputs, up to
        // the rounding of sums taken in another order, and nothing to differentiate.
        let read = m.infer_until(&x, 5).unwrap();
        assert_eq!(read.len(), 6);
        for (a, b) in read.iter().zip(&full) {
            assert_eq!(a.dims(), b.dims());
            let diff = crate::host::max_abs_diff(a, b);
            assert!(diff < 1e-5, "largest difference {diff}");
        }
        assert!(!read[1].track_op() && full[1].track_op());
    }

    #[test]
    fn bad_graphs_name_the_node_and_the_problem() {
        let mut g = mlp();
        g.nodes[1].op = Op::Linear {
            input: "nope".into(),
            out: 3,
            init: Init::GlorotNormal,
        };
        assert_eq!(
            g.shapes().unwrap_err().to_string(),
            "node `fc1` reads `nope`, which is not a node defined before it"
        );
        let mut g = mlp();
        g.nodes[2].name = "fc1".into();
        assert!(matches!(g.shapes(), Err(GraphError::DuplicateName(_))));
        let mut g = mlp();
        g.output = "h1".into();
        assert!(matches!(g.shapes(), Err(GraphError::BadOutput(_))));
    }

    #[test]
    fn auxiliary_heads_add_their_weighted_cross_entropy_to_the_loss() {
        let mut c = Chain::new(vec![3]);
        c.linear("fc", 4, true);
        c.push(
            "aux",
            Op::AuxHead {
                input: "fc".into(),
                weight: 0.25,
                init: Init::GlorotNormal,
            },
            true,
        );
        c.push(
            "out",
            Op::Linear {
                input: "fc".into(),
                out: 2,
                init: Init::GlorotNormal,
            },
            true,
        );
        let g = c.finish("out", 2);
        let dev = Device::Cpu;
        let vm = g.init_varmap(5, &dev).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0], [1.5, 0.2, -0.3]], &dev).unwrap();
        let y = Tensor::new(&[1u32, 0], &dev).unwrap();
        let outs = m.forward(&x).unwrap();
        // Cross-entropy by hand from the logits of each head.
        let ce = |logits: &Tensor| -> f64 {
            let l: Vec<Vec<f32>> = logits.to_vec2().unwrap();
            let labels = [1usize, 0];
            l.iter()
                .zip(labels)
                .map(|(row, k)| {
                    let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
                    lse - row[k] as f64
                })
                .sum::<f64>()
                / 2.0
        };
        let expected = ce(&outs[3]) + 0.25 * ce(&outs[2]);
        let got = m.loss(&outs, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn graph_round_trips_through_json() {
        let g = mlp();
        let s = serde_json::to_string(&g).unwrap();
        let back: Graph = serde_json::from_str(&s).unwrap();
        assert_eq!(g, back);
    }

    fn norm_and_dropout_graph(p: f64) -> Graph {
        Graph {
            nodes: vec![
                Node {
                    name: "input".into(),
                    op: Op::Input { shape: vec![500] },
                    probe: true,
                },
                Node {
                    name: "ln".into(),
                    op: Op::LayerNorm {
                        input: "input".into(),
                    },
                    probe: true,
                },
                Node {
                    name: "drop".into(),
                    op: Op::Dropout {
                        input: "ln".into(),
                        p,
                    },
                    probe: true,
                },
                Node {
                    name: "logits".into(),
                    op: Op::Linear {
                        input: "drop".into(),
                        out: 3,
                        init: Init::default(),
                    },
                    probe: true,
                },
            ],
            output: "logits".into(),
            classes: 3,
        }
    }

    #[test]
    fn layer_norm_centres_and_scales_each_sample_as_computed_by_hand() {
        let g = norm_and_dropout_graph(0.3);
        let vm = g.init_varmap(0, &Device::Cpu).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut r = rng::stream(1, "ln");
        let x = rng::normal_vec(&mut r, 4 * 500, 3.0);
        let xt = Tensor::from_slice(&x, (4, 500), &Device::Cpu).unwrap();
        let outs = m.forward(&xt).unwrap();
        let got: Vec<Vec<f32>> = outs[1].to_vec2().unwrap();
        for (i, row) in got.iter().enumerate() {
            let s = &x[i * 500..(i + 1) * 500];
            let mean = s.iter().map(|&v| f64::from(v)).sum::<f64>() / 500.0;
            let var = s
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / 500.0;
            for (j, &g) in row.iter().enumerate() {
                let want = (f64::from(s[j]) - mean) / (var + 1e-5).sqrt();
                assert!(
                    (f64::from(g) - want).abs() < 1e-4,
                    "[{i},{j}] {g} vs {want}"
                );
            }
        }
        // Outside training, dropout is the identity.
        assert_eq!(outs[2].to_vec2::<f32>().unwrap(), got);
    }

    #[test]
    fn dropout_drops_a_fraction_p_while_training_reproducibly_from_seed_and_step() {
        let g = norm_and_dropout_graph(0.3);
        let vm = g.init_varmap(0, &Device::Cpu).unwrap();
        let m = Model::new(&g, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let xt = Tensor::rand(-1f32, 1f32, (20, 500), &Device::Cpu).unwrap();
        let pass = |seed, step| -> (Vec<f32>, Vec<f32>) {
            let outs = m.forward_train(&xt, seed, step).unwrap();
            (
                outs[1].flatten_all().unwrap().to_vec1().unwrap(),
                outs[2].flatten_all().unwrap().to_vec1().unwrap(),
            )
        };
        let (before, after) = pass(7, 3);
        let dropped = after.iter().filter(|&&v| v == 0.0).count() as f64 / after.len() as f64;
        // 10,000 Bernoulli(0.3) draws: standard deviation 0.0046.
        assert!((dropped - 0.3).abs() < 0.02, "dropped {dropped}");
        for (b, a) in before.iter().zip(&after) {
            assert!(*a == 0.0 || (a - b / 0.7).abs() < 1e-5, "{b} -> {a}");
        }
        assert_eq!(pass(7, 3).1, after, "same seed and step, same mask");
        assert_ne!(pass(7, 4).1, after, "another step, another mask");
        assert_ne!(pass(8, 3).1, after, "another seed, another mask");
    }
}
