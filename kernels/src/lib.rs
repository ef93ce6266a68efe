//! What one processing element does: the numeric kernels a PE runs on its own
//! SRAM-resident tiles, each paired with its cycle cost derived from the spec.
//!
//! Architecture invariant: kernels know one PE and nothing else — no mesh, no
//! model. Costs come only from `wafer_core::WaferSpec` fields (SIMD widths, memory
//! ports, and the fitted `cost` block documented in `docs/cost-model.md`).
//!
//! Every kernel has two halves that must stay in step: a numeric function on
//! slices (f32 arithmetic, fp16 weights as `half::f16`) and a `*_cycles` function
//! giving what that call costs one PE.

pub mod attention;
pub mod cost;
pub mod format;
pub mod kernel;
pub mod matrix;
pub mod vector;

pub use cost::{vector_op_cycles, SimdOp};
pub use kernel::Kernel;
