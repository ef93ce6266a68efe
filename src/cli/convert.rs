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
    // `--out` appears only whole, renamed from a partial directory beside it at the
    // end. On Ctrl-C (or SIGTERM) that partial directory, hundreds of MB for a real
    // model, is removed before exiting rather than left for the next conversion.
    // Setting the handler fails only if one is already set (a second conversion in
    // one process, as in tests), where the first one's stays.
    super::common::remove_on_interrupt(
        "the conversion",
        vec![wafer_import::convert::partial_dir(&args.out)],
    );
    let report = wafer_import::convert::convert_gguf(&args.gguf, &args.out)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_gguf_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let gguf = tmp.path().join("missing.gguf");
        let out = tmp.path().join("out");
        let err = run(Args {
            gguf,
            out: out.clone(),
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("missing.gguf") && msg.contains("cannot read the file"),
            "{msg}"
        );
        assert!(
            !out.exists(),
            "no output directory is created for a failed conversion"
        );
    }
}
