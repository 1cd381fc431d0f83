//! The binary as a user runs it: bad input, the run log, the presets list.

use std::process::Command;

use probescope::runlog::{self, EndStatus, Record};

fn probescope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `probescope run untrained-mlp --record PATH --set S...` followed by `extra`.
fn recorded_mlp_run(
    path: &std::path::Path,
    sets: &[&str],
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec!["run", "untrained-mlp", "--record", path.to_str().unwrap()];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    probescope(&args)
}

const SMALL_RUN: [&str; 4] = ["datasets=2", "depth=4", "train=1000", "test=500"];

#[test]
fn bad_input_gets_exit_code_2_and_a_message_naming_it() {
    for (args, needle) in [
        (vec!["run", "nope"], "unknown preset `nope`"),
        (
            vec!["run", "untrained-mlp", "--set", "dpeth=3"],
            "valid keys: datasets, depth",
        ),
        (
            vec!["run", "untrained-mlp", "--set", "depth=0"],
            "depth must be between 1 and 1024",
        ),
        (
            vec!["run", "untrained-mlp", "--set", "slope=NaN"],
            "slope must be between",
        ),
        (
            vec!["run", "feature-subset", "--set", "subsets=10,5000"],
            "larger than the layer's 1000 features",
        ),
        (
            vec!["run", "untrained-mlp", "--device", "tpu"],
            "--device tpu: expected auto, cpu, cuda or cuda:N",
        ),
        (
            vec![
                "run",
                "untrained-mlp",
                "--record",
                "/nonexistent-dir/r.jsonl",
            ],
            "--record /nonexistent-dir/r.jsonl: cannot create",
        ),
        (
            vec![
                "run",
                "untrained-mlp",
                "--checkpoint",
                "/tmp/never.safetensors",
            ],
            "untrained-mlp trains no model to save here",
        ),
    ] {
        let (code, _, err) = probescope(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn an_existing_run_log_is_never_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    std::fs::write(&path, "precious\n").unwrap();
    let (code, _, err) = probescope(&["run", "untrained-mlp", "--record", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn a_recorded_run_prints_the_table_and_its_log_reads_back_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let (code, out, err) = recorded_mlp_run(&path, &SMALL_RUN, &["--headless", "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("probe") && out.contains("h04"), "{out}");
    let log = runlog::read(&path).unwrap();
    assert!(log.warnings.is_empty());
    assert_eq!(log.header.preset, "untrained-mlp");
    assert_eq!(log.header.seed, 7);
    assert_eq!(log.header.probes.len(), 5);
    assert_eq!(
        log.header.params["depth"],
        probescope::params::ParamValue::Int(4)
    );
    assert_eq!(log.snapshots().count(), 2);
    assert_eq!(log.summaries().count(), 1);
    assert_eq!(log.end().unwrap().status, EndStatus::Finished);
    assert!(matches!(log.records.last(), Some(Record::End(_))));
    // Every line is one record with a type.
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["type"].is_string());
    }
    // The same seed gives the same numbers.
    let again = dir.path().join("again.jsonl");
    let (code, _, _) = recorded_mlp_run(&again, &SMALL_RUN, &["--seed", "7"]);
    assert_eq!(code, 0);
    let a: Vec<_> = log.snapshots().map(|s| s.probes.clone()).collect();
    let b: Vec<_> = runlog::read(&again)
        .unwrap()
        .snapshots()
        .map(|s| s.probes.clone())
        .collect();
    assert_eq!(a, b);
}

#[test]
fn a_torn_last_line_is_skipped_with_a_warning_and_other_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let (code, _, _) = recorded_mlp_run(
        &path,
        &["datasets=1", "depth=2", "train=500", "test=100"],
        &[],
    );
    assert_eq!(code, 0);
    let full = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    // Cut the file in the middle of its last line, as a kill -9 during a write would.
    let torn = format!(
        "{}\n{}",
        lines[..lines.len() - 1].join("\n"),
        &lines[lines.len() - 1][..10]
    );
    std::fs::write(&path, &torn).unwrap();
    let log = runlog::read(&path).unwrap();
    assert_eq!(log.warnings.len(), 1, "{:?}", log.warnings);
    assert!(log.end().is_none());
    assert_eq!(log.snapshots().count(), 1);

    let not_log = dir.path().join("notes.txt");
    std::fs::write(&not_log, "hello\n").unwrap();
    assert!(runlog::read(&not_log)
        .unwrap_err()
        .to_string()
        .contains("not a probescope run log"));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert!(runlog::read(&empty)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let newer = dir.path().join("newer.jsonl");
    std::fs::write(
        &newer,
        full.replacen("\"schema_version\":1", "\"schema_version\":99", 1),
    )
    .unwrap();
    assert!(runlog::read(&newer)
        .unwrap_err()
        .to_string()
        .contains("upgrade probescope"));
}

#[test]
fn presets_lists_every_preset_with_its_defaults() {
    let (code, out, _) = probescope(&["presets"]);
    assert_eq!(code, 0);
    for name in ["untrained-mlp", "bifurcation", "feature-subset"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(
        out.contains("datasets=100") && out.contains("slope=0.5"),
        "{out}"
    );
}

/// `presets --show NAME` prints the file a preset runs; saved and run, it is a model file like
/// any other. Presets without one, and --set on a preset's own file, are bad input.
#[test]
fn presets_show_prints_the_file_a_preset_runs() {
    let (code, out, err) = probescope(&["presets", "--show", "mnist-convnet"]);
    assert_eq!(code, 0, "{err}");
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/presets/files/mnist-convnet.toml"),
    )
    .unwrap();
    assert_eq!(out, file);
    // A generated file follows --set, and runs as a user's file.
    let (code, out, err) = probescope(&[
        "presets",
        "--show",
        "untrained-mlp",
        "--set",
        "depth=3",
        "--set",
        "width=8",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("name = \"h03\"") && !out.contains("h04"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, out.replace("datasets = 100", "datasets = 2")).unwrap();
    let (code, out, err) = probescope(&["run", path.to_str().unwrap(), "--headless"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(2 datasets"), "{out}");
    for (args, needle) in [
        (
            vec!["presets", "--show", "bifurcation"],
            "bifurcation has no model file: it runs its own loop",
        ),
        (
            vec!["presets", "--show", "mnist-convnet", "--set", "epochs=1"],
            "which --set does not change",
        ),
        (vec!["presets", "--show", "nope"], "unknown preset `nope`"),
        (
            vec!["presets", "--show", "deep-mlp", "--set", "depht=3"],
            "`depht` is not a parameter of deep-mlp",
        ),
    ] {
        let (code, _, err) = probescope(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn ctrl_c_stops_the_run_and_the_log_ends_with_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args([
            "run",
            "untrained-mlp",
            "--record",
            path.to_str().unwrap(),
            "--set",
            "depth=4",
            "--set",
            "train=2000",
            "--set",
            "test=500",
            "--set",
            "datasets=100000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first snapshot is on disk, then press Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("\"type\":\"snapshot\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: sends SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let log = runlog::read(&path).unwrap();
    assert_eq!(log.end().unwrap().status, EndStatus::Stopped);
    assert!(log.snapshots().count() >= 1);
}

#[test]
fn bad_theme_and_key_files_are_named_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let theme = dir.path().join("mine.toml");
    std::fs::write(
        &theme,
        include_str!("../themes/dark.toml").replace("test = \"#ff8700\"", "test = \"orange-ish\""),
    )
    .unwrap();
    let line = include_str!("../themes/dark.toml")
        .lines()
        .position(|l| l.starts_with("test ="))
        .unwrap()
        + 1;
    let (code, _, err) = probescope(&["run", "--headless", "--theme", theme.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mine.toml") && err.contains(&format!("line {line}")),
        "{err}"
    );
    assert!(
        err.contains("`test`") && err.contains("orange-ish"),
        "{err}"
    );

    let (code, _, err) = probescope(&["run", "--headless", "--theme", "solarised"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("solarised") && err.contains("viridis"),
        "{err}"
    );

    // A key table in the config directory.
    let conf = dir.path().join("probescope");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("keys.toml"), "[keys]\nquit = [\"Escape\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["run", "--headless"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("keys.toml") && err.contains("line 2") && err.contains("Escape"),
        "{err}"
    );
}

/// The table rows of `probescope compare`: tap name and its cells.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip_while(|l| !l.starts_with("tap "))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn compare_prints_each_runs_errors_aligned_by_name_with_differences() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("shallow.jsonl"),
        dir.path().join("deep.jsonl"),
    );
    for (path, depth) in [(&a, "depth=3"), (&b, "depth=4")] {
        let (code, _, err) = recorded_mlp_run(
            path,
            &["datasets=2", depth, "train=1000", "test=500"],
            &["--headless"],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = probescope(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shallow: untrained-mlp depth=3"), "{out}");
    assert!(out.contains("mean of 2 datasets"), "{out}");
    // Each cell is the mean test error over the run's datasets, read straight from its log.
    let mean = |path: &std::path::Path, probe: &str| -> Option<f64> {
        let log = runlog::read(path).unwrap();
        let i = log.header.probes.iter().position(|p| p.name == probe)?;
        let v: Vec<f64> = log
            .snapshots()
            .map(|s| s.probes[i].reading.test_error.unwrap())
            .collect();
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    let rows = table_rows(&out);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["input", "h01", "h02", "h03", "h04"], "{out}");
    for r in &rows {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let (x, y) = (mean(&a, &r[0]), mean(&b, &r[0]));
        assert_eq!(r[1], cell(x), "{out}");
        assert_eq!(r[2], cell(y), "{out}");
        let d = match (x, y) {
            (Some(x), Some(y)) => format!("{:+.4}", y - x),
            _ => "-".into(),
        };
        assert_eq!(r[3], d, "{out}");
    }

    // The figure: one line per run.
    let svg = dir.path().join("cmp.svg");
    let (code, _, err) = probescope(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 series"), "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("shallow") && text.contains("deep"), "legend");

    // Runs with no probe in common, a file that is not a run log, one log only.
    let mut other = runlog::read(&a).unwrap();
    for p in &mut other.header.probes {
        p.name = format!("x_{}", p.name);
    }
    let c = dir.path().join("renamed.jsonl");
    let mut w = runlog::RunLogWriter::create(&c, false).unwrap();
    w.write(&Record::Run(other.header.clone())).unwrap();
    drop(w);
    let (code, _, err) = probescope(&["compare", a.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("shallow.jsonl")
            && err.contains("renamed.jsonl")
            && err.contains("no probe in common"),
        "{err}"
    );
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let (code, _, err) = probescope(&["compare", a.to_str().unwrap(), junk.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("notes.txt"), "{err}");
    let (code, _, err) = probescope(&["compare", a.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn status_reads_a_killed_runs_log_and_reports_its_findings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["run", "bifurcation", "--set", "steps=1000000", "--record"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&path).map_or(0, |t| t.lines().count()) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshots within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = runlog::read(&path).unwrap();
    let step = log.snapshots().last().unwrap().step;
    let (code, out, err) = probescope(&["status", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("bifurcation · running · ") && out.contains(&format!("step {step}")),
        "{out}"
    );
    assert!(out.contains("best "), "{out}");

    // A constructed log whose errors climb with depth at step 0: the finding is named, and the
    // recorder's own alerts went into the killed run's snapshots as they do into any.
    let h = probescope::tui::sample::header("untrained-mlp", &["depth=7"]).unwrap();
    let rising = dir.path().join("rising.jsonl");
    let mut w = runlog::RunLogWriter::create(&rising, false).unwrap();
    w.write(&Record::Run(h.clone())).unwrap();
    let mut s = probescope::tui::sample::snapshot(&h, 0, true);
    for (i, p) in s.probes.iter_mut().enumerate() {
        p.reading.test_error = Some(0.06 * i as f64);
    }
    w.write(&Record::Snapshot(s.clone())).unwrap();
    drop(w);
    let (_, out, _) = probescope(&["status", rising.to_str().unwrap()]);
    assert!(out.contains("⚠ error rises with depth at init"), "{out}");
    // The same run with a flat profile says nothing.
    let flat = dir.path().join("flat.jsonl");
    let mut w = runlog::RunLogWriter::create(&flat, false).unwrap();
    w.write(&Record::Run(h.clone())).unwrap();
    for p in s.probes.iter_mut() {
        p.reading.test_error = Some(0.1);
    }
    w.write(&Record::Snapshot(s)).unwrap();
    drop(w);
    let (_, out, _) = probescope(&["status", flat.to_str().unwrap()]);
    assert!(!out.contains('⚠'), "{out}");
    let (code, _, err) = probescope(&["status", dir.path().join("none.jsonl").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("none.jsonl"), "{err}");
}

#[test]
fn a_recorded_run_carries_its_findings_in_the_log() {
    // untrained-mlp at depth 12 loses its information with depth (sec 3.3), so its snapshots
    // say so, from the dataset that makes the mean rise.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.jsonl");
    let (code, _, err) = recorded_mlp_run(
        &path,
        &["datasets=2", "depth=12", "train=1000", "test=500"],
        &["--headless"],
    );
    assert_eq!(code, 0, "{err}");
    let log = runlog::read(&path).unwrap();
    let last = log.snapshots().last().unwrap();
    assert!(
        last.alerts.iter().any(|a| a.contains("rises with depth")),
        "{:?}",
        last.alerts
    );
    // What the log says is what an independent pass over it finds.
    let again: Vec<String> = probescope::alerts::of_log(&log)
        .into_iter()
        .map(|a| a.message)
        .collect();
    assert_eq!(last.alerts, again);
    // --watch on a finished log: a line per snapshot, then the end's, and it returns.
    let (code, out, _) = probescope(&["status", "--watch", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), log.snapshots().count() + 1, "{out}");
    assert!(out.lines().last().unwrap().contains("finished"), "{out}");
}

#[test]
fn selectivity_on_records_a_control_error_per_probe_and_falls_with_depth() {
    // untrained-mlp: the input separates its classes exactly, deep layers lose that, while a
    // control twin on random labels does about as badly everywhere (128 features, 1,000
    // samples): selectivity is highest at the input.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sel.jsonl");
    let (code, _, err) = recorded_mlp_run(
        &path,
        &[
            "datasets=2",
            "depth=16",
            "train=1000",
            "test=500",
            "selectivity=on",
        ],
        &["--headless"],
    );
    assert_eq!(code, 0, "{err}");
    let log = runlog::read(&path).unwrap();
    assert!(log.header.fit.control);
    for s in log.snapshots() {
        let sel: Vec<f64> = s
            .probes
            .iter()
            .map(|p| p.reading.control_error.expect("a control error") - p.reading.train_error)
            .collect();
        let (first, last) = (sel[0], *sel.last().unwrap());
        assert!(
            first > last + 0.1,
            "selectivity input {first}, deepest {last}"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_from_a_cpu_build_says_how_to_build_it_and_auto_runs_on_the_cpu() {
    for spec in ["cuda", "cuda:1"] {
        let (code, _, err) = probescope(&["run", "untrained-mlp", "--device", spec]);
        assert_eq!(code, 2, "{spec}: {err}");
        assert!(
            err.contains(&format!(
                "--device {spec}: this probescope was built without CUDA"
            )) && err.contains("cargo build --release --features cuda"),
            "{err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let (code, _, err) = probescope(&[
        "run",
        "untrained-mlp",
        "--headless",
        "--device",
        "auto",
        "--set",
        "datasets=1",
        "--set",
        "depth=2",
        "--record",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(runlog::read(&path).unwrap().header.device, "cpu");
}
