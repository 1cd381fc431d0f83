//! probescope: linear classifier probes (Alain & Bengio, ICLR 2017 workshop) on every layer of a
//! candle model.
//!
//! The pieces: a model [`graph`] whose node outputs are probe taps, the [`probe`] engine
//! (converged and online fits), synthetic [`data`], the paper's experiments as [`presets`] with
//! typed [`params`], the [`runlog`] (JSON Lines), the headless [`report`]er, the [`bench`](mod@bench)mark
//! and the command line in [`cli`].
//!
//! To probe a model that your own candle code trains, use [`Probes`] (in [`monitor`]): hand it
//! named activations each step, and now and then a fixed set of samples for converged probes;
//! its run log is what `probescope attach` shows live.

#![warn(missing_docs)]

pub mod acts;
pub mod alerts;
pub mod bench;
pub mod cancel;
pub mod cli;
pub mod compare;
pub mod data;
pub mod device;
pub mod export;
pub mod fetch;
pub mod follow;
pub mod graph;
pub(crate) mod host;
pub mod memory;
pub mod mnist;
pub use presets::modelfile;
pub mod monitor;
pub mod paper;
pub mod params;
pub mod presets;
pub mod probe;
pub mod report;
pub mod rng;
pub mod runlog;
pub mod status;
pub mod text;
pub mod theme;
pub mod train;
pub mod tui;

pub use monitor::{Activations, Probes};

/// Keeps freed memory in the process instead of handing it back to the kernel at once. Candle
/// allocates a fresh buffer for every tensor; with glibc's defaults each large one is a new
/// mapping whose pages the kernel must zero, which cost a third of a probe fit's time (measured
/// with perf: `clear_page_erms`).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        // One arena: otherwise the compute threads' arenas hand pages back and fault them in anew.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Decides the compute thread count once. Candle asks for its thread count before every matrix
/// product and, unless `RAYON_NUM_THREADS` is set, works it out by parsing `/proc/cpuinfo`: 36
/// reads per training step of `bifurcation`, a third of its time (measured with strace and
/// perf). This builds rayon's pool with the size it would have had anyway, then pins candle's
/// count to the value it would have computed, so only the repeated parsing goes away. Call it
/// first thing in `main`, before other threads start.
pub fn tune_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(logical)
        .build_global();
    let candle = candle_core::utils::get_num_threads();
    std::env::set_var("RAYON_NUM_THREADS", candle.to_string());
}
