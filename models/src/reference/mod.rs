//! The dense reference forward pass of a Llama-family model on the CPU: the
//! path every other engine in the project is checked against.

pub mod model;
pub mod ops;
pub mod qdot;
pub mod rope;
pub mod team;

pub use model::ReferenceModel;
