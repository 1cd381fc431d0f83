//! `probescope probe`: activations saved by another framework (safetensors, a folder of .npy
//! files) fitted with the same solver as the library, bad files refused by name before a run
//! log exists, and a watched folder that a "training loop" thread fills.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use probescope::acts::{self, store::npy_bytes, Source};
use probescope::presets::{RunCtx, RunOptions};
use probescope::probe::ProbeReading;
use probescope::report::Collect;
use probescope::runlog::{self, EndStatus, Record, SnapshotKind};
use probescope::{Activations, Probes};
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, View};

/// The synthetic activations of `n` samples: `signal` (6 features; the class is the argmax of
/// its first three, so a linear probe reads it off), `noise` (4 features, independent of the
/// class), and `signal_f16` (the signal as float16, shaped [n, 2, 3]).
struct Acts {
    n: usize,
    signal: Vec<f32>,
    noise: Vec<f32>,
    labels: Vec<i64>,
    split: Vec<u8>,
}

impl Acts {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut normal = || -> f32 { rng.sample(rand_distr::StandardNormal) };
        let signal: Vec<f32> = (0..n * 6).map(|_| normal()).collect();
        let noise: Vec<f32> = (0..n * 4).map(|_| normal()).collect();
        let labels = (0..n)
            .map(|i| {
                let r = &signal[i * 6..i * 6 + 3];
                (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as i64
            })
            .collect();
        // Two thirds train, a sixth validation, a sixth test.
        let split = (0..n)
            .map(|i| match i % 6 {
                0..=3 => 0,
                4 => 1,
                _ => 2,
            })
            .collect();
        Self {
            n,
            signal,
            noise,
            labels,
            split,
        }
    }

    fn signal_f16(&self) -> Vec<half::f16> {
        self.signal
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect()
    }

    /// Named arrays as (dtype, shape, little-endian bytes).
    fn arrays(&self, with_split: bool) -> Vec<Array> {
        let n = self.n;
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut v = vec![
            ("signal", Dtype::F32, vec![n, 6], f32s(&self.signal)),
            ("noise", Dtype::F32, vec![n, 4], f32s(&self.noise)),
            (
                "signal_f16",
                Dtype::F16,
                vec![n, 2, 3],
                self.signal_f16()
                    .iter()
                    .flat_map(|x| x.to_bits().to_le_bytes())
                    .collect(),
            ),
            (
                "labels",
                Dtype::I64,
                vec![n],
                self.labels.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ];
        if with_split {
            v.push(("split", Dtype::U8, vec![n], self.split.clone()));
        }
        v
    }
}

/// A named array: (name, element type, shape, little-endian bytes).
type Array = (&'static str, Dtype, Vec<usize>, Vec<u8>);

struct Raw(Dtype, Vec<usize>, Vec<u8>);

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

/// Writes `arrays` as a safetensors file with `metadata`, as `safetensors.torch.save_file` does.
fn write_safetensors(path: &Path, arrays: Vec<Array>, metadata: &[(&str, &str)]) {
    let raws: Vec<(String, Raw)> = arrays
        .into_iter()
        .map(|(n, d, s, b)| (n.to_string(), Raw(d, s, b)))
        .collect();
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let views = raws.iter().map(|(n, r)| (n.clone(), r));
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

fn npy_descr(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "<f4",
        Dtype::F16 => "<f2",
        Dtype::I64 => "<i8",
        Dtype::U8 => "|u1",
        other => panic!("no descr for {other:?}"),
    }
}

/// Writes `arrays` as a folder of .npy files, as `np.save` does.
fn write_npy_dir(dir: &Path, arrays: Vec<Array>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, d, shape, bytes) in arrays {
        std::fs::write(
            dir.join(format!("{name}.npy")),
            npy_bytes(npy_descr(d), &shape, &bytes),
        )
        .unwrap();
    }
}

fn source(path: &Path) -> Source {
    Source {
        path: path.to_path_buf(),
        labels: "labels".into(),
        ..Source::default()
    }
}

/// Runs `probescope probe` on `src` through the library, returning its records.
fn run(src: &Source, sets: &[&str]) -> Vec<Record> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let (preset, params) = acts::prepare(src, &sets).unwrap();
    preset
        .check_data(&params, Path::new("."))
        .expect("finite data");
    let mut sink = Collect::default();
    let mut ctx = RunCtx {
        device: Device::Cpu,
        seed: 0,
        sink: &mut sink,
        started: Instant::now(),
        controls: Default::default(),
        opts: RunOptions::default(),
    };
    preset.run(&params, &mut ctx).unwrap();
    sink.records
}

fn converged(records: &[Record]) -> Vec<Vec<ProbeReading>> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Snapshot(s) if s.kind == SnapshotKind::Converged => {
                Some(s.probes.iter().map(|p| p.reading.clone()).collect())
            }
            _ => None,
        })
        .collect()
}

/// The same fit through the library's [`Probes`], on the same arrays and split.
fn library_fit(a: &Acts) -> Vec<ProbeReading> {
    let dev = Device::Cpu;
    let sig16: Vec<f32> = a.signal_f16().iter().map(|v| v.to_f32()).collect();
    let pick = |which: u8| -> Activations {
        let rows: Vec<usize> = (0..a.n).filter(|&i| a.split[i] == which).collect();
        let take = |v: &[f32], w: usize| -> Tensor {
            let d: Vec<f32> = rows
                .iter()
                .flat_map(|&i| v[i * w..(i + 1) * w].to_vec())
                .collect();
            Tensor::from_vec(d, (rows.len(), w), &dev).unwrap()
        };
        let y: Vec<u32> = rows.iter().map(|&i| a.labels[i] as u32).collect();
        Activations::new(Tensor::from_vec(y, rows.len(), &dev).unwrap())
            .tap("signal", take(&a.signal, 6))
            .tap("noise", take(&a.noise, 4))
            .tap("signal_f16", take(&sig16, 6))
    };
    let mut probes =
        Probes::new(&[("signal", 6), ("noise", 4), ("signal_f16", 6)], 3, &dev).unwrap();
    probes
        .snapshot(0, &pick(0), Some(&pick(1)), Some(&pick(2)))
        .unwrap()
}

fn assert_same(got: &[ProbeReading], want: &[ProbeReading]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.train_error - w.train_error).abs() < 1e-9,
            "{g:?} vs {w:?}"
        );
        assert!((g.train_loss - w.train_loss).abs() < 1e-4, "{g:?} vs {w:?}");
        assert_eq!(g.val_error, w.val_error);
        assert_eq!(g.test_error, w.test_error);
        assert_eq!(g.iterations, w.iterations);
    }
}

#[test]
fn a_safetensors_file_and_an_npy_folder_fit_as_the_library_does_on_the_same_arrays() {
    let a = Acts::new(900, 7);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("acts.safetensors");
    write_safetensors(
        &st,
        a.arrays(true),
        &[
            ("taps", "signal,noise,signal_f16"),
            ("reads.signal_f16", "signal"),
        ],
    );
    let records = run(&source(&st), &[]);
    let got = converged(&records);
    assert_eq!(got.len(), 1, "one converged snapshot");
    let want = library_fit(&a);
    assert_same(&got[0], &want);
    // What the data says, independently of any solver: the class is a linear function of
    // `signal` (no error possible beyond float16 rounding), and `noise` knows nothing of it
    // (chance is 2/3 on three balanced classes).
    let test = |k: usize| got[0][k].test_error.unwrap();
    assert!(test(0) < 0.04, "signal {}", test(0));
    assert!(test(2) < 0.04, "signal_f16 {}", test(2));
    assert!(test(1) > 0.45, "noise {}", test(1));
    // The headless table: a summary record of the one snapshot.
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Summary(s) if s.probes.len() == 3)));

    // The same arrays as .npy files (tap order from metadata.json) give the same fit.
    let npy = dir.path().join("npy");
    write_npy_dir(&npy, a.arrays(true));
    std::fs::write(
        npy.join("metadata.json"),
        r#"{"taps": ["signal", "noise", "signal_f16"], "reads.signal_f16": "signal"}"#,
    )
    .unwrap();
    assert_same(&converged(&run(&source(&npy), &[]))[0], &want);
}

#[test]
fn the_diagram_follows_the_metadata_and_else_the_files_order() {
    let a = Acts::new(60, 1);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("acts.safetensors");
    write_safetensors(
        &st,
        a.arrays(true),
        &[
            ("taps", "noise,signal,signal_f16"),
            ("reads.signal_f16", "noise"),
        ],
    );
    let (preset, params) = acts::prepare(&source(&st), &[]).unwrap();
    let g = preset.graph(&params);
    let reads = |name: &str| g.nodes[g.index_of(name).unwrap()].op.inputs().join(",");
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["noise", "signal", "signal_f16"]);
    assert_eq!(
        (reads("noise"), reads("signal"), reads("signal_f16")),
        ("".into(), "noise".into(), "noise".into())
    );
    assert_eq!(g.classes, 3);
    // No metadata: every array but labels and split, in the order of the files' names.
    let npy = dir.path().join("npy");
    write_npy_dir(&npy, a.arrays(true));
    let (preset, params) = acts::prepare(&source(&npy), &[]).unwrap();
    let g = preset.graph(&params);
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["noise", "signal", "signal_f16"]);
    // A reads entry naming a later tap is refused, by name.
    let bad = dir.path().join("bad.safetensors");
    write_safetensors(
        &bad,
        a.arrays(true),
        &[("taps", "signal,noise"), ("reads.signal", "noise")],
    );
    let e = acts::prepare(&source(&bad), &[]).err().unwrap();
    assert!(
        e.0.contains("bad.safetensors") && e.0.contains("reads `noise`"),
        "{e}"
    );
}

#[test]
fn without_a_split_a_tenth_validates_and_a_tenth_tests_drawn_from_the_seed() {
    let a = Acts::new(1000, 3);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("acts.safetensors");
    write_safetensors(&st, a.arrays(false), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["probe", st.to_str().unwrap(), "--headless"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("800 training, 100 validation, 100 test samples"),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("signal_f16"), "{table}");
}

/// Runs the binary; returns (exit code, stderr).
fn probe(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .arg("probe")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_files_are_refused_by_name_before_a_run_log_exists() {
    let a = Acts::new(30, 2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, edit: &dyn Fn(&mut Vec<Array>)| {
        let mut arrays = a.arrays(false);
        edit(&mut arrays);
        let p = d.join(name);
        write_safetensors(&p, arrays, &[]);
        p
    };
    let set = |arrays: &mut Vec<Array>, name: &str, d: Dtype, shape: Vec<usize>, bytes: Vec<u8>| {
        let k = arrays.iter().position(|x| x.0 == name).unwrap();
        arrays[k] = (arrays[k].0, d, shape, bytes);
    };
    let text = d.join("notes.safetensors");
    std::fs::write(&text, "these are not activations, just a text file").unwrap();
    let short = write("short.safetensors", &|v| {
        set(v, "noise", Dtype::F32, vec![5, 4], vec![0; 80])
    });
    let negative = write("negative.safetensors", &|v| {
        let mut l: Vec<i64> = a.labels.clone();
        l[3] = -1;
        set(
            v,
            "labels",
            Dtype::I64,
            vec![30],
            l.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    });
    let nan = write("nan.safetensors", &|v| {
        let mut s = a.noise.clone();
        s[7 * 4 + 2] = f32::NAN;
        set(
            v,
            "noise",
            Dtype::F32,
            vec![30, 4],
            s.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    });
    let no_labels = write("nolabels.safetensors", &|v| v.retain(|x| x.0 != "labels"));
    let float_labels = write("floatlabels.safetensors", &|v| {
        let l: Vec<f32> = a.labels.iter().map(|&x| x as f32).collect();
        set(
            v,
            "labels",
            Dtype::F32,
            vec![30],
            l.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    });
    let one_class = write("oneclass.safetensors", &|v| {
        set(v, "labels", Dtype::I64, vec![30], vec![0; 240])
    });
    let npy_file = d.join("x.npy");
    std::fs::write(&npy_file, npy_bytes("<f4", &[2], &[0; 8])).unwrap();
    let good = write("good.safetensors", &|_| {});
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![p(&text)],
            "notes.safetensors: not a readable safetensors file",
        ),
        (
            vec![p(&short)],
            "short.safetensors, tensor `noise`: shape [5, 4], but `labels` has 30 samples",
        ),
        (vec![p(&negative)], "tensor `labels`: sample 3 has class -1"),
        (
            vec![p(&nan)],
            "nan.safetensors, tensor `noise`: sample 7, feature 2 is NaN or infinite",
        ),
        (
            vec![p(&no_labels)],
            "nolabels.safetensors: no `labels` array (it has: noise, signal, signal_f16)",
        ),
        (
            vec![p(&float_labels)],
            "float32 numbers; save the classes as integers",
        ),
        (vec![p(&one_class)], "a probe needs at least 2 classes"),
        (
            vec![p(&good), "--set".into(), "classes=2".into()],
            "has class 2, but there are 2 classes",
        ),
        (
            vec![p(&good), "--labels".into(), "y".into()],
            "no `y` array",
        ),
        (vec![p(&npy_file)], "a .npy file holds one array"),
        (
            vec![p(&d.join("missing.safetensors"))],
            "no such file or folder",
        ),
        (vec![p(&good), "--val".into(), p(&short)], "--val"),
        (vec!["--watch".into(), p(&d.join("nodir"))], "--watch"),
    ];
    for (args, needle) in cases {
        let log = d.join("run.jsonl");
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--headless", "--record", log.to_str().unwrap()]);
        let (code, err) = probe(&all, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: wanted `{needle}` in: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!log.exists(), "{args:?}: a run log was started");
    }
}

#[test]
fn a_run_over_the_memory_budget_is_refused_with_the_settings_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    // 128 MB of features: with the process's own memory, about 340 MB against a 300 MB limit.
    let (n, w) = (8000, 4000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let wide: Vec<u8> = (0..n * w)
        .flat_map(|_| rng.random::<f32>().to_le_bytes())
        .collect();
    let labels: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 2) as i64).to_le_bytes())
        .collect();
    let st = dir.path().join("wide.safetensors");
    write_safetensors(
        &st,
        vec![
            ("wide", Dtype::F32, vec![n, w], wide),
            ("labels", Dtype::I64, vec![n], labels),
        ],
        &[],
    );
    let (code, err) = probe(
        &[st.to_str().unwrap(), "--headless"],
        &[("PROBESCOPE_MEMORY_LIMIT_MB", "300")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("wide.safetensors: this run needs about"),
        "{err}"
    );
    assert!(err.contains("--set subset="), "{err}");
}

/// Writes a step file as a training loop should: under a `.tmp` name, slowly, then renamed.
fn write_step(dir: &Path, step: u64, a: &Acts) {
    let tmp = dir.join(format!("step-{step:06}.safetensors.tmp"));
    write_safetensors(&tmp, a.arrays(true), &[("taps", "signal,noise,signal_f16")]);
    // The finished file appears at once, whole.
    std::fs::rename(&tmp, dir.join(format!("step-{step:06}.safetensors"))).unwrap();
}

#[test]
fn a_watched_folder_gets_a_snapshot_per_step_file_and_skips_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("acts");
    std::fs::create_dir(&watched).unwrap();
    let log = dir.path().join("watch.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["probe", "--headless", "--watch"])
        .arg(&watched)
        .arg("--record")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = {
        let watched = watched.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            write_step(&watched, 100, &Acts::new(600, 1));
            // A half-written file left under a hidden name is never read.
            std::fs::write(watched.join(".step-000150.safetensors"), b"\x10\x00\x00").unwrap();
            std::thread::sleep(Duration::from_millis(1200));
            // A truncated file that never becomes whole: retried, then reported and passed over.
            let whole = {
                let p = watched.join("whole.bin");
                write_safetensors(&p, Acts::new(600, 2).arrays(true), &[]);
                let b = std::fs::read(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                b
            };
            std::fs::write(
                watched.join("step-000200.safetensors"),
                &whole[..whole.len() / 2],
            )
            .unwrap();
            write_step(&watched, 300, &Acts::new(600, 3));
            // A folder of .npy files per step works too.
            let tmp = watched.join(".step-400");
            write_npy_dir(&tmp, Acts::new(600, 4).arrays(true));
            std::fs::rename(&tmp, watched.join("step-400")).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(watched.join("DONE"), b"").unwrap();
        })
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("skipped") && err.contains("step-000200.safetensors"),
        "{err}"
    );
    let run = runlog::read(&log).unwrap();
    let steps: Vec<u64> = run
        .snapshots()
        .filter(|s| s.kind == SnapshotKind::Converged)
        .map(|s| s.step)
        .collect();
    assert_eq!(steps, [100, 300, 400]);
    assert_eq!(run.end().unwrap().status, EndStatus::Finished);
    // Every step's probes read the class off `signal` and not off `noise`.
    for s in run.snapshots() {
        assert!(s.probes[0].reading.test_error.unwrap() < 0.12, "{s:?}");
        assert!(s.probes[1].reading.test_error.unwrap() > 0.3, "{s:?}");
    }
}

/// Where python3 with numpy is, if anywhere.
fn python_with_numpy() -> Option<PathBuf> {
    let py = std::env::var_os("PROBESCOPE_TEST_PYTHON").map_or("python3".into(), PathBuf::from);
    let ok = Command::new(&py)
        .args(["-c", "import numpy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

#[test]
fn npy_files_that_numpy_writes_are_read_as_a_user_saves_them() {
    let Some(py) = python_with_numpy() else {
        eprintln!("skipped: no python3 with numpy (set PROBESCOPE_TEST_PYTHON to one)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acts");
    let script = r#"
import sys, os, json
import numpy as np
out = sys.argv[1]
os.makedirs(out)
rng = np.random.default_rng(0)
x = rng.standard_normal((600, 5)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
np.save(f"{out}/features.npy", x)
np.save(f"{out}/features_f64.npy", x.astype(np.float64) * 2)
np.save(f"{out}/square.npy", (x ** 2).reshape(600, 5, 1).astype(np.float16))
np.save(f"{out}/labels.npy", y)
json.dump({"taps": ["features", "square", "features_f64"]}, open(f"{out}/metadata.json", "w"))
"#;
    let st = Command::new(&py)
        .args(["-c", script])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let got = converged(&run(&source(&out), &[]));
    let err: Vec<f64> = got[0].iter().map(|r| r.test_error.unwrap()).collect();
    // y is the sign of x0 + x1: linear in `features` (and its double), not in the squares.
    assert!(err[0] < 0.05 && err[2] < 0.05, "{err:?}");
    assert!(err[1] > 0.3, "{err:?}");
}

#[test]
fn a_signal_inside_the_fit_stops_a_probe_run_with_its_end_line() {
    let a = Acts::new(600, 9);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("acts.safetensors");
    write_safetensors(&st, a.arrays(true), &[]);
    let (log, marker) = (dir.path().join("run.jsonl"), dir.path().join("inside-fit"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .arg("probe")
        .arg(&st)
        .args(["--headless", "--record"])
        .arg(&log)
        .env("PROBESCOPE_DEBUG_HOLD_FIT", &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_inside_fit(&mut child, &marker);
    common::signal(&child, libc::SIGTERM);
    let code = common::exit_code(&mut child);
    assert_eq!(code, Some(130));
    let run = runlog::read(&log).unwrap();
    assert_eq!(run.end().unwrap().status, EndStatus::Stopped);
    assert_eq!(run.snapshots().count(), 0, "no half-fitted snapshot");
}

#[test]
fn the_help_names_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(["probe", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for spec in acts::param_specs() {
        assert!(
            help.contains(spec.key),
            "`probe --help` does not name {}",
            spec.key
        );
    }
}
