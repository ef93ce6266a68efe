//! What one processing element does: the numeric kernels a PE runs on its own
//! SRAM-resident tiles, each paired with its cycle cost derived from the spec.
//!
//! Architecture invariant: kernels know one PE and nothing else — no mesh, no
//! model. Costs come only from `wafer_core::WaferSpec` fields.
