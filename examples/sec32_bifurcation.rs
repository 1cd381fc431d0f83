//! Section 3.2: a model that splits into two branches and merges them by concatenation. Prints
//! each probe's error at initialisation and after training: the concatenation beats both branches.
//!
//!     cargo run --release --example sec32_bifurcation

use probescope::presets;
use probescope::report::Headless;

fn main() -> anyhow::Result<()> {
    probescope::tune_allocator();
    presets::run_preset("bifurcation", &[], 0, &mut Headless::new(None))
}
