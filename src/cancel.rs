//! Stopping long computations from another thread.
//!
//! A [`Cancel`] token is shared between whoever may ask for a stop (the UI, a signal handler, a
//! library user's own code) and every long loop of the engine: each L-BFGS iteration and line
//! search step, each forward-pass chunk of a converged snapshot, each training step. A loop that
//! finds the token set returns [`Cancelled`] (as a `candle_core::Error` inside the engine), so a
//! stop takes effect within one iteration of the innermost loop, not at the next training step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared stop request. Clones share one flag; [`Default`] is a fresh token nobody has set.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// Tokens compare equal whatever their state: a token is a channel, not a setting, so a
/// configuration holding one compares by its settings alone.
impl PartialEq for Cancel {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The work was stopped through its [`Cancel`] token before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before it finished")]
pub struct Cancelled;

impl Cancel {
    /// A fresh token nobody has set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder of this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once a stop was asked for.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// [`Cancel::check`] for code that returns candle's errors.
    pub fn check_candle(&self) -> candle_core::Result<()> {
        self.check().map_err(candle_core::Error::wrap)
    }

    /// The blocks `(start, len)` of at most `size` that cover `0..n`, each handed out only while
    /// no stop is asked for (`Err` then): a loop over them honours a stop between blocks.
    pub fn blocks(
        &self,
        n: usize,
        size: usize,
    ) -> impl Iterator<Item = candle_core::Result<(usize, usize)>> + '_ {
        let size = size.max(1);
        (0..n)
            .step_by(size)
            .map(move |s| self.check_candle().map(|()| (s, size.min(n - s))))
    }

    /// Sleeps for `d`, waking early (with `Err`) when a stop is asked for.
    pub fn sleep(&self, d: Duration) -> Result<(), Cancelled> {
        let until = std::time::Instant::now() + d;
        loop {
            self.check()?;
            let now = std::time::Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }
}

/// The test hook `PROBESCOPE_DEBUG_HOLD_FIT=PATH`: every converged fit, on entering its solver,
/// creates the file `PATH` and then waits there until it is stopped, so the end-to-end tests can
/// stop a run at a moment that is certainly inside a converged fit. With
/// `PROBESCOPE_DEBUG_IGNORE_STOP=1` as well it never returns (a computation that does not
/// answer), for the test of the second signal. Unset, it costs one lookup.
pub fn debug_hold_fit(cancel: &Cancel) -> candle_core::Result<()> {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(path) = PATH.get_or_init(|| {
        std::env::var_os("PROBESCOPE_DEBUG_HOLD_FIT")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    }) else {
        return Ok(());
    };
    let _ = std::fs::write(path, b"inside a converged fit\n");
    if std::env::var_os("PROBESCOPE_DEBUG_IGNORE_STOP").is_some() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    loop {
        cancel
            .sleep(Duration::from_secs(3600))
            .map_err(candle_core::Error::wrap)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_sees_the_cancel_and_sleep_wakes_early() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(b.check().is_ok());
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let r = b.sleep(Duration::from_secs(30));
            (r, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        a.cancel();
        let (r, took) = t.join().unwrap();
        assert_eq!(r, Err(Cancelled));
        assert!(took < Duration::from_secs(30), "woke at the cancel");
        assert_eq!(
            Cancel::new(),
            a,
            "tokens compare equal whatever their state"
        );
    }
}
