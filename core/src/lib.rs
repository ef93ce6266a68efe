//! Vocabulary of the wafer simulator: the hardware spec, coordinates and regions
//! on the PE mesh, data types, and the cycle and byte units everything else counts in.
//!
//! Architecture invariant: this crate is plain data. It does no I/O (TOML arrives as
//! a string), and it knows nothing of transformers, kernels or collectives.

pub mod coord;
pub mod dtype;
pub mod error;
pub mod spec;
pub mod units;

pub use coord::{PeCoord, Region, RegionShape};
pub use dtype::DType;
pub use error::{CoreError, Result};
pub use spec::WaferSpec;
pub use units::{Bytes, Cycles};
