//! `wafer`: generate text with a real model, and see what it would cost on a
//! simulated Cerebras wafer. Each subcommand lives in its own module under `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wafer",
    version,
    about = "A simulator of the Cerebras wafer-scale inference core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text with a model (reference CPU engine, or executed on the simulated mesh).
    Generate(cli::generate::Args),
    /// Download the default model (SmolLM2-135M-Instruct) into the cache.
    Fetch(cli::fetch::Args),
    /// Convert a GGUF file into a Hugging Face-style model directory.
    Convert(cli::convert::Args),
    /// Show hardware specs.
    Hw(cli::hw::Args),
    /// List the model shape presets.
    Models(cli::models::Args),
    /// Place a model onto the wafer and account for every PE's SRAM.
    Place(cli::place::Args),
    /// Estimate decode and prefill cycles from shapes alone.
    Estimate(cli::estimate::Args),
    /// Show one layer's placed program: its tiles, per-PE bytes and decode steps.
    Program(cli::program::Args),
    /// Estimate one kernel (GEMV, GEMM, shift, allreduce) on one region.
    Kernel(cli::kernel::Args),
    /// Sweep the estimate over region sizes, contexts or spec fields.
    Sweep(cli::sweep::Args),
    /// Run a kernel, or a model's layer or decode token, on the fabric simulator and write a Perfetto/Chrome trace and a heat map.
    Trace(cli::trace::Args),
    /// Search models and wafer counts that reach a decode rate at a context.
    Plan(cli::plan::Args),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => cli::generate::run(a),
        Command::Fetch(a) => cli::fetch::run(a),
        Command::Convert(a) => cli::convert::run(a),
        Command::Hw(a) => cli::hw::run(a),
        Command::Models(a) => cli::models::run(a),
        Command::Place(a) => cli::place::run(a),
        Command::Estimate(a) => cli::estimate::run(a),
        Command::Program(a) => cli::program::run(a),
        Command::Kernel(a) => cli::kernel::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Trace(a) => cli::trace::run(a),
        Command::Plan(a) => cli::plan::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` panics when the reader goes away
/// (`wafer models | head`). Like other Unix command-line tools, `wafer` should
/// simply stop when its output pipe closes.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; setting
    // SIGPIPE to its default action has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
