//! Real data: the IDX reader on hand-made and real files, `probescope data fetch` against a local
//! HTTP server, and the training presets on a small synthetic dataset in the MNIST layout
//! (resume included).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use probescope::fetch::{self, md5_file, Outcome};
use probescope::mnist::{self, encode_idx, Which, FILES};
use probescope::runlog::{self, EndStatus, SnapshotKind};

mod common;
use common::real_data;

fn probescope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_probescope"))
        .args(args)
        .env("XDG_DATA_HOME", "/nonexistent-probescope-test")
        .env_remove("PROBESCOPE_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A synthetic dataset in the MNIST layout: class k is a bright 4x4 square at one of ten places
/// plus uniform noise, so a linear classifier of the pixels separates it well but not perfectly.
fn synthetic(dir: &Path, train: usize, test: usize) {
    let d = dir.join("mnist");
    std::fs::create_dir_all(&d).unwrap();
    let mut state = 12345u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut make = |n: usize| -> (Vec<u8>, Vec<u8>) {
        let mut px = vec![0u8; n * 784];
        let mut labels = vec![0u8; n];
        for i in 0..n {
            let k = (next() % 10) as usize;
            labels[i] = k as u8;
            let img = &mut px[i * 784..(i + 1) * 784];
            for p in img.iter_mut() {
                *p = (next() % 160) as u8;
            }
            let (r0, c0) = (4 + (k / 5) * 10, 2 + (k % 5) * 5);
            for r in r0..r0 + 4 {
                for c in c0..c0 + 4 {
                    img[r * 28 + c] = img[r * 28 + c].saturating_add(90);
                }
            }
        }
        (px, labels)
    };
    for (n, [images, labels]) in [(train, [FILES[0], FILES[1]]), (test, [FILES[2], FILES[3]])] {
        let (px, lb) = make(n);
        std::fs::write(
            d.join(format!("{images}.gz")),
            gz(&encode_idx(&[n, 28, 28], &px)),
        )
        .unwrap();
        // Labels raw (not gzip): the reader takes both.
        std::fs::write(d.join(labels), encode_idx(&[n], &lb)).unwrap();
    }
}

#[test]
fn small_files_load_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 10_100, 50);
    let loaded = mnist::load(dir.path(), Which::Mnist).unwrap();
    assert_eq!(loaded.train.len(), 10_100);
    assert_eq!(loaded.test.len(), 50);
    let s = loaded.splits(true, &candle_core::Device::Cpu).unwrap();
    assert_eq!(s.train.len(), 100);
    assert_eq!(s.val.len(), 10_000);
    assert_eq!(s.test.x.dims(), &[50, 784]);

    let labels = dir.path().join("mnist").join(FILES[3]);
    // Labels that do not match the images in number.
    std::fs::write(&labels, encode_idx(&[49], &[0; 49])).unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(
        e.contains(FILES[3]) && e.contains("49 labels for the 50 images"),
        "{e}"
    );
    // Wrong magic.
    std::fs::write(&labels, b"\x1f\x8b not really gzip").unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(
        e.contains(FILES[3]) && e.contains("gzip data is damaged"),
        "{e}"
    );
    std::fs::write(&labels, b"\x08\x03\x00\x01").unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(e.contains("not an IDX file"), "{e}");
    // Truncated.
    let mut good = encode_idx(&[50], &[1; 50]);
    good.truncate(30);
    std::fs::write(&labels, &good).unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
    // A label out of range.
    std::fs::write(&labels, encode_idx(&[50], &[12; 50])).unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(e.contains("label 12 at sample 0"), "{e}");
    // Missing.
    std::fs::remove_file(&labels).unwrap();
    let e = format!("{:#}", mnist::load(dir.path(), Which::Mnist).unwrap_err());
    assert!(e.contains("probescope data fetch mnist"), "{e}");
}

#[test]
fn the_real_files_read_with_their_published_counts_and_checksums() {
    let Some(data) = real_data() else { return };
    for which in Which::ALL {
        for (f, md5) in FILES.iter().zip(which.md5s()) {
            let p = data.join(which.name()).join(format!("{f}.gz"));
            assert_eq!(md5_file(&p).unwrap(), md5, "{}", p.display());
        }
        let d = mnist::load(&data, which).unwrap();
        assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
        assert_eq!((d.train.rows, d.train.cols), (28, 28));
        // Every class is there, roughly a tenth each (Fashion-MNIST: exactly 6,000).
        let mut counts = [0usize; 10];
        for &l in &d.train.labels {
            counts[l as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (5_000..7_000).contains(&c)),
            "{counts:?}"
        );
        if which == Which::FashionMnist {
            assert_eq!(counts, [6_000; 10]);
        }
    }
}

/// A local mirror: serves `files` (name -> bytes) on 127.0.0.1 and counts the requests.
struct Mirror {
    url: String,
    hits: Arc<Mutex<Vec<String>>>,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Mirror {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let name = req.url().trim_start_matches('/').to_string();
            h.lock().unwrap().push(name.clone());
            let resp = match files.get(&name) {
                Some(b) => tiny_http::Response::from_data(b.clone()).boxed(),
                None => tiny_http::Response::from_string("no such file")
                    .with_status_code(404)
                    .boxed(),
            };
            let _ = req.respond(resp);
        }
    });
    Mirror { url, hits }
}

#[test]
fn fetch_downloads_verifies_and_recovers_through_a_local_mirror() {
    let Some(data) = real_data() else { return };
    let files: HashMap<String, Vec<u8>> = FILES
        .iter()
        .map(|f| {
            let name = format!("{f}.gz");
            let bytes = std::fs::read(data.join("mnist").join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    // A mirror whose copies are damaged (one byte flipped), and a good one.
    let mut bad_files = files.clone();
    for b in bad_files.values_mut() {
        let i = b.len() / 2;
        b[i] ^= 0xff;
    }
    let bad = serve(bad_files);
    let good = serve(files.clone());
    let dead = "http://127.0.0.1:9/".to_string(); // nothing listens on the discard port

    let dir = tempfile::tempdir().unwrap();
    // Only damaged copies: an error saying so, and nothing left where the reader looks.
    let e = format!(
        "{:#}",
        fetch::fetch(
            Which::Mnist,
            dir.path(),
            &[dead.clone(), bad.url.clone()],
            false
        )
        .unwrap_err()
    );
    assert!(
        e.contains("checksum mismatch") && e.contains(&bad.url),
        "{e}"
    );
    assert!(e.contains("Without a network"), "{e}");
    let d = dir.path().join("mnist");
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // A stale partial download and a truncated file from an earlier interrupted fetch.
    std::fs::write(d.join("train-images-idx3-ubyte.gz.part"), b"half").unwrap();
    let truncated = &files["train-labels-idx1-ubyte.gz"][..100];
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), truncated).unwrap();
    // Bad mirror first, then the good one: every file ends up right.
    let report = fetch::fetch(
        Which::Mnist,
        dir.path(),
        &[bad.url.clone(), good.url.clone()],
        false,
    )
    .unwrap();
    assert_eq!(report.len(), 4);
    for (name, outcome) in &report {
        assert_eq!(outcome, &Outcome::Downloaded(format!("{}{name}", good.url)));
        assert_eq!(std::fs::read(d.join(name)).unwrap(), files[name]);
    }
    assert!(!d.join("train-images-idx3-ubyte.gz.part").exists());
    // Fetching again downloads nothing.
    let before = good.hits.lock().unwrap().len();
    let report = fetch::fetch(
        Which::Mnist,
        dir.path(),
        std::slice::from_ref(&good.url),
        false,
    )
    .unwrap();
    assert!(report.iter().all(|(_, o)| *o == Outcome::Present));
    assert_eq!(good.hits.lock().unwrap().len(), before);

    // The command line, with only the given mirror.
    let dir2 = tempfile::tempdir().unwrap();
    let (code, _, err) = probescope(&[
        "data",
        "fetch",
        "mnist",
        "--dir",
        dir2.path().to_str().unwrap(),
        "--mirror",
        &good.url,
        "--only-given",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("mnist is ready in"), "{err}");
    let (code, _, err) = probescope(&["data", "fetch", "cifar"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown dataset; the datasets are: mnist, fashion-mnist"),
        "{err}"
    );
}

#[test]
fn a_run_without_the_data_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    for preset in ["mnist-convnet", "deep-mlp"] {
        let (code, _, err) = probescope(&[
            "run",
            preset,
            "--headless",
            "--data-dir",
            empty.path().to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("probescope data fetch mnist"), "{err}");
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    }
    // The default directory (XDG_DATA_HOME points nowhere here).
    let (code, _, err) = probescope(&[
        "run",
        "deep-mlp",
        "--headless",
        "--set",
        "dataset=fashion-mnist",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent-probescope-test/probescope/fashion-mnist"),
        "{err}"
    );
    assert!(err.contains("probescope data fetch fashion-mnist"), "{err}");
    let (code, _, err) = probescope(&["run", "deep-mlp", "--data-dir", "/no/such/dir"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--data-dir /no/such/dir: no such directory"),
        "{err}"
    );
    // A damaged file is bad input too: named, exit 2, and no run log started.
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 10_010, 10);
    let images = dir.path().join("mnist").join(format!("{}.gz", FILES[0]));
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let log = dir.path().join("never.jsonl");
    let (code, _, err) = run_headless("mnist-convnet", dir.path(), &log, &[], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("train-images-idx3-ubyte.gz: the gzip data is damaged"),
        "{err}"
    );
    assert!(!log.exists());
    let (code, _, err) = probescope(&["run", "untrained-mlp", "--checkpoint-every", "5"]);
    assert_eq!(code, 2);
    assert!(err.contains("trains no model"), "{err}");
}

/// `probescope run PRESET --headless --data-dir DATA --record LOG`, each of `sets` with `--set`,
/// then `extra`.
fn run_headless(
    preset: &str,
    data: &Path,
    log: &Path,
    sets: &[&str],
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "run",
        preset,
        "--headless",
        "--data-dir",
        data.to_str().unwrap(),
        "--record",
        log.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    probescope(&args)
}

fn small_deep_mlp(dir: &Path, log: &Path, steps: &str, extra: &[&str]) -> (i32, String, String) {
    let steps = format!("steps={steps}");
    let sets = [
        "depth=4",
        "width=32",
        "variant=skip",
        "batch=50",
        "online_every=10",
        "snapshots=0,60",
        "probe_train=1000",
        "probe_val=1000",
        "probe_test=1000",
        "optimizer=adam",
        "lr=0.003",
        &steps,
    ];
    let extra = [&["--force"], extra].concat();
    run_headless("deep-mlp", dir, log, &sets, &extra)
}

#[test]
fn deep_mlp_trains_on_a_small_dataset_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // 12,000 training samples: 2,000 for training (40 minibatches of 50 an epoch), 10,000 kept
    // for validation.
    synthetic(dir.path(), 12_000, 1_000);
    let log = dir.path().join("run.jsonl");
    let a = dir.path().join("a.safetensors");
    let (code, out, err) = small_deep_mlp(
        dir.path(),
        &log,
        "60",
        &["--checkpoint", a.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let run = runlog::read(&log).unwrap();
    assert_eq!(run.end().unwrap().status, EndStatus::Finished);
    let conv: Vec<_> = run
        .snapshots()
        .filter(|s| s.kind == SnapshotKind::Converged)
        .collect();
    assert_eq!(conv.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 60]);
    assert_eq!(conv[1].epoch, Some(1.5));
    // One online snapshot at the end of the first epoch carries the model's test error.
    let e1 = run
        .snapshots()
        .find(|s| s.step == 40 && s.kind == SnapshotKind::Online)
        .unwrap();
    assert_eq!(e1.epoch, Some(1.0));
    let test_error = e1.model.as_ref().unwrap().test_error.unwrap();
    assert!(
        test_error < 0.5,
        "model test error after an epoch {test_error}"
    );
    // The input probe separates the synthetic classes well; the taps carry statistics.
    let input = &conv[1].probes[0];
    assert_eq!(input.probe, "input");
    assert!(input.reading.test_error.unwrap() < 0.2, "{input:?}");
    assert!(input.reading.val_error.is_some() && input.activation.is_some());
    assert_eq!(conv[1].probes.len(), 6); // input, 4 layers, logits

    // Interrupted at 30 (checkpoint), resumed to 60: the same weights as straight through.
    let b = dir.path().join("b.safetensors");
    let (code, _, err) = small_deep_mlp(
        dir.path(),
        &log,
        "30",
        &["--checkpoint", b.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = small_deep_mlp(
        dir.path(),
        &log,
        "60",
        &[
            "--checkpoint",
            b.to_str().unwrap(),
            "--resume",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("resumed from") && err.contains("at step 30"),
        "{err}"
    );
    let ta = candle_core::safetensors::load(&a, &candle_core::Device::Cpu).unwrap();
    let tb = candle_core::safetensors::load(&b, &candle_core::Device::Cpu).unwrap();
    let mut compared = 0;
    for (k, t) in &ta {
        if k.starts_with("model.") {
            let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = tb[k].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(x, y, "{k}");
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * 5); // 4 layers and the logits, weight and bias each
                                 // A checkpoint of another seed is refused with a message naming it.
    let (code, _, err) = small_deep_mlp(
        dir.path(),
        &log,
        "60",
        &["--resume", b.to_str().unwrap(), "--seed", "3"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("b.safetensors") && err.contains("--seed 0"),
        "{err}"
    );
}

#[test]
fn runs_record_their_parameters_and_the_chosen_dataset() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 10_200, 200);
    let log = dir.path().join("c.jsonl");
    let sets = [
        "epochs=1",
        "subset=200",
        "probe_train=200",
        "probe_val=200",
        "probe_test=200",
        "batch=50",
    ];
    let (code, _, err) = run_headless("mnist-convnet", dir.path(), &log, &sets, &[]);
    assert_eq!(code, 0, "{err}");
    let run = runlog::read(&log).unwrap();
    let h = &run.header;
    assert_eq!(h.params["dataset"].to_string(), "mnist");
    assert_eq!(h.probes.len(), 10);
    // subset=200: the wide taps are read through 200 random features, the narrow ones whole.
    let widths: Vec<usize> = h.probes.iter().map(|p| p.width()).collect();
    assert_eq!(
        widths,
        vec![200, 200, 200, 200, 200, 200, 200, 200, 200, 10]
    );
    let conv: Vec<_> = run
        .snapshots()
        .filter(|s| s.kind == SnapshotKind::Converged)
        .map(|s| s.label.clone())
        .collect();
    assert_eq!(conv, vec!["init", "epoch 1"]);
}
