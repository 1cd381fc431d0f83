//! The online probes' step on a GPU as four kernels per probe (`online.cu`, compiled to PTX by
//! `build.rs` when the `cuda` feature is on): the running statistics, the logits, the softmax
//! with the minibatch's readings, and the gradient with Adam's update in place. candle's
//! operations take about fifty launches (and as many fresh allocations) per width group for the
//! same step; here the probes' state lives in buffers of their own and a step is four launches
//! per probe, one memset and one read of every probe's readings.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::{CudaDevice, DType, Device, Storage, Tensor};

use super::HostProbe;
use crate::host::Adam;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/online.ptx"));
const MODULE: &str = "probescope_online";
/// Threads per block, and the logits a thread of `online_logits` sums (as in `online.cu`).
const THREADS: u32 = 256;
const MAX_OUT: usize = 16;
/// Shared floats of an `online_logits` block: a tile of features, each with its n
/// standardised values and its k parameters.
const SHARED_FLOATS: usize = 8192;
/// The most rows plus classes a step takes: one feature's n + k floats must fit in a block's
/// 48 KiB of shared memory.
pub(super) const MAX_ROWS_PLUS_CLASSES: usize = 12 * 1024;

fn wrap<E: std::fmt::Display>(e: E) -> candle_core::Error {
    candle_core::Error::Msg(format!("online probes on the GPU: {e}"))
}

/// One probe's state on the device.
struct Probe {
    d: usize,
    /// `[d + 1, k]` parameters on standardised features (bias row last) and Adam's moments.
    theta: CudaSlice<f32>,
    m: CudaSlice<f32>,
    v: CudaSlice<f32>,
    /// `[d]` running mean and variance.
    mean: CudaSlice<f32>,
    var: CudaSlice<f32>,
}

/// Every online probe of a run, on one GPU.
pub(super) struct Fused {
    dev: CudaDevice,
    k: usize,
    probes: Vec<Probe>,
    /// Per probe, its largest standard deviation (as f32 bits), zeroed each step.
    top: CudaSlice<u32>,
    /// Per probe, the wrong count and the mean cross-entropy of the last step.
    out: CudaSlice<f32>,
    /// `[n, k]` logits, then the softmax's gradient; `[blocks, n, k]` partial logits. Shared
    /// by the probes (one stream runs them in order) and grown when a step needs more.
    g: CudaSlice<f32>,
    part: CudaSlice<f32>,
    /// Whether a step has run (the running statistics start from the first batch's).
    seen: bool,
}

impl Fused {
    /// Zero probes of widths `widths` over `k` classes where `device` is a GPU; `None` on the
    /// CPU.
    pub(super) fn for_device(
        device: &Device,
        widths: &[usize],
        k: usize,
    ) -> candle_core::Result<Option<Self>> {
        match device {
            Device::Cuda(d) => Self::new(d, widths, k).map(Some),
            _ => Ok(None),
        }
    }

    /// Zero probes of widths `widths` over `k` classes.
    pub(super) fn new(dev: &CudaDevice, widths: &[usize], k: usize) -> candle_core::Result<Self> {
        let stream = dev.cuda_stream();
        let zeros = |len: usize| stream.alloc_zeros::<f32>(len.max(1)).map_err(wrap);
        let probes = widths
            .iter()
            .map(|&d| {
                Ok(Probe {
                    d,
                    theta: zeros((d + 1) * k)?,
                    m: zeros((d + 1) * k)?,
                    v: zeros((d + 1) * k)?,
                    mean: zeros(d)?,
                    var: zeros(d)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        // Load the module now, so that a driver that cannot take the PTX says so at the start.
        dev.get_or_load_custom_func("online_stats", MODULE, PTX)?;
        Ok(Self {
            dev: dev.clone(),
            k,
            probes,
            top: stream
                .alloc_zeros::<u32>(widths.len().max(1))
                .map_err(wrap)?,
            out: zeros(2 * widths.len())?,
            g: zeros(1)?,
            part: zeros(1)?,
            seen: false,
        })
    }

    /// One step of every probe on the minibatch: `xs[i]` is probe i's features, `[n, d_i]` f32
    /// on this GPU, `y` the `n` labels, `c` Adam's settings as the host kernel takes them, and
    /// `stats_momentum` the running statistics' weight of this batch. Returns per probe the
    /// wrong count and the mean cross-entropy before the step.
    pub(super) fn step(
        &mut self,
        xs: &[Tensor],
        y: &Tensor,
        c: &Adam,
        stats_momentum: f32,
    ) -> candle_core::Result<Vec<(f64, f64)>> {
        let (n, k) = (y.dim(0)?, self.k);
        if n == 0 {
            candle_core::bail!("online probes: an empty minibatch");
        }
        if n + k > MAX_ROWS_PLUS_CLASSES {
            candle_core::bail!(
                "online probes on the GPU take at most {MAX_ROWS_PLUS_CLASSES} rows plus classes in a step; this one has {n} rows and {k} classes: use a smaller batch"
            );
        }
        let stream = self.dev.cuda_stream();
        let y = y.to_dtype(DType::U32)?.contiguous()?;
        let outs = n * k;
        let tile = (SHARED_FLOATS / (n + k)).clamp(1, 32);
        // A probe of width d is summed in blocks of ceil(d / 256) features (at least a tile):
        // at most 256 blocks, written to `part` and added up in order by `online_softmax`.
        let blocks_of = |d: usize| {
            let feats = d.div_ceil(256).max(tile);
            (feats, d.div_ceil(feats).max(1))
        };
        let most_blocks = self
            .probes
            .iter()
            .map(|p| blocks_of(p.d).1)
            .max()
            .unwrap_or(1);
        if self.g.len() < outs {
            self.g = stream.alloc_zeros::<f32>(outs).map_err(wrap)?;
        }
        if self.part.len() < most_blocks * outs {
            self.part = stream
                .alloc_zeros::<f32>(most_blocks * outs)
                .map_err(wrap)?;
        }
        stream.memset_zeros(&mut self.top).map_err(wrap)?;
        let f_stats = self
            .dev
            .get_or_load_custom_func("online_stats", MODULE, PTX)?;
        let f_logits = self
            .dev
            .get_or_load_custom_func("online_logits", MODULE, PTX)?;
        let f_softmax = self
            .dev
            .get_or_load_custom_func("online_softmax", MODULE, PTX)?;
        let f_adam = self
            .dev
            .get_or_load_custom_func("online_adam", MODULE, PTX)?;
        let (y_guard, y_layout) = y.storage_and_layout();
        let Storage::Cuda(y_storage) = &*y_guard else {
            candle_core::bail!("online probes on the GPU: the labels are not on the GPU");
        };
        let labels = y_storage.as_cuda_slice::<u32>()?;
        let labels = labels.slice(y_layout.start_offset()..y_layout.start_offset() + n);
        let (n_i, k_i) = (n as i32, k as i32);
        let seen = i32::from(self.seen);
        for (i, (p, x)) in self.probes.iter_mut().zip(xs).enumerate() {
            let d = p.d;
            if x.dims() != [n, d] || x.dtype() != DType::F32 {
                candle_core::bail!(
                    "online probe {i}: features {:?} {:?}, expected [{n}, {d}] f32",
                    x.dims(),
                    x.dtype()
                );
            }
            let x = x.contiguous()?;
            let (x_guard, x_layout) = x.storage_and_layout();
            let Storage::Cuda(x_storage) = &*x_guard else {
                candle_core::bail!("online probe {i}: features not on the GPU");
            };
            let xv = x_storage.as_cuda_slice::<f32>()?;
            let xv = xv.slice(x_layout.start_offset()..x_layout.start_offset() + n * d);
            let d_i = d as i32;
            let grid = |total: usize| LaunchConfig {
                grid_dim: (total.div_ceil(THREADS as usize).max(1) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // 1. Running statistics and the largest std.
            {
                let mut top = self.top.slice_mut(i..i + 1);
                let mom = stats_momentum;
                let mut b = f_stats.builder();
                b.arg(&xv)
                    .arg(&n_i)
                    .arg(&d_i)
                    .arg(&mut p.mean)
                    .arg(&mut p.var)
                    .arg(&seen)
                    .arg(&mom)
                    .arg(&mut top);
                unsafe { b.launch(grid(d)) }.map_err(wrap)?;
            }
            let top = self.top.slice(i..i + 1);
            // 2. Partial logits per feature block.
            let (feats, blocks) = blocks_of(d);
            let (feats_i, tile_i) = (feats as i32, tile as i32);
            {
                let cfg = LaunchConfig {
                    grid_dim: (
                        blocks as u32,
                        outs.div_ceil(THREADS as usize * MAX_OUT) as u32,
                        1,
                    ),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: (tile * (n + k) * 4) as u32,
                };
                let mut b = f_logits.builder();
                b.arg(&xv)
                    .arg(&n_i)
                    .arg(&d_i)
                    .arg(&p.mean)
                    .arg(&p.var)
                    .arg(&top)
                    .arg(&p.theta)
                    .arg(&k_i)
                    .arg(&feats_i)
                    .arg(&tile_i)
                    .arg(&mut self.part);
                unsafe { b.launch(cfg) }.map_err(wrap)?;
            }
            // 3. Softmax, readings and the gradient of the logits.
            {
                let blocks_i = blocks as i32;
                let mut out = self.out.slice_mut(2 * i..2 * i + 2);
                let mut b = f_softmax.builder();
                b.arg(&self.part)
                    .arg(&blocks_i)
                    .arg(&n_i)
                    .arg(&d_i)
                    .arg(&k_i)
                    .arg(&p.theta)
                    .arg(&labels)
                    .arg(&mut self.g)
                    .arg(&mut out);
                let cfg = LaunchConfig {
                    grid_dim: (1, 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                unsafe { b.launch(cfg) }.map_err(wrap)?;
            }
            // 4. Gradient and Adam, in place.
            {
                let mut b = f_adam.builder();
                b.arg(&xv)
                    .arg(&n_i)
                    .arg(&d_i)
                    .arg(&p.mean)
                    .arg(&p.var)
                    .arg(&top)
                    .arg(&self.g)
                    .arg(&k_i)
                    .arg(&mut p.theta)
                    .arg(&mut p.m)
                    .arg(&mut p.v)
                    .arg(&c.b1)
                    .arg(&c.b2)
                    .arg(&c.step)
                    .arg(&c.eps)
                    .arg(&c.l2);
                unsafe { b.launch(grid((d + 1) * k)) }.map_err(wrap)?;
            }
        }
        self.seen = true;
        let out = stream.clone_dtoh(&self.out).map_err(wrap)?;
        Ok(out
            .chunks_exact(2)
            .take(self.probes.len())
            .map(|r| (f64::from(r[0]), f64::from(r[1])))
            .collect())
    }

    /// Probe i's state on the host.
    pub(super) fn state(&self, i: usize) -> candle_core::Result<HostProbe> {
        let stream = self.dev.cuda_stream();
        let p = &self.probes[i];
        let theta = stream.clone_dtoh(&p.theta).map_err(wrap)?;
        let stats = if self.seen {
            let mut mean = stream.clone_dtoh(&p.mean).map_err(wrap)?;
            let mut var = stream.clone_dtoh(&p.var).map_err(wrap)?;
            mean.truncate(p.d);
            var.truncate(p.d);
            Some((mean, var))
        } else {
            None
        };
        Ok((theta, stats))
    }
}
