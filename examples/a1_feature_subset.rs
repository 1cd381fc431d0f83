//! Appendix A.1: probes that read a fixed random subset of a wide layer's features. Prints train
//! and test error against the subset size. Pass `paper` for the paper's size (D=100,000,
//! K=1,000; needs about 10 GB of memory and a long while on a laptop).
//!
//!     cargo run --release --example a1_feature_subset [paper]

use probescope::presets;
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
    presets::run_preset("feature-subset", &sets, 0, &mut Headless::new(None))
}
