//! `wafer fetch`: download and convert the default model into the cache.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Download and convert again even if the model is already cached.
    #[arg(long)]
    force: bool,
    /// Print the cached GGUF file's path on stdout instead of the model directory.
    #[arg(long)]
    gguf: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dir = wafer_models::fetch::fetch(args.force)?;
    eprintln!(
        "GGUF:  {}",
        wafer_models::fetch::cached_gguf_path().display()
    );
    eprintln!("model: {}", dir.display());
    // One path alone on stdout, so scripts can use `$(wafer fetch)`.
    if args.gguf {
        println!("{}", wafer_models::fetch::cached_gguf_path().display());
    } else {
        println!("{}", dir.display());
    }
    Ok(())
}
