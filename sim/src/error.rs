//! Errors of the simulated machine.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SimError {
    #[error("invalid collective: {0}")]
    InvalidCollective(String),
}
