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

#[test]
fn the_convnet_file_is_the_built_in_presets_graph() {
    let file = ModelFile::load(&root().join("examples/models/mnist-convnet.toml")).unwrap();
    let (preset, params) = presets::prepare("mnist-convnet", &[]).unwrap();
    let (_, fparams) = presets::prepare(
        root()
            .join("examples/models/mnist-convnet.toml")
            .to_str()
            .unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(file.graph(&fparams), preset.graph(&params));
    // And the file's [train] gives the preset's training settings.
    for key in [
        "epochs",
        "batch",
        "lr",
        "lr_decay",
        "momentum",
        "weight_decay",
    ] {
        assert_eq!(fparams.0[key], params.0[key], "{key}");
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
        let err = ModelFile::load(&f).expect_err(&f.display().to_string()).0;
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
