//! The command line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;
use clap::{Parser, Subcommand};

use crate::params::ParamError;
use crate::presets::{self, RunCtx};
use crate::report::{Headless, Sink};
use crate::runlog::{End, EndStatus, Record, RunHeader, RunLogWriter, SCHEMA_VERSION};

/// Live linear classifier probes on every layer of a neural network.
#[derive(Debug, Parser)]
#[command(name = "probescope", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without one, runs the default preset (untrained-mlp).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a preset (an experiment of the paper).
    Run(RunArgs),
    /// List the presets, their parameters and defaults.
    Presets,
    /// Benchmarks.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchWhat,
    },
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// The converged fit of all 33 probes of one untrained-mlp dataset, against minibatch RMSProp.
    Probes {
        /// Seed of the dataset and network.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Epochs of the RMSProp baseline (the paper's procedure: 50).
        #[arg(long, default_value_t = 50)]
        epochs: usize,
    },
}

/// Arguments of `probescope run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Preset name (see `probescope presets`).
    #[arg(default_value = "untrained-mlp")]
    pub preset: String,
    /// Print progress lines and a final table instead of opening the terminal UI.
    #[arg(long)]
    pub headless: bool,
    /// Where to compute: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of every random draw (data, weights, feature subsets, minibatch order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the run log (JSON Lines) to this file.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Overwrite the --record file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Override a preset parameter, e.g. --set datasets=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl Default for RunArgs {
    /// The command line's own defaults, so `probescope` alone is exactly `probescope run`.
    fn default() -> Self {
        match Cli::try_parse_from(["probescope", "run"]).map(|c| c.command) {
            Ok(Some(Command::Run(args))) => args,
            other => unreachable!("`probescope run` always parses: {other:?}"),
        }
    }
}

/// Parses `--device`.
pub fn parse_device(spec: &str) -> Result<Device, ParamError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(ParamError(format!(
                    "--device {spec}: expected cpu, cuda or cuda:N (N the GPU's number, from 0)"
                )))
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ParamError(format!(
            "--device {spec}: this probescope was built without CUDA; rebuild it with \
             `cargo build --release --features cuda` (needs the CUDA toolkit), or use --device cpu"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        ParamError(format!(
            "--device {spec}: no usable CUDA device {ordinal}: {e}"
        ))
    })
}

/// Runs the command line; returns the process exit code (0 fine, 1 the run failed, 2 bad input,
/// 130 stopped with Ctrl-C).
pub fn main_with(cli: Cli) -> i32 {
    let result = match cli.command {
        None => run(&RunArgs::default()),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Presets) => {
            print!("{}", presets_text());
            Ok(())
        }
        Some(Command::Bench {
            what: BenchWhat::Probes { seed, epochs },
        }) => crate::bench::probes(seed, epochs).map(|report| print!("{report}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probescope: {e:#}");
            if e.downcast_ref::<ParamError>().is_some() {
                2
            } else if e.downcast_ref::<presets::Stopped>().is_some() {
                130
            } else {
                1
            }
        }
    }
}

/// The text of `probescope presets`.
pub fn presets_text() -> String {
    let mut out = String::new();
    for p in presets::all() {
        let params: Vec<String> = p
            .params()
            .iter()
            .map(|s| format!("{}={}", s.key, s.default))
            .collect();
        out.push_str(&format!(
            "{:<15} {}\n{:<15} {}\n",
            p.name(),
            p.about(),
            "",
            params.join(" ")
        ));
    }
    out
}

/// Runs a preset headless (the terminal UI comes in a later release).
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let (preset, params) = presets::prepare(&args.preset, &args.sets)?;
    let device = parse_device(&args.device)?;
    let graph = preset.graph(&params);
    graph.shapes().map_err(|e| {
        ParamError(format!(
            "preset {} with these parameters: {e}",
            preset.name()
        ))
    })?;
    let probes = preset.probes(&params, &graph, args.seed);
    // Everything is checked before the log is created: bad input leaves nothing half-written.
    let log = match &args.record {
        Some(path) => {
            Some(RunLogWriter::create(path, args.force).map_err(|e| ParamError(format!("{e}")))?)
        }
        None => None,
    };
    let mut sink = Headless::new(log);
    let header = RunHeader {
        schema_version: SCHEMA_VERSION,
        probescope_version: env!("CARGO_PKG_VERSION").into(),
        preset: preset.name().into(),
        params: params.0.clone(),
        seed: args.seed,
        device: args.device.clone(),
        graph,
        probes,
        fit: presets::fit_config(&params),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    sink.record(&Record::Run(header))?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C asks the run to stop at its next checkpoint, so the log gets its `end` line.
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let outcome = {
        let mut ctx = RunCtx {
            device,
            seed: args.seed,
            sink: &mut sink,
            started,
            stop,
        };
        preset.run(&params, &mut ctx)
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    let end = match &outcome {
        Ok(()) => End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s,
        },
        Err(e) if e.downcast_ref::<presets::Stopped>().is_some() => End {
            status: EndStatus::Stopped,
            message: Some("stopped by the user (Ctrl-C)".into()),
            elapsed_s,
        },
        Err(e) => End {
            status: EndStatus::Failed,
            message: Some(format!("{e:#}")),
            elapsed_s,
        },
    };
    sink.record(&Record::End(end))?;
    sink.progress(&format!("done in {elapsed_s:.1}s"));
    outcome
}
