//! One module per subcommand: each defines its clap `Args` and a `run` function.

pub mod common;
pub mod convert;
pub mod draw;
pub mod estimate;
pub mod fetch;
pub mod generate;
pub mod hw;
pub mod kernel;
pub mod models;
pub mod place;
pub mod program;
pub mod speculate;
pub mod sweep;
