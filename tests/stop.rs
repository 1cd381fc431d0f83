//! Stop means stop, headless: SIGTERM, SIGINT and SIGHUP sent while the run is certainly inside
//! a converged fit (the test hook `PROBESCOPE_DEBUG_HOLD_FIT` holds every fit until it is
//! stopped) end the process with exit code 130, the log's end line saying "stopped" with the
//! step, no half-fitted snapshot in the log, and the checkpoint written. A second signal ends a
//! run that does not answer at once, and its log still reads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{exit_code, signal, wait_inside_fit};

use probescope::runlog::{self, EndStatus, Record, SnapshotKind};

/// The example model file with branches, on its synthetic task (no data files needed).
fn model_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/branches.toml")
}

/// Starts a headless run of the example model file whose converged fits hold at `marker`.
fn held_run(dir: &Path, log: &Path, ignore_stop: bool) -> Child {
    let marker = dir.join("inside-fit");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_probescope"));
    cmd.arg("run")
        .arg(model_file())
        .args(["--headless", "--record"])
        .arg(log)
        .arg("--checkpoint")
        .arg(dir.join("model.safetensors"))
        .env("PROBESCOPE_DEBUG_HOLD_FIT", &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if ignore_stop {
        cmd.env("PROBESCOPE_DEBUG_IGNORE_STOP", "1");
    }
    let mut child = cmd.spawn().unwrap();
    wait_inside_fit(&mut child, &marker);
    child
}

#[test]
fn a_signal_inside_a_converged_fit_stops_the_run_with_its_end_line_and_checkpoint() {
    for (name, sig) in [
        ("SIGTERM", libc::SIGTERM),
        ("SIGINT", libc::SIGINT),
        ("SIGHUP", libc::SIGHUP),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.jsonl");
        let mut child = held_run(dir.path(), &log, false);
        signal(&child, sig);
        assert_eq!(exit_code(&mut child), Some(130), "{name}");
        let run = runlog::read(&log).unwrap();
        let end = run.end().expect("an end line");
        assert_eq!(end.status, EndStatus::Stopped, "{name}");
        assert_eq!(end.step, Some(0), "{name}: stopped in the init snapshot");
        let message = end.message.clone().unwrap_or_default();
        assert!(
            message.contains("signal") && message.contains("at step 0"),
            "{name}: {message}"
        );
        // The fit that was cut short left no snapshot that looks complete.
        assert!(
            !run.snapshots()
                .any(|s| s.kind == SnapshotKind::Converged && s.step == 0),
            "{name}: a half-fitted snapshot was written"
        );
        assert!(
            std::fs::metadata(dir.path().join("model.safetensors")).is_ok_and(|m| m.len() > 0),
            "{name}: the checkpoint was not written"
        );
        assert!(
            run.warnings.is_empty(),
            "{name}: the log reads whole: {:?}",
            run.warnings
        );
    }
}

#[test]
fn a_second_signal_ends_a_run_that_does_not_answer_and_its_log_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    let mut child = held_run(dir.path(), &log, true);
    signal(&child, libc::SIGINT);
    // The fit ignores the stop (the hook), so the first signal alone does not end the run.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal asks; it does not kill"
    );
    signal(&child, libc::SIGINT);
    assert_eq!(exit_code(&mut child), Some(130));
    let run = runlog::read(&log).unwrap();
    assert!(run.end().is_none(), "ended at once, without an end line");
    assert_eq!(run.header.preset, "branches", "the header reads back");
    assert!(
        run.records.iter().all(|r| !matches!(r, Record::End(_))),
        "no end line anywhere"
    );
}
