//! The fabric in time: a discrete-event, wavelet-level simulator that executes
//! placed programs on routers, links, queues and PEs — a third executor of the
//! placed program, beside the functional executor and the analytic pricer.
//!
//! - [`engine`]: the machine — five-port routers with static per-colour routes
//!   and the spec's colour limit, per-colour buffers and the spec's PE queue
//!   depths, one 32-bit wavelet per link direction per cycle, hop and ramp
//!   latency, back-pressure; PEs running tasks to completion under a picker.
//!   Events are ordered by `(cycle, sequence)`, so runs are deterministic, and
//!   the cost of a run grows with wavelet-hops and tasks, not PEs x cycles.
//! - [`programs`]: fabric programs generated from the placed program's own
//!   descriptions — a step's kernels (their cycles from `wafer-kernels`) and its
//!   collective, reduced on the [`crate::Schedule`] of the step's tree, then
//!   broadcast back for an allreduce. MeshGEMV is [`crate::matrix::mesh_gemv_program`]'s
//!   step run here; MeshGEMM's step of Cannon rounds runs on interleaved rings
//!   ([`programs::cannon_program`]); [`programs::row_shift_program`] is the
//!   shift-then-broadcast microbenchmark.
//! - [`ring`]: the ring allreduce (reduce-scatter, then all-gather) around
//!   the interleaved ring of every line of a region.
//! - [`transfer`]: transfers between regions (parallel lines across the
//!   fabric) and between wafers (the off-wafer link, then the destination's
//!   replication), timing-only.
//! - [`layer`]: a whole region program (every step of a layer, in order, on
//!   static routes shared by the collectives of one pattern) as one fabric
//!   program, run timing-only.
//! - [`prefill`]: a prefill layer's program (Cannon steps and the region
//!   programs between them), timing-only.
//! - [`trace`]: an optional recorder of a run (each PE's tasks, operations
//!   and waits, each link's busy intervals, each queue's peak) and its Chrome
//!   trace-event JSON (`docs/trace-tutorial.md`).
//!
//! What is modelled and what is assumed: `docs/fabric.md`.

pub mod engine;
pub mod layer;
pub mod prefill;
pub mod programs;
pub mod ring;
pub mod trace;
pub mod transfer;

pub use engine::{
    run, Colour, Combine, Dir, DirSet, FabricParams, FabricProgram, FabricRun, Launch, Op, Packing,
    PeProgram, Route, RunOptions, Task, Trigger,
};
pub use layer::{region_fabric, simulate_region, RegionFabric};
pub use prefill::{simulate_cannon, simulate_prefill_layer, PrefillRun};
pub use programs::{column_allreduce_step, simulate_step, step_program, StepProgram};
pub use ring::ring_allreduce_program;
pub use transfer::{simulate_transfer, TransferRun};

use thiserror::Error;

/// Why a program cannot run on the fabric.
#[derive(Debug, Error, PartialEq)]
pub enum FabricError {
    #[error("the program uses {used} colours (highest id {highest}); the {hw} router has {limit}")]
    TooManyColours {
        used: usize,
        highest: u32,
        limit: u32,
        hw: String,
    },
    #[error("invalid fabric program: {0}")]
    InvalidProgram(String),
    #[error("not simulated on the fabric: {0}")]
    Unsupported(String),
    #[error("too large for the fabric simulator: {0}")]
    TooLarge(String),
    #[error("the fabric program deadlocked: {0}")]
    Deadlock(String),
    #[error(transparent)]
    Sim(#[from] crate::SimError),
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_transfers;
