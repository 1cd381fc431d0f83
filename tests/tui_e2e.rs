//! End to end in a real terminal: the binary runs in a tmux pane (120x40) as a person would use it;
//! keys go in with `send-keys` and the screen comes back with `capture-pane`. Skipped, with a
//! message, where tmux is not installed (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (.ci/run installs it)");
            return None;
        }
        let t = Self {
            socket: format!("probescope-{name}-{}", std::process::id()),
        };
        t.run(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "e2e",
            "env -u NO_COLOR COLORTERM=truecolor PS1='$ ' bash --norc --noprofile",
        ]);
        Some(t)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", line]);
        self.keys(&["Enter"]);
    }

    /// Saves the pane's terminal settings, to compare after the UI has gone.
    fn save_stty(&self) {
        self.type_line(&format!("stty -g > /tmp/{}.stty", self.socket));
    }

    /// Waits until the pane's terminal settings equal the saved ones. The marker is computed
    /// by the shell, so the typed command line itself cannot satisfy the check.
    fn assert_stty_restored(&self) {
        self.type_line(&format!(
            "stty -g | cmp -s - /tmp/{0}.stty && echo STTY-$((40+2))-SAME; rm -f /tmp/{0}.stty",
            self.socket
        ));
        self.wait_for(10, "the same terminal settings", |s| {
            s.contains("STTY-42-SAME")
        });
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "e2e"])
    }

    /// Waits (up to `secs`) until the screen satisfies `ok`; returns the last screen.
    fn wait_for(&self, secs: u64, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > until {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_probescope")
}

#[test]
fn live_ui_keys_help_quit_and_the_shell_is_usable_again() {
    let Some(t) = Tmux::start("keys") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.jsonl");
    t.save_stty();
    t.type_line(&format!(
        "{} run bifurcation --set steps=200000 --record {}; echo EXIT=$?",
        bin(),
        log.display()
    ));
    let s = t.wait_for(
        60,
        "the bars, the diagram and the layer x time picture",
        |s| {
            s.contains("probe error")
                && s.contains("model graph")
                && s.contains("layer × time")
                && s.contains("running")
                && s.contains('╯')
        },
    );
    assert!(s.contains("bifurcation · cpu"), "{s}");
    // Online snapshots keep coming in: the layer x time picture fills.
    t.wait_for(60, "several snapshots", |s| {
        s.lines().any(|l| {
            l.contains("layer × time · ")
                && l.split("layer × time · ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= 3)
        })
    });
    t.keys(&["?"]);
    t.wait_for(10, "the help", |s| s.contains("keys · any key closes"));
    t.keys(&["x"]);
    t.wait_for(10, "the help to close", |s| {
        !s.contains("keys · any key closes")
    });
    t.keys(&["l", "l"]);
    t.wait_for(10, "the selection to move", |s| s.contains("▲lower_in"));
    t.keys(&["Space"]);
    t.wait_for(10, "paused", |s| s.contains(" paused "));
    t.keys(&["Space"]);
    t.wait_for(10, "running again", |s| s.contains(" running "));
    // A converged snapshot on request (checked in the log below).
    t.keys(&["s"]);
    t.wait_for(10, "the request", |s| {
        s.contains("converged snapshot requested")
    });
    t.keys(&["t"]);
    t.wait_for(10, "the next theme", |s| s.contains("theme: light"));
    // Resizing at any time: too small says so, and the UI comes back when there is room.
    t.run(&["resize-window", "-t", "e2e", "-x", "50", "-y", "12"]);
    t.wait_for(10, "the too-small message", |s| s.contains("too small"));
    t.run(&["resize-window", "-t", "e2e", "-x", "80", "-y", "24"]);
    t.wait_for(10, "the UI at 80x24", |s| {
        s.contains("probe error") && s.contains("model graph")
    });
    t.run(&["resize-window", "-t", "e2e", "-x", "120", "-y", "40"]);
    // Wait for the redraw at full size before the next key, so it does not race the resize.
    t.wait_for(10, "the UI at 120x40", |s| {
        s.lines().next().is_some_and(|l| l.chars().count() >= 115)
    });
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["q"]);
    t.wait_for(10, "the quit question", |s| s.contains("Stop it and quit?"));
    t.keys(&["y"]);
    let s = t.wait_for(60, "the exit", |s| s.contains("EXIT=130"));
    assert!(!s.contains("probe error"), "the UI's screen is gone:\n{s}");
    // The terminal is as it was: same stty settings, and the shell answers.
    t.assert_stty_restored();
    // The requested snapshot is in the log: converged, between init and the end.
    let text = std::fs::read_to_string(&log).unwrap();
    let asked = text.lines().any(|l| {
        l.contains("\"type\":\"snapshot\"")
            && l.contains("\"kind\":\"converged\"")
            && l.contains("\"label\":\"step ")
    });
    assert!(asked, "no requested converged snapshot in the log");
    // The run log ends with a stopped line.
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("\"type\":\"end\"") && last.contains("stopped"),
        "{last}"
    );
}

#[test]
fn sigterm_closes_the_ui_and_restores_the_terminal() {
    let Some(t) = Tmux::start("term") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("term.jsonl");
    t.save_stty();
    t.type_line(&format!(
        "{} run bifurcation --set steps=200001 --record {}; echo EXIT=$?",
        bin(),
        log.display()
    ));
    t.wait_for(60, "the UI", |s| {
        s.contains("probe error") && s.contains("running")
    });
    let pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", "steps=200001"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pid = pid
        .lines()
        .next()
        .expect("the binary runs")
        .trim()
        .to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    t.wait_for(60, "the exit", |s| s.contains("EXIT=130"));
    t.assert_stty_restored();
    assert!(Path::new(&log).exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().last().unwrap().contains("stopped"));
}

#[test]
fn every_stop_path_inside_a_converged_fit_ends_the_ui_the_run_and_its_log() {
    // The hook holds every converged fit until the run is stopped, so each stop below lands
    // inside one: bifurcation's fit at initialisation.
    for path in ["q", "C-c", "SIGTERM", "SIGHUP"] {
        let Some(t) = Tmux::start(&format!("stop-{}", path.to_lowercase())) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (log, marker) = (dir.path().join("run.jsonl"), dir.path().join("inside-fit"));
        t.save_stty();
        t.type_line(&format!(
            "PROBESCOPE_DEBUG_HOLD_FIT={} {} run bifurcation --record {}; echo EXIT=$?",
            marker.display(),
            bin(),
            log.display()
        ));
        t.wait_for(60, "the UI", |s| {
            s.contains("probe error") && s.contains("running")
        });
        let until = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            assert!(Instant::now() < until, "{path}: no converged fit began");
            std::thread::sleep(Duration::from_millis(50));
        }
        match path {
            "q" | "C-c" => {
                t.keys(&[path]);
                t.wait_for(10, "the quit question", |s| s.contains("Stop it and quit?"));
                t.keys(&["y"]);
            }
            signal => {
                let pids = Command::new("pgrep")
                    .args(["-f", &log.display().to_string()])
                    .output()
                    .unwrap()
                    .stdout;
                let pids = String::from_utf8(pids).unwrap();
                let pid = pids.lines().next().expect("the binary runs").trim();
                let flag = format!("-{}", signal.trim_start_matches("SIG"));
                Command::new("kill").args([&flag, pid]).status().unwrap();
            }
        }
        let s = t.wait_for(30, "the exit", |s| s.contains("EXIT=130"));
        assert!(!s.contains("probe error"), "{path}: the UI is gone:\n{s}");
        t.assert_stty_restored();
        let text = std::fs::read_to_string(&log).unwrap();
        let last = text.lines().last().unwrap();
        assert!(
            last.contains("\"type\":\"end\"")
                && last.contains("\"status\":\"stopped\"")
                && last.contains("at step 0"),
            "{path}: {last}"
        );
        assert!(
            !text.contains("\"kind\":\"converged\""),
            "{path}: the fit that was stopped left no snapshot"
        );
    }
}

#[test]
fn a_worker_panic_is_shown_and_a_ui_panic_restores_the_terminal() {
    let Some(t) = Tmux::start("panic") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("panic.jsonl");
    t.save_stty();
    // The worker fails: the UI stays up and says why; q leaves at once (nothing is running).
    t.type_line(&format!(
        "RUST_BACKTRACE=0 PROBESCOPE_DEBUG_PANIC=worker {} run bifurcation --record {}; echo EXIT=$?",
        bin(),
        log.display()
    ));
    let s = t.wait_for(60, "the failure", |s| s.contains("the run failed"));
    assert!(s.contains("internal error") && s.contains("FAILED"), "{s}");
    t.keys(&["q"]);
    t.wait_for(30, "the exit", |s| s.contains("EXIT=1"));
    // The log has the header and an end line that says what went wrong.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().next().unwrap().contains("\"type\":\"run\""));
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("failed") && last.contains("deliberate worker panic"),
        "{last}"
    );
    // The UI itself panics: the terminal comes back and the panic is printed on it.
    t.type_line("clear");
    let log2 = dir.path().join("ui-panic.jsonl");
    t.type_line(&format!(
        "RUST_BACKTRACE=0 PROBESCOPE_DEBUG_PANIC=ui {} run bifurcation --set steps=200002 --record {}; echo EXIT=$?",
        bin(),
        log2.display()
    ));
    let s = t.wait_for(60, "the exit", |s| s.contains("EXIT=101"));
    assert!(s.contains("deliberate UI panic"), "{s}");
    // The worker was stopped and closed its log.
    let text = std::fs::read_to_string(&log2).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("stopped") && last.contains("terminal UI failed"),
        "{last}"
    );
    t.assert_stty_restored();
}

/// A child process killed when the test ends, however it ends.
struct Recording(std::process::Child);

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a headless bifurcation run recording to `log`, and waits until it has written `lines`.
fn recording(log: &Path, steps: u64, lines: usize) -> Recording {
    let child = Command::new(bin())
        .args(["run", "bifurcation", "--set"])
        .arg(format!("steps={steps}"))
        .arg("--record")
        .arg(log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Recording(child);
    let until = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(log).map_or(0, |t| t.lines().count()) < lines {
        assert!(Instant::now() < until, "the recording did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn replay_scrubs_and_plays_a_killed_runs_log() {
    let Some(t) = Tmux::start("replay") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("killed.jsonl");
    // A real run, killed with SIGKILL mid-way: what it left is replayed.
    let mut child = recording(&log, 1_000_000, 8);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let n = probescope::runlog::read(&log).unwrap().snapshots().count();
    assert!(n >= 6, "{n} snapshots");
    t.save_stty();
    t.type_line(&format!("{} replay {}; echo EXIT=$?", bin(), log.display()));
    let s = t.wait_for(30, "the replay at its last snapshot", |s| {
        s.contains(&format!("snapshot {n}/{n}"))
    });
    assert!(s.contains("ends without an end line"), "{s}");
    t.keys(&["["]);
    t.wait_for(10, "one back", |s| {
        s.contains(&format!("snapshot {}/{n}", n - 1))
    });
    t.keys(&["Home"]);
    t.wait_for(10, "the start", |s| s.contains(&format!("snapshot 1/{n}")));
    t.keys(&["}"]);
    t.wait_for(10, "ten on", |s| {
        s.contains(&format!("snapshot {}/{n}", 11.min(n)))
    });
    t.keys(&["Home", "Space"]);
    t.wait_for(10, "playing", |s| s.contains("▶ replay"));
    t.wait_for(30, "the end of the timeline", |s| {
        s.contains(&format!("snapshot {n}/{n}")) && !s.contains("▶ replay")
    });
    t.keys(&["q"]);
    t.wait_for(10, "the exit", |s| s.contains("EXIT=0"));
    t.assert_stty_restored();
}

#[test]
fn attach_follows_a_headless_run_and_sees_it_end() {
    let Some(t) = Tmux::start("attach") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.jsonl");
    let child = recording(&log, 1_000_000, 2);
    t.save_stty();
    t.type_line(&format!("{} attach {}; echo EXIT=$?", bin(), log.display()));
    t.wait_for(30, "the attached UI", |s| {
        s.contains("attached, read-only") && s.contains("probe error") && s.contains(" running ")
    });
    // It cannot steer: pause is refused.
    t.keys(&["Space"]);
    t.wait_for(10, "the refusal", |s| s.contains("cannot steer"));
    // New snapshots keep arriving.
    let count = |s: &str| {
        s.lines()
            .find_map(|l| l.split("layer × time · ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let first = count(&t.screen());
    t.wait_for(30, "more snapshots", |s| count(s) > first);
    // The writer stops (SIGINT, as Ctrl-C in its own terminal): the attached UI sees the end.
    Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    t.wait_for(30, "the end", |s| s.contains(" stopped "));
    let mut child = child;
    assert_eq!(child.0.wait().unwrap().code(), Some(130));
    t.keys(&["q"]);
    t.wait_for(10, "the exit", |s| s.contains("EXIT=0"));
    t.assert_stty_restored();
}

#[test]
fn compare_scrubs_the_shared_timeline_and_shows_differences() {
    let Some(t) = Tmux::start("compare") else {
        return;
    };
    use probescope::runlog::{Record, RunLogWriter};
    let dir = tempfile::tempdir().unwrap();
    let h = probescope::tui::sample::header("bifurcation", &[]).unwrap();
    // Run a snapshots at steps 0, 100, 200; run b at 0 and 200, with half the error.
    for (name, steps, scale) in [("a", vec![0, 100, 200], 1.0), ("b", vec![0, 200], 0.5)] {
        let mut w = RunLogWriter::create(&dir.path().join(format!("{name}.jsonl")), false).unwrap();
        w.write(&Record::Run(h.clone())).unwrap();
        for (k, step) in steps.into_iter().enumerate() {
            let mut s = probescope::tui::sample::snapshot(&h, k, true);
            s.step = step;
            for p in &mut s.probes {
                p.reading.test_error = p.reading.test_error.map(|e| e * scale);
            }
            w.write(&Record::Snapshot(s)).unwrap();
        }
    }
    t.save_stty();
    t.type_line(&format!(
        "cd {} && {} compare a.jsonl b.jsonl; echo EXIT=$?",
        dir.path().display(),
        bin()
    ));
    t.wait_for(30, "the comparison at its last step", |s| {
        s.contains(" compare ") && s.contains("step 200 (3/3)")
    });
    t.keys(&["["]);
    t.wait_for(10, "one step back", |s| s.contains("step 100 (2/3)"));
    t.keys(&["d"]);
    let s = t.wait_for(10, "the differences", |s| s.contains("minus a"));
    assert!(s.contains("b − a"), "{s}");
    t.keys(&["e"]);
    t.wait_for(10, "the export", |s| s.contains("wrote"));
    assert!(dir
        .path()
        .join("probescope-compare-step100-test-diff.svg")
        .exists());
    assert!(dir
        .path()
        .join("probescope-compare-step100-test-diff.png")
        .exists());
    t.keys(&["q"]);
    t.wait_for(10, "the exit", |s| s.contains("EXIT=0"));
    t.assert_stty_restored();
}
