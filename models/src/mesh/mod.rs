//! The mesh engine: executes a Llama-family model as a dataflow program on the
//! simulated wafer. Each layer's weights are cut into 16-bit per-PE tiles on the
//! layer's region (from the placement's `Layout`), the KV cache is spread over the
//! region's PEs along the sequence, every PE computes on its own tiles, and
//! partial sums travel along region rows and columns with checked reduction
//! schedules in the order the cost model charges for.

pub mod attention;
pub mod collective;
pub mod gemv;
pub mod heads;
pub mod tiling;
