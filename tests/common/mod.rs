//! Helpers that several test files share.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The shared real data (`../shared/data`, the MNIST files), if this checkout has it; else says
/// the test is skipped.
#[allow(dead_code)]
pub fn real_data() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if d.join("mnist").is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: no ../shared/data here (the real MNIST files)");
        None
    }
}

/// Waits until `marker` exists (`PROBESCOPE_DEBUG_HOLD_FIT` creates it when the child is
/// inside a converged fit, which it then holds until stopped), at most a minute; panics if the
/// child ends first.
#[allow(dead_code)]
pub fn wait_inside_fit(child: &mut Child, marker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended ({st}) before its first converged fit");
        }
        assert!(
            Instant::now() < deadline,
            "no converged fit within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `sig` to the child.
#[allow(dead_code)]
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Waits for the child's exit (at most a minute, so a hang fails the test instead of CI).
#[allow(dead_code)]
pub fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not stop within a minute of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
