//! `wafer fetch`: download and convert the default model into the cache.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Download and convert again even if the model is already cached.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dir = wafer_models::fetch::fetch(args.force)?;
    eprintln!(
        "GGUF:  {}",
        wafer_models::fetch::cached_gguf_path().display()
    );
    eprintln!("model: {}", dir.display());
    // The directory alone on stdout, so scripts can use `$(wafer fetch)`.
    println!("{}", dir.display());
    Ok(())
}
