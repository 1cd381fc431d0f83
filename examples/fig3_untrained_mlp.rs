//! Figure 3 (sec 3.3): probe error per layer of a 32-layer MLP that is never trained, averaged
//! over toy datasets. Prints the table the figure plots.
//!
//!     cargo run --release --example fig3_untrained_mlp [DATASETS]

use probescope::presets;
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let datasets = std::env::args().nth(1).unwrap_or_else(|| "20".into());
    presets::run_preset(
        "untrained-mlp",
        &[format!("datasets={datasets}")],
        0,
        &mut Headless::new(None),
    )?;
    println!(
        "\nThe paper's Fig 3: error near 0 at the input, climbing toward 0.5 (chance) with depth."
    );
    Ok(())
}
