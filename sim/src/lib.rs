//! The simulated machine: PEs with SRAM accounting, the fabric, collectives
//! (broadcast / reduce / allreduce / shift / transfers) and the region-wide matrix
//! schemes built from them (MeshGEMV, MeshGEMM).
//!
//! Every collective has a functional implementation (real f32 values moved
//! between per-PE buffers in the algorithm's order) and a closed-form cost from
//! spec fields. The cost model and its fitted constants are documented in
//! `docs/cost-model.md`.
//!
//! Architecture invariant: `sim` never touches files and knows nothing about
//! transformers.

pub mod collective;
pub mod cost;
pub mod error;
pub mod matrix;
pub mod mesh;
pub mod transfer;

pub use collective::{Algorithm, Line};
pub use cost::{Category, Cost};
pub use error::SimError;
pub use mesh::Mesh;
