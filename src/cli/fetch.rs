//! `wafer fetch`: download and convert the default model into the cache.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Download and convert again even if the model is already cached (repairs a damaged cache).
    #[arg(long)]
    force: bool,
    /// Print the cached GGUF file's path on stdout instead of the model directory.
    #[arg(long)]
    gguf: bool,
}

pub fn run(args: Args) -> Result<()> {
    // A download or conversion stopped by Ctrl-C leaves nothing half-written.
    super::common::remove_on_interrupt("the fetch", wafer_import::fetch::partial_paths());
    let dir = wafer_import::fetch::fetch(args.force)?;
    // Never print the path of a GGUF that is not there: with --gguf that is an
    // error; otherwise the model directory is still usable and a warning says so.
    let gguf = wafer_import::fetch::check_cached_gguf();
    match (&gguf, args.gguf) {
        (Ok(g), _) => eprintln!("GGUF:  {}", g.display()),
        (Err(e), false) => eprintln!("warning: {e:#}"),
        (Err(_), true) => {}
    }
    eprintln!("model: {}", dir.display());
    // One path alone on stdout, so scripts can use `$(wafer fetch)`.
    if args.gguf {
        println!("{}", gguf?.display());
    } else {
        println!("{}", dir.display());
    }
    Ok(())
}
