//! Lowering a transformer onto placed regions as a list of costed operations:
//! one decode step (batch 1, KV length T) and the prefill of an N-token prompt.
//!
//! The plan is data, built by one function per phase ([`decode_plan`],
//! [`prefill_plan`]) that both `wafer estimate` and the mesh engine call, so the
//! cycles they report are the same numbers. Every operation records its kind, its
//! layer, the region shape and per-PE work it was costed with, and its cost split
//! into compute / fabric / sync / off-wafer cycles; the kernels and collectives
//! that produce those cycles live in `wafer-kernels` and `wafer-sim`.
//!
//! Layers sharing a region run one after another and batch is 1, so a plan's
//! total is the plain sum of its operations.
//!
//! Time-to-first-token is the cheaper of two prefill schemes ([`prefill`]): the
//! MeshGEMM prefill ([`gemm_prefill_plan`]) and the prompt run through the decode
//! lowering one token at a time ([`token_prefill`]).
//!
//! Speculative decoding ([`verify_plan`], [`speculation`]) prices a verification
//! step of K + 1 tokens as the streamed pass through the decode tiling.

mod decode;
mod options;
mod prefill;
mod speculate;
mod token_prefill;

pub use decode::{decode_layer_with, decode_plan, decode_plan_with, price_layer, tree_for};
pub use options::{PlanOptions, MAX_REDUCE_K};
pub use prefill::{
    gemm_prefill_plan, prefill, prefill_bytes_per_pe, prefill_chunking, prefill_layer_with,
    stream_prefill_plan, Chunking, Prefill, PrefillScheme,
};
pub use speculate::{
    expected_tokens_per_verify, speculation, verify_plan, SpeculateError, Speculation,
    MAX_SPECULATE_K,
};
pub use token_prefill::{token_prefill, TokenPrefill};

use serde::Serialize;
use wafer_core::Cycles;
use wafer_sim::{Category, Cost};

/// What an operation of the plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Embedding,
    RmsNorm,
    QkvProj,
    QkNorm,
    Rope,
    KvAppend,
    AttnScores,
    SoftmaxMax,
    SoftmaxSum,
    AttnValues,
    OProj,
    Residual,
    GateUpProj,
    SiluMul,
    DownProj,
    Handoff,
    FinalNorm,
    LmHead,
    Argmax,
    TokenLoopback,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding lookup",
            OpKind::RmsNorm => "rmsnorm",
            OpKind::QkvProj => "q/k/v projection",
            OpKind::QkNorm => "q/k head norm",
            OpKind::Rope => "rope",
            OpKind::KvAppend => "kv append",
            OpKind::AttnScores => "attention scores",
            OpKind::SoftmaxMax => "softmax max",
            OpKind::SoftmaxSum => "softmax exp-sum",
            OpKind::AttnValues => "attention x V",
            OpKind::OProj => "o projection",
            OpKind::Residual => "residual add",
            OpKind::GateUpProj => "gate/up projection",
            OpKind::SiluMul => "silu * up",
            OpKind::DownProj => "down projection",
            OpKind::Handoff => "hand-off to next region",
            OpKind::FinalNorm => "final norm",
            OpKind::LmHead => "lm head",
            OpKind::Argmax => "argmax",
            OpKind::TokenLoopback => "token to embedding",
        }
    }
}

/// How a collective of an operation runs: along which line, carrying what.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CommShape {
    /// PEs in the line the reduction or broadcast runs along.
    pub line_pes: u32,
    /// Values each PE contributes.
    pub values_per_pe: u64,
}

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    pub kind: OpKind,
    /// Decoder layer, or `None` for the embedding, the head and the loop-back.
    pub layer: Option<u32>,
    /// Elements (or MACs for matrix kernels) each PE computes on.
    pub work_per_pe: u64,
    /// The collective of this operation, if it has one.
    pub comm: Option<CommShape>,
    pub cost: Cost,
}

/// One costed phase: an operation's cycles in one category.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    pub kind: OpKind,
    pub layer: Option<u32>,
    pub category: Category,
    pub cycles: Cycles,
}

/// A lowered step (decode) or prompt (prefill): operations in execution order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub ops: Vec<Op>,
}

impl Plan {
    pub fn push(
        &mut self,
        kind: OpKind,
        layer: Option<u32>,
        work_per_pe: u64,
        comm: Option<CommShape>,
        cost: Cost,
    ) {
        self.ops.push(Op {
            kind,
            layer,
            work_per_pe,
            comm,
            cost,
        });
    }

    pub fn total(&self) -> Cycles {
        self.ops.iter().map(|o| o.cost.total()).sum()
    }

    pub fn cost(&self) -> Cost {
        self.ops.iter().fold(Cost::default(), |a, o| a + o.cost)
    }

    /// Every non-zero (operation, category) pair, in execution order.
    pub fn phases(&self) -> impl Iterator<Item = Phase> + '_ {
        self.ops.iter().flat_map(|o| {
            Category::ALL.into_iter().filter_map(move |category| {
                let cycles = o.cost.get(category);
                (cycles.get() > 0.0).then_some(Phase {
                    kind: o.kind,
                    layer: o.layer,
                    category,
                    cycles,
                })
            })
        })
    }

    /// Cost summed per operation kind, in first-appearance order.
    pub fn by_kind(&self) -> Vec<(OpKind, Cost)> {
        let mut out: Vec<(OpKind, Cost)> = Vec::new();
        for o in &self.ops {
            match out.iter_mut().find(|(k, _)| *k == o.kind) {
                Some((_, c)) => *c += o.cost,
                None => out.push((o.kind, o.cost)),
            }
        }
        out
    }

    /// Total cycles of each decoder layer (index = layer).
    pub fn by_layer(&self, layers: usize) -> Vec<Cycles> {
        let mut out = vec![Cycles::ZERO; layers];
        for o in &self.ops {
            if let Some(l) = o.layer {
                out[l as usize] += o.cost.total();
            }
        }
        out
    }
}
