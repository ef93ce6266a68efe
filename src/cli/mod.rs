//! One module per subcommand: each defines its clap `Args` and a `run` function.

pub mod common;
pub mod convert;
pub mod draw;
pub mod estimate;
pub mod fetch;
pub mod frontier;
pub mod generate;
pub mod heatmap;
pub mod hw;
pub mod kernel;
pub mod latency;
pub mod models;
pub mod place;
pub mod plan;
pub mod program;
pub mod speculate;
pub mod sweep;
pub mod trace;
