//! `probescope run my-model.toml`: a model described in TOML, run like a preset.
//!
//! ```toml
//! name = "small-convnet"          # shown in the UI and the run log
//! input = [1, 28, 28]             # one sample's shape
//! classes = 10
//!
//! [data]
//! kind = "mnist"                  # mnist | fashion-mnist | argmax (synthetic, flat input)
//!
//! [[layer]]
//! name = "conv1"
//! type = "conv2d"                 # linear conv2d relu tanh leaky_relu max_pool2d flatten
//! out_channels = 16               # narrow concat aux_head dropout layer_norm
//! kernel = 5
//! padding = 2
//! # input = "..."                 # default: the layer before
//!
//! [probes]
//! taps = ["conv*", "fc1"]         # globs; default: every layer
//!
//! [train]                         # any `--set` key of the run (see `probescope run FILE --set x=`)
//! epochs = 1
//! lr = 0.01
//! ```
//!
//! Errors name the file, the line and the key; shape errors name the layer and its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::graph::{Activation, Graph, Init, Node, Op};
use crate::params::{ParamError, ParamSpec, Params};
use crate::presets::trained::{self, Plan};
use crate::presets::{Preset, RunCtx};
use crate::probe::ProbeSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    name: Option<String>,
    about: Option<String>,
    input: Spanned<Vec<usize>>,
    classes: Spanned<usize>,
    output: Option<Spanned<String>>,
    #[serde(rename = "layer", default)]
    layers: Vec<Spanned<LayerDef>>,
    #[serde(default)]
    data: DataDef,
    #[serde(default)]
    probes: ProbesDef,
    #[serde(default)]
    train: std::collections::BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerDef {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    input: Option<String>,
    inputs: Option<Vec<String>>,
    out: Option<usize>,
    in_features: Option<usize>,
    out_channels: Option<usize>,
    in_channels: Option<usize>,
    kernel: Option<usize>,
    stride: Option<usize>,
    padding: Option<usize>,
    init: Option<Init>,
    slope: Option<f64>,
    start: Option<usize>,
    len: Option<usize>,
    weight: Option<f64>,
    p: Option<f64>,
    probe: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataDef {
    #[serde(default = "mnist_spanned")]
    kind: Spanned<String>,
    /// `kind = "idx"`: the folder with the four IDX files (relative to the model file).
    dir: Option<PathBuf>,
    /// Synthetic data: samples to train on, to early-stop the probes on, to test on.
    #[serde(default = "ten_thousand")]
    train: usize,
    #[serde(default = "two_thousand")]
    val: usize,
    #[serde(default = "two_thousand")]
    test: usize,
}

impl Default for DataDef {
    fn default() -> Self {
        Self {
            kind: mnist_spanned(),
            dir: None,
            train: ten_thousand(),
            val: two_thousand(),
            test: two_thousand(),
        }
    }
}

fn mnist_spanned() -> Spanned<String> {
    Spanned::new(0..0, "mnist".into())
}
fn ten_thousand() -> usize {
    10_000
}
fn two_thousand() -> usize {
    2_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbesDef {
    taps: Option<Spanned<Vec<String>>>,
}

/// The layer types a file may use.
pub const LAYER_TYPES: &[&str] = &[
    "linear",
    "conv2d",
    "relu",
    "tanh",
    "leaky_relu",
    "max_pool2d",
    "flatten",
    "narrow",
    "concat",
    "aux_head",
    "dropout",
    "layer_norm",
];

/// A model file, checked: its graph, probes, data and training settings.
#[derive(Debug, Clone)]
pub struct ModelFile {
    path: PathBuf,
    name: &'static str,
    about: &'static str,
    graph: Graph,
    /// Globs of the probed taps (None: every layer).
    taps: Option<Vec<String>>,
    data: Data,
    /// `[train]` as `key=value` settings, with their lines, applied before `--set`.
    train: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Data {
    Mnist(crate::mnist::Which),
    /// An IDX directory in the MNIST layout.
    Idx(PathBuf),
    /// x ~ N(0, I), y = argmax(x W) (`classes` classes).
    Argmax {
        train: usize,
        val: usize,
        test: usize,
    },
    /// x ~ N(0, I), y = [x.w > 0] (2 classes).
    Sign {
        train: usize,
        val: usize,
        test: usize,
    },
}

/// 1-based line of a byte offset.
fn line_of(src: &str, at: usize) -> usize {
    src[..at.min(src.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Whether `name` matches the glob `pat` (`*` any run of characters, `?` one character).
pub fn glob_match(pat: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

impl ModelFile {
    /// Reads and checks the model file at `path`.
    pub fn load(path: &Path) -> Result<Self, ParamError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ParamError(format!("{}: cannot read it: {e}", path.display())))?;
        Self::parse(path, &src)
    }

    /// Checks the model file text `src` (read from `path`, for the messages).
    pub fn parse(path: &Path, src: &str) -> Result<Self, ParamError> {
        let shown = path.display();
        let def: FileDef = toml::from_str(src).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" line {}:", line_of(src, s.start)))
                .unwrap_or_default();
            ParamError(format!("{shown}:{at} {}", e.message()))
        })?;
        let at =
            |span: std::ops::Range<usize>| format!("{shown} line {}", line_of(src, span.start));
        if def.layers.is_empty() {
            return Err(ParamError(format!(
                "{shown}: no layers; add [[layer]] tables (name, type, ...)"
            )));
        }
        let classes = *def.classes.get_ref();
        if classes < 2 {
            return Err(ParamError(format!(
                "{}: classes = {classes}; a classification task has at least 2",
                at(def.classes.span())
            )));
        }
        let mut nodes = vec![Node {
            name: "input".into(),
            op: Op::Input {
                shape: def.input.get_ref().clone(),
            },
            probe: true,
        }];
        let mut lines = vec![line_of(src, def.input.span().start)];
        for layer in &def.layers {
            let span = layer.span();
            let l = layer.get_ref();
            let here = format!("{}, layer `{}`", at(span.clone()), l.name);
            let prev = nodes.last().map(|n| n.name.clone()).unwrap_or_default();
            let input = l.input.clone().unwrap_or(prev);
            let need = |what: Option<usize>, key: &str| {
                what.ok_or_else(|| ParamError(format!("{here}: {} needs `{key}`", l.kind)))
            };
            let op = match l.kind.as_str() {
                "linear" => Op::Linear {
                    input,
                    out: need(l.out, "out")?,
                    init: l.init.unwrap_or_default(),
                },
                "conv2d" => Op::Conv2d {
                    input,
                    out_channels: need(l.out_channels, "out_channels")?,
                    kernel: need(l.kernel, "kernel")?,
                    stride: l.stride.unwrap_or(1),
                    padding: l.padding.unwrap_or(0),
                    init: l.init.unwrap_or_default(),
                },
                "relu" | "tanh" | "leaky_relu" => Op::Activation {
                    input,
                    activation: match l.kind.as_str() {
                        "relu" => Activation::Relu,
                        "tanh" => Activation::Tanh,
                        _ => Activation::LeakyRelu {
                            slope: l.slope.ok_or_else(|| {
                                ParamError(format!("{here}: leaky_relu needs `slope`"))
                            })?,
                        },
                    },
                },
                "max_pool2d" => {
                    let kernel = need(l.kernel, "kernel")?;
                    Op::MaxPool2d {
                        input,
                        kernel,
                        stride: l.stride.unwrap_or(kernel),
                    }
                }
                "flatten" => Op::Flatten { input },
                "dropout" => Op::Dropout {
                    input,
                    p: l.p.ok_or_else(|| {
                        ParamError(format!("{here}: dropout needs `p`, the drop probability"))
                    })?,
                },
                "layer_norm" => Op::LayerNorm { input },
                "narrow" => Op::Narrow {
                    input,
                    start: l.start.unwrap_or(0),
                    len: need(l.len, "len")?,
                },
                "concat" => Op::Concat {
                    inputs: l.inputs.clone().ok_or_else(|| {
                        ParamError(format!("{here}: concat needs `inputs = [\"a\", \"b\"]`"))
                    })?,
                },
                "aux_head" => Op::AuxHead {
                    input,
                    weight: l.weight.unwrap_or(1.0),
                    init: l.init.unwrap_or_default(),
                },
                other => {
                    return Err(ParamError(format!(
                        "{here}: unknown type `{other}`; the types are {}{}",
                        LAYER_TYPES.join(", "),
                        if matches!(other, "batch_norm" | "batchnorm") {
                            " (batch normalisation is not supported yet; layer_norm is)"
                        } else {
                            ""
                        }
                    )))
                }
            };
            nodes.push(Node {
                name: l.name.clone(),
                op,
                probe: l.probe.unwrap_or(true),
            });
            lines.push(line_of(src, span.start));
        }
        let output = def
            .output
            .as_ref()
            .map(|o| o.get_ref().clone())
            .unwrap_or_else(|| nodes.last().expect("layers").name.clone());
        let graph = Graph {
            nodes,
            output,
            classes,
        };
        // Shape errors name the layer and its line.
        let line_of_node = |name: &str| {
            graph
                .index_of(name)
                .map(|i| format!("{shown} line {}", lines[i]))
                .unwrap_or_else(|| shown.to_string())
        };
        let shapes = graph.shapes().map_err(|e| {
            use crate::graph::GraphError as G;
            let node = match &e {
                G::DuplicateName(n) | G::BadOutput(n) => n.clone(),
                G::UnknownInput { node, .. } | G::Shape { node, .. } => node.clone(),
                G::BadInput => "input".into(),
            };
            let hint = match &e {
                G::BadOutput(_) => format!(
                    "; the output (the last layer, or `output = \"NAME\"`) must be a linear \
                     layer with out = {classes}"
                ),
                _ => String::new(),
            };
            ParamError(format!("{}: {e}{hint}", line_of_node(&node)))
        })?;
        // Declared input sizes, checked against what the layers before give.
        for (i, (node, layer)) in graph.nodes.iter().skip(1).zip(&def.layers).enumerate() {
            let l = layer.get_ref();
            let Some(&from) = node
                .op
                .inputs()
                .first()
                .and_then(|n| graph.index_of(n))
                .as_ref()
            else {
                continue;
            };
            let got = &shapes[from];
            let check = |declared: Option<usize>, actual: usize, what: &str| match declared {
                Some(d) if d != actual => Err(ParamError(format!(
                    "{} line {}: {} expects {d} {what}, got {actual} (from `{}`, shape {got:?})",
                    shown,
                    lines[i + 1],
                    l.name,
                    graph.nodes[from].name
                ))),
                _ => Ok(()),
            };
            check(l.in_channels, got[0], "input channels")?;
            check(l.in_features, got.iter().product(), "input features")?;
        }
        let (train, val, test) = (def.data.train, def.data.val, def.data.test);
        let kind_at = at(def.data.kind.span());
        let data = match def.data.kind.get_ref().as_str() {
            "mnist" => Data::Mnist(crate::mnist::Which::Mnist),
            "fashion-mnist" => Data::Mnist(crate::mnist::Which::FashionMnist),
            "idx" => {
                let dir = def.data.dir.clone().ok_or_else(|| {
                    ParamError(format!(
                        "{kind_at}: [data] kind = \"idx\" needs `dir`, the folder with the four \
                         IDX files"
                    ))
                })?;
                Data::Idx(path.parent().unwrap_or(Path::new(".")).join(dir))
            }
            "argmax" => Data::Argmax { train, val, test },
            "sign" => Data::Sign { train, val, test },
            other => {
                return Err(ParamError(format!(
                    "{kind_at}: [data] kind `{other}`; expected mnist, fashion-mnist, idx, argmax \
                     or sign"
                )))
            }
        };
        let input = def.input.get_ref();
        let input_at = at(def.input.span());
        match data {
            Data::Mnist(_) if input != &[1, 28, 28] && input != &[784] => {
                return Err(ParamError(format!(
                    "{input_at}: input = {input:?}, but MNIST images are [1, 28, 28] (or [784] flat)"
                )))
            }
            Data::Argmax { .. } | Data::Sign { .. } if input.len() != 1 => {
                return Err(ParamError(format!(
                    "{input_at}: input = {input:?}; the synthetic tasks' samples are flat: input = [D]"
                )))
            }
            Data::Sign { .. } if classes != 2 => {
                return Err(ParamError(format!(
                    "{}: classes = {classes}, but the sign task has 2",
                    at(def.classes.span())
                )))
            }
            _ => {}
        }
        let taps = match &def.probes.taps {
            Some(t) => {
                for pat in t.get_ref() {
                    if !graph.nodes.iter().any(|n| glob_match(pat, &n.name)) {
                        return Err(ParamError(format!(
                            "{}: [probes] taps: `{pat}` matches no layer; the layers are {}",
                            at(t.span()),
                            graph
                                .nodes
                                .iter()
                                .map(|n| n.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                Some(t.get_ref().clone())
            }
            None => None,
        };
        // The data kind sets the `dataset` parameter, so `--set dataset=...` can change it; then
        // the [train] values, as `key=value` settings with their lines, checked below against
        // the run's parameters.
        let mut train: Vec<(String, usize)> = Vec::new();
        if let Data::Mnist(which) = data {
            train.push((
                format!("dataset={}", which.name()),
                line_of(src, def.data.kind.span().start),
            ));
        }
        for (k, v) in &def.train {
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            train.push((format!("{k}={text}"), line_of(src, v.span().start)));
        }
        let name = def.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned())
        });
        let file = Self {
            path: path.to_path_buf(),
            name: Box::leak(name.into_boxed_str()),
            about: Box::leak(
                def.about
                    .unwrap_or_else(|| format!("the model in {shown}"))
                    .into_boxed_str(),
            ),
            graph,
            taps,
            data,
            train,
        };
        for (set, line) in &file.train {
            Params::resolve(file.name, &file.params(), std::slice::from_ref(set)).map_err(|e| {
                ParamError(format!(
                    "{shown} line {line}: [train] {}",
                    e.0.trim_start_matches("--set ")
                ))
            })?;
        }
        Ok(file)
    }

    /// The `[train]` settings as `key=value`, to apply before the command line's `--set`.
    pub fn settings(&self) -> Vec<String> {
        self.train.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn flat(&self) -> bool {
        matches!(
            self.graph.nodes[0].op,
            Op::Input { ref shape } if shape.len() == 1
        )
    }

    fn train_samples(&self) -> usize {
        match self.data {
            Data::Mnist(_) => 60_000 - crate::mnist::VALIDATION,
            // The label file's count (unreadable: the MNIST size; the run itself says why).
            Data::Idx(ref dir) => crate::mnist::training_samples_in(dir)
                .unwrap_or(60_000)
                .saturating_sub(crate::mnist::VALIDATION),
            Data::Argmax { train, .. } | Data::Sign { train, .. } => train,
        }
    }

    /// The IDX directory's images, checked against the input shape.
    fn load_idx(&self, dir: &Path) -> anyhow::Result<crate::mnist::Loaded> {
        let loaded = crate::mnist::load_dir(dir, crate::mnist::Which::Mnist)?;
        let (r, c) = (loaded.train.rows, loaded.train.cols);
        let input = match &self.graph.nodes[0].op {
            Op::Input { shape } => shape.clone(),
            _ => vec![],
        };
        if input != [1, r, c] && input != [r * c] {
            anyhow::bail!(
                "{}: input = {input:?}, but the images in {} are {r}x{c}: input = [1, {r}, {c}] \
                 (or [{}] flat)",
                self.path.display(),
                dir.display(),
                r * c
            );
        }
        Ok(loaded)
    }
}

impl Preset for ModelFile {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            ParamSpec::int("epochs", 1, 0, 10_000, "training epochs"),
            ParamSpec::int(
                "steps",
                0,
                0,
                1_000_000_000,
                "training minibatches, in place of epochs (0: use epochs)",
            ),
            trained::snapshot_every_param(),
        ];
        p.extend(trained::training_params(64, 0.01, 1.0, 0.0, 0.0, 100));
        p
    }

    fn check_data(&self, p: &Params, data_dir: &Path) -> Result<(), ParamError> {
        match self.data {
            Data::Mnist(_) => trained::check_data(p, data_dir),
            Data::Idx(ref dir) => self
                .load_idx(dir)
                .map(|_| ())
                .map_err(|e| ParamError(format!("{e:#}"))),
            Data::Argmax { .. } | Data::Sign { .. } => Ok(()),
        }
    }

    fn total_steps(&self, p: &Params) -> Option<u64> {
        let per_epoch = (self.train_samples() / p.usize("batch")).max(1);
        Some(match p.usize("steps") {
            0 => p.usize("epochs") * per_epoch,
            steps => steps,
        } as u64)
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn graph(&self, _p: &Params) -> Graph {
        self.graph.clone()
    }

    fn memory(
        &self,
        p: &Params,
        g: &Graph,
        probes: &[ProbeSpec],
    ) -> Option<crate::presets::trained::MemoryEstimate> {
        let (val, test) = match self.data {
            Data::Argmax { val, test, .. } | Data::Sign { val, test, .. } => (val, test),
            _ => (crate::mnist::VALIDATION, 10_000),
        };
        Some(crate::presets::trained::memory_estimate(
            p,
            g,
            probes,
            (self.train_samples(), val, test),
        ))
    }

    fn probes(&self, _p: &Params, g: &Graph, _seed: u64) -> Vec<ProbeSpec> {
        g.taps()
            .expect("checked graph")
            .iter()
            .filter(|t| {
                self.taps
                    .as_ref()
                    .is_none_or(|pats| pats.iter().any(|p| glob_match(p, &t.name)))
            })
            .map(|t| ProbeSpec::full(&t.name, t.features))
            .collect()
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let g = self.graph.clone();
        let specs = self.probes(p, &g, ctx.seed);
        let total = self.total_steps(p).unwrap_or(0) as usize;
        let mut snapshot_steps = trained::snapshot_steps(total, p.usize("snapshot_every"));
        if p.usize("steps") > 0 {
            snapshot_steps.push(total);
        }
        let plan = Plan {
            epochs: (p.usize("steps") == 0).then(|| p.usize("epochs")),
            steps: p.usize("steps"),
            snapshot_steps,
            snapshot_each_epoch: true,
            ..Plan::from_params(p, self.flat())
        };
        match self.data {
            Data::Mnist(_) => trained::run(self.name, &plan, p, &g, &specs, ctx),
            Data::Idx(ref dir) => {
                let splits = self.load_idx(dir)?.splits(plan.flat, &ctx.device)?;
                let name = dir.display().to_string();
                trained::run_on(self.name, &plan, &g, &specs, splits, &name, ctx)
            }
            Data::Argmax { train, val, test } | Data::Sign { train, val, test } => {
                let d = g.taps()?[0].features;
                let n = train + val + test;
                let (all, name) = if let Data::Sign { .. } = self.data {
                    let all = crate::data::sign_task(
                        ctx.seed,
                        "model-file/sign",
                        n,
                        d,
                        &ctx.device,
                        &ctx.cancel(),
                    )?;
                    (all, "sign task")
                } else {
                    let all = crate::data::argmax_task(
                        ctx.seed,
                        "model-file/argmax",
                        n,
                        d,
                        g.classes,
                        &ctx.device,
                        &ctx.cancel(),
                    )?;
                    (all, "argmax task")
                };
                let splits = crate::mnist::Splits {
                    train: all.slice(0, train)?,
                    val: all.slice(train, val)?,
                    test: all.slice(train + val, test)?,
                };
                trained::run_on(self.name, &plan, &g, &specs, splits, name, ctx)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("conv*", "conv1_preact"));
        assert!(glob_match("*post*", "fc1_postact"));
        assert!(glob_match("fc?", "fc1"));
        assert!(!glob_match("fc?", "fc12"));
        assert!(!glob_match("conv*", "pool1"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
