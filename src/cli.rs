//! The command line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use clap::{Parser, Subcommand};

pub use crate::device::{device_name, parse_device};
use crate::params::ParamError;
use crate::presets::{self, Controls, RunCtx};
use crate::report::{Headless, Sink};
use crate::runlog::{End, EndStatus, Record, RunHeader, RunLogWriter, SCHEMA_VERSION};
pub use crate::text::error_text;
use crate::tui;

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
    /// Fit a probe on every layer of activations that any framework saved (a .safetensors
    /// file, or a folder of .npy files), and show them as a run; with --watch, a snapshot per
    /// file a training loop writes.
    Probe(ProbeArgs),
    /// List the presets, their parameters and defaults; with --show NAME, print the model file
    /// that a preset runs, to copy and edit (`probescope run my-model.toml`).
    Presets {
        /// Print this preset's model file instead of the list.
        #[arg(long, value_name = "NAME")]
        show: Option<String>,
        /// With --show, the settings of a generated file (deep-mlp), e.g. --set variant=skip.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "show")]
        sets: Vec<String>,
    },
    /// Replay a run log in the UI, with a timeline: [ ] one snapshot, { } ten, Home End, Space
    /// plays (+ - speed).
    Replay(ViewArgs),
    /// Watch a run log that another process is writing (e.g. a `--headless --record` job).
    Attach(ViewArgs),
    /// One short line about a run log (step, best tap and its error, findings) for a tmux
    /// status line; returns at once. With --watch, a line per snapshot until the run ends.
    Status {
        /// The run log.
        log: PathBuf,
        /// Follow the log: a line per snapshot, until its end line.
        #[arg(long)]
        watch: bool,
    },
    /// Two or three run logs side by side, probes aligned by name, on one timeline; d shows the
    /// differences from a base run. Without a terminal (or with --table) prints a table.
    Compare(CompareArgs),
    /// Datasets: `probescope data fetch mnist` downloads MNIST.
    Data {
        /// What to do.
        #[command(subcommand)]
        what: DataCmd,
    },
    /// Write a run log as a table (--csv) or a figure (--svg, --png).
    Export {
        /// The run log.
        log: PathBuf,
        /// One row per snapshot and probe, as CSV.
        #[arg(long, value_name = "OUT", required_unless_present_any = ["svg", "png"])]
        csv: Option<PathBuf>,
        /// A figure as SVG (see --figure).
        #[arg(long, value_name = "OUT")]
        svg: Option<PathBuf>,
        /// A figure as PNG, 1000 pixels wide (see --figure).
        #[arg(long, value_name = "OUT")]
        png: Option<PathBuf>,
        /// Which figure --svg and --png draw.
        #[arg(long, value_enum, default_value = "curve")]
        figure: crate::export::Figure,
        /// The snapshots (by step, comma-separated) that bars and panels draw; default: the
        /// first and last converged snapshot (bars), six spread over the run (panels).
        #[arg(long, value_name = "STEP,...", value_delimiter = ',')]
        steps: Vec<u64>,
    },
    /// Run the paper's experiments headless and set each figure's claims beside what they
    /// measure, with a verdict; writes the run logs, figures and REPORT.md into one folder.
    Paper(PaperArgs),
    /// Benchmarks.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchWhat,
    },
}

/// `probescope data ...`.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Download a dataset's four files from its public mirrors, checking their MD5s.
    Fetch {
        /// mnist or fashion-mnist.
        dataset: String,
        /// The data directory (the files go into DIR/DATASET/). Default:
        /// $XDG_DATA_HOME/probescope (~/.local/share/probescope).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Try this base URL (ending in /) before the built-in mirrors (repeatable).
        #[arg(long, value_name = "URL")]
        mirror: Vec<String>,
        /// Only the given mirrors, not the built-in ones.
        #[arg(long)]
        only_given: bool,
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
    /// `probescope probe` on a safetensors file against the solver alone on the same
    /// activations in memory: what reading, checking and recording cost.
    Acts {
        /// Samples in the file.
        #[arg(long, default_value_t = 10_000)]
        samples: usize,
        /// Taps.
        #[arg(long, default_value_t = 10)]
        taps: usize,
        /// Features per tap.
        #[arg(long, default_value_t = 512)]
        width: usize,
        /// Seed of the synthetic activations.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Training mnist-convnet on MNIST with and without online probes on its 10 taps, and one
    /// converged 10-probe snapshot on 50,000 samples.
    Train {
        /// Where mnist/ is (as for `run`).
        #[arg(long, value_name = "DIR", env = "PROBESCOPE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Training steps of each run (an epoch is 781).
        #[arg(long, default_value_t = 781)]
        steps: usize,
        /// Probe-training samples of the converged snapshot.
        #[arg(long, default_value_t = 50_000)]
        probe_samples: usize,
        /// Features per probe on wider taps (0: all).
        #[arg(long, default_value_t = 0)]
        subset: usize,
        /// Most MiB of features held at once in the snapshot.
        #[arg(long, default_value_t = 4096)]
        memory_mb: usize,
        /// Only the training runs.
        #[arg(long)]
        skip_snapshot: bool,
        /// Where to compute: auto, cpu, cuda or cuda:N (as for `run`).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Rounds of the two training runs, in alternating order (the median is reported).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Also take the snapshot with every tap's activations in bfloat16 (the presets'
        /// probe_dtype=bf16) and compare every probe's error.
        #[arg(long)]
        bf16: bool,
        /// Take the snapshot with every tap's activations in bfloat16 only.
        #[arg(long, conflicts_with = "bf16")]
        bf16_only: bool,
        /// Skip the baseline: the paper's RMSProp procedure on the same snapshot.
        #[arg(long)]
        skip_rmsprop: bool,
        /// Steps between online-probe updates (as the presets' online_update_every).
        #[arg(long, default_value_t = 1)]
        update_every: usize,
        /// The snapshot's early-stopping patience (as the presets' probe_patience).
        #[arg(long, default_value_t = crate::probe::FitConfig::default().patience)]
        patience: usize,
        /// Also take the snapshot with every probe fitted on its own features (the presets'
        /// probe_affine=off) first, as the baseline of the default, and compare every probe.
        #[arg(long)]
        affine_off_too: bool,
        /// Also take the snapshot without the wide probes' low-rank preconditioner (the presets'
        /// probe_rank=0) first, as the baseline of the default, and compare every probe.
        #[arg(long)]
        rank_off_too: bool,
        /// Also take the snapshot with every tap's activations in f32 (the presets'
        /// probe_dtype=f32) first, as the baseline of the default (probe_dtype=auto: bf16 past
        /// 1,024 features), and compare every probe.
        #[arg(long)]
        f32_too: bool,
        /// On a GPU, also train with the online probes stepped by candle's operations (one set
        /// per width) instead of the fused kernels, as their baseline.
        #[arg(long)]
        online_ops_too: bool,
    },
    /// How long a run takes to stop: each preset started headless, signalled (SIGTERM, SIGINT,
    /// SIGHUP) at set moments (inside converged fits, forward passes, training steps), timed to
    /// the process's exit, its log checked for the end line.
    Stop {
        /// Where mnist/ is (as for `run`); the MNIST presets are skipped without it.
        #[arg(long, value_name = "DIR", env = "PROBESCOPE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Only the runs whose label contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The terminal UI: frame render time with 33 and 129 taps, and the trainer's speed with the
    /// UI open against headless.
    Ui {
        /// Training steps of each trainer run.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Frames timed per picture.
        #[arg(long, default_value_t = 300)]
        frames: usize,
        /// Alternating headless / UI rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// Arguments of `probescope probe`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "The file: one tensor per tap (first axis: the sample), an integer \
`labels` tensor, optionally an integer `split` tensor (0 train, 1 validation, 2 test). Its \
metadata may list the taps in model order (\"taps\": \"a,b,c\") and what a tap reads \
(\"reads.c\": \"a\"). See docs/activations.md.

--set takes: classes, val_fraction, test_fraction, subset, probe_memory_mb, probe_dtype, \
probe_l2, probe_max_iter, probe_patience, probe_rank, selectivity, transfer (`probescope presets` shows their \
defaults)."
)]
pub struct ProbeArgs {
    /// The activations: a .safetensors file, or a folder of .npy files named by tap.
    #[arg(required_unless_present = "watch", value_name = "ACTS")]
    pub acts: Option<PathBuf>,
    /// The name of the labels tensor (the class of each sample).
    #[arg(long, default_value = "labels", value_name = "NAME")]
    pub labels: String,
    /// Validation samples (early stopping), in a file of the same layout.
    #[arg(long, value_name = "ACTS")]
    pub val: Option<PathBuf>,
    /// Test samples, in a file of the same layout.
    #[arg(long, value_name = "ACTS")]
    pub test: Option<PathBuf>,
    /// Watch a folder that a training loop writes step-N.safetensors files (or step-N/ folders
    /// of .npy files) into, saved under another name and renamed into place; each is fitted
    /// as a converged snapshot, warm-started from the last. A file named DONE ends the run.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["acts", "val", "test"])]
    pub watch: Option<PathBuf>,
    /// How the run is shown and recorded (as for `run`; `--set` takes the keys that
    /// `probescope presets` lists under `probe`).
    #[command(flatten)]
    pub common: RunCommon,
}

impl ProbeArgs {
    /// The same run as `probescope run` arguments, with the activations as its source.
    pub fn run_args(&self) -> RunArgs {
        let watch = self.watch.is_some();
        let path = self
            .watch
            .clone()
            .or_else(|| self.acts.clone())
            .unwrap_or_default();
        RunArgs {
            preset: path.display().to_string(),
            common: self.common.clone(),
            acts: Some(crate::acts::Source {
                path,
                labels: self.labels.clone(),
                val: self.val.clone(),
                test: self.test.clone(),
                watch,
            }),
            ..RunArgs::default()
        }
    }
}

/// Arguments of `probescope paper`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Each experiment is a preset run (`probescope run PRESET --headless --record`) \
    whose log goes into the folder. A finished log there with the same preset, settings and \
    seed is reused (--force runs it again), so a stopped paper run continues where it stopped. \
    Without --quick the runs are the presets' defaults: on two CPU cores about two hours, most \
    of it mnist-convnet's ten epochs. The exit code is 0 when every claim run is reproduced or \
    differs for a named reason, 1 otherwise, 130 when stopped."
)]
pub struct PaperArgs {
    /// Sizes that finish in minutes on two CPU cores (fewer datasets, one epoch, fewer steps
    /// and probe samples).
    #[arg(long)]
    pub quick: bool,
    /// Only these experiments (comma-separated names, or a preset's name for all of its):
    /// untrained-mlp, bifurcation, feature-subset, mnist-convnet, deep-mlp-plain, deep-mlp-aux,
    /// deep-mlp-skip.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub only: Vec<String>,
    /// The folder for the run logs, figures and REPORT.md (default: paper, or paper-quick with
    /// --quick).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run every selected experiment again, even where its finished log is in the folder.
    #[arg(long)]
    pub force: bool,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to compute (as for `run`).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where the MNIST files are (as for `run`).
    #[arg(long, value_name = "DIR", env = "PROBESCOPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `probescope replay` and `probescope attach`.
#[derive(Debug, Clone, clap::Args)]
pub struct ViewArgs {
    /// The run log (JSON Lines, from `probescope run --record`).
    pub log: PathBuf,
    /// Colour theme: a built-in (dark, light, high-contrast, viridis, mono) or a .toml file.
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,
}

/// Arguments of `probescope compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Two or three run logs.
    #[arg(num_args = 2..=3, required = true, value_name = "RUN.jsonl")]
    pub logs: Vec<PathBuf>,
    /// Compare at this step (each run at its newest snapshot up to it); default: the last.
    #[arg(long, value_name = "STEP")]
    pub at: Option<u64>,
    /// Count every snapshot, online ones too (default: converged ones only, where every run
    /// has one).
    #[arg(long)]
    pub every: bool,
    /// Train error instead of test error.
    #[arg(long)]
    pub train: bool,
    /// Differences from the first run (the table always shows them).
    #[arg(long)]
    pub diff: bool,
    /// Print the table even on a terminal.
    #[arg(long)]
    pub table: bool,
    /// Write the comparison's figure as SVG instead of opening the UI.
    #[arg(long, value_name = "OUT")]
    pub svg: Option<PathBuf>,
    /// Write the comparison's figure as PNG instead of opening the UI.
    #[arg(long, value_name = "OUT")]
    pub png: Option<PathBuf>,
    /// Colour theme: a built-in (dark, light, high-contrast, viridis, mono) or a .toml file.
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,
}

/// The arguments that `probescope run` and `probescope probe` share.
#[derive(Debug, Clone, clap::Args)]
pub struct RunCommon {
    /// Print progress lines and a final table instead of opening the terminal UI (also what
    /// happens when stdout is not a terminal).
    #[arg(long)]
    pub headless: bool,
    /// Where to compute: auto (the first GPU when built with the `cuda` feature and one
    /// answers, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
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
    /// Colour theme: a built-in (dark, light, high-contrast, viridis, mono) or a .toml file.
    /// Default: dark, or mono when NO_COLOR is set.
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,
    /// Override a parameter, e.g. --set datasets=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// Arguments of `probescope run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Preset name (see `probescope presets`).
    #[arg(default_value = "untrained-mlp")]
    pub preset: String,
    /// How the run is shown and recorded.
    #[command(flatten)]
    pub common: RunCommon,
    /// Where the datasets are: DIR/mnist/ and DIR/fashion-mnist/ hold the IDX files. Default:
    /// $XDG_DATA_HOME/probescope (~/.local/share/probescope), where `probescope data fetch` puts
    /// them.
    #[arg(long, value_name = "DIR", env = "PROBESCOPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Save the model and optimiser to this safetensors file (when the run ends or is stopped,
    /// and every --checkpoint-every steps). Default with --checkpoint-every: the --record file's
    /// name with .safetensors.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Steps (minibatches) between checkpoints.
    #[arg(long, value_name = "STEPS")]
    pub checkpoint_every: Option<usize>,
    /// Continue a run from a checkpoint it saved (same preset, --set values and --seed).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Saved activations to probe in place of a preset (`probescope probe`).
    #[arg(skip)]
    pub acts: Option<crate::acts::Source>,
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

/// Runs the command line; returns the process exit code (0 fine, 1 the run failed, 2 bad input,
/// 130 stopped with Ctrl-C).
pub fn main_with(cli: Cli) -> i32 {
    let result = match cli.command {
        None => run(&RunArgs::default()),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Probe(args)) => run(&args.run_args()),
        Some(Command::Replay(v)) => view(&v, false),
        Some(Command::Attach(v)) => view(&v, true),
        Some(Command::Compare(c)) => compare(&c),
        Some(Command::Status { log, watch }) => crate::status::command(&log, watch),
        Some(Command::Export {
            log,
            csv,
            svg,
            png,
            figure,
            steps,
        }) => export(
            &log,
            csv.as_deref(),
            svg.as_deref(),
            png.as_deref(),
            figure,
            &steps,
        ),
        Some(Command::Data {
            what:
                DataCmd::Fetch {
                    dataset,
                    dir,
                    mirror,
                    only_given,
                },
        }) => crate::fetch::fetch_command(&dataset, dir, &mirror, only_given),
        Some(Command::Paper(args)) => paper(&args),
        Some(Command::Presets { show: None, .. }) => {
            print!("{}", presets_text());
            Ok(())
        }
        Some(Command::Presets {
            show: Some(name),
            sets,
        }) => show_preset(&name, &sets).map(|text| print!("{text}")),
        Some(Command::Bench {
            what: BenchWhat::Probes { seed, epochs },
        }) => crate::bench::probes(seed, epochs).map(|report| print!("{report}")),
        Some(Command::Bench {
            what:
                BenchWhat::Train {
                    data_dir,
                    steps,
                    probe_samples,
                    subset,
                    memory_mb,
                    skip_snapshot,
                    device,
                    rounds,
                    bf16,
                    bf16_only,
                    skip_rmsprop,
                    update_every,
                    patience,
                    affine_off_too,
                    rank_off_too,
                    f32_too,
                    online_ops_too,
                },
        }) => {
            let dir = data_dir.unwrap_or_else(crate::mnist::default_data_dir);
            crate::mnist::check_present(&dir, crate::mnist::Which::Mnist)
                .map_err(ParamError)
                .and_then(|()| parse_device(&device))
                .map_err(anyhow::Error::new)
                .and_then(|device| {
                    crate::bench::train::run(&crate::bench::train::Settings {
                        data_dir: &dir,
                        steps: steps.max(1),
                        probe_samples,
                        subset,
                        memory_mb,
                        skip_snapshot,
                        device,
                        rounds,
                        bf16,
                        bf16_only,
                        skip_rmsprop,
                        update_every,
                        patience: patience.max(1),
                        affine_off_too,
                        rank_off_too,
                        f32_too,
                        online_ops_too,
                    })
                })
        }
        Some(Command::Bench {
            what:
                BenchWhat::Acts {
                    samples,
                    taps,
                    width,
                    seed,
                },
        }) => crate::bench::acts::run(&crate::bench::acts::Sizes {
            samples: samples.max(10),
            taps: taps.max(1),
            width: width.max(1),
            seed,
        })
        .map(|report| print!("{report}")),
        Some(Command::Bench {
            what: BenchWhat::Stop { data_dir, only },
        }) => crate::bench::stop::run(
            &data_dir.unwrap_or_else(crate::mnist::default_data_dir),
            only.as_deref(),
        )
        .map(|(_, report)| print!("{report}")),
        Some(Command::Bench {
            what:
                BenchWhat::Ui {
                    steps,
                    frames,
                    rounds,
                },
        }) => crate::bench::ui::ui(steps, frames, rounds.max(1)).map(|report| print!("{report}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probescope: {}", error_text(&e));
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

/// `probescope replay` (`follow` false) or `probescope attach` (true).
fn view(args: &ViewArgs, follow: bool) -> anyhow::Result<()> {
    let what = if follow { "attach" } else { "replay" };
    if !tui::is_interactive() {
        return Err(ParamError(format!(
            "{what} draws in a terminal, and stdin or stdout is not one; run it in a terminal \
             (for a table of a finished run, `probescope run ... --headless` prints one)"
        ))
        .into());
    }
    let look = tui::Look::load(args.theme.as_deref())?;
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let signalled = signalled.clone();
        let _ = ctrlc::set_handler(move || signalled.store(true, Ordering::Relaxed));
    }
    if follow {
        tui::run_attach(&args.log, look, signalled)
    } else {
        // A log that cannot be read is bad input: say so before the screen changes.
        let log = crate::runlog::read(&args.log).map_err(|e| ParamError(format!("{e:#}")))?;
        tui::run_replay(log, look, signalled)
    }
}

/// `probescope compare A B [C]`: the UI, a table, or a figure.
fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let paths: Vec<&std::path::Path> = args.logs.iter().map(PathBuf::as_path).collect();
    let cmp = crate::compare::Comparison::read(&paths)?;
    for side in &cmp.runs {
        for w in &side.log.warnings {
            eprintln!("probescope: {w}");
        }
    }
    let converged_only = !args.every && cmp.all_converged();
    if !args.every && !converged_only {
        eprintln!(
            "probescope: a run has no converged snapshot, so every snapshot counts (as --every)"
        );
    }
    let steps = cmp.steps(converged_only);
    let step = args.at.or(steps.last().copied()).unwrap_or(0);
    let figure = args.svg.is_some() || args.png.is_some();
    if figure {
        let plot = cmp.plot(step, converged_only, args.train, args.diff.then_some(0));
        let files = [
            (
                &args.svg,
                crate::export::svg_file as fn(&crate::export::Plot, &std::path::Path) -> _,
            ),
            (&args.png, crate::export::png_file),
        ];
        for (out, write) in files {
            let Some(out) = out else { continue };
            let drawn = write(&plot, out)?;
            eprintln!(
                "probescope: wrote {} (comparison at step {step}, {drawn} series)",
                out.display()
            );
        }
    }
    if args.table || (!figure && !tui::is_interactive()) {
        print!("{}", cmp.table(step, converged_only, args.train));
        return Ok(());
    }
    if figure {
        return Ok(());
    }
    let look = tui::Look::load(args.theme.as_deref())?;
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let signalled = signalled.clone();
        let _ = ctrlc::set_handler(move || signalled.store(true, Ordering::Relaxed));
    }
    tui::run_compare(cmp, look, signalled, |app| {
        app.converged_only = converged_only;
        app.train = args.train;
        app.diff = args.diff;
        app.refresh();
        app.seek_step(step);
    })
}

/// `probescope export LOG [--csv OUT] [--svg OUT] [--png OUT] [--figure F] [--steps S,...]`.
fn export(
    log: &std::path::Path,
    csv: Option<&std::path::Path>,
    svg: Option<&std::path::Path>,
    png: Option<&std::path::Path>,
    figure: crate::export::Figure,
    steps: &[u64],
) -> anyhow::Result<()> {
    let run = crate::runlog::read(log).map_err(|e| ParamError(format!("{e:#}")))?;
    for w in &run.warnings {
        eprintln!("probescope: {w}");
    }
    if !steps.is_empty()
        && !matches!(
            figure,
            crate::export::Figure::Bars | crate::export::Figure::Panels
        )
    {
        return Err(ParamError(format!(
            "--steps picks the snapshots of --figure bars or panels; --figure {} draws {}",
            figure.name(),
            match figure {
                crate::export::Figure::Heatmap => "every snapshot",
                _ => "one snapshot (or the mean over datasets)",
            }
        ))
        .into());
    }
    if let Some(csv) = csv {
        let rows = crate::export::csv_file(&run, csv)?;
        eprintln!(
            "probescope: wrote {} ({rows} rows: {} snapshots x their probes)",
            csv.display(),
            run.snapshots().count()
        );
    }
    if svg.is_none() && png.is_none() {
        return Ok(());
    }
    // A step the log does not have is bad input, named before anything is drawn.
    let plot = crate::export::plot(&run, figure, steps).map_err(|e| {
        let e = anyhow::anyhow!("{}: {e:#}", log.display());
        if steps.is_empty() {
            e
        } else {
            ParamError(format!("{e:#}")).into()
        }
    })?;
    let files = [
        (
            svg,
            crate::export::svg_file as fn(&crate::export::Plot, &std::path::Path) -> _,
        ),
        (png, crate::export::png_file),
    ];
    for (out, write) in files {
        let Some(out) = out else { continue };
        let drawn = write(&plot, out)?;
        eprintln!(
            "probescope: wrote {} ({} figure, {drawn} {})",
            out.display(),
            figure.name(),
            match figure {
                crate::export::Figure::Heatmap => "cells",
                crate::export::Figure::Panels => "panels",
                _ => "series",
            }
        );
    }
    Ok(())
}

/// The model file that preset `name` runs with `sets` (`probescope presets --show`).
pub fn show_preset(name: &str, sets: &[String]) -> anyhow::Result<String> {
    let (preset, params) = presets::prepare(name, sets)?;
    if preset.source().is_some() && !sets.is_empty() {
        return Err(ParamError(format!(
            "--show {name} prints {name}'s own file, which --set does not change; edit the \
             printed file instead (or run `probescope run {name} --set ...`)"
        ))
        .into());
    }
    preset.model_file(&params).map_err(|why| {
        let files: Vec<String> = presets::all()
            .iter()
            .filter_map(|p| {
                let (_, params) = presets::prepare(p.name(), &[]).ok()?;
                p.model_file(&params).ok().map(|_| p.name().to_string())
            })
            .collect();
        ParamError(format!(
            "{name} has no model file: {why}. The presets that are model files: {}",
            files.join(", ")
        ))
        .into()
    })
}

/// The text of `probescope presets`.
pub fn presets_text() -> String {
    let line = |name: &str, about: &str, specs: &[crate::params::ParamSpec]| {
        let params: Vec<String> = specs
            .iter()
            .map(|s| {
                if s.choices.is_empty() {
                    format!("{}={}", s.key, s.default)
                } else {
                    // The default first, then the other words.
                    format!("{}={}", s.key, s.choices_default_first().join("|"))
                }
            })
            .collect();
        format!("{name:<15} {about}\n{:<15} {}\n", "", params.join(" "))
    };
    let mut out = String::new();
    for p in presets::all() {
        out.push_str(&line(p.name(), p.about(), &p.params()));
        if let Some(note) = p.defaults_note() {
            out.push_str(&format!("{:<15} why: {note}\n", ""));
        }
    }
    out.push_str(&line(
        "probe ACTS",
        "any framework's activations, saved as safetensors or .npy (`probescope probe --help`)",
        &crate::acts::param_specs(),
    ));
    out
}

/// A run checked and ready to start: nothing is written until it is.
pub struct Prepared {
    preset: Box<dyn presets::Preset>,
    params: crate::params::Params,
    device: Device,
    header: RunHeader,
    log: Option<RunLogWriter>,
    opts: presets::RunOptions,
    memory: Option<presets::trained::MemoryEstimate>,
    memory_limit: Option<u64>,
}

/// Checks everything about a run (preset, parameters, device, graph) and creates its run log.
/// Bad input is a [`ParamError`] and leaves nothing half-written.
pub fn prepare_run(args: &RunArgs) -> anyhow::Result<Prepared> {
    let prepare = |sets: &[String]| match &args.acts {
        Some(src) => crate::acts::prepare(src, sets),
        None => presets::prepare(&args.preset, sets),
    };
    let (preset, params) = prepare(&args.common.sets)?;
    let device = parse_device(&args.common.device)?;
    let graph = preset.graph(&params);
    graph.shapes().map_err(|e| {
        ParamError(format!(
            "preset {} with these parameters: {e}",
            preset.name()
        ))
    })?;
    let probes = preset.probes(&params, &graph, args.common.seed);
    let opts = run_options(args, preset.as_ref(), &params)?;
    // Work that will not fit in memory is refused here, before anything is computed.
    let memory = preset.memory(&params, &graph, &probes);
    let memory_limit = presets::memory_limit();
    presets::check_memory_with(
        memory,
        memory_limit,
        preset.name(),
        &args.common.sets,
        args.common.seed,
        &prepare,
    )?;
    let header = RunHeader {
        schema_version: SCHEMA_VERSION,
        probescope_version: env!("CARGO_PKG_VERSION").into(),
        preset: preset.name().into(),
        params: params.0.clone(),
        seed: args.common.seed,
        device: device_name(&device),
        graph,
        probes,
        fit: presets::fit_config(&params),
        started_unix: crate::runlog::unix_now(),
        total_steps: preset.total_steps(&params),
    };
    // The log is created last, once everything else is known to be fine.
    let log = match &args.common.record {
        Some(path) => Some(
            RunLogWriter::create(path, args.common.force)
                .map_err(|e| ParamError(format!("{e}")))?,
        ),
        None => None,
    };
    Ok(Prepared {
        preset,
        params,
        device,
        header,
        log,
        opts,
        memory,
        memory_limit,
    })
}

/// The data directory and checkpoint settings of a run, checked.
fn run_options(
    args: &RunArgs,
    preset: &dyn presets::Preset,
    params: &crate::params::Params,
) -> Result<presets::RunOptions, ParamError> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::mnist::default_data_dir);
    if let Some(d) = &args.data_dir {
        if !d.is_dir() {
            return Err(ParamError(format!(
                "--data-dir {}: no such directory; create it with `probescope data fetch mnist --dir {}`",
                d.display(),
                d.display()
            )));
        }
    }
    preset.check_data(params, &data_dir)?;
    let wants =
        args.checkpoint.is_some() || args.checkpoint_every.is_some() || args.resume.is_some();
    if wants && !preset.checkpoints(params) {
        return Err(ParamError(format!(
            "--checkpoint, --checkpoint-every and --resume: {} trains no model to save here; \
             they work with mnist-convnet, deep-mlp and model files that train",
            preset.name()
        )));
    }
    let path =
        match (&args.checkpoint, args.checkpoint_every, &args.common.record) {
            (Some(p), _, _) => Some(p.clone()),
            (None, Some(_), Some(rec)) => Some(rec.with_extension("safetensors")),
            (None, Some(_), None) => return Err(ParamError(
                "--checkpoint-every needs a file to write: add --checkpoint PATH (or --record, \
                 whose name it then takes)"
                    .into(),
            )),
            (None, None, _) => None,
        };
    if args.checkpoint_every == Some(0) {
        return Err(ParamError(
            "--checkpoint-every 0: give the number of steps between checkpoints, at least 1".into(),
        ));
    }
    if let Some(r) = &args.resume {
        if !r.is_file() {
            return Err(ParamError(format!(
                "--resume {}: no such file; give a checkpoint saved with --checkpoint",
                r.display()
            )));
        }
    }
    Ok(presets::RunOptions {
        data_dir,
        checkpoint: presets::trained::CheckpointPlan {
            path,
            every: args.checkpoint_every.unwrap_or(0),
            resume: args.resume.clone(),
        },
    })
}

/// Runs a prepared run to its end, sending the header, every record and the end line to `sink`.
fn execute(
    preset: &dyn presets::Preset,
    params: &crate::params::Params,
    device: Device,
    header: RunHeader,
    opts: presets::RunOptions,
    sink: &mut dyn Sink,
    controls: Arc<Controls>,
) -> anyhow::Result<()> {
    let seed = header.seed;
    let controls_for_end = controls.clone();
    // Every snapshot carries the findings that hold at it.
    let mut alerting = crate::alerts::AlertingSink::new(sink);
    let sink: &mut dyn Sink = &mut alerting;
    sink.record(&Record::Run(header))?;
    let started = Instant::now();
    let outcome = {
        let mut ctx = RunCtx {
            device,
            seed,
            sink: &mut *sink,
            started,
            controls,
            opts,
        };
        // A panic in a preset is a bug, but the run log still gets its end line saying so.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if tui::debug_panic() == Some("worker") {
                panic!("PROBESCOPE_DEBUG_PANIC=worker: a deliberate worker panic");
            }
            preset.run(params, &mut ctx)
        }))
        .unwrap_or_else(|p| Err(anyhow::anyhow!(tui::panic_message(p.as_ref()))))
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    // A stop inside a fit or a forward pass surfaces as the engine's `Cancelled` error; once a
    // stop was asked for, that is the run being stopped, not failing.
    let outcome = match outcome {
        Err(e) if controls_for_end.stopping() && is_cancel(&e) => Err(presets::Stopped.into()),
        o => o,
    };
    let step = controls_for_end.last_step();
    let peak_rss = crate::memory::peak_rss();
    let end = match &outcome {
        Ok(()) => End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s,
            step,
            peak_rss,
        },
        Err(e) if e.downcast_ref::<presets::Stopped>().is_some() => End {
            status: EndStatus::Stopped,
            message: Some(match step {
                Some(s) => format!("{} at step {s}", controls_for_end.stop_reason()),
                None => controls_for_end.stop_reason(),
            }),
            elapsed_s,
            step,
            peak_rss,
        },
        Err(e) => End {
            status: EndStatus::Failed,
            message: Some(error_text(e)),
            elapsed_s,
            step,
            peak_rss,
        },
    };
    sink.record(&Record::End(end))?;
    sink.progress(&format!("done in {elapsed_s:.1}s"));
    outcome
}

/// `probescope paper`: every experiment run headless into the folder, judged, reported.
fn paper(args: &PaperArgs) -> anyhow::Result<()> {
    use crate::paper;
    let size = if args.quick {
        paper::Size::Quick
    } else {
        paper::Size::Full
    };
    let settings = paper::Settings {
        size,
        only: args.only.clone(),
        out: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(if args.quick { "paper-quick" } else { "paper" })),
        seed: args.seed,
        force: args.force,
    };
    // The device is checked once, before anything runs.
    parse_device(&args.device)?;
    let mut runner = |exp: &paper::Experiment, log: &std::path::Path| -> anyhow::Result<()> {
        if SIGNALLED.load(Ordering::Relaxed) {
            return Err(presets::Stopped.into());
        }
        let mut a = RunArgs {
            preset: exp.preset.into(),
            data_dir: args.data_dir.clone(),
            ..RunArgs::default()
        };
        a.common.headless = true;
        a.common.record = Some(log.to_path_buf());
        a.common.force = true;
        a.common.sets = exp.sets.clone();
        a.common.seed = args.seed;
        a.common.device = args.device.clone();
        run_with(&a, false)
    };
    let started = Instant::now();
    let report = paper::run(&settings, &mut runner, &mut |text| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    })?;
    let [ok, differs, not, not_run] = report.counts_of_selected();
    print!(
        "\n{}",
        paper::indented(
            &format!(
                "paper: {ok} reproduced, {differs} differ (reason given), {not} not reproduced, \
                 {not_run} not run · {:.0}s · {}",
                started.elapsed().as_secs_f64(),
                report.path.display()
            ),
            79,
            7
        )
    );
    if report.stopped {
        return Err(presets::Stopped.into());
    }
    if not + not_run > 0 {
        anyhow::bail!(
            "{not} claim{} not reproduced and {not_run} not run; {} says which and why",
            if not == 1 { "" } else { "s" },
            report.path.display()
        );
    }
    Ok(())
}

/// Whether `e` is a stop: [`presets::Stopped`], or the engine's [`crate::cancel::Cancelled`]
/// inside a candle error (which carries it as text).
fn is_cancel(e: &anyhow::Error) -> bool {
    e.downcast_ref::<presets::Stopped>().is_some()
        || e.chain().any(|c| {
            c.is::<crate::cancel::Cancelled>()
                || c.to_string()
                    .contains(&crate::cancel::Cancelled.to_string())
        })
}

/// Runs a preset: in the terminal UI when stdout and stdin are terminals, else (or with
/// `--headless`) with the line printer.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    run_with(args, true)
}

/// The run that a signal stops, with its flag for the UI: set by every run, so a process that
/// runs several (`probescope paper`) stops the one in progress.
type Active = (Arc<Controls>, Arc<AtomicBool>);
static ACTIVE: std::sync::Mutex<Option<Active>> = std::sync::Mutex::new(None);
/// Set once any stop signal has arrived: no further run starts.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Makes SIGINT, SIGTERM and SIGHUP stop the run of `controls` (the handler is installed once
/// per process).
fn watch_signals(controls: &Arc<Controls>, signalled: &Arc<AtomicBool>) {
    if let Ok(mut a) = ACTIVE.lock() {
        *a = Some((controls.clone(), signalled.clone()));
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Ctrl-C (headless), SIGTERM and SIGHUP stop the run wherever it is (inside a converged
        // fit too), and the log gets its `end` line; the UI also closes and restores the
        // terminal. A signal once the run is already stopping ends the process at once: the log
        // keeps every whole line, as after `kill -9`.
        // `timeout` and some schedulers deliver one SIGTERM twice (to the process and to its
        // group): repeats within half a second of the first count as one.
        let first = std::sync::OnceLock::<Instant>::new();
        let _ = ctrlc::set_handler(move || {
            let repeat = first
                .get()
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(500));
            if repeat {
                return;
            }
            let active = ACTIVE.lock().ok().and_then(|a| a.clone());
            let stopping = active.as_ref().is_some_and(|(c, _)| c.stopping());
            if stopping || (active.is_none() && SIGNALLED.load(Ordering::Relaxed)) {
                tui::restore_terminal();
                eprintln!("probescope: stopped at once; the run log has no end line");
                std::process::exit(130);
            }
            let _ = first.set(Instant::now());
            SIGNALLED.store(true, Ordering::Relaxed);
            if let Some((controls, signalled)) = active {
                controls.request_stop_because("stopped by a signal");
                signalled.store(true, Ordering::Relaxed);
            }
            if !tui::ui_active() {
                eprintln!("probescope: stopping (again to end at once)");
            }
        });
    });
}

/// [`run`], printing summary tables (headless) only with `tables`.
fn run_with(args: &RunArgs, tables: bool) -> anyhow::Result<()> {
    let ui = !args.common.headless && tui::is_interactive();
    // The theme and keys are checked even headless, so a typo is caught before a long job.
    let look = tui::Look::load(args.common.theme.as_deref())?;
    let Prepared {
        preset,
        params,
        device,
        header,
        log,
        opts,
        memory,
        memory_limit,
    } = prepare_run(args)?;
    if let (false, Some(m)) = (ui, memory) {
        eprintln!(
            "probescope: estimated peak memory {}{}",
            crate::memory::human(m.peak),
            memory_limit
                .map(|l| format!(" of {} available", crate::memory::human(l)))
                .unwrap_or_default()
        );
    }
    let controls = Arc::new(Controls::default());
    let signalled = Arc::new(AtomicBool::new(false));
    watch_signals(&controls, &signalled);
    if !ui {
        let mut sink = if tables {
            Headless::new(log)
        } else {
            Headless::without_tables(log)
        };
        return execute(
            preset.as_ref(),
            &params,
            device,
            header,
            opts,
            &mut sink,
            controls,
        );
    }
    let worker_controls = controls.clone();
    tui::run_live(
        move |sink| {
            execute(
                preset.as_ref(),
                &params,
                device,
                header,
                opts,
                sink,
                worker_controls,
            )
        },
        log,
        controls,
        signalled,
        look,
    )
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn error_text_drops_appended_stack_traces_and_keeps_the_message() {
        let raw = "no usable CUDA device 7 (DriverError(CUDA_ERROR_INVALID_DEVICE, \"invalid device ordinal\")\n   0: <unknown>\n   1: candle_core::cuda::new\n             at /src/lib.rs:3:5\n  12: __libc_start_main\n); use --device cpu";
        assert_eq!(
            error_text(&raw),
            "no usable CUDA device 7 (DriverError(CUDA_ERROR_INVALID_DEVICE, \"invalid device ordinal\")); use --device cpu"
        );
        // Nothing else is touched, indented lines included.
        let plain = "a: b\n  step 3: loss 0.5\nlast";
        assert_eq!(error_text(&plain), plain);
    }
}
