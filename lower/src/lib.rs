//! The lowering of a transformer onto the wafer, and everything that reads it:
//! one tiling of every tensor (`tiling`), a layer's decode step as a placed
//! program (`program`), placement of the whole model onto regions and wafers with
//! its SRAM accounting (`placement`, `layout`), the analytic pricing of the
//! programs (`cost`), the estimate built from them (`estimate`) and the serving
//! planner that searches estimates for a target (`plan`).
//!
//! Invariants: it knows model configs (`wafer_models::ModelConfig`) and hardware
//! specs, never weights or files; placement counts bytes from the same tiles the
//! mesh engine stores, and pricing charges the same steps the mesh runs — there is
//! no second tiling or second step list.

pub mod cost;
pub mod estimate;
pub mod fabric;
pub mod layout;
pub mod placement;
pub mod plan;
pub mod program;
pub mod tiling;

pub use program::{decode_layer_program, layer_pass_program, prefill_layer_program, LayerProgram};
pub use tiling::{final_norm_tiling, has_o_bias, table_tiling, LayerTiling};
