//! `probescope run my-model.toml`: a model described in TOML, run like a preset.
//!
//! ```toml
//! name = "small-convnet"          # shown in the UI and the run log
//! about = "..."                   # one line for `probescope presets`
//! note = "..."                    # why the defaults are what they are (optional)
//! input = [1, 28, 28]             # one sample's shape
//! classes = 10
//!
//! [data]
//! kind = "mnist"                  # mnist | fashion-mnist | idx (dir = "FOLDER") | synthetic,
//!                                 # flat input: sign, argmax, two_halves (ratio = 0.6)
//! # train = 10000, val = 2000, test = 2000: a synthetic task's sizes
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
//! # taps wider than `--set subset=N` are read through N random features
//!
//! [train]                         # any `--set` key of the run (see `probescope run FILE --set x=`)
//! epochs = 1
//! lr = 0.01
//! # datasets = 100, epochs = 0: no training; N fresh draws of the synthetic data and of the
//! # weights, converged probes on each (train and test samples), a summary (sec 3.3)
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
    note: Option<String>,
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
    /// `kind = "two_halves"`: the second half's signal relative to the first's.
    ratio: Option<Spanned<f64>>,
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
            ratio: None,
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
    note: Option<&'static str>,
    /// The text of a built-in preset's file (`probescope presets --show NAME`).
    source: Option<&'static str>,
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
    /// x = [a, b] ~ N(0, I), y = [a.u + ratio b.v > 0] (2 classes; see
    /// [`crate::data::two_source_task`]).
    TwoHalves {
        train: usize,
        val: usize,
        test: usize,
        ratio: f64,
    },
}

impl Data {
    /// The synthetic task's sizes (train, val, test); `None` for files.
    fn sizes(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Data::Argmax { train, val, test }
            | Data::Sign { train, val, test }
            | Data::TwoHalves {
                train, val, test, ..
            } => Some((train, val, test)),
            Data::Mnist(_) | Data::Idx(_) => None,
        }
    }
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
    /// A built-in preset's file, `src` (embedded in the binary), shown as `file` in messages.
    pub fn builtin(file: &str, src: &'static str) -> Result<Self, ParamError> {
        let mut f = Self::parse(Path::new(file), src)?;
        f.source = Some(src);
        Ok(f)
    }

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
            "two_halves" => Data::TwoHalves {
                train,
                val,
                test,
                ratio: match &def.data.ratio {
                    None => 0.6,
                    Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => *r.get_ref(),
                    Some(r) => {
                        return Err(ParamError(format!(
                            "{}: [data] ratio = {}; it is the second half's signal over the \
                             first's, a number above 0",
                            at(r.span()),
                            r.get_ref()
                        )))
                    }
                },
            },
            other => {
                return Err(ParamError(format!(
                    "{kind_at}: [data] kind `{other}`; expected mnist, fashion-mnist, idx, argmax, \
                     sign or two_halves"
                )))
            }
        };
        if let (Some(r), false) = (&def.data.ratio, matches!(data, Data::TwoHalves { .. })) {
            return Err(ParamError(format!(
                "{}: [data] ratio is a setting of kind = \"two_halves\" only",
                at(r.span())
            )));
        }
        if let Some((train, _, test)) = data.sizes() {
            if train < 2 || test < 1 {
                return Err(ParamError(format!(
                    "{kind_at}: [data] train = {train}, test = {test}; a synthetic task needs at \
                     least 2 training samples and 1 test sample"
                )));
            }
        }
        let input = def.input.get_ref();
        let input_at = at(def.input.span());
        match data {
            Data::Mnist(_) if input != &[1, 28, 28] && input != &[784] => {
                return Err(ParamError(format!(
                    "{input_at}: input = {input:?}, but MNIST images are [1, 28, 28] (or [784] flat)"
                )))
            }
            Data::Argmax { .. } | Data::Sign { .. } | Data::TwoHalves { .. }
                if input.len() != 1 =>
            {
                return Err(ParamError(format!(
                    "{input_at}: input = {input:?}; the synthetic tasks' samples are flat: input = [D]"
                )))
            }
            Data::TwoHalves { .. } if !input[0].is_multiple_of(2) => {
                return Err(ParamError(format!(
                    "{input_at}: input = {input:?}; the two_halves task's samples are two halves \
                     of equal width: an even input size"
                )))
            }
            Data::Sign { .. } | Data::TwoHalves { .. } if classes != 2 => {
                return Err(ParamError(format!(
                    "{}: classes = {classes}, but the {} task has 2",
                    at(def.classes.span()),
                    def.data.kind.get_ref()
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
            note: def.note.map(|n| &*Box::leak(n.into_boxed_str())),
            source: None,
            graph,
            taps,
            data,
            train,
        };
        for (set, line) in &file.train {
            Params::resolve(file.name, &Self::base_params(), std::slice::from_ref(set)).map_err(
                |e| {
                    ParamError(format!(
                        "{shown} line {line}: [train] {}",
                        e.0.trim_start_matches("--set ")
                    ))
                },
            )?;
        }
        Ok(file)
    }

    /// The parameters every model file takes, with the program's defaults.
    fn base_params() -> Vec<ParamSpec> {
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
            ParamSpec::list(
                "snapshots",
                &[0],
                0,
                1_000_000_000,
                "minibatches at which to fit converged probes (besides every snapshot_every, \
                 each epoch's end, and the last of `steps`)",
            ),
            ParamSpec::choice(
                "epoch_snapshots",
                &["on", "off"],
                "also fit converged probes at the end of every epoch",
            ),
            ParamSpec::int(
                "subset",
                0,
                0,
                1_000_000,
                "features per probe on taps wider than this, drawn at random (0 = all)",
            ),
            ParamSpec::int(
                "datasets",
                0,
                0,
                100_000,
                "with a synthetic [data] kind and epochs=0: this many fresh draws of the data and \
                 the weights, converged probes on each untrained network, a summary (sec 3.3); \
                 0: the data once, trained as set",
            ),
        ];
        p.extend(trained::training_params(64, 0.01, 1.0, 0.0, 0.0, 100));
        p
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
            Data::Argmax { train, .. }
            | Data::Sign { train, .. }
            | Data::TwoHalves { train, .. } => train,
        }
    }

    /// `n` samples of the synthetic task, drawn from the seeded stream `stream`.
    fn draw(
        &self,
        seed: u64,
        stream: &str,
        n: usize,
        device: &candle_core::Device,
        cancel: &crate::cancel::Cancel,
    ) -> candle_core::Result<crate::data::Dataset> {
        let d = match &self.graph.nodes[0].op {
            Op::Input { shape } => shape.iter().product(),
            _ => 0,
        };
        match self.data {
            Data::Sign { .. } => crate::data::sign_task(seed, stream, n, d, device, cancel),
            Data::Argmax { .. } => {
                crate::data::argmax_task(seed, stream, n, d, self.graph.classes, device, cancel)
            }
            Data::TwoHalves { ratio, .. } => {
                crate::data::two_source_task(seed, stream, n, d / 2, ratio, device, cancel)
            }
            Data::Mnist(_) | Data::Idx(_) => {
                Err(candle_core::Error::Msg("not a synthetic data kind".into()))
            }
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

    fn defaults_note(&self) -> Option<&'static str> {
        self.note
    }

    fn source(&self) -> Option<&'static str> {
        self.source
    }

    fn model_file(&self, _p: &Params) -> Result<String, &'static str> {
        match self.source {
            Some(src) => Ok(src.to_string()),
            None => {
                std::fs::read_to_string(&self.path).map_err(|_| "its file cannot be read again")
            }
        }
    }

    /// The file's `[data]` kind and `[train]` values are the defaults (checked when the file
    /// was read), so `probescope presets` shows them and `--set` overrides them.
    fn params(&self) -> Vec<ParamSpec> {
        let mut p = Self::base_params();
        for (set, _) in &self.train {
            let Some((key, value)) = set.split_once('=') else {
                continue;
            };
            if let Some(spec) = p.iter_mut().find(|s| s.key == key.trim()) {
                if let Ok(with) = spec.with_default(value) {
                    *spec = with;
                }
            }
        }
        p
    }

    fn check(&self, p: &Params) -> Result<(), ParamError> {
        let n = p.usize("datasets");
        if n == 0 {
            return Ok(());
        }
        if self.data.sizes().is_none() {
            return Err(ParamError(format!(
                "{}: datasets = {n} draws fresh data for each dataset, which needs a synthetic \
                 [data] kind (sign, argmax or two_halves); use datasets = 0 for this data",
                self.path.display()
            )));
        }
        if p.usize("epochs") > 0 || p.usize("steps") > 0 {
            return Err(ParamError(format!(
                "{}: datasets = {n} fits probes on untrained networks, so it takes no training: \
                 set epochs = 0 (and steps = 0), or datasets = 0 to train",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn check_data(&self, p: &Params, data_dir: &Path) -> Result<(), ParamError> {
        match self.data {
            Data::Mnist(_) => trained::check_data(p, data_dir),
            Data::Idx(ref dir) => self
                .load_idx(dir)
                .map(|_| ())
                .map_err(|e| ParamError(format!("{e:#}"))),
            Data::Argmax { .. } | Data::Sign { .. } | Data::TwoHalves { .. } => Ok(()),
        }
    }

    fn total_steps(&self, p: &Params) -> Option<u64> {
        let per_epoch = (self.train_samples() / p.usize("batch")).max(1);
        Some(match p.usize("steps") {
            0 => p.usize("epochs") * per_epoch,
            steps => steps,
        } as u64)
    }

    /// A run that trains (not `datasets = N`, whose networks stay untrained).
    fn checkpoints(&self, p: &Params) -> bool {
        p.usize("datasets") == 0
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
        let (val, test) = match self.data.sizes() {
            Some((_, val, test)) => (val, test),
            None => (crate::mnist::VALIDATION, 10_000),
        };
        Some(crate::presets::trained::memory_estimate(
            p,
            g,
            probes,
            (self.train_samples(), val, test),
        ))
    }

    fn probes(&self, p: &Params, g: &Graph, seed: u64) -> Vec<ProbeSpec> {
        crate::presets::probes_with_subset(g, p.usize("subset"), seed)
            .into_iter()
            .filter(|s| {
                self.taps
                    .as_ref()
                    .is_none_or(|pats| pats.iter().any(|p| glob_match(p, &s.tap)))
            })
            .collect()
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let g = self.graph.clone();
        let specs = self.probes(p, &g, ctx.seed);
        let datasets = p.usize("datasets");
        if datasets > 0 {
            self.check(p)?;
            let (train, _, test) = self.data.sizes().expect("checked: synthetic data");
            let device = ctx.device.clone();
            let draw = |seed: u64, stream: &str, n: usize, cancel: &crate::cancel::Cancel| {
                self.draw(seed, stream, n, &device, cancel)
            };
            let fit = ctx.fit_config(p);
            return crate::presets::datasets::run(
                self.name,
                &g,
                &specs,
                &fit,
                datasets,
                (train, test),
                &draw,
                ctx,
            );
        }
        let total = self.total_steps(p).unwrap_or(0) as usize;
        let mut at = p.list("snapshots");
        if p.usize("steps") > 0 {
            at.push(total);
        }
        let snapshot_steps = trained::snapshot_steps(&at, p.usize("snapshot_every"), total);
        let plan = Plan {
            epochs: (p.usize("steps") == 0).then(|| p.usize("epochs")),
            steps: p.usize("steps"),
            snapshot_steps,
            snapshot_each_epoch: p.text("epoch_snapshots") == "on",
            ..Plan::from_params(p, self.flat())
        };
        match self.data {
            Data::Mnist(_) => trained::run(self.name, &plan, p, &g, &specs, ctx),
            Data::Idx(ref dir) => {
                let splits = self.load_idx(dir)?.splits(plan.flat, &ctx.device)?;
                let name = dir.display().to_string();
                trained::run_on(self.name, &plan, &g, &specs, splits, &name, ctx)
            }
            Data::Argmax { .. } | Data::Sign { .. } | Data::TwoHalves { .. } => {
                let (train, val, test) = self.data.sizes().expect("synthetic");
                let (stream, name) = match self.data {
                    Data::Sign { .. } => ("model-file/sign", "sign task"),
                    Data::Argmax { .. } => ("model-file/argmax", "argmax task"),
                    _ => ("model-file/two_halves", "two-halves task"),
                };
                let all = self.draw(
                    ctx.seed,
                    stream,
                    train + val + test,
                    &ctx.device,
                    &ctx.cancel(),
                )?;
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

/// What a written model file says besides its layers.
#[derive(Debug, Clone)]
pub struct FileText<'a> {
    /// Comment lines for the top of the file (each written after `# `).
    pub comment: &'a str,
    /// `name`.
    pub name: &'a str,
    /// `about`.
    pub about: &'a str,
    /// `note`.
    pub note: Option<&'a str>,
    /// `[data] kind`.
    pub data: &'a str,
    /// The other `[data]` keys (`train`, `val`, `test`, `ratio`), in this order.
    pub data_settings: Vec<(String, crate::params::ParamValue)>,
    /// `[train]`: `key = value`, in this order.
    pub train: Vec<(String, crate::params::ParamValue)>,
}

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `init`'s name in a file, as the reader (serde) spells it.
fn init_name(init: Init) -> String {
    toml::Value::try_from(init)
        .expect("an Init is a word")
        .to_string()
}

fn toml_value(v: &crate::params::ParamValue) -> String {
    use crate::params::ParamValue as V;
    match v {
        V::Int(i) => i.to_string(),
        V::Float(f) => toml::Value::Float(*f).to_string(),
        V::List(l) => format!(
            "[{}]",
            l.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
        V::Text(t) => quoted(t),
    }
}

/// The model file of `graph` with `text`'s settings: reading it back gives the same graph and,
/// for the `[train]` keys, the same parameters (tested). A graph whose input node is not
/// `input`, or that has layers computed by the user's own code, has no file.
pub fn write(graph: &Graph, text: &FileText<'_>) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for line in text.comment.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let Some(Node {
        name,
        op: Op::Input { shape },
        probe,
    }) = graph.nodes.first()
    else {
        return Err("the graph does not start with its input".into());
    };
    if name != "input" || !probe {
        return Err(format!(
            "the input node is `{name}`; a model file's is `input`, probed"
        ));
    }
    let _ = writeln!(out, "name = {}", quoted(text.name));
    let _ = writeln!(out, "about = {}", quoted(text.about));
    if let Some(note) = text.note {
        let _ = writeln!(out, "note = {}", quoted(note));
    }
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let _ = writeln!(out, "input = [{}]", dims.join(", "));
    let _ = writeln!(out, "classes = {}", graph.classes);
    let last = graph.nodes.last().map(|n| n.name.as_str());
    if last != Some(graph.output.as_str()) {
        let _ = writeln!(out, "output = {}", quoted(&graph.output));
    }
    let _ = write!(out, "\n[data]\nkind = {}\n", quoted(text.data));
    for (k, v) in &text.data_settings {
        let _ = writeln!(out, "{k} = {}", toml_value(v));
    }
    for (i, node) in graph.nodes.iter().enumerate().skip(1) {
        let prev = &graph.nodes[i - 1].name;
        let mut fields: Vec<(&str, String)> = Vec::new();
        let from = |input: &String, fields: &mut Vec<(&str, String)>| {
            if input != prev {
                fields.push(("input", quoted(input)));
            }
        };
        let kind = match &node.op {
            Op::Input { .. } => return Err(format!("a second input, `{}`", node.name)),
            Op::External { .. } => {
                return Err(format!(
                    "`{}` is computed by the program's own code, which a file cannot describe",
                    node.name
                ))
            }
            Op::Linear { input, out, init } => {
                from(input, &mut fields);
                fields.push(("out", out.to_string()));
                fields.push(("init", init_name(*init)));
                "linear"
            }
            Op::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                init,
            } => {
                from(input, &mut fields);
                fields.push(("out_channels", out_channels.to_string()));
                fields.push(("kernel", kernel.to_string()));
                fields.push(("stride", stride.to_string()));
                fields.push(("padding", padding.to_string()));
                fields.push(("init", init_name(*init)));
                "conv2d"
            }
            Op::Activation { input, activation } => {
                from(input, &mut fields);
                match activation {
                    Activation::Relu => "relu",
                    Activation::Tanh => "tanh",
                    Activation::LeakyRelu { slope } => {
                        fields.push(("slope", toml::Value::Float(*slope).to_string()));
                        "leaky_relu"
                    }
                }
            }
            Op::MaxPool2d {
                input,
                kernel,
                stride,
            } => {
                from(input, &mut fields);
                fields.push(("kernel", kernel.to_string()));
                fields.push(("stride", stride.to_string()));
                "max_pool2d"
            }
            Op::Flatten { input } => {
                from(input, &mut fields);
                "flatten"
            }
            Op::LayerNorm { input } => {
                from(input, &mut fields);
                "layer_norm"
            }
            Op::Dropout { input, p } => {
                from(input, &mut fields);
                fields.push(("p", toml::Value::Float(*p).to_string()));
                "dropout"
            }
            Op::Narrow { input, start, len } => {
                from(input, &mut fields);
                fields.push(("start", start.to_string()));
                fields.push(("len", len.to_string()));
                "narrow"
            }
            Op::Concat { inputs } => {
                let names: Vec<String> = inputs.iter().map(|n| quoted(n)).collect();
                fields.push(("inputs", format!("[{}]", names.join(", "))));
                "concat"
            }
            Op::AuxHead {
                input,
                weight,
                init,
            } => {
                from(input, &mut fields);
                fields.push(("weight", toml::Value::Float(*weight).to_string()));
                fields.push(("init", init_name(*init)));
                "aux_head"
            }
        };
        let _ = write!(
            out,
            "\n[[layer]]\nname = {}\ntype = {}\n",
            quoted(&node.name),
            quoted(kind)
        );
        for (k, v) in fields {
            let _ = writeln!(out, "{k} = {v}");
        }
        if !node.probe {
            let _ = writeln!(out, "probe = false");
        }
    }
    if !text.train.is_empty() {
        out.push_str("\n[train]\n");
        for (k, v) in &text.train {
            let _ = writeln!(out, "{k} = {}", toml_value(v));
        }
    }
    Ok(out)
}

/// The model file that a built-in preset builds from its parameters: `graph` under the preset's
/// name and the `about` line of these parameters, with `comment` on top and `data` (the kind and
/// its other keys) and `train` settings.
pub fn generated(
    preset: &dyn Preset,
    about: &str,
    graph: &Graph,
    comment: &str,
    (data, data_settings): (&str, Vec<(String, crate::params::ParamValue)>),
    train: Vec<(String, crate::params::ParamValue)>,
) -> String {
    let text = FileText {
        comment,
        name: preset.name(),
        about,
        note: None,
        data,
        data_settings,
        train,
    };
    write(graph, &text)
        .unwrap_or_else(|e| panic!("{}'s graphs are all model files: {e}", preset.name()))
}

/// Runs `text`, the model file that built-in preset `name` generated, by the code that runs a
/// user's file, with the file's own settings.
pub fn run_generated(name: &str, text: &str, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
    let path = PathBuf::from(format!("{name}.toml (generated)"));
    let (file, params) = crate::presets::prepare_file(ModelFile::parse(&path, text)?, &[])?;
    file.run(&params, ctx)
}

/// The values of `p` that a model file's `[train]` must give for its run to take them: those of
/// the keys every model file takes whose value differs from a file's own default (`dataset`
/// is the `[data]` kind, not among them).
pub fn train_values(p: &Params) -> Vec<(String, crate::params::ParamValue)> {
    let base = ModelFile::base_params();
    base.iter()
        .filter(|s| s.key != "dataset")
        .filter_map(|s| {
            let v = p.0.get(s.key)?;
            (v != &s.default).then(|| (s.key.to_string(), v.clone()))
        })
        .collect()
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
