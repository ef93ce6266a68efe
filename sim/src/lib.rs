//! The simulated machine: reduction schedules along lines of PEs, the cost of
//! collectives, transfers and the region-wide matrix schemes built from them
//! (MeshGEMV, MeshGEMM), and the placed program of a region that ties them
//! together.
//!
//! Invariants: `sim` never touches files and knows nothing about transformers.
//! A reduction is charged from the tree shape its schedule executes
//! ([`schedule::TreeShape`]), so what is executed is what is charged. The cost
//! model and its fitted constants are documented in `docs/cost-model.md`.

pub mod collective;
pub mod cost;
pub mod error;
pub mod fabric;
pub mod matrix;
pub mod program;
pub mod schedule;
pub mod tiling;
pub mod transfer;

pub use collective::{Algorithm, Line};
pub use cost::{Category, Cost};
pub use error::SimError;
pub use schedule::{Schedule, Transfer, TreeShape};
