//! Figure 3 (sec 3.3): probe error per layer of a 32-layer MLP that is never trained, averaged
//! over toy datasets. Prints the table the figure plots.
//!
//!     cargo run --release --example fig3_untrained_mlp [DATASETS]

use std::time::Instant;

use candle_core::Device;
use probescope::params::Params;
use probescope::presets::{self, RunCtx};
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let datasets = std::env::args().nth(1).unwrap_or_else(|| "20".into());
    let preset = presets::find("untrained-mlp")?;
    let params = Params::resolve(
        preset.name(),
        &preset.params(),
        &[format!("datasets={datasets}")],
    )?;
    let mut sink = Headless::new(None);
    let mut ctx = RunCtx {
        device: Device::Cpu,
        seed: 0,
        sink: &mut sink,
        started: Instant::now(),
        stop: Default::default(),
    };
    preset.run(&params, &mut ctx)?;
    println!(
        "\nThe paper's Fig 3: error near 0 at the input, climbing toward 0.5 (chance) with depth."
    );
    Ok(())
}
