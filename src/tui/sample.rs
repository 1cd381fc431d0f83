//! Deterministic sample runs for the render tests and the frame benchmark: a preset's real header
//! (graph and probes) with synthetic readings from a closed form, so pictures do not depend on
//! floating-point details of the machine.

use crate::graph::{Activation, Chain, Graph, Init, Op};
use crate::params::ParamError;
use crate::presets;
use crate::probe::{ActivationStats, ProbeReading};
use crate::runlog::{
    ModelMetrics, Record, RunHeader, Snapshot, SnapshotKind, TapReading, SCHEMA_VERSION,
};

use super::state::App;
use super::theme::Theme;

/// The header `probescope run PRESET --set ...` would write (seed 0, cpu).
pub fn header(preset: &str, sets: &[&str]) -> Result<RunHeader, ParamError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let (p, params) = presets::prepare(preset, &sets)?;
    let graph = p.graph(&params);
    let probes = p.probes(&params, &graph, 0);
    Ok(RunHeader {
        schema_version: SCHEMA_VERSION,
        probescope_version: env!("CARGO_PKG_VERSION").into(),
        preset: preset.into(),
        params: params.0.clone(),
        seed: 0,
        device: "cpu".into(),
        graph,
        probes,
        fit: presets::fit_config(&params),
        started_unix: 0,
        total_steps: p.total_steps(&params),
    })
}

/// Snapshot number `k` of a run with header `h`: probe i's error climbs with depth and falls as
/// `k` grows; test error is 0.01 above train. Converged (with confusion matrices and activation
/// statistics) when `converged`, else online.
pub fn snapshot(h: &RunHeader, k: usize, converged: bool) -> Snapshot {
    let n = h.probes.len().max(1);
    let classes = h.graph.classes.max(2);
    let chance = 1.0 - 1.0 / classes as f64;
    let probes = h
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let depth = i as f64 / n as f64;
            let train = chance * (0.02 + 0.9 * depth.powf(0.7)) / (1.0 + 0.3 * k as f64);
            let test = (train + 0.01).min(1.0);
            let confusion = converged.then(|| {
                let per = 100u32;
                (0..classes)
                    .map(|r| {
                        let wrong = (test * f64::from(per)).round() as u32;
                        (0..classes)
                            .map(|c| {
                                if c == r {
                                    per - wrong
                                } else if c == (r + 1) % classes {
                                    wrong
                                } else {
                                    0
                                }
                            })
                            .collect()
                    })
                    .collect()
            });
            TapReading {
                probe: p.name.clone(),
                tap: p.tap.clone(),
                reading: ProbeReading {
                    train_error: train,
                    train_loss: train * 1.5,
                    test_error: Some(test),
                    test_loss: Some(test * 1.5),
                    iterations: if converged { 7 } else { 100 * (k + 1) },
                    converged: true,
                    confusion,
                    ..Default::default()
                },
                activation: converged.then(|| ActivationStats {
                    mean_norm: 10.0 * (1.0 - depth),
                    dead_fraction: depth / 4.0,
                }),
            }
        })
        .collect();
    Snapshot {
        step: 100 * k as u64,
        label: if converged {
            format!("step {}", 100 * k)
        } else {
            format!("online {}", 100 * k)
        },
        kind: if converged {
            SnapshotKind::Converged
        } else {
            SnapshotKind::Online
        },
        dataset: None,
        epoch: None,
        probes,
        model: Some(ModelMetrics {
            loss: 0.7 / (1.0 + k as f64),
            train_error: Some(0.4 / (1.0 + k as f64)),
            test_error: Some(0.42 / (1.0 + k as f64)),
        }),
        elapsed_s: k as f64,
        alerts: Vec::new(),
    }
}

/// A UI state (default theme) holding `h` and `snapshots` synthetic snapshots, the first
/// converged and the rest online.
pub fn app(h: &RunHeader, snapshots: usize) -> App {
    let mut app = App::new(vec![Theme::default_theme()]);
    app.apply(&Record::Run(h.clone()));
    for k in 0..snapshots {
        app.apply(&Record::Snapshot(snapshot(h, k, k == 0)));
    }
    app
}

/// A chain of `depth` layers of `width` units (LeakyReLU 0.5) with a probe on every layer and
/// `classes` outputs. With `skip_at = Some(k)`, layer k also reads the input (a concatenation,
/// the skip connection of the paper's sec 3.6); with `aux_every = m > 0`, an auxiliary head hangs
/// on every m-th layer.
pub fn chain(
    depth: usize,
    width: usize,
    classes: usize,
    skip_at: Option<usize>,
    aux_every: usize,
) -> Graph {
    let mut c = Chain::new(vec![width]);
    for i in 1..=depth {
        if skip_at == Some(i) {
            let prev = c.last();
            c.push(
                "skip",
                Op::Concat {
                    inputs: vec![prev, "input".into()],
                },
                false,
            );
        }
        c.linear(format!("fc{i:03}"), width, false).activation(
            format!("h{i:03}"),
            Activation::LeakyRelu { slope: 0.5 },
            true,
        );
        if aux_every > 0 && i % aux_every == 0 {
            let last = c.last();
            c.push(
                format!("aux{i:03}"),
                Op::AuxHead {
                    input: last.clone(),
                    weight: 1.0,
                    init: Init::GlorotNormal,
                },
                false,
            );
            // The chain goes on from the layer, not from the head.
            c.push(
                format!("id{i:03}"),
                Op::Activation {
                    input: last,
                    activation: Activation::Relu,
                },
                false,
            );
        }
    }
    c.linear("logits", classes, false);
    c.finish("logits", classes)
}

/// A header for the 128-layer chain whose 64th layer also reads the input: 129 taps.
pub fn deep_skip_header() -> Result<RunHeader, ParamError> {
    let mut h = header("untrained-mlp", &["depth=128"])?;
    h.graph = chain(128, 128, 10, Some(64), 0);
    h.probes = presets::probe_every_tap(&h.graph);
    Ok(h)
}
