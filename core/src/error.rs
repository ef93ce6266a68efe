//! Errors of the vocabulary crate: invalid specs, regions and shapes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// A spec field holds a value outside its valid range.
    #[error("invalid hardware spec field `{field}`: {problem}")]
    InvalidSpec { field: String, problem: String },
    /// A TOML spec file could not be parsed or names an unknown field.
    #[error("cannot read hardware spec {source_name}: {message}")]
    SpecParse {
        source_name: String,
        message: String,
    },
    #[error(
        "unknown hardware preset `{0}` (expected one of: wse3, wse2, or a path to a .toml file)"
    )]
    UnknownPreset(String),
    #[error("invalid region: {0}")]
    InvalidRegion(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
