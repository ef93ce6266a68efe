//! `wafer models`: list the shape presets with their parameter counts.

use super::common::group_thousands;
use anyhow::Result;
use wafer_models::presets;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    println!(
        "{:<16} {:>17} {:>6} {:>6} {:>7} {:>5} {:>4} {:>8} {:>8}  source config.json",
        "preset", "parameters", "layers", "d", "ffn", "heads", "kv", "vocab", "max ctx"
    );
    for name in presets::names() {
        let c = presets::lookup(name).expect("listed presets resolve");
        println!(
            "{:<16} {:>17} {:>6} {:>6} {:>7} {:>5} {:>4} {:>8} {:>8}  {}",
            name,
            group_thousands(c.param_count()),
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.vocab_size,
            c.max_position_embeddings,
            presets::source_repo(name).unwrap_or("")
        );
    }
    Ok(())
}
