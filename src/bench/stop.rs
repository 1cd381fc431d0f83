//! `probescope bench stop`: how long a run takes to stop, measured from outside as a scheduler or
//! a user would see it. Each trial starts this binary on a preset (headless, recording a run
//! log), waits a set time so the signal lands at a chosen moment (inside a converged fit,
//! a forward pass, a training step), sends SIGTERM, SIGINT or SIGHUP, and times until the
//! process has exited. Then it checks the log: its last line must be the `end` line, "stopped".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One preset (with its settings) and the moments to stop it at.
struct Scenario {
    label: &'static str,
    args: Vec<String>,
    needs_mnist: bool,
    delays_s: &'static [f64],
}

/// One stop, as measured.
#[derive(Debug, Clone)]
pub struct Trial {
    /// What ran.
    pub label: String,
    /// Seconds after the start that the signal was sent.
    pub delay_s: f64,
    /// The signal's name.
    pub signal: &'static str,
    /// Seconds from the signal to the process's exit (`None`: it had already ended).
    pub latency_s: Option<f64>,
    /// The process's exit code.
    pub code: Option<i32>,
    /// Resident memory when the signal was sent, in bytes.
    pub rss: Option<u64>,
    /// The log's last line was an `end` line saying "stopped".
    pub end_line: bool,
    /// What the end line said.
    pub message: String,
}

fn scenarios(model_file: &Path) -> Vec<Scenario> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let small = [
        "--set",
        "probe_train=1000",
        "--set",
        "probe_val=1000",
        "--set",
        "probe_test=1000",
    ];
    let mut convnet_small = s(&["mnist-convnet"]);
    convnet_small.extend(s(&small));
    convnet_small.extend(s(&["--set", "snapshot_every=20"]));
    let mut deep_small = s(&["deep-mlp", "--set", "variant=skip"]);
    deep_small.extend(s(&small));
    deep_small.extend(s(&["--set", "snapshot_every=100"]));
    vec![
        Scenario {
            label: "untrained-mlp",
            args: s(&["untrained-mlp"]),
            needs_mnist: false,
            delays_s: &[1.0, 2.5, 6.0],
        },
        Scenario {
            label: "bifurcation",
            args: s(&["bifurcation", "--set", "steps=200000"]),
            needs_mnist: false,
            delays_s: &[0.3, 2.0, 5.0],
        },
        Scenario {
            label: "feature-subset (dim=20000)",
            args: s(&["feature-subset", "--set", "dim=20000"]),
            needs_mnist: false,
            delays_s: &[1.0, 3.0],
        },
        Scenario {
            label: "mnist-convnet (init snapshot)",
            args: s(&["mnist-convnet"]),
            needs_mnist: true,
            delays_s: &[2.0, 6.0, 15.0, 40.0],
        },
        Scenario {
            label: "mnist-convnet (training, small snapshots)",
            args: convnet_small,
            needs_mnist: true,
            delays_s: &[5.0, 12.0, 25.0],
        },
        Scenario {
            label: "deep-mlp skip (init snapshot)",
            args: s(&["deep-mlp", "--set", "variant=skip"]),
            needs_mnist: true,
            delays_s: &[2.0, 6.0, 15.0],
        },
        Scenario {
            label: "deep-mlp skip (training)",
            args: deep_small,
            needs_mnist: true,
            delays_s: &[6.0, 12.0],
        },
        Scenario {
            label: "model file branches.toml",
            args: vec![
                model_file.display().to_string(),
                "--set".into(),
                "epochs=1000".into(),
            ],
            needs_mnist: false,
            delays_s: &[1.0, 3.0],
        },
    ]
}

const SIGNALS: [(&str, i32); 3] = [
    ("SIGTERM", libc::SIGTERM),
    ("SIGINT", libc::SIGINT),
    ("SIGHUP", libc::SIGHUP),
];

/// Runs every scenario (those needing MNIST only when `data_dir` holds it) and returns the
/// trials and the report.
pub fn run(data_dir: &Path, only: Option<&str>) -> anyhow::Result<(Vec<Trial>, String)> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("probescope-bench-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model_file = dir.join("branches.toml");
    std::fs::write(&model_file, BRANCHES)?;
    let mnist = crate::mnist::check_present(data_dir, crate::mnist::Which::Mnist).is_ok();
    let mut trials = Vec::new();
    let mut skipped = Vec::new();
    let mut k = 0usize;
    for sc in scenarios(&model_file) {
        if only.is_some_and(|o| !sc.label.contains(o)) {
            continue;
        }
        if sc.needs_mnist && !mnist {
            skipped.push(sc.label);
            continue;
        }
        for &delay in sc.delays_s {
            let (signal, signo) = SIGNALS[k % SIGNALS.len()];
            k += 1;
            let log = dir.join(format!("run-{k}.jsonl"));
            let mut cmd = Command::new(&exe);
            cmd.arg("run")
                .args(&sc.args)
                .args(["--headless", "--record"])
                .arg(&log)
                .arg("--data-dir")
                .arg(data_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd.spawn()?;
            let started = Instant::now();
            let until = started + Duration::from_secs_f64(delay);
            let mut exited = None;
            while Instant::now() < until {
                if let Some(st) = child.try_wait()? {
                    exited = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let rss = crate::memory::rss_of(child.id());
            let (latency_s, code) = match exited {
                Some(st) => (None, st.code()),
                None => {
                    let sent = Instant::now();
                    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
                    unsafe {
                        libc::kill(child.id() as i32, signo);
                    }
                    let st = child.wait()?;
                    (Some(sent.elapsed().as_secs_f64()), st.code())
                }
            };
            let (end_line, message) = end_of(&log);
            let t = Trial {
                label: sc.label.to_string(),
                delay_s: delay,
                signal,
                latency_s,
                code,
                rss,
                end_line,
                message,
            };
            eprintln!("{}", row(&t));
            trials.push(t);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = String::new();
    out.push_str(
        "stop latency: a signal at a set moment of a headless run, to the process's exit\n",
    );
    out.push_str(&format!(
        "{:<42} {:>7} {:<7} {:>9} {:>5} {:>8}  end line\n",
        "run", "at (s)", "signal", "stop (s)", "exit", "RSS"
    ));
    for t in &trials {
        out.push_str(&row(t));
        out.push('\n');
    }
    let stopped: Vec<f64> = trials.iter().filter_map(|t| t.latency_s).collect();
    if let Some(worst) = stopped.iter().cloned().reduce(f64::max) {
        let mut sorted = stopped.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        out.push_str(&format!(
            "\n{} stops: worst {:.3} s, median {:.3} s; {} with a complete \"stopped\" end line\n",
            stopped.len(),
            worst,
            median,
            trials
                .iter()
                .filter(|t| t.latency_s.is_some() && t.end_line)
                .count()
        ));
    }
    if !skipped.is_empty() {
        out.push_str(&format!(
            "skipped (no MNIST under {}; `probescope data fetch mnist`): {}\n",
            data_dir.display(),
            skipped.join(", ")
        ));
    }
    Ok((trials, out))
}

fn row(t: &Trial) -> String {
    format!(
        "{:<42} {:>7.1} {:<7} {:>9} {:>5} {:>8}  {}",
        t.label,
        t.delay_s,
        t.signal,
        t.latency_s.map_or("ended".into(), |l| format!("{l:.3}")),
        t.code.map_or("-".into(), |c| c.to_string()),
        t.rss.map_or("-".into(), crate::memory::human),
        if t.end_line {
            t.message.clone()
        } else {
            format!("MISSING ({})", t.message)
        }
    )
}

/// Whether the log's last line is a "stopped" end line, and its message.
fn end_of(log: &PathBuf) -> (bool, String) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(last) = text.lines().last() else {
        return (false, "empty log".into());
    };
    match serde_json::from_str::<crate::runlog::Record>(last) {
        Ok(crate::runlog::Record::End(e)) => (
            e.status == crate::runlog::EndStatus::Stopped,
            e.message.unwrap_or_default(),
        ),
        _ => (false, "no end line".into()),
    }
}

/// The example model file with branches (argmax task), run long enough to be stopped.
const BRANCHES: &str = include_str!("../../examples/models/branches.toml");
