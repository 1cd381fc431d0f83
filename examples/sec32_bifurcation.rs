//! Section 3.2: a model that splits into two branches and merges them by concatenation. Prints
//! each probe's error at initialisation and after training: the concatenation beats both branches.
//!
//!     cargo run --release --example sec32_bifurcation

use std::time::Instant;

use candle_core::Device;
use probescope::params::Params;
use probescope::presets::{self, RunCtx};
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let preset = presets::find("bifurcation")?;
    let params = Params::resolve(preset.name(), &preset.params(), &[])?;
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
