//! Section 3.6, Figs 6 to 8: the 128-layer MLP on MNIST, plain, with auxiliary heads and with the
//! skip connection. Prints every layer's probe test error at the figures' snapshots (minibatches
//! 0, 500, 2,000 and, with auxiliary heads, 5,000) for each variant in turn.
//!
//!     probescope data fetch mnist        # once
//!     cargo run --release --example fig6_deep_mlp [-- variant=aux snapshot_every=100 ...]
//!
//! Without a `variant=` argument it runs all three. The data directory is `PROBESCOPE_DATA_DIR`,
//! else the per-user default.

use probescope::presets::{self, RunOptions};
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    let sets: Vec<String> = std::env::args().skip(1).collect();
    let variants: Vec<&str> = if sets.iter().any(|s| s.starts_with("variant=")) {
        vec![""]
    } else {
        vec!["plain", "aux", "skip"]
    };
    for v in variants {
        let mut s = sets.clone();
        if !v.is_empty() {
            println!("== deep-mlp, variant={v}");
            s.push(format!("variant={v}"));
        }
        presets::run_preset_with(
            "deep-mlp",
            &s,
            0,
            RunOptions::default(),
            &mut Headless::new(None),
        )?;
    }
    Ok(())
}
