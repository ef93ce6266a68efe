//! The lowering of a transformer onto the wafer: one tiling of every tensor
//! ([`tiling`]) and, for a decoder layer on a region, the placed program one
//! decode step runs there ([`decode`]). Placement counts SRAM from the tiling,
//! the cost plan prices the program's steps, and the mesh engine cuts its tiles
//! by the tiling and runs the program's steps, so none of them lays the model
//! out on its own.

pub mod decode;
pub mod tiling;

pub use decode::{decode_layer_program, LayerProgram};
pub use tiling::{final_norm_tiling, has_o_bias, table_tiling, LayerTiling};
