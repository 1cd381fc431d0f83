//! probescope: linear classifier probes (Alain & Bengio, ICLR 2017 workshop) on every layer of a
//! candle model, live.
//!
//! The pieces: a model [`graph`] whose node outputs are probe taps, the [`probe`] engine
//! (converged and online fits), synthetic [`data`], the paper's experiments as [`presets`], the
//! [`runlog`] (JSON Lines), and the command line in [`cli`].

pub mod graph;
pub mod probe;
pub mod rng;
