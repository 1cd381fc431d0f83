//! probescope: linear classifier probes (Alain & Bengio, ICLR 2017 workshop) on every layer of a
//! candle model.
//!
//! The pieces: a model [`graph`] whose node outputs are probe taps, the [`probe`] engine
//! (converged and online fits), synthetic [`data`], the paper's experiments as [`presets`] with
//! typed [`params`], the [`runlog`] (JSON Lines), the headless [`report`]er, the [`bench`]mark
//! and the command line in [`cli`].

pub mod bench;
pub mod bench_ui;
pub mod cli;
pub mod data;
pub mod graph;
pub mod params;
pub mod presets;
pub mod probe;
pub mod report;
pub mod rng;
pub mod runlog;
pub mod tui;

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
