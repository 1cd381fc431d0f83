//! Model files (`probescope run my-model.toml`): every example parses and runs a few steps, the
//! convnet file is the built-in preset's graph, and every bad file gives its message.

use std::path::{Path, PathBuf};
use std::process::Command;

use probescope::modelfile::ModelFile;
use probescope::presets::{self, Preset};
use probescope::runlog::{self, EndStatus, SnapshotKind};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// The MNIST layout with 10,100 training and 200 test images of random pixels (the runs only
/// need files that read; 10,000 training images are kept for validation).
fn fake_mnist(dir: &Path) {
    use probescope::mnist::{encode_idx, FILES};
    for sub in ["mnist", "fashion-mnist"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let mut s = 7u32;
        for (n, [images, labels]) in [(10_100, [FILES[0], FILES[1]]), (200, [FILES[2], FILES[3]])] {
            let px: Vec<u8> = (0..n * 784)
                .map(|_| {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (s >> 24) as u8
                })
                .collect();
            let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(d.join(images), encode_idx(&[n, 28, 28], &px)).unwrap();
            std::fs::write(d.join(labels), encode_idx(&[n], &lb)).unwrap();
        }
    }
}

#[test]
fn every_example_model_file_parses_and_runs_a_few_steps() {
    let files = toml_files(&root().join("examples/models"));
    assert!(files.len() >= 3, "{files:?}");
    let dir = tempfile::tempdir().unwrap();
    fake_mnist(dir.path());
    for f in files {
        let model = ModelFile::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let log = dir.path().join("run.jsonl");
        let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
            .args([
                "run",
                f.to_str().unwrap(),
                "--headless",
                "--force",
                "--data-dir",
            ])
            .arg(dir.path())
            .arg("--record")
            .arg(&log)
            .args(["--set", "steps=3", "--set", "batch=32"])
            .args(["--set", "probe_train=200", "--set", "probe_val=100"])
            .args(["--set", "probe_test=100", "--set", "probe_max_iter=20"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let run = runlog::read(&log).unwrap();
        assert_eq!(run.header.preset, model.name(), "{}", f.display());
        let converged: Vec<u64> = run
            .snapshots()
            .filter(|s| s.kind == SnapshotKind::Converged)
            .map(|s| s.step)
            .collect();
        assert_eq!(converged, vec![0, 3], "{}", f.display());
        assert_eq!(run.end().map(|e| e.status), Some(EndStatus::Finished));
    }
}

/// `kind = "idx"` reads a folder named relative to the model file, and checks the image size
/// against the input shape; `kind = "sign"` is the two-class synthetic task.
#[test]
fn idx_folders_and_the_sign_task_run() {
    let dir = tempfile::tempdir().unwrap();
    fake_mnist(dir.path());
    let layers = "[[layer]]\nname = \"h\"\ntype = \"linear\"\nout = 8\n\n[[layer]]\nname = \"logits\"\ntype = \"linear\"\nout = ";
    let idx = dir.path().join("idx.toml");
    std::fs::write(
        &idx,
        format!("input = [784]\nclasses = 10\n[data]\nkind = \"idx\"\ndir = \"fashion-mnist\"\n{layers}10\n"),
    )
    .unwrap();
    let sign = dir.path().join("sign.toml");
    std::fs::write(
        &sign,
        format!("input = [12]\nclasses = 2\n[data]\nkind = \"sign\"\ntrain = 500\nval = 200\ntest = 200\n{layers}2\n"),
    )
    .unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!("input = [1, 32, 32]\nclasses = 10\n[data]\nkind = \"idx\"\ndir = \"mnist\"\n[[layer]]\nname = \"f\"\ntype = \"flatten\"\n{layers}10\n"),
    )
    .unwrap();
    let run = |f: &Path| {
        Command::new(env!("CARGO_BIN_EXE_probescope"))
            .args(["run", f.to_str().unwrap(), "--headless"])
            .args(["--set", "steps=2", "--set", "probe_train=100"])
            .args(["--set", "probe_val=100", "--set", "probe_test=100"])
            .output()
            .unwrap()
    };
    for f in [&idx, &sign] {
        let out = run(f);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&wrong);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("are 28x28: input = [1, 28, 28]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The records of a run, with the times taken out (they are all that may differ between two
/// runs of one seed).
fn timeless(records: &[probescope::runlog::Record]) -> Vec<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("elapsed_s");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            strip(&mut v);
            v
        })
        .collect()
}

/// Runs `f` with a run context on the CPU that collects its records, reading data from `dir`.
fn collect(
    dir: &Path,
    seed: u64,
    f: impl FnOnce(&mut presets::RunCtx<'_>) -> anyhow::Result<()>,
) -> Vec<probescope::runlog::Record> {
    let mut sink = probescope::report::Collect::default();
    let mut ctx = presets::RunCtx {
        device: candle_core::Device::Cpu,
        seed,
        sink: &mut sink,
        started: std::time::Instant::now(),
        controls: Default::default(),
        opts: presets::RunOptions {
            data_dir: dir.to_path_buf(),
            checkpoint: Default::default(),
        },
    };
    f(&mut ctx).unwrap();
    sink.records
}

/// The convnet as the built-in preset's own code built it before the preset became a model file.
fn reference_convnet() -> probescope::graph::Graph {
    use probescope::graph::{Activation, Graph, Init, Node, Op};
    let node = |name: &str, op, probe| Node {
        name: name.into(),
        op,
        probe,
    };
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
    let linear = |input: &str, out, init| Op::Linear {
        input: input.into(),
        out,
        init,
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
            node("fc1_preact", linear("flat", 512, Init::HeNormal), true),
            node("fc1_postact", relu("fc1_preact"), true),
            node(
                "logits",
                linear("fc1_postact", 10, Init::GlorotNormal),
                true,
            ),
        ],
        output: "logits".into(),
        classes: 10,
    }
}

/// `mnist-convnet` is its embedded model file, run by the code that runs a user's file: the
/// file's graph is the one the preset's code built, its defaults are the tutorial's training,
/// and a run gives the same log on a fixed seed as the preset's own code did (the graph, the
/// probes and the plan it made, handed to the same training loop).
#[test]
fn the_convnet_preset_is_its_file_and_logs_what_its_code_did() {
    use probescope::params::ParamValue as V;
    use probescope::presets::trained::{self, Plan};
    let (preset, p) = presets::prepare("mnist-convnet", &[]).unwrap();
    assert!(preset.source().is_some(), "mnist-convnet is not a file");
    assert_eq!(preset.graph(&p), reference_convnet());
    for (key, v) in [
        ("epochs", V::Int(10)),
        ("batch", V::Int(64)),
        ("optimizer", V::Text("sgd".into())),
        ("momentum", V::Float(0.9)),
        ("lr", V::Float(0.01)),
        ("lr_decay", V::Float(0.95)),
        ("weight_decay", V::Float(5e-4)),
        ("dataset", V::Text("mnist".into())),
        ("subset", V::Int(0)),
        ("snapshot_every", V::Int(0)),
    ] {
        assert_eq!(p.0[key], v, "{key}");
    }
    // A short run: 3 minibatches of 32 per epoch of the fake data's 100 training images.
    let dir = tempfile::tempdir().unwrap();
    fake_mnist(dir.path());
    let sets: Vec<String> = [
        "epochs=2",
        "batch=32",
        "snapshot_every=2",
        "subset=300",
        "probe_train=100",
        "probe_val=100",
        "probe_test=100",
        "probe_max_iter=15",
        "online_every=1",
    ]
    .map(String::from)
    .to_vec();
    let seed = 11;
    let now = collect(dir.path(), seed, |ctx| {
        let (preset, p) = presets::prepare("mnist-convnet", &sets)?;
        preset.run(&p, ctx)
    });
    let before = collect(dir.path(), seed, |ctx| {
        let (_, p) = presets::prepare("mnist-convnet", &sets)?;
        let g = reference_convnet();
        let specs = presets::probes_with_subset(&g, p.usize("subset"), ctx.seed);
        let total = p.usize("epochs") * (50_000 / p.usize("batch"));
        let plan = Plan {
            epochs: Some(p.usize("epochs")),
            snapshot_steps: trained::snapshot_steps(&[0], p.usize("snapshot_every"), total),
            snapshot_each_epoch: true,
            ..Plan::from_params(&p, false)
        };
        trained::run("mnist-convnet", &plan, &p, &g, &specs, ctx)
    });
    let converged: Vec<u64> = now
        .iter()
        .filter_map(|r| match r {
            probescope::runlog::Record::Snapshot(s) if s.kind == SnapshotKind::Converged => {
                Some(s.step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(converged, [0, 2, 3, 4, 6], "steps 2 4 6, epoch ends 3 6");
    assert_eq!(timeless(&now), timeless(&before));
}

/// `deep-mlp` runs the model file that `presets --show deep-mlp` prints for its settings: the
/// printed file reads back as the preset's graph, and the run gives the same log on a fixed seed
/// as the preset's own code did before (its graph, probes and plan, handed to the training loop).
#[test]
fn deep_mlp_runs_the_file_it_shows_and_logs_what_its_code_did() {
    use probescope::presets::trained::{self, Plan};
    for variant in ["plain", "aux", "skip"] {
        let sets = [
            format!("variant={variant}"),
            "depth=6".into(),
            "aux_every=2".into(),
        ];
        let (preset, p) = presets::prepare("deep-mlp", &sets).unwrap();
        let text = preset.model_file(&p).unwrap();
        let file = ModelFile::parse(Path::new("shown.toml"), &text).unwrap();
        let (_, fp) = presets::prepare_file(file.clone(), &[]).unwrap();
        assert_eq!(file.graph(&fp), preset.graph(&p), "{variant}");
    }
    let dir = tempfile::tempdir().unwrap();
    fake_mnist(dir.path());
    let sets: Vec<String> = [
        "variant=skip",
        "depth=6",
        "steps=5",
        "snapshots=0,2,5,9",
        "snapshot_every=4",
        "batch=16",
        "probe_train=100",
        "probe_val=100",
        "probe_test=100",
        "probe_max_iter=15",
        "online_every=2",
        "lr=0.001",
    ]
    .map(String::from)
    .to_vec();
    let seed = 5;
    let now = collect(dir.path(), seed, |ctx| {
        let (preset, p) = presets::prepare("deep-mlp", &sets)?;
        preset.run(&p, ctx)
    });
    let before = collect(dir.path(), seed, |ctx| {
        let (preset, p) = presets::prepare("deep-mlp", &sets)?;
        let g = preset.graph(&p);
        let specs = presets::probe_every_tap(&g);
        let plan = Plan {
            steps: 5,
            snapshot_steps: vec![0, 2, 4, 5],
            ..Plan::from_params(&p, true)
        };
        trained::run("deep-mlp", &plan, &p, &g, &specs, ctx)
    });
    assert_eq!(timeless(&now), timeless(&before));
    assert!(now.len() > 4, "{} records", now.len());
}

/// `untrained-mlp` runs the model file that `presets --show untrained-mlp` prints: the file
/// reads back as the preset's MLP, and the run gives the same log on a fixed seed as the preset's
/// own loop on its graph and sign task (fresh data from `dataset/K`, fresh weights, per
/// dataset).
#[test]
fn untrained_mlp_runs_the_file_it_shows_and_logs_what_its_code_did() {
    let sets: Vec<String> = ["depth=4", "width=16", "datasets=3", "train=300", "test=200"]
        .map(String::from)
        .to_vec();
    let (preset, p) = presets::prepare("untrained-mlp", &sets).unwrap();
    let text = preset.model_file(&p).unwrap();
    assert!(text.contains("datasets = 3"), "{text}");
    let file = ModelFile::parse(Path::new("shown.toml"), &text).unwrap();
    let (_, fp) = presets::prepare_file(file.clone(), &[]).unwrap();
    assert_eq!(file.graph(&fp), preset.graph(&p));
    let dir = tempfile::tempdir().unwrap();
    let seed = 9;
    let now = collect(dir.path(), seed, |ctx| {
        let (preset, p) = presets::prepare("untrained-mlp", &sets)?;
        preset.run(&p, ctx)
    });
    let before = collect(dir.path(), seed, |ctx| {
        let (preset, p) = presets::prepare("untrained-mlp", &sets)?;
        let g = preset.graph(&p);
        let specs = presets::probe_every_tap(&g);
        let fit = ctx.fit_config(&p);
        let dev = ctx.device.clone();
        let draw = |seed: u64, stream: &str, n: usize, c: &probescope::cancel::Cancel| {
            probescope::data::sign_task(seed, stream, n, 16, &dev, c)
        };
        presets::datasets::run("untrained-mlp", &g, &specs, &fit, 3, (300, 200), &draw, ctx)
    });
    assert_eq!(now.len(), 4, "3 datasets and a summary");
    assert_eq!(timeless(&now), timeless(&before));
}

/// `[data] kind = "two_halves"` with `datasets`: a probe on either half alone errs as the closed
/// form says (atan(ratio) / pi for the first half, atan(1 / ratio) / pi for the second), one on
/// the whole input far less.
#[test]
fn the_two_halves_task_gives_each_half_its_closed_form_error() {
    let src = r#"
input = [16]
classes = 2
[data]
kind = "two_halves"
ratio = 0.6
train = 4000
test = 6000
[[layer]]
name = "first"
type = "narrow"
input = "input"
len = 8
[[layer]]
name = "second"
type = "narrow"
input = "input"
start = 8
len = 8
[[layer]]
name = "both"
type = "concat"
inputs = ["first", "second"]
[[layer]]
name = "logits"
type = "linear"
out = 2
probe = false
[train]
epochs = 0
datasets = 2
"#;
    let file = ModelFile::parse(Path::new("halves.toml"), src).unwrap();
    let (preset, p) = presets::prepare_file(file, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records = collect(dir.path(), 4, |ctx| preset.run(&p, ctx));
    let Some(probescope::runlog::Record::Summary(sum)) = records.last() else {
        panic!("no summary: {records:?}");
    };
    let test = |name: &str| {
        sum.probes
            .iter()
            .find(|r| r.probe == name)
            .and_then(|r| r.test_error.as_ref())
            .map(|s| s.mean)
            .unwrap()
    };
    let pi = std::f64::consts::PI;
    let first = 0.6f64.atan() / pi; // 0.172
    let second = (1.0 / 0.6f64).atan() / pi; // 0.328
    assert!(
        (test("first") - first).abs() < 0.025,
        "{} vs {first}",
        test("first")
    );
    assert!(
        (test("second") - second).abs() < 0.025,
        "{} vs {second}",
        test("second")
    );
    assert!(test("both") < 0.03, "{}", test("both"));
    assert!(test("input") < 0.03, "{}", test("input"));
}

/// Every graph a model file can hold is written out and read back unchanged: the example
/// files', and the built-in presets' at their defaults.
#[test]
fn written_model_files_read_back_as_the_same_graph() {
    use probescope::graph::Op;
    use probescope::modelfile::{write, FileText};
    let mut graphs = Vec::new();
    for f in toml_files(&root().join("examples/models")) {
        let (preset, p) = presets::prepare(f.to_str().unwrap(), &[]).unwrap();
        graphs.push((f.display().to_string(), preset.graph(&p)));
    }
    for preset in presets::all() {
        let (_, p) = presets::prepare(preset.name(), &[]).unwrap();
        graphs.push((preset.name().to_string(), preset.graph(&p)));
    }
    assert!(graphs.len() >= 8);
    for (what, g) in graphs {
        let text = FileText {
            comment: "written by the test",
            name: "written",
            about: "a \"quoted\" about",
            note: Some("a note"),
            data: match (g.classes, &g.nodes[0].op) {
                (2, _) => "sign",
                (_, Op::Input { shape }) if shape == &[784] || shape == &[1, 28, 28] => "mnist",
                _ => "argmax",
            },
            data_settings: Vec::new(),
            train: Vec::new(),
        };
        let written = write(&g, &text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let back = ModelFile::parse(Path::new("written.toml"), &written)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{written}"));
        let (_, p) = presets::prepare_file(back.clone(), &[]).unwrap();
        assert_eq!(back.graph(&p), g, "{what}");
        assert_eq!(back.about(), "a \"quoted\" about");
    }
}

/// `[data] kind` sets the `dataset` parameter, which `--set` can change.
#[test]
fn the_data_kind_is_the_dataset_parameter() {
    use probescope::params::ParamValue;
    let f = root().join("examples/models/mlp-dropout-layernorm.toml");
    let f = f.to_str().unwrap();
    let (_, p) = presets::prepare(f, &[]).unwrap();
    assert_eq!(p.0["dataset"], ParamValue::Text("fashion-mnist".into()));
    let (_, p) = presets::prepare(f, &["dataset=mnist".into()]).unwrap();
    assert_eq!(p.0["dataset"], ParamValue::Text("mnist".into()));
}

#[test]
fn probe_globs_pick_the_taps() {
    let file = ModelFile::load(&root().join("examples/models/branches.toml")).unwrap();
    let (_, p) = presets::prepare(
        root()
            .join("examples/models/branches.toml")
            .to_str()
            .unwrap(),
        &[],
    )
    .unwrap();
    let g = file.graph(&p);
    let names: Vec<String> = file.probes(&p, &g, 0).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["input", "left1_act", "right1_act", "concat", "logits"]
    );
}

/// Each file in tests/fixtures/modelfiles starts with `# expect: TEXT`; loading it must fail
/// with a message holding TEXT, after the file's name.
#[test]
fn every_bad_model_file_names_its_line_and_problem() {
    let files = toml_files(&root().join("tests/fixtures/modelfiles"));
    assert!(files.len() >= 10);
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let want = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()));
        // Read and checked with its settings, as `probescope run` does.
        let Err(err) = presets::prepare(f.to_str().unwrap(), &[]) else {
            panic!("{}: accepted", f.display());
        };
        let err = err.0;
        assert!(
            err.starts_with(&f.display().to_string()) && err.contains(want),
            "{}:\n  got  {err}\n  want {want}",
            f.display()
        );
        // The command line says the same, as bad input (exit 2).
        let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
            .args(["run", f.to_str().unwrap(), "--headless"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", f.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    }
}

/// mnist-convnet with every probe on its whole tap, probe_affine on (conv1_preact fitted through
/// the input, conv2_preact through pool1, neither stored) and off (every tap stored): the same
/// converged readings at every snapshot, warm starts included. Iterations and errors are equal,
/// losses equal to rounding. In f32 (`probe_dtype=f32`): with the default the stored wide taps
/// are bfloat16, whose rounding of conv2_preact's own features the path through pool1 does not
/// make.
#[test]
fn probes_through_the_convolutions_read_as_probes_on_their_outputs() {
    use probescope::runlog::Record;
    let dir = tempfile::tempdir().unwrap();
    fake_mnist(dir.path());
    let run = |affine: &str| {
        let sets: Vec<String> = [
            "epochs=1",
            "batch=50",
            "snapshot_every=1",
            "probe_train=200",
            "probe_val=100",
            "probe_test=100",
            "probe_max_iter=20",
            "online_every=1",
            "probe_dtype=f32",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("probe_affine={affine}")])
        .collect();
        collect(dir.path(), 5, |ctx| {
            let (preset, p) = presets::prepare("mnist-convnet", &sets)?;
            preset.run(&p, ctx)
        })
        .into_iter()
        .filter_map(|r| match r {
            Record::Snapshot(s) if s.kind == SnapshotKind::Converged => Some(s),
            _ => None,
        })
        .collect::<Vec<_>>()
    };
    let (on, off) = (run("on"), run("off"));
    assert_eq!(on.len(), 3, "steps 0, 1 and the epoch's end");
    assert_eq!(on.len(), off.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
    for (a, b) in on.iter().zip(&off) {
        assert_eq!(a.step, b.step);
        assert_eq!(a.model, b.model);
        for (x, y) in a.probes.iter().zip(&b.probes) {
            let (r, s) = (&x.reading, &y.reading);
            let what = format!("step {} {}", a.step, x.probe);
            assert_eq!(r.iterations, s.iterations, "{what}");
            assert_eq!(r.train_error, s.train_error, "{what}");
            assert_eq!(r.val_error, s.val_error, "{what}");
            assert_eq!(r.test_error, s.test_error, "{what}");
            assert_eq!(r.confusion, s.confusion, "{what}");
            assert!(close(r.train_loss, s.train_loss), "{what}");
            assert!(close(r.test_loss.unwrap(), s.test_loss.unwrap()), "{what}");
            assert_eq!(x.activation, y.activation, "{what}");
        }
    }
    // The two runs did differ: with probe_affine on, the preconvolution taps are fitted
    // through the taps their convolutions read (input 0, pool1 3), and hold no features.
    let (preset, p) = presets::prepare("mnist-convnet", &[]).unwrap();
    let g = preset.graph(&p);
    let specs = presets::probe_every_tap(&g);
    let fit = presets::fit_config(&p);
    let bases = probescope::presets::trained::affine_bases(&g, &specs, &fit, true);
    let named: Vec<(&str, usize)> = bases
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|b| (specs[i].tap.as_str(), b)))
        .collect();
    assert_eq!(named, [("conv1_preact", 0), ("conv2_preact", 3)]);
    assert_eq!(specs[3].tap, "pool1");
    // Not with a transfer matrix, which reads every probe's own features.
    let with_transfer = probescope::probe::FitConfig {
        transfer: true,
        ..fit
    };
    let none = probescope::presets::trained::affine_bases(&g, &specs, &with_transfer, true);
    assert!(none.iter().all(|b| b.is_none()));
}
