//! `wafer hw`: print a hardware spec as TOML so it can be copied, edited and
//! passed back with `--hw FILE.toml`.

use anyhow::Result;
use wafer_core::WaferSpec;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the full spec (a preset or a TOML file with overrides) as TOML.
    Show {
        /// `wse3`, `wse2`, or a TOML file.
        #[arg(default_value = "wse3")]
        spec: String,
    },
    /// List the hardware presets.
    List,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Show { spec } => {
            let spec = super::common::load_spec(&spec)?;
            println!(
                "# wafer hardware spec `{}` (sources: docs/hardware.md).",
                spec.name
            );
            println!("# Edit any value and load it with --hw FILE.toml; or write only");
            println!("# `base = \"{}\"` plus the fields you change.", spec.name);
            print!("{}", spec.to_toml_string());
        }
        Command::List => {
            for name in WaferSpec::PRESETS {
                let s = WaferSpec::preset(name)?;
                println!(
                    "{name:5}  {} x {} PEs, {} B SRAM per PE, {} total, {:.2} GHz",
                    s.fabric.width_pes,
                    s.fabric.height_pes,
                    s.pe.sram_bytes,
                    s.wafer_sram(),
                    s.clock_hz / 1e9
                );
            }
        }
    }
    Ok(())
}
