//! Probing activations that any framework saved: `probescope probe ACTS`.
//!
//! ACTS is a safetensors file (one tensor per tap, first axis the sample, and an integer
//! `labels` tensor), or a folder of `.npy` files named by tap (with `labels.npy`). An optional
//! integer `split` array (0 train, 1 validation, 2 test) or separate `--val` / `--test` files
//! say which samples fit, early-stop and test the probes; without them a random tenth of the
//! samples (from the run's seed) validates and another tenth tests. Metadata (the safetensors
//! `__metadata__`, or a folder's `metadata.json`) may list the taps in model order (`taps`:
//! names separated by commas) and what each reads (`reads.TAP`: names separated by commas), so
//! the diagram shows branches; without it the taps follow one another in the file's order.
//!
//! With `--watch DIR`, a training loop writes a file (or a folder of .npy files) per step,
//! `step-000500.safetensors`, saved under a hidden or `.tmp` name and renamed into place; each
//! new one is fitted as a converged snapshot, warm-started from the last. A file named `DONE`
//! in DIR ends the run once every step before it is fitted.
//!
//! It is one more [`Preset`]: the command line runs it with the same run log, UI, stop
//! handling and memory check as the built-in experiments.

pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::cancel::Cancel;
use crate::graph::{Graph, Node, Op};
use crate::params::{ParamError, ParamSpec, ParamValue, Params};
use crate::presets::trained::{self, MemoryEstimate};
use crate::presets::{Preset, RunCtx};
use crate::probe::{ActivationStats, LinearProbe, ProbeSpec};
use crate::runlog::{Record, Snapshot, SnapshotKind};
pub use store::Store;

/// Where the activations come from (the command line's `probe` arguments).
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The activations file or folder; with `watch`, the folder a training loop writes into.
    pub path: PathBuf,
    /// The name of the labels array.
    pub labels: String,
    /// Validation samples, in a file of the same layout.
    pub val: Option<PathBuf>,
    /// Test samples, in a file of the same layout.
    pub test: Option<PathBuf>,
    /// Watch `path` for a file per training step.
    pub watch: bool,
}

/// The name of the optional split array.
pub const SPLIT: &str = "split";

/// A name whose presence in a watched folder ends the run.
pub const DONE: &str = "DONE";

/// How often a watched folder is listed.
const POLL: Duration = Duration::from_millis(500);

/// One probed tap of a file.
#[derive(Debug, Clone)]
pub struct Tap {
    /// Its name (the array's).
    pub name: String,
    /// One sample's shape (`[1]` for a one-number tap).
    pub shape: Vec<usize>,
    /// Numbers per sample.
    pub width: usize,
    /// What it reads (earlier taps), for the diagram.
    pub reads: Vec<String>,
}

/// A store read and checked: its taps, labels and split.
#[derive(Debug)]
pub struct Opened {
    /// The arrays.
    pub store: Store,
    /// The probed taps, in model order.
    pub taps: Vec<Tap>,
    /// Each sample's class.
    pub labels: Vec<u32>,
    /// Each sample's split (0 train, 1 validation, 2 test), where the file has one.
    pub split: Option<Vec<u8>>,
    /// The step the file says it is (`step` in its metadata).
    pub step: Option<u64>,
}

impl Opened {
    /// Opens `path` and checks its layout: the labels (`labels`, whole numbers from 0, one per
    /// sample), the split, every tap's first axis, and the metadata's tap list and reads.
    pub fn open(path: &Path, labels: &str) -> Result<Self, ParamError> {
        let store = Store::open(path)?;
        let shown = path.display();
        let Some(lab) = store.entry(labels) else {
            return Err(ParamError(format!(
                "{shown}: no `{labels}` array (it has: {}); save each sample's class as \
                 `{labels}` (integers, one per sample), or name yours with --labels NAME",
                store.names()
            )));
        };
        if !matches!(lab.shape.as_slice(), [_] | [_, 1]) {
            return Err(ParamError(format!(
                "{}: shape {:?}; labels are one class number per sample ([n]); one-hot labels \
                 need .argmax(1) first",
                lab.place(),
                lab.shape
            )));
        }
        if lab.elem.is_float() {
            return Err(ParamError(format!(
                "{}: {} numbers; save the classes as integers (torch.long / np.int64)",
                lab.place(),
                lab.elem.name()
            )));
        }
        let n = lab.rows();
        let labels_v = store
            .integers(lab)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if (0..=u32::MAX as i64).contains(&v) {
                    Ok(v as u32)
                } else {
                    Err(ParamError(format!(
                        "{}: sample {i} has class {v}; classes are numbered from 0",
                        lab.place()
                    )))
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        if n == 0 {
            return Err(ParamError(format!("{}: no samples", lab.place())));
        }
        let split = match store.entry(SPLIT) {
            None => None,
            Some(e) => {
                if e.shape != [n] || e.elem.is_float() {
                    return Err(ParamError(format!(
                        "{}: {} {:?}; the split is one integer per sample ({n}): 0 train, 1 \
                         validation, 2 test",
                        e.place(),
                        e.elem.name(),
                        e.shape
                    )));
                }
                let v = store.integers(e)?;
                if let Some(i) = v.iter().position(|x| !(0..=2).contains(x)) {
                    return Err(ParamError(format!(
                        "{}: sample {i} is in split {}; use 0 (train), 1 (validation) or 2 (test)",
                        e.place(),
                        v[i]
                    )));
                }
                Some(v.into_iter().map(|x| x as u8).collect())
            }
        };
        // The taps: the metadata's list, else every other array in the file's order.
        let listed: Option<Vec<String>> = store.metadata.get("taps").map(|t| names_of(t));
        let names: Vec<String> = match &listed {
            Some(l) => {
                if l.is_empty() {
                    return Err(ParamError(format!(
                        "{shown}: the metadata's `taps` is empty; list the taps, separated by commas"
                    )));
                }
                l.clone()
            }
            None => store
                .entries
                .iter()
                .map(|e| e.name.clone())
                .filter(|s| s != labels && s != SPLIT)
                .collect(),
        };
        if names.is_empty() {
            return Err(ParamError(format!(
                "{shown}: only `{labels}`, no activations; save one array per layer to probe"
            )));
        }
        let mut taps: Vec<Tap> = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let Some(e) = store.entry(name) else {
                return Err(ParamError(format!(
                    "{shown}: the metadata's `taps` names `{name}`, which is not in the file (it \
                     has: {})",
                    store.names()
                )));
            };
            if e.rows() != n || e.shape.is_empty() {
                return Err(ParamError(format!(
                    "{}: shape {:?}, but `{labels}` has {n} samples; every tap's first axis is \
                     the sample (flatten it to [n, ...] with the samples first)",
                    e.place(),
                    e.shape
                )));
            }
            let shape = if e.shape.len() == 1 {
                vec![1]
            } else {
                e.shape[1..].to_vec()
            };
            if shape.contains(&0) {
                return Err(ParamError(format!(
                    "{}: shape {:?} has no features per sample",
                    e.place(),
                    e.shape
                )));
            }
            let reads = match store.metadata.get(&format!("reads.{name}")) {
                Some(r) => names_of(r),
                None if k == 0 => vec![],
                None => vec![names[k - 1].clone()],
            };
            taps.push(Tap {
                name: name.clone(),
                width: shape.iter().product(),
                shape,
                reads,
            });
        }
        let step = match store.metadata.get("step") {
            None => None,
            Some(s) => Some(s.trim().parse::<u64>().map_err(|_| {
                ParamError(format!(
                    "{shown}: the metadata's `step` is `{s}`; give the training step as a whole number"
                ))
            })?),
        };
        let opened = Self {
            store,
            taps,
            labels: labels_v,
            split,
            step,
        };
        opened.graph(2).shapes().map_err(|e| {
            ParamError(format!(
                "{shown}: the metadata's reads: {e} (reads.TAP lists taps before TAP)"
            ))
        })?;
        Ok(opened)
    }

    /// Samples in the file.
    pub fn samples(&self) -> usize {
        self.labels.len()
    }

    /// The highest class plus one.
    pub fn classes_seen(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The taps as a graph of external layers, for the diagram.
    pub fn graph(&self, classes: usize) -> Graph {
        Graph {
            output: self
                .taps
                .last()
                .map_or_else(String::new, |t| t.name.clone()),
            nodes: self
                .taps
                .iter()
                .map(|t| Node {
                    name: t.name.clone(),
                    op: Op::External {
                        inputs: t.reads.clone(),
                        shape: t.shape.clone(),
                    },
                    probe: true,
                })
                .collect(),
            classes,
        }
    }

    /// Checks that `other` (a validation, test or later step's file) has this file's taps with
    /// the same widths.
    pub fn same_taps(&self, other: &Opened) -> Result<(), ParamError> {
        for t in &self.taps {
            match other.store.entry(&t.name) {
                None => {
                    return Err(ParamError(format!(
                        "{}: no `{}`, a tap of {} (it has: {})",
                        other.store.path.display(),
                        t.name,
                        self.store.path.display(),
                        other.store.names()
                    )))
                }
                Some(e) if e.width().max(1) != t.width || e.rows() != other.samples() => {
                    return Err(ParamError(format!(
                        "{}: shape {:?}, but in {} the tap has {} features per sample (and the \
                         first axis must be the {} samples)",
                        e.place(),
                        e.shape,
                        self.store.path.display(),
                        t.width,
                        other.samples()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The first NaN or infinite feature of any tap, as an error naming it.
    pub fn check_finite(&self, cancel: &Cancel) -> anyhow::Result<()> {
        for t in &self.taps {
            let e = self.store.entry(&t.name).expect("a checked tap");
            if let Some((r, c)) = self.store.first_non_finite(e, cancel)? {
                return Err(ParamError(format!(
                    "{}: sample {r}, feature {c} is NaN or infinite; a probe cannot fit it (a \
                     diverged model? check the layer, or drop the tap)",
                    e.place()
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Checks that every label is below `classes`.
    fn check_classes(&self, classes: usize) -> Result<(), ParamError> {
        match self.labels.iter().position(|&c| c as usize >= classes) {
            None => Ok(()),
            Some(i) => Err(ParamError(format!(
                "{}: sample {i} has class {}, but there are {classes} classes (--set classes={} \
                 or more, or check the labels)",
                self.store.path.display(),
                self.labels[i],
                self.labels[i] + 1
            ))),
        }
    }
}

/// Files that did not open, and since when: one that still does not after `RETRY_TRIES`
/// attempts spanning `RETRY_FOR` is given up on (perhaps it was still being written, by a loop
/// that does not rename).
#[derive(Default)]
struct Retries(HashMap<PathBuf, (u32, Instant)>);

const RETRY_TRIES: u32 = 5;
const RETRY_FOR: Duration = Duration::from_secs(5);

impl Retries {
    /// Counts one more failed attempt at `path`; true once it is time to give up on it.
    fn give_up(&mut self, path: &Path) -> bool {
        let t = self
            .0
            .entry(path.to_path_buf())
            .or_insert((0, Instant::now()));
        t.0 += 1;
        t.0 >= RETRY_TRIES && t.1.elapsed() >= RETRY_FOR
    }
}

/// Names separated by commas (or a JSON list of strings).
fn names_of(text: &str) -> Vec<String> {
    if let Ok(v) = serde_json::from_str::<Vec<String>>(text) {
        return v;
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The parameters of `probescope probe` (`--set`).
pub fn param_specs() -> Vec<ParamSpec> {
    let mut p = vec![
        ParamSpec::int(
            "classes",
            0,
            0,
            1_000_000,
            "number of classes (0: the highest label plus one)",
        ),
        ParamSpec::float(
            "val_fraction",
            0.1,
            0.0,
            0.9,
            "without a split array or --val: the share of samples (random, from the seed) that \
             early-stops the probes",
        ),
        ParamSpec::float(
            "test_fraction",
            0.1,
            0.0,
            0.9,
            "without a split array or --test: the share of samples (random, from the seed) that \
             tests the probes",
        ),
        ParamSpec::int(
            "subset",
            0,
            0,
            1_000_000,
            "features per probe on taps wider than this, drawn at random from the seed (0 = all)",
        ),
        ParamSpec::int(
            "probe_memory_mb",
            4096,
            16,
            1 << 24,
            "most MiB of features held at once (taps are fitted in groups that fit)",
        ),
        ParamSpec::choice(
            "probe_dtype",
            &["auto", "f32", "bf16"],
            "precision the features are held in while fitted: bf16 halves their memory; auto \
             holds the taps wider than 1,024 features in bf16, the rest in f32; on CPUs with \
             AVX-512 BF16 the fits of bf16 taps start with bf16 products and finish in f32",
        ),
    ];
    p.extend(crate::presets::fit_params());
    p
}

/// `probescope probe`: the activations of `src` as a preset, with its parameters (`sets`)
/// resolved and every file's layout checked. In watch mode it waits for the first step's file.
pub fn prepare(src: &Source, sets: &[String]) -> Result<(Box<dyn Preset>, Params), ParamError> {
    let run = ActsRun::open(src)?;
    let mut params = Params::resolve(run.name, &param_specs(), sets)?;
    for (k, v) in [
        ("activations", Some(&src.path)),
        ("val", src.val.as_ref()),
        ("test", src.test.as_ref()),
    ] {
        if let Some(v) = v {
            params
                .0
                .insert(k.into(), ParamValue::Text(v.display().to_string()));
        }
    }
    params
        .0
        .insert("labels".into(), ParamValue::Text(src.labels.clone()));
    if src.watch {
        params
            .0
            .insert("watch".into(), ParamValue::Text("on".into()));
    }
    run.check(&params)?;
    Ok((Box::new(run), params))
}

/// Activations as a run: one converged snapshot of every tap, or one per step's file.
pub struct ActsRun {
    name: &'static str,
    about: &'static str,
    source: Source,
    main: Opened,
    val: Option<Opened>,
    test: Option<Opened>,
}

impl ActsRun {
    fn open(src: &Source) -> Result<Self, ParamError> {
        let file_name = |p: &Path| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        };
        if src.watch && (src.val.is_some() || src.test.is_some()) {
            return Err(ParamError(
                "--val and --test take one file each; with --watch, give every step's file a \
                 `split` array instead"
                    .into(),
            ));
        }
        let main = if src.watch {
            first_step(&src.path, &src.labels)?
        } else {
            Opened::open(&src.path, &src.labels)?
        };
        let other = |p: &Option<PathBuf>, flag: &str| -> Result<Option<Opened>, ParamError> {
            let Some(p) = p else { return Ok(None) };
            let o =
                Opened::open(p, &src.labels).map_err(|e| ParamError(format!("--{flag} {e}")))?;
            main.same_taps(&o)
                .map_err(|e| ParamError(format!("--{flag} {e}")))?;
            Ok(Some(o))
        };
        let val = other(&src.val, "val")?;
        let test = other(&src.test, "test")?;
        if main.split.is_some() && (val.is_some() || test.is_some()) {
            return Err(ParamError(format!(
                "{}: has a `{SPLIT}` array, and --val/--test were given too; use one or the other",
                src.path.display()
            )));
        }
        let name = if src.watch {
            format!("{} (watch)", file_name(&src.path))
        } else {
            file_name(&src.path)
        };
        Ok(Self {
            name: Box::leak(name.into_boxed_str()),
            about: Box::leak(format!("activations in {}", src.path.display()).into_boxed_str()),
            source: src.clone(),
            main,
            val,
            test,
        })
    }

    fn opened(&self) -> impl Iterator<Item = &Opened> {
        std::iter::once(&self.main)
            .chain(self.val.as_ref())
            .chain(self.test.as_ref())
    }

    fn classes(&self, p: &Params) -> usize {
        match p.usize("classes") {
            0 => self.opened().map(Opened::classes_seen).max().unwrap_or(0),
            c => c,
        }
    }

    /// The training, validation and test samples of `o` (a file with its own split, or all of
    /// it for training when --val/--test are files of their own).
    fn rows(&self, o: &Opened, p: &Params, seed: u64) -> [Vec<usize>; 3] {
        let mut out: [Vec<usize>; 3] = Default::default();
        if let Some(s) = &o.split {
            for (i, &k) in s.iter().enumerate() {
                out[k as usize].push(i);
            }
            return out;
        }
        let n = o.samples();
        if self.val.is_some() || self.test.is_some() {
            out[0] = (0..n).collect();
            return out;
        }
        let mut perm: Vec<usize> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(
            perm.as_mut_slice(),
            &mut crate::rng::stream(seed, "probe/split"),
        );
        let nv = (n as f64 * p.f64("val_fraction")).round() as usize;
        let nt = ((n as f64 * p.f64("test_fraction")).round() as usize).min(n - nv);
        let (v, rest) = perm.split_at(nv);
        let (t, tr) = rest.split_at(nt);
        out = [tr.to_vec(), v.to_vec(), t.to_vec()];
        for r in &mut out {
            r.sort_unstable();
        }
        out
    }

    /// Every probe fitted to convergence on the file `o` (with the run's --val/--test files),
    /// recorded as the snapshot `step` labelled `label`. Returns the fitted probes.
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        o: &Opened,
        p: &Params,
        specs: &[ProbeSpec],
        warm: Option<&[LinearProbe]>,
        step: u64,
        label: &str,
        ctx: &mut RunCtx<'_>,
    ) -> anyhow::Result<(Snapshot, Vec<LinearProbe>)> {
        let classes = self.classes(p);
        o.check_classes(classes)?;
        // Each split's file and samples: a --val/--test file's are all of its own.
        let [tr, va, te] = self.rows(o, p, ctx.seed);
        let all = |f: &Opened| (0..f.samples()).collect::<Vec<usize>>();
        let parts: Vec<Option<(&Opened, Vec<usize>)>> = [
            (o, tr),
            self.val.as_ref().map_or((o, va), |f| (f, all(f))),
            self.test.as_ref().map_or((o, te), |f| (f, all(f))),
        ]
        .into_iter()
        .map(|(f, r)| (!r.is_empty()).then_some((f, r)))
        .collect();
        let Some((_, train_rows)) = &parts[0] else {
            anyhow::bail!(ParamError(format!(
                "{}: no training samples (every sample is in validation or test); lower \
                 val_fraction / test_fraction, or give some samples split 0",
                o.store.path.display()
            )));
        };
        let labels_of =
            |part: &Option<(&Opened, Vec<usize>)>| -> candle_core::Result<Option<Tensor>> {
                part.as_ref()
                    .map(|(f, r)| {
                        let y: Vec<u32> = r.iter().map(|&i| f.labels[i]).collect();
                        Tensor::from_vec(y, r.len(), &ctx.device)
                    })
                    .transpose()
            };
        let (ytr, yva, yte) = (
            labels_of(&parts[0])?.expect("training samples"),
            labels_of(&parts[1])?,
            labels_of(&parts[2])?,
        );
        let counts: Vec<usize> = parts
            .iter()
            .map(|x| x.as_ref().map_or(0, |(_, r)| r.len()))
            .collect();
        let fit = ctx.fit_config(p);
        let groups = trained::memory_groups(
            specs,
            counts.iter().sum(),
            &fit.feature_bytes(specs),
            p.usize("probe_memory_mb") << 20,
        );
        ctx.sink.progress(&format!(
            "{label}: {} probes on {} training, {} validation, {} test samples{}",
            specs.len(),
            train_rows.len(),
            counts[1],
            counts[2],
            if groups.len() > 1 {
                format!(", in {} groups that fit probe_memory_mb", groups.len())
            } else {
                String::new()
            }
        ));
        let cancel = fit.cancel.clone();
        let device = ctx.device.clone();
        let mut stats = vec![ActivationStats::default(); specs.len()];
        let started = ctx.elapsed();
        let sink = &mut *ctx.sink;
        let fitted = trained::fit_in_groups(
            specs,
            &groups,
            classes,
            (&ytr, yva.as_ref(), yte.as_ref()),
            warm,
            &fit,
            |gi, group| {
                if groups.len() > 1 {
                    sink.progress(&format!(
                        "{label}: group {}/{}: {}",
                        gi + 1,
                        groups.len(),
                        group
                            .iter()
                            .map(|&i| specs[i].name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                let mut feats = |k: usize| -> anyhow::Result<Option<Vec<Tensor>>> {
                    let Some((f, r)) = &parts[k] else {
                        return Ok(None);
                    };
                    let mut xs = Vec::with_capacity(group.len());
                    for &i in group {
                        let e = f.store.entry(&specs[i].tap).expect("a checked tap");
                        let (x, st) = f.store.gather(
                            e,
                            (r, specs[i].subset.as_deref()),
                            (fit.feature_dtype_of(specs[i].width()), &device),
                            k == 0,
                            &cancel,
                        )?;
                        if let Some(st) = st {
                            stats[i] = st;
                        }
                        xs.push(x);
                    }
                    Ok(Some(xs))
                };
                let xtr = feats(0)?.expect("training samples");
                Ok((xtr, feats(1)?, feats(2)?, Vec::new()))
            },
            |_, _, _| Ok(()),
        )?;
        let probes = crate::presets::converged_readings(specs, &fitted, Some(&stats));
        let snap = Snapshot {
            step,
            label: label.to_string(),
            kind: SnapshotKind::Converged,
            dataset: None,
            epoch: None,
            probes,
            model: None,
            elapsed_s: ctx.elapsed(),
            alerts: Vec::new(),
        };
        ctx.sink.progress(&format!(
            "{label}: fitted in {:.1}s; probe {} errors: {}",
            ctx.elapsed() - started,
            if counts[2] > 0 { "test" } else { "train" },
            snap.probes
                .iter()
                .map(|r| format!(
                    "{} {:.3}",
                    r.probe,
                    r.reading.test_error.unwrap_or(r.reading.train_error)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ctx.record(Record::Snapshot(snap.clone()))?;
        Ok((snap, fitted.into_iter().map(|f| f.probe).collect()))
    }

    /// Watch mode: fits every step's file as it appears, until `DONE` or a stop.
    fn watch(&self, p: &Params, specs: &[ProbeSpec], ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let dir = &self.source.path;
        ctx.sink.progress(&format!(
            "watching {} for step files (a file named {DONE} there ends the run)",
            dir.display()
        ));
        let mut done: BTreeSet<PathBuf> = BTreeSet::new();
        let mut retries = Retries::default();
        let mut warm: Option<Vec<LinearProbe>> = None;
        let mut last: Option<u64> = None;
        loop {
            ctx.check_stop()?;
            let finished = dir.join(DONE).exists();
            let mut waiting = false;
            for (step, path) in step_files(dir)? {
                if done.contains(&path) {
                    continue;
                }
                ctx.check_stop()?;
                let opened = Opened::open(&path, &self.source.labels).and_then(|o| {
                    self.main.same_taps(&o)?;
                    Ok(o)
                });
                let opened = match opened {
                    Ok(o) => o,
                    Err(e) => {
                        if retries.give_up(&path) {
                            ctx.sink
                                .progress(&format!("skipped {}: {}", path.display(), e.0));
                            done.insert(path);
                        } else {
                            waiting = true;
                        }
                        continue;
                    }
                };
                done.insert(path.clone());
                let step = opened.step.unwrap_or(step);
                if let Some(l) = last.filter(|&l| step <= l) {
                    ctx.sink.progress(&format!(
                        "skipped {}: step {step} came after step {l} was fitted",
                        path.display()
                    ));
                    continue;
                }
                // The first file was scanned before the run started (`check_data`).
                let checked = if path == self.main.store.path {
                    Ok(())
                } else {
                    opened.check_finite(&ctx.cancel())
                };
                if let Err(e) = checked {
                    if ctx.controls.stopping() {
                        return Err(e);
                    }
                    ctx.sink.progress(&format!("skipped {e:#}"));
                    continue;
                }
                let label = format!("step {step}");
                match self.fit(&opened, p, specs, warm.as_deref(), step, &label, ctx) {
                    Ok((_, probes)) => warm = Some(probes),
                    Err(e) if e.downcast_ref::<ParamError>().is_some() => {
                        ctx.sink
                            .progress(&format!("skipped {}: {e:#}", path.display()));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                ctx.at_step(step);
                last = Some(step);
            }
            if finished && !waiting {
                ctx.sink.progress(&format!(
                    "{DONE} found in {}: every step file before it is fitted",
                    dir.display()
                ));
                return Ok(());
            }
            ctx.cancel().sleep(POLL)?;
        }
    }
}

/// A watched folder's step files and folders, by step: `*.safetensors` files and folders of
/// .npy files whose names carry a number (the last run of digits), hidden and half-written
/// names (`.x`, `x.tmp`, `x.part`) left out.
pub fn step_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ParamError> {
    let listing = std::fs::read_dir(dir).map_err(|e| {
        ParamError(format!(
            "--watch {}: {e}; give the folder your training loop writes into",
            dir.display()
        ))
    })?;
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for entry in listing.flatten() {
        let path = entry.path();
        if store::hidden(&path) {
            continue;
        }
        let is_step = if path.is_dir() {
            std::fs::read_dir(&path).is_ok_and(|mut d| {
                d.any(|f| f.is_ok_and(|f| f.path().extension().is_some_and(|e| e == "npy")))
            })
        } else {
            path.extension().is_some_and(|e| e == "safetensors")
        };
        if !is_step {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digits: String = stem
            .rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap_or("")
            .to_string();
        if let Ok(step) = digits.parse::<u64>() {
            out.push((step, path));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(out)
}

/// Waits for the first step file of a watched folder that opens, and opens it.
fn first_step(dir: &Path, labels: &str) -> Result<Opened, ParamError> {
    if !dir.is_dir() {
        return Err(ParamError(format!(
            "--watch {}: no such folder; create it, or give the folder your training loop \
             writes step-N.safetensors files into",
            dir.display()
        )));
    }
    let mut said = false;
    let mut retries = Retries::default();
    loop {
        for (_, path) in step_files(dir)? {
            match Opened::open(&path, labels) {
                Ok(o) => return Ok(o),
                Err(e) => {
                    if retries.give_up(&path) {
                        // The first file decides the layout: a bad one is bad input.
                        return Err(e);
                    }
                }
            }
        }
        if dir.join(DONE).exists() {
            return Err(ParamError(format!(
                "--watch {}: {DONE} is there but no step file is; nothing to probe",
                dir.display()
            )));
        }
        if !said {
            eprintln!(
                "probescope: waiting for the first step file in {} (step-N.safetensors, or a \
                 folder of .npy files per step)",
                dir.display()
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}

impl Preset for ActsRun {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn params(&self) -> Vec<ParamSpec> {
        param_specs()
    }

    fn check(&self, p: &Params) -> Result<(), ParamError> {
        let classes = self.classes(p);
        if classes < 2 {
            return Err(ParamError(format!(
                "{}: every sample has class 0; a probe needs at least 2 classes",
                self.main.store.path.display()
            )));
        }
        for o in self.opened() {
            o.check_classes(classes)?;
        }
        Ok(())
    }

    fn check_data(&self, _p: &Params, _data_dir: &Path) -> Result<(), ParamError> {
        for o in self.opened() {
            o.check_finite(&Cancel::default())
                .map_err(|e| ParamError(format!("{e:#}")))?;
        }
        Ok(())
    }

    fn memory(&self, p: &Params, _graph: &Graph, specs: &[ProbeSpec]) -> Option<MemoryEstimate> {
        let samples: usize = self.opened().map(Opened::samples).sum();
        // How many samples train does not depend on the seed, only which.
        let rows = self.rows(&self.main, p, 0);
        let ntr = rows[0].len() as u64;
        let elems = crate::presets::fit_config(p).feature_bytes(specs);
        let groups =
            trained::memory_groups(specs, samples, &elems, p.usize("probe_memory_mb") << 20);
        let (features, solver) = trained::snapshot_memory(
            specs,
            &groups,
            samples as u64,
            ntr,
            self.classes(p) as u64,
            &elems,
            &[],
        );
        // The labels, and one block of decoded f32 rows (64 MB) on its way into the features.
        let other = samples as u64 * 8 + (64 << 20);
        Some(MemoryEstimate {
            peak: trained::PROCESS_BASE + other + features + solver,
            features,
            solver,
        })
    }

    fn graph(&self, p: &Params) -> Graph {
        self.main.graph(self.classes(p))
    }

    fn probes(&self, p: &Params, graph: &Graph, seed: u64) -> Vec<ProbeSpec> {
        crate::presets::probes_with_subset(graph, p.usize("subset"), seed)
    }

    fn run(&self, p: &Params, ctx: &mut RunCtx<'_>) -> anyhow::Result<()> {
        let graph = self.graph(p);
        let specs = self.probes(p, &graph, ctx.seed);
        if self.source.watch {
            return self.watch(p, &specs, ctx);
        }
        let step = self.main.step.unwrap_or(0);
        let label = self.name.to_string();
        let (snap, _) = self.fit(&self.main, p, &specs, None, step, &label, ctx)?;
        ctx.at_step(step);
        let summary = crate::presets::summarise(&label, &specs, &[&snap]);
        ctx.record(Record::Summary(summary))
    }
}
