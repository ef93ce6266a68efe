//! Errors of the simulated machine.

use thiserror::Error;
use wafer_core::{Bytes, PeCoord};

#[derive(Debug, Error, PartialEq)]
pub enum SimError {
    /// A PE was asked to hold more than its data SRAM.
    #[error("PE {pe} is out of SRAM: {what} needs {need} but only {free} of its {budget} remain")]
    SramExceeded {
        pe: PeCoord,
        what: String,
        need: Bytes,
        free: Bytes,
        budget: Bytes,
    },
    #[error("invalid collective: {0}")]
    InvalidCollective(String),
}
