//! Helpers that several test files share.

use std::path::{Path, PathBuf};

/// The shared real data (`../shared/data`, the MNIST files), if this checkout has it; else says
/// the test is skipped.
pub fn real_data() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if d.join("mnist").is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: no ../shared/data here (the real MNIST files)");
        None
    }
}
