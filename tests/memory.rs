//! Memory never surprises: the estimate made before a run starts against the peak the run
//! reaches (its end line's `peak_rss`, the kernel's VmHWM), and a run over the limit refused
//! before anything is computed, with settings that fit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probescope::runlog::{self, EndStatus};

mod common;
use common::real_data;

/// Runs `preset` with `sets` until its first converged snapshot is in the log, stops it, and
/// returns the measured peak resident memory.
fn peak_through_first_snapshot(data: &Path, preset: &str, sets: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_probescope"));
    cmd.args(["run", preset, "--headless", "--record"])
        .arg(&log)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\"kind\":\"converged\"")
    {
        assert!(child.try_wait().unwrap().is_none(), "{preset} ended early");
        assert!(
            Instant::now() < deadline,
            "{preset}: no snapshot in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let run = runlog::read(&log).unwrap();
    let end = run.end().expect("an end line");
    assert_eq!(end.status, EndStatus::Stopped);
    end.peak_rss.expect("the peak is recorded on Linux")
}

#[test]
fn the_estimate_is_within_a_quarter_of_the_measured_peak_of_two_presets() {
    let Some(data) = real_data() else { return };
    if !Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc here to measure the peak");
        return;
    }
    for (preset, sets) in [
        (
            "mnist-convnet",
            vec!["probe_train=1000", "probe_val=1000", "probe_test=1000"],
        ),
        (
            "deep-mlp",
            vec![
                "depth=32",
                "probe_train=2000",
                "probe_val=2000",
                "probe_test=2000",
            ],
        ),
    ] {
        let owned: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let est = probescope::presets::memory_estimate(preset, &owned, 0)
            .unwrap()
            .expect("trained presets are estimated");
        let peak = peak_through_first_snapshot(&data, preset, &sets);
        let ratio = est.peak as f64 / peak as f64;
        eprintln!(
            "{preset} {sets:?}: estimated {} MB, measured {} MB, ratio {ratio:.3}",
            est.peak >> 20,
            peak >> 20
        );
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{preset}: estimate {} vs measured peak {} (ratio {ratio:.3})",
            est.peak,
            peak
        );
    }
}

#[test]
fn a_run_over_the_memory_limit_is_refused_before_it_starts_with_settings_that_fit() {
    // A model file on a synthetic task: no data files needed. 40,000 samples of 4,096 features
    // in three splits, a 4,096-wide layer and probes on every tap (the two wide taps' features
    // in bfloat16, as `probe_dtype=auto` keeps them): about 1.9 GB; the limit 1.75 GiB.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wide.toml");
    std::fs::write(
        &file,
        "name = \"wide\"\ninput = [4096]\nclasses = 4\n\n[data]\nkind = \"argmax\"\n\
         train = 20000\nval = 10000\ntest = 10000\n\n[[layer]]\nname = \"h\"\ntype = \"linear\"\n\
         out = 4096\n\n[[layer]]\nname = \"out\"\ntype = \"linear\"\nout = 4\n",
    )
    .unwrap();
    let log = dir.path().join("run.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["run", file.to_str().unwrap(), "--headless", "--record"])
        .arg(&log)
        .env("PROBESCOPE_MEMORY_LIMIT_MB", "1750")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("needs about") && err.contains("available"),
        "{err}"
    );
    assert!(
        err.contains("--set probe_train="),
        "a setting that fits: {err}"
    );
    assert!(!log.exists(), "nothing is written for a refused run");
    // The first setting it names does fit.
    let set = err
        .split("--set ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let sets = vec![set.clone()];
    let est = probescope::presets::memory_estimate(file.to_str().unwrap(), &sets, 0)
        .unwrap()
        .unwrap();
    assert!(est.peak <= 1750 << 20, "{set}: {}", est.peak);
    // Without a limit (0), the check is off.
    let name = file.to_str().unwrap();
    let full = probescope::presets::memory_estimate(name, &[], 0).unwrap();
    assert!(full.is_some_and(|e| e.peak > 1750 << 20));
    probescope::presets::check_memory(full, None, name, &[], 0).unwrap();
}
