//! Model training: the optimisers (with state that checkpoints can hold), the learning-rate
//! schedule, the minibatch order, and checkpoints as safetensors.
//!
//! The optimisers follow candle-nn's `Optimizer` contract (a step from a loss's gradients), but
//! keep their state (momentum, Adam's moments, the step count) as named tensors, so a checkpoint
//! holds everything and a resumed run continues exactly where the saved one was. Adam gives the
//! same updates as `candle_nn::AdamW` with no weight decay (a test checks it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

/// Which optimiser, with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimKind {
    /// Minibatch SGD with (heavy-ball) momentum: `v = m v + g; w -= lr v` (TensorFlow's
    /// MomentumOptimizer, the reference convnet's).
    Sgd {
        /// Momentum, 0 for plain SGD.
        momentum: f64,
    },
    /// Adam (Kingma & Ba).
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the root of the second moment.
        eps: f64,
    },
    /// RMSProp as PyTorch has it (no momentum, not centred): `v = alpha v + (1 - alpha) g^2;
    /// w -= lr g / (sqrt(v) + eps)`, v starting at 0.
    RmsProp {
        /// Decay of the mean square.
        alpha: f64,
        /// Added to the root of the mean square.
        eps: f64,
    },
}

impl OptimKind {
    /// Adam with the usual constants.
    pub fn adam() -> Self {
        OptimKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// RMSProp with PyTorch's defaults (alpha 0.99, eps 1e-8).
    pub fn rmsprop() -> Self {
        OptimKind::RmsProp {
            alpha: 0.99,
            eps: 1e-8,
        }
    }
}

/// An optimiser over named parameters.
pub struct Optim {
    kind: OptimKind,
    lr: f64,
    /// L2 penalty added to the gradient of every `*.weight` parameter.
    weight_decay: f64,
    /// Largest global gradient norm (the loss's gradient is scaled down to it); 0: no clipping.
    clip: f64,
    vars: Vec<(String, Var)>,
    /// Momentum (SGD) or first moment (Adam), per parameter.
    m: Vec<Tensor>,
    /// Second moment (Adam) or mean square (RMSProp), per parameter.
    v: Vec<Tensor>,
    t: u64,
}

impl Optim {
    /// An optimiser over every variable of `varmap`, in name order.
    pub fn new(
        varmap: &VarMap,
        kind: OptimKind,
        lr: f64,
        weight_decay: f64,
    ) -> candle_core::Result<Self> {
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            lr,
            weight_decay,
            clip: 0.0,
            m: zeros.clone(),
            v: if matches!(kind, OptimKind::Adam { .. } | OptimKind::RmsProp { .. }) {
                zeros
            } else {
                Vec::new()
            },
            vars,
            t: 0,
        })
    }

    /// Clips the loss's gradient to global norm `max_norm` before each step (0: no clipping).
    pub fn with_clip(mut self, max_norm: f64) -> Self {
        self.clip = max_norm;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (the schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One step down the gradient of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.t += 1;
        let mut scale = 1.0;
        if self.clip > 0.0 {
            let mut sq = 0f64;
            for (_, var) in &self.vars {
                if let Some(g) = grads.get(var.as_tensor()) {
                    sq += g
                        .sqr()?
                        .sum_all()?
                        .to_dtype(DType::F64)?
                        .to_scalar::<f64>()?;
                }
            }
            let norm = sq.sqrt();
            if norm > self.clip {
                scale = self.clip / norm;
            }
        }
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if scale < 1.0 {
                g.affine(scale, 0.0)?
            } else {
                g.clone()
            };
            let g = if self.weight_decay > 0.0 && name.ends_with(".weight") {
                (g + var.as_tensor().detach().affine(self.weight_decay, 0.0)?)?
            } else {
                g
            };
            match self.kind {
                OptimKind::Sgd { momentum } => {
                    let m = if momentum > 0.0 {
                        (self.m[i].affine(momentum, 0.0)? + g)?
                    } else {
                        g
                    };
                    var.set(&(var.as_tensor() - m.affine(self.lr, 0.0)?)?)?;
                    if momentum > 0.0 {
                        // Detached: the gradient carries the graph it came from, and keeping
                        // it would chain every step's graph to the next (memory grows).
                        self.m[i] = m.detach();
                    }
                }
                OptimKind::Adam { beta1, beta2, eps } => {
                    let m = (self.m[i].affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?;
                    let v = (self.v[i].affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                    let mhat = m.affine(1.0 / (1.0 - beta1.powi(self.t as i32)), 0.0)?;
                    let vhat = v.affine(1.0 / (1.0 - beta2.powi(self.t as i32)), 0.0)?;
                    let step = (mhat.affine(self.lr, 0.0)? / (vhat.sqrt()? + eps)?)?;
                    var.set(&(var.as_tensor() - step)?)?;
                    self.m[i] = m.detach();
                    self.v[i] = v.detach();
                }
                OptimKind::RmsProp { alpha, eps } => {
                    let v = (self.v[i].affine(alpha, 0.0)? + g.sqr()?.affine(1.0 - alpha, 0.0)?)?;
                    let step = (g.affine(self.lr, 0.0)? / (v.sqrt()? + eps)?)?;
                    var.set(&(var.as_tensor() - step)?)?;
                    self.v[i] = v.detach();
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if !self.m.is_empty() {
                out.push((format!("optim.m.{name}"), self.m[i].clone()));
            }
            if !self.v.is_empty() {
                out.push((format!("optim.v.{name}"), self.v[i].clone()));
            }
        }
        out
    }
}

/// The learning rate of `epoch` (0-based): `lr * decay^epoch`, the reference convnet's staircase
/// exponential decay.
pub fn scheduled_lr(lr: f64, decay: f64, epoch: usize) -> f64 {
    lr * decay.powi(epoch as i32)
}

/// The sample order of epoch `epoch` (0-based): a permutation of `0..n` drawn from the seed and
/// the epoch alone, so a resumed run sees the same minibatches as an uninterrupted one.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut r = crate::rng::stream(seed, &format!("epoch/{epoch}"));
    rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), &mut r);
    perm
}

/// The sample indices of minibatch `step` (1-based) with `batch` samples per step and `n`
/// samples per epoch: each epoch covers `n / batch` whole minibatches of its own permutation
/// (the remainder is left out, as is usual).
pub fn minibatch(seed: u64, step: usize, batch: usize, n: usize) -> (usize, Vec<u32>) {
    let per_epoch = (n / batch).max(1);
    let epoch = (step - 1) / per_epoch;
    let k = (step - 1) % per_epoch;
    let order = epoch_order(seed, epoch, n);
    (epoch, order[k * batch..(k + 1) * batch].to_vec())
}

/// A cache of the current epoch's permutation, so [`minibatch`]'s order is not redrawn each step.
#[derive(Default)]
pub struct Batches {
    epoch: Option<usize>,
    order: Vec<u32>,
}

impl Batches {
    /// Same as [`minibatch`], drawing each epoch's permutation once.
    pub fn get(&mut self, seed: u64, step: usize, batch: usize, n: usize) -> (usize, &[u32]) {
        let per_epoch = (n / batch).max(1);
        let epoch = (step - 1) / per_epoch;
        if self.epoch != Some(epoch) {
            self.order = epoch_order(seed, epoch, n);
            self.epoch = Some(epoch);
        }
        let k = (step - 1) % per_epoch;
        (epoch, &self.order[k * batch..(k + 1) * batch])
    }
}

/// What a checkpoint identifies its run by: a resumed run must match it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointId {
    /// Preset name.
    pub preset: String,
    /// The model graph, as JSON.
    pub graph: String,
    /// The run's seed.
    pub seed: u64,
}

/// Saves the model, the optimiser's state and the step to `path` (safetensors), atomically: a
/// temporary file, then a rename, so a crash mid-save leaves the previous checkpoint whole.
pub fn save_checkpoint(
    path: &Path,
    id: &CheckpointId,
    varmap: &VarMap,
    optim: &Optim,
    step: u64,
) -> anyhow::Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in varmap.data().lock().expect("varmap lock").iter() {
        tensors.insert(format!("model.{k}"), v.as_tensor().to_device(&Device::Cpu)?);
    }
    for (k, t) in optim.state() {
        tensors.insert(k, t.to_device(&Device::Cpu)?);
    }
    let idjson = serde_json::to_vec(id)?;
    let n = idjson.len();
    tensors.insert("run.id".into(), Tensor::from_vec(idjson, n, &Device::Cpu)?);
    tensors.insert(
        "run.step".into(),
        Tensor::from_vec(
            vec![(step & 0xffff_ffff) as u32, (step >> 32) as u32],
            2,
            &Device::Cpu,
        )?,
    );
    tensors.insert(
        "run.optim_steps".into(),
        Tensor::from_vec(
            vec![(optim.t & 0xffff_ffff) as u32, (optim.t >> 32) as u32],
            2,
            &Device::Cpu,
        )?,
    );
    let tmp = temp_beside(path);
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the checkpoint: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the checkpoint: {e}", path.display()))?;
    Ok(())
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn u64_of(t: &Tensor) -> candle_core::Result<u64> {
    let v: Vec<u32> = t.to_vec1()?;
    Ok(v.first().copied().unwrap_or(0) as u64 | ((v.get(1).copied().unwrap_or(0) as u64) << 32))
}

/// Loads a checkpoint into `varmap` and `optim`, after checking that it belongs to a run like
/// `id`; returns the step it was saved at. Errors name the file.
pub fn load_checkpoint(
    path: &Path,
    id: &CheckpointId,
    varmap: &VarMap,
    optim: &mut Optim,
    device: &Device,
) -> anyhow::Result<u64> {
    let name = path.display();
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        anyhow::anyhow!("{name}: not a probescope checkpoint (safetensors) that can be read: {e}")
    })?;
    let get = |k: &str| {
        tensors
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("{name}: not a probescope checkpoint (no `{k}`)"))
    };
    let saved: CheckpointId = serde_json::from_slice(&get("run.id")?.to_vec1::<u8>()?)
        .map_err(|e| anyhow::anyhow!("{name}: damaged run id: {e}"))?;
    if saved.preset != id.preset {
        anyhow::bail!(
            "{name}: a checkpoint of preset {}, not {}; resume it with `probescope run {}`",
            saved.preset,
            id.preset,
            saved.preset
        );
    }
    if saved.graph != id.graph {
        anyhow::bail!(
            "{name}: saved from a different model (other --set values for the model's shape); \
             resume with the same --set values as the run that saved it"
        );
    }
    if saved.seed != id.seed {
        anyhow::bail!(
            "{name}: saved by a run with --seed {}; resume with --seed {}",
            saved.seed,
            saved.seed
        );
    }
    let step = u64_of(get("run.step")?)?;
    {
        let data = varmap.data().lock().expect("varmap lock");
        for (k, var) in data.iter() {
            let t = get(&format!("model.{k}"))?;
            if t.dims() != var.as_tensor().dims() {
                anyhow::bail!(
                    "{name}: `{k}` has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
        }
    }
    let state = |key: String| -> anyhow::Result<Tensor> {
        let t = get(&key).map_err(|_| {
            anyhow::anyhow!(
                "{name}: saved with another optimiser; resume with the same --set optimizer"
            )
        })?;
        Ok(t.to_device(device)?)
    };
    for (i, (k, _)) in optim.vars.iter().enumerate() {
        if !optim.m.is_empty() {
            optim.m[i] = state(format!("optim.m.{k}"))?;
        }
        if !optim.v.is_empty() {
            optim.v[i] = state(format!("optim.v.{k}"))?;
        }
    }
    optim.t = u64_of(get("run.optim_steps")?)?;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Optimizer;

    fn quad(vm: &VarMap) -> Tensor {
        // loss = sum((w - c)^2) with c = [1, -2, 3]
        let w = vm.data().lock().unwrap()["a.weight"].as_tensor().clone();
        let c = Tensor::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
        (w - c).unwrap().sqr().unwrap().sum_all().unwrap()
    }

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        vm.data().lock().unwrap().insert(
            "a.weight".into(),
            Var::from_tensor(&Tensor::new(&[0.5f32, 0.0, -1.0], &Device::Cpu).unwrap()).unwrap(),
        );
        vm
    }

    fn w(vm: &VarMap) -> Vec<f32> {
        vm.data().lock().unwrap()["a.weight"]
            .as_tensor()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn rmsprop_follows_pytorchs_update_computed_by_hand() {
        // loss = sum((w - c)^2), gradient 2 (w - c); PyTorch's RMSProp: v = a v + (1 - a) g^2,
        // w -= lr g / (sqrt(v) + eps), in f64 by hand for three steps.
        let a = varmap();
        let mut opt = Optim::new(&a, OptimKind::rmsprop(), 0.01, 0.0).unwrap();
        let (c, mut x, mut v) = ([1f64, -2., 3.], [0.5f64, 0.0, -1.0], [0f64; 3]);
        for _ in 0..3 {
            opt.backward_step(&quad(&a)).unwrap();
            for j in 0..3 {
                let g = 2.0 * (x[j] - c[j]);
                v[j] = 0.99 * v[j] + 0.01 * g * g;
                x[j] -= 0.01 * g / (v[j].sqrt() + 1e-8);
            }
        }
        for (got, want) in w(&a).iter().zip(x) {
            assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn adam_matches_candle_nns_adamw_without_decay() {
        let (a, b) = (varmap(), varmap());
        let mut ours = Optim::new(&a, OptimKind::adam(), 0.05, 0.0).unwrap();
        let mut theirs = candle_nn::AdamW::new(
            b.all_vars(),
            candle_nn::ParamsAdamW {
                lr: 0.05,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..20 {
            ours.backward_step(&quad(&a)).unwrap();
            theirs.backward_step(&quad(&b)).unwrap();
        }
        for (x, y) in w(&a).iter().zip(w(&b)) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn momentum_sgd_follows_the_heavy_ball_recurrence() {
        let vm = varmap();
        let mut opt = Optim::new(&vm, OptimKind::Sgd { momentum: 0.9 }, 0.1, 0.0).unwrap();
        // By hand in f64: g = 2 (w - c), v = 0.9 v + g, w -= 0.1 v.
        let c = [1.0, -2.0, 3.0];
        let mut wh = [0.5f64, 0.0, -1.0];
        let mut v = [0.0f64; 3];
        for _ in 0..5 {
            opt.backward_step(&quad(&vm)).unwrap();
            for i in 0..3 {
                v[i] = 0.9 * v[i] + 2.0 * (wh[i] - c[i]);
                wh[i] -= 0.1 * v[i];
            }
        }
        for (x, y) in w(&vm).iter().zip(wh) {
            assert!((*x as f64 - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn weight_decay_adds_an_l2_gradient() {
        let vm = varmap();
        let mut opt = Optim::new(&vm, OptimKind::Sgd { momentum: 0.0 }, 0.1, 0.5).unwrap();
        opt.backward_step(&quad(&vm)).unwrap();
        // w - 0.1 * (2 (w - c) + 0.5 w)
        let want: Vec<f64> = [0.5f64, 0.0, -1.0]
            .iter()
            .zip([1.0, -2.0, 3.0])
            .map(|(w, c)| w - 0.1 * (2.0 * (w - c) + 0.5 * w))
            .collect();
        for (x, y) in w(&vm).iter().zip(want) {
            assert!((*x as f64 - y).abs() < 1e-6, "{x} vs {y}");
        }
    }

    #[test]
    fn kept_optimiser_state_holds_no_graph_on_a_convnet() {
        use crate::graph::{Graph, Init, Model, Node, Op};
        let node = |name: &str, op| Node {
            name: name.into(),
            op,
            probe: true,
        };
        let g = Graph {
            nodes: vec![
                node(
                    "input",
                    Op::Input {
                        shape: vec![1, 6, 6],
                    },
                ),
                node(
                    "conv",
                    Op::Conv2d {
                        input: "input".into(),
                        out_channels: 2,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        init: Init::HeNormal,
                    },
                ),
                node(
                    "flat",
                    Op::Flatten {
                        input: "conv".into(),
                    },
                ),
                node(
                    "out",
                    Op::Linear {
                        input: "flat".into(),
                        out: 2,
                        init: Init::GlorotNormal,
                    },
                ),
            ],
            output: "out".into(),
            classes: 2,
        };
        let dev = Device::Cpu;
        let x = Tensor::ones((4, 1, 6, 6), DType::F32, &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 0, 1], &dev).unwrap();
        for kind in [OptimKind::Sgd { momentum: 0.9 }, OptimKind::adam()] {
            let vm = g.init_varmap(0, &dev).unwrap();
            let m = Model::new(
                &g,
                candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
            )
            .unwrap();
            // With weight decay: the decay term is computed from the variable itself.
            let mut opt = Optim::new(&vm, kind, 0.01, 5e-4).unwrap();
            for _ in 0..3 {
                let outs = m.forward(&x).unwrap();
                opt.backward_step(&m.loss(&outs, &y).unwrap()).unwrap();
            }
            // Kept with its graph, each step's state would hold on to every earlier step's
            // graph, and memory would grow without end (45 MB a step on mnist-convnet).
            assert!(
                opt.m.iter().chain(&opt.v).all(|t| !t.track_op()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn clipping_scales_the_gradient_to_the_given_norm() {
        let vm = varmap();
        let mut opt = Optim::new(&vm, OptimKind::Sgd { momentum: 0.0 }, 0.1, 0.0)
            .unwrap()
            .with_clip(1.0);
        opt.backward_step(&quad(&vm)).unwrap();
        // g = 2 (w - c) = [-1, 4, -8], norm 9: scaled to norm 1.
        let g = [-1.0f64, 4.0, -8.0];
        for ((x, w0), gi) in w(&vm).iter().zip([0.5f64, 0.0, -1.0]).zip(g) {
            assert!((*x as f64 - (w0 - 0.1 * gi / 9.0)).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn minibatches_cover_each_epoch_once_and_depend_only_on_the_seed() {
        let (n, batch) = (10, 3);
        let mut seen = Vec::new();
        let mut cache = Batches::default();
        for step in 1..=3 {
            let (e, idx) = minibatch(7, step, batch, n);
            assert_eq!(e, 0);
            assert_eq!(cache.get(7, step, batch, n).1, idx.as_slice());
            seen.extend(idx);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        assert_eq!(minibatch(7, 4, batch, n).0, 1);
        assert_ne!(minibatch(7, 4, batch, n).1, minibatch(7, 1, batch, n).1);
        assert_eq!(scheduled_lr(0.01, 0.95, 2), 0.01 * 0.95 * 0.95);
    }

    #[test]
    fn a_resumed_optimiser_continues_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let id = CheckpointId {
            preset: "p".into(),
            graph: "g".into(),
            seed: 1,
        };
        // Straight through: 10 steps.
        let a = varmap();
        let mut oa = Optim::new(&a, OptimKind::adam(), 0.05, 0.01).unwrap();
        for _ in 0..10 {
            oa.backward_step(&quad(&a)).unwrap();
        }
        // Interrupted after 4, resumed into fresh objects.
        let b = varmap();
        let mut ob = Optim::new(&b, OptimKind::adam(), 0.05, 0.01).unwrap();
        for _ in 0..4 {
            ob.backward_step(&quad(&b)).unwrap();
        }
        save_checkpoint(&path, &id, &b, &ob, 4).unwrap();
        let c = varmap();
        let mut oc = Optim::new(&c, OptimKind::adam(), 0.05, 0.01).unwrap();
        assert_eq!(
            load_checkpoint(&path, &id, &c, &mut oc, &Device::Cpu).unwrap(),
            4
        );
        for _ in 4..10 {
            oc.backward_step(&quad(&c)).unwrap();
        }
        assert_eq!(w(&a), w(&c));
        // Another run's checkpoint is refused, naming the file.
        let other = CheckpointId { seed: 2, ..id };
        let e = load_checkpoint(&path, &other, &c, &mut oc, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.safetensors") && e.contains("--seed 1"), "{e}");
        std::fs::write(&path, b"garbage").unwrap();
        let e = load_checkpoint(&path, &other, &c, &mut oc, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a probescope checkpoint"), "{e}");
    }
}
