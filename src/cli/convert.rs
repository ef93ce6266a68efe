//! `wafer convert`: a GGUF file -> a Hugging Face-style model directory.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to convert (Llama architecture, byte-level BPE tokenizer).
    #[arg(long, value_name = "FILE")]
    gguf: PathBuf,
    /// The model directory to write; it must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let report = wafer_models::convert::convert_gguf(&args.gguf, &args.out)?;
    eprintln!(
        "converted {} tensors ({} parameters, from {}) into {} in {:.2} s",
        report.n_tensors,
        report.n_parameters,
        report.source_types.join("/"),
        report.out_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
