//! `wafer estimate` from shapes alone: lower a model onto a layout and report
//! decode cycles per token at KV length T, time-to-first-token for an N-token
//! prompt, and the breakdowns. Closed-form per layer (no per-PE loops), so a
//! 405B-shaped model at 131,072 tokens takes milliseconds.
//!
//! The layout is the one `wafer place` computes ([`crate::placement::place`]) for
//! the same model, hardware, region, wafer count and context, so `wafer estimate`
//! and `wafer generate --engine mesh` cost the same placement.
//!
//! Time-to-first-token is the cheaper prefill scheme ([`crate::cost::prefill`]:
//! MeshGEMM, or the prompt as decode steps); the estimate says which. Lowering
//! choices that are not part of the placement (the reduction tree's K) come as
//! [`PlanOptions`] through [`estimate_with`]; [`estimate`] uses the defaults.
//!
//! Several users in flight ([`estimate_for_users`]): the placement holds every
//! user's KV cache, and the users are pipelined over the regions, one token of
//! one user per region at a time ([`Pipeline`]): a user's token takes the
//! decode step's latency, and the pipeline completes at most one token per
//! slowest stage time, so aggregate tokens/s =
//! `min(B / decode latency, 1 / slowest stage)` and per-user = aggregate / B.
//!
//! Time to first token under load ([`ttft_under_load`]): a new user's prompt
//! arrives while the other B - 1 users decode. Each region runs the prefill's
//! work for its layers in the time the decode tokens in flight leave it: the
//! B - 1 users keep region r busy a fraction `u_r = rate x decode stage_r`
//! (rate = their aggregate tokens per cycle), so its prefill work takes
//! `prefill_r / max(1 - u_r, 1 / B)` — the prefill is never starved below a
//! fair 1/B share of a region (round robin between the prefill and the B - 1
//! tokens), which bounds it when the pipeline is saturated.

use crate::cost::{decode_plan_with, prefill, Chunking, Plan, PlanOptions, PrefillScheme};
use crate::layout::{Layout, Site};
use crate::placement::{place_for_users, PlaceOptions, Placement, Strategy, MAX_USERS};
use anyhow::{bail, Result};
use serde::Serialize;
use wafer_core::{Bytes, Cycles, RegionShape, WaferSpec};
use wafer_models::config::ModelConfig;

/// What to estimate.
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    /// `None`: the smallest number of wafers that holds the model at the context.
    pub wafers: Option<u32>,
    /// `None`: the region the placement search chooses.
    pub region: Option<RegionShape>,
    pub strategy: Strategy,
    /// KV length of the decode step.
    pub context: usize,
    pub prompt_tokens: usize,
}

/// Whether the placement fits the PEs' SRAM.
#[derive(Debug, Clone, Serialize)]
pub struct SramCheck {
    pub fits: bool,
    /// Bytes the fullest PE holds (weights, KV cache at the context, buffers, reserve).
    pub bytes_per_pe: Bytes,
    /// A PE's SRAM.
    pub budget_per_pe: Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub hw: String,
    pub region: RegionShape,
    pub wafers: u32,
    pub regions: u32,
    pub layers_per_region: u32,
    pub context: usize,
    pub prompt_tokens: usize,
    pub sram: SramCheck,
    /// K of the reduction trees the plans were lowered with.
    pub reduce_k: u32,
    pub decode: Plan,
    /// The chosen prefill scheme's plan; its total is `ttft_cycles`.
    pub prefill: Plan,
    pub prefill_scheme: PrefillScheme,
    /// The MeshGEMM prefill's total (= `ttft_cycles` when it was chosen);
    /// `None` when not even a chunk of the prompt fits the PEs.
    pub prefill_gemm_cycles: Option<Cycles>,
    /// How the MeshGEMM prefill splits the prompt to fit.
    pub prefill_gemm_chunking: Option<Chunking>,
    /// The streamed prefill's total and chunks (`None`: not even one token's
    /// buffers fit).
    pub prefill_stream_cycles: Option<Cycles>,
    pub prefill_stream_chunking: Option<Chunking>,
    /// The token-by-token prefill's total when `prefill_token_by_token_exact`;
    /// otherwise a lower bound on it that already reached the MeshGEMM cost (it
    /// was not evaluated further).
    pub prefill_token_by_token_cycles: Cycles,
    pub prefill_token_by_token_exact: bool,
    pub decode_cycles_per_token: Cycles,
    pub decode_tokens_per_s: f64,
    pub ttft_cycles: Cycles,
    pub ttft_ms: f64,
    pub prefill_tokens_per_s: f64,
    /// With more than one user in flight: the pipelined figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<UsersEstimate>,
    /// The layout the figures were priced on (the placement's), for what
    /// prices more on it (the fabric simulator, speculation).
    #[serde(skip)]
    pub layout: Layout,
}

/// The decode of `users` sequences pipelined over the regions.
#[derive(Debug, Clone, Serialize)]
pub struct UsersEstimate {
    pub users: u64,
    pub per_user_tokens_per_s: f64,
    pub aggregate_tokens_per_s: f64,
    /// The most users whose KV caches fit at the context on the same wafers
    /// (same region and strategy options), at most [`MAX_USERS`].
    pub max_users: u64,
    /// The pipeline's stages and its throughput bound.
    pub pipeline: Pipeline,
    /// Time to first token of a new user's prompt while the other `users - 1`
    /// decode ([`ttft_under_load`]).
    pub ttft_under_load_cycles: Cycles,
    pub ttft_under_load_ms: f64,
}

/// One stage of the decode pipeline: a region (site) and the cycles its PEs
/// are busy per token (its layers, the hand-off out of it, and the embedding
/// or head work when it holds them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stage {
    pub site: Site,
    pub cycles: Cycles,
}

/// The decode step split into the stages that can work on different users'
/// tokens at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
    /// One token of one user through every stage: the decode plan's total.
    pub latency_cycles: Cycles,
    /// The busiest stage's cycles per token.
    pub slowest_stage_cycles: Cycles,
}

impl Pipeline {
    /// The stages of `plan` (a decode step on `layout`): each operation is
    /// charged to the site that runs it — a layer's operations and the
    /// hand-off after it to the layer's site, the operations before the first
    /// layer to the embedding's, those after the last to the LM head's. Every
    /// site is one stage, however many of the plan's operations it runs.
    pub fn of(plan: &Plan, layout: &Layout) -> Pipeline {
        let mut stages: Vec<Stage> = Vec::new();
        let mut seen_layer = false;
        for op in &plan.ops {
            let site = match op.layer {
                Some(l) => {
                    seen_layer = true;
                    layout.layers[l as usize]
                }
                None if seen_layer => layout.lm_head,
                None => layout.embedding,
            };
            match stages.iter_mut().find(|s| s.site == site) {
                Some(s) => s.cycles += op.cost.total(),
                None => stages.push(Stage {
                    site,
                    cycles: op.cost.total(),
                }),
            }
        }
        let slowest = stages
            .iter()
            .map(|s| s.cycles)
            .fold(Cycles::ZERO, |a, b| if b > a { b } else { a });
        Pipeline {
            stages,
            latency_cycles: plan.total(),
            slowest_stage_cycles: slowest,
        }
    }

    /// Tokens per second of all `users` together at `clock_hz`:
    /// `min(users / latency, 1 / slowest stage)`.
    pub fn aggregate_tokens_per_s(&self, users: u64, clock_hz: f64) -> f64 {
        let filled = users as f64 * clock_hz / self.latency_cycles.get();
        let bound = clock_hz / self.slowest_stage_cycles.get();
        filled.min(bound)
    }
}

/// Cycles of the prefill `prefill` (a plan on `layout`) when it arrives while
/// `users - 1` other users decode on the pipeline `decode` (the same layout):
/// each region's share of the prefill, `prefill_r`, runs in the time the decode
/// leaves free there, at least a fair `1 / users` of it:
///
/// `sum_r prefill_r / max(1 - rate x decode_r, 1 / users)`, with
/// `rate = min((users - 1) / latency, 1 / slowest stage)` tokens per cycle.
///
/// One user is the prefill alone (its plan's total). More users never lower it:
/// the rate grows and the fair share shrinks with `users`.
pub fn ttft_under_load(prefill: &Plan, decode: &Pipeline, layout: &Layout, users: u64) -> Cycles {
    let users = users.max(1);
    let others = (users - 1) as f64;
    let rate = if others == 0.0 {
        0.0
    } else {
        (others / decode.latency_cycles.get()).min(1.0 / decode.slowest_stage_cycles.get())
    };
    let fair = 1.0 / users as f64;
    Pipeline::of(prefill, layout)
        .stages
        .iter()
        .map(|p| {
            let busy = decode
                .stages
                .iter()
                .find(|d| d.site == p.site)
                .map_or(0.0, |d| rate * d.cycles.get());
            p.cycles / (1.0 - busy).max(fair)
        })
        .fold(Cycles::ZERO, |a, b| a + b)
}

/// Lowers decode and prefill on `layout` and gathers the figures.
fn gather(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
    sram: SramCheck,
) -> Result<Estimate> {
    let decode = decode_plan_with(spec, cfg, layout, opts.context.max(1), plan_opts);
    let pre = prefill(spec, cfg, layout, opts.prompt_tokens.max(1), plan_opts)?;
    let prefill = pre.plan;
    let d = decode.total();
    let t = prefill.total();
    let shape = layout.layers[0].region.shape;
    let mut sites = layout.layers.clone();
    sites.dedup();
    Ok(Estimate {
        hw: spec.name.clone(),
        region: shape,
        wafers: layout.wafers(),
        regions: sites.len() as u32,
        layers_per_region: (layout.layers.len() as u32).div_ceil(sites.len() as u32),
        context: opts.context,
        prompt_tokens: opts.prompt_tokens,
        sram,
        decode_tokens_per_s: spec.clock_hz / d.get(),
        ttft_ms: t.seconds_at(spec.clock_hz) * 1e3,
        prefill_tokens_per_s: opts.prompt_tokens.max(1) as f64 / t.seconds_at(spec.clock_hz),
        decode_cycles_per_token: d,
        ttft_cycles: t,
        reduce_k: plan_opts.reduce_k(),
        decode,
        prefill,
        prefill_scheme: pre.scheme,
        prefill_gemm_cycles: pre.gemm_cycles,
        prefill_gemm_chunking: pre.gemm_chunking,
        prefill_stream_cycles: pre.stream_cycles,
        prefill_stream_chunking: pre.stream_chunking,
        prefill_token_by_token_cycles: pre.token_by_token_cycles,
        prefill_token_by_token_exact: pre.token_by_token_exact,
        users: None,
        layout: layout.clone(),
    })
}

/// The placement the estimate (and the mesh engine) runs on: `wafer place` with
/// the same options, accounted for the longer of the decode context and the prompt.
pub fn placement_for(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
) -> Result<Placement> {
    placement_for_users(spec, cfg, opts, 1)
}

/// [`placement_for`] holding the KV caches of `users` sequences.
pub fn placement_for_users(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
    users: u64,
) -> Result<Placement> {
    let po = place_options(opts);
    let placement = place_for_users(cfg, spec, &po, users)?;
    if !placement.fits() {
        let of_users = if users > 1 {
            format!(" for {users} users")
        } else {
            String::new()
        };
        bail!(
            "the model does not fit on {} {} wafer(s) at {} tokens of context{of_users} (this placement holds at most {}); \
             run `wafer place` with the same options to see which PE overflows and what would fit",
            placement.wafers,
            spec.name,
            po.context_tokens,
            placement.max_context_tokens
        );
    }
    Ok(placement)
}

fn place_options(opts: &EstimateOptions) -> PlaceOptions {
    PlaceOptions {
        context_tokens: opts.context.max(opts.prompt_tokens).max(1) as u64,
        region: opts.region,
        wafers: opts.wafers,
        strategy: opts.strategy,
    }
}

/// The most users (at least `at_least`, which fits; at most [`MAX_USERS`]) whose
/// KV caches fit at the context on `wafers` wafers with `opts`' region and
/// strategy: a binary search over placements (fitting is monotone in the
/// users, since each adds the same bytes to every layer's PEs).
pub fn max_users(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
    wafers: u32,
    at_least: u64,
) -> u64 {
    let po = PlaceOptions {
        wafers: Some(wafers),
        ..place_options(opts)
    };
    let fits = |b: u64| place_for_users(cfg, spec, &po, b).is_ok_and(|p| p.fits());
    let (mut lo, mut hi) = (at_least.clamp(1, MAX_USERS), MAX_USERS);
    if fits(hi) {
        return hi;
    }
    // fits(lo) (or lo is the floor), !fits(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The estimate on the placement `wafer place` would choose for these options,
/// with the default lowering options.
pub fn estimate(spec: &WaferSpec, cfg: &ModelConfig, opts: &EstimateOptions) -> Result<Estimate> {
    estimate_with(spec, cfg, opts, &PlanOptions::default())
}

/// [`estimate`] with explicit lowering options (e.g. the reduction tree's K).
pub fn estimate_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
) -> Result<Estimate> {
    estimate_for_users(spec, cfg, opts, plan_opts, 1)
}

/// [`estimate_with`] for `users` sequences in flight (1..=[`MAX_USERS`]): the
/// placement holds all their KV caches, and with more than one user the
/// estimate carries the pipelined figures ([`UsersEstimate`]); with one it is
/// [`estimate_with`]'s.
pub fn estimate_for_users(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
    users: u64,
) -> Result<Estimate> {
    if users == 0 || users > MAX_USERS {
        bail!("--users must be between 1 and {MAX_USERS}, found {users}");
    }
    let placement = placement_for_users(spec, cfg, opts, users)?;
    // The placement's per-PE accounting (the fullest PE, everything included).
    let (fullest, _) = placement.pe_summary();
    let sram = SramCheck {
        fits: placement.fits(),
        bytes_per_pe: Bytes(fullest.total()),
        budget_per_pe: Bytes(spec.pe.sram_bytes),
    };
    let layout = placement.layout();
    let mut e = gather(spec, cfg, &layout, opts, plan_opts, sram)?;
    if users > 1 {
        let pipeline = Pipeline::of(&e.decode, &layout);
        let aggregate = pipeline.aggregate_tokens_per_s(users, spec.clock_hz);
        let loaded = ttft_under_load(&e.prefill, &pipeline, &layout, users);
        e.users = Some(UsersEstimate {
            ttft_under_load_cycles: loaded,
            ttft_under_load_ms: loaded.seconds_at(spec.clock_hz) * 1e3,
            users,
            per_user_tokens_per_s: aggregate / users as f64,
            aggregate_tokens_per_s: aggregate,
            max_users: max_users(
                spec,
                cfg,
                opts,
                opts.wafers.unwrap_or(placement.wafers),
                users,
            ),
            pipeline,
        });
    }
    Ok(e)
}
