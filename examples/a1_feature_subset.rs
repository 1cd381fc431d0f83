//! Appendix A.1: probes that read a fixed random subset of a wide layer's features. Prints train
//! and test error against the subset size. Pass `paper` for the paper's size (D=100,000,
//! K=1,000; needs about 10 GB of memory and a long while on a laptop).
//!
//!     cargo run --release --example a1_feature_subset [paper]

use std::time::Instant;

use candle_core::Device;
use probescope::params::Params;
use probescope::presets::{self, RunCtx};
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let sets: Vec<String> = if std::env::args().nth(1).as_deref() == Some("paper") {
        vec![
            "dim=100000".into(),
            "classes=1000".into(),
            "subsets=100,1000".into(),
        ]
    } else {
        vec![]
    };
    let preset = presets::find("feature-subset")?;
    let params = Params::resolve(preset.name(), &preset.params(), &sets)?;
    let mut sink = Headless::new(None);
    let mut ctx = RunCtx {
        device: Device::Cpu,
        seed: 0,
        sink: &mut sink,
        started: Instant::now(),
        stop: Default::default(),
    };
    preset.run(&params, &mut ctx)
}
