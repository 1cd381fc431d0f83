//! `probescope paper`: the experiments run through the command line, judged against the paper,
//! with a REPORT.md; finished logs reused; a stop ends the whole paper run. And the verdicts at
//! reduced sizes where they hold there, on the real MNIST files where `../shared/data` has them.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use probescope::paper::{self, Size, Verdict};
use probescope::runlog::{self, EndStatus};

fn probescope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_quick_synthetic_experiments_are_reproduced_reported_and_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let out_s = out.to_str().unwrap();
    let args = [
        "paper",
        "--quick",
        "--only",
        "bifurcation,feature-subset",
        "--out",
        out_s,
    ];
    let first = probescope(&args);
    let stdout = text(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}{}",
        text(&first.stderr)
    );
    assert!(
        stdout.contains("paper: 3 reproduced, 0 differ (reason given)"),
        "{stdout}"
    );
    // The summary tables of the runs themselves are not printed; the judged tables are.
    assert!(!stdout.contains("probe        features"), "{stdout}");
    assert!(stdout.contains("bifurcation (sec 3.2)") && stdout.contains("· ran,"));
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    for want in [
        "| a probe on one branch cannot beat what its half of the input tells |",
        "(bound .172)",
        "**reproduced**",
        "![bifurcation-bars.svg](bifurcation-bars.svg)",
        "[feature-subset.jsonl](feature-subset.jsonl)",
        // The experiments not selected are listed with the command that runs them.
        "`probescope paper --quick --only mnist-convnet`",
    ] {
        assert!(report.contains(want), "REPORT.md lacks {want:?}:\n{report}");
    }
    for file in [
        "bifurcation.jsonl",
        "bifurcation-bars.svg",
        "feature-subset.jsonl",
        "feature-subset-curve.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // The logs are the runs' own, finished, with the quick settings.
    let log = runlog::read(&out.join("bifurcation.jsonl")).unwrap();
    assert_eq!(log.end().unwrap().status, EndStatus::Finished);
    // A second invocation reuses both finished logs; --force runs them again.
    let again = probescope(&args);
    assert_eq!(again.status.code(), Some(0));
    let again = text(&again.stdout);
    assert_eq!(again.matches("· reused,").count(), 2, "{again}");
    assert!(!again.contains("running `"), "{again}");
    let mut forced: Vec<&str> = args.to_vec();
    forced.extend(["--force", "--only", "bifurcation"]);
    let forced = probescope(&forced);
    assert_eq!(forced.status.code(), Some(0));
    let forced = text(&forced.stdout);
    assert!(
        forced.contains("running `probescope run bifurcation`"),
        "{forced}"
    );
}

#[test]
fn an_unknown_experiment_is_refused_with_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = probescope(&[
        "paper",
        "--only",
        "fig9",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--only fig9: no such experiment") && err.contains("deep-mlp-skip"),
        "{err}"
    );
    assert!(!dir.path().join("r").exists(), "nothing written");
}

#[test]
fn a_signal_stops_the_paper_run_and_leaves_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let marker = dir.path().join("inside-fit");
    let mut child = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args([
            "paper",
            "--quick",
            "--only",
            "untrained-mlp,bifurcation",
            "--out",
        ])
        .arg(&out)
        .env("PROBESCOPE_DEBUG_HOLD_FIT", &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_inside_fit(&mut child, &marker);
    common::signal(&child, libc::SIGTERM);
    let code = common::exit_code(&mut child);
    assert_eq!(code, Some(130));
    let log = runlog::read(&out.join("untrained-mlp.jsonl")).unwrap();
    assert_eq!(log.end().unwrap().status, EndStatus::Stopped);
    // The next experiment did not start.
    assert!(!out.join("bifurcation.jsonl").exists());
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("the run was stopped"), "{report}");
    assert!(
        report.contains("the paper run was stopped first"),
        "{report}"
    );
}

/// Runs `probescope run PRESET --set ...` headless into `log`.
fn run_preset(data: &Path, log: &Path, preset: &str, sets: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_probescope"));
    cmd.args(["run", preset, "--headless", "--record"])
        .arg(log)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn experiment(name: &str) -> paper::Experiment {
    paper::experiments(Size::Quick)
        .into_iter()
        .find(|e| e.name == name)
        .unwrap()
}

#[test]
fn a_shallow_skip_mlp_on_mnist_shows_the_second_bump_at_initialisation() {
    let Some(data) = common::real_data() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skip.jsonl");
    // 32 layers of 64 units; the skip at layer 16.
    run_preset(
        &data,
        &log,
        "deep-mlp",
        &[
            "variant=skip",
            "depth=32",
            "width=64",
            "steps=200",
            "snapshots=0,200",
            "probe_train=3000",
            "probe_val=1000",
            "probe_test=3000",
        ],
    );
    let log = runlog::read(&log).unwrap();
    let checks = paper::judge(&experiment("deep-mlp-skip"), &log);
    // The bump: h016 reads the input; h014 is 14 layers deep.
    assert_eq!(checks[0].verdict, Verdict::Reproduced, "{checks:#?}");
    assert!(checks[0].measured.contains("h014") && checks[0].measured.contains("h016"));
}

#[test]
fn an_untrained_mlp_at_a_reduced_size_loses_information_with_depth() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("u.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["run", "untrained-mlp", "--headless", "--record"])
        .arg(&log)
        .args([
            "--set",
            "datasets=3",
            "--set",
            "train=2000",
            "--set",
            "test=2000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let log = runlog::read(&log).unwrap();
    let checks = paper::judge(&experiment("untrained-mlp"), &log);
    assert_eq!(
        checks.iter().map(|c| c.verdict).collect::<Vec<_>>(),
        vec![Verdict::Reproduced; 3],
        "{checks:#?}"
    );
}

#[test]
fn an_experiment_without_its_data_is_not_run_and_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("report");
    let run = probescope(&[
        "paper",
        "--quick",
        "--only",
        "deep-mlp-plain",
        "--data-dir",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("0 reproduced") && stdout.contains("1 not run"),
        "{stdout}"
    );
    assert!(text(&run.stderr).contains("1 not run"));
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("**not run**"), "{report}");
    assert!(report.contains("probescope data fetch mnist"), "{report}");
}

#[test]
fn a_narrow_plain_128_layer_mlp_on_mnist_does_not_train_and_the_findings_say_so() {
    let Some(data) = common::real_data() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plain.jsonl");
    // 128 layers of 32 units: the depth is what stops it (64 layers of 64 units train).
    run_preset(
        &data,
        &log,
        "deep-mlp",
        &[
            "variant=plain",
            "width=32",
            "steps=300",
            "snapshots=0,300",
            "probe_train=2000",
            "probe_val=1000",
            "probe_test=2000",
        ],
    );
    let log = runlog::read(&log).unwrap();
    let checks = paper::judge(&experiment("deep-mlp-plain"), &log);
    assert_eq!(
        checks.iter().map(|c| c.verdict).collect::<Vec<_>>(),
        vec![Verdict::Reproduced; 2],
        "{checks:#?}"
    );
}
