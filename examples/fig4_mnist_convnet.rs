//! Section 3.4, Figs 4 and 5: the MNIST convnet with a probe before and after every convolution,
//! ReLU and pooling. Prints each probe's test error at initialisation and after every epoch.
//!
//!     probescope data fetch mnist        # once
//!     cargo run --release --example fig4_mnist_convnet [-- epochs=1 dataset=fashion-mnist ...]
//!
//! The data directory is `PROBESCOPE_DATA_DIR`, else the per-user default.

use probescope::presets::{self, RunOptions};
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let sets: Vec<String> = std::env::args().skip(1).collect();
    presets::run_preset_with(
        "mnist-convnet",
        &sets,
        0,
        RunOptions::default(),
        &mut Headless::new(None),
    )
}
