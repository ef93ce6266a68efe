//! The serving planner behind `wafer plan`: the other direction of the
//! estimate. Given targets (decode tokens/s per user at a context, optionally a
//! time to first token for a prompt, and the users in flight), it searches, for
//! each model, the wafer counts (fewest first, up to a bound), region shapes
//! ([`searched_shapes`]: the placement's own choice plus a bounded set of fixed
//! `--region` shapes), both placement strategies and the reduction tree's K,
//! and returns the best configurations that meet the targets — each with the
//! figures of the same library call `wafer estimate` makes
//! ([`estimate_for_users`]) and the `wafer estimate` flags that reproduce them
//! (`--region WxH` when the shape was a fixed one) — or, for a model with none,
//! the nearest configuration and what limits it ([`Limit`]).
//!
//! Pruning: a model's search starts at the fewest wafers that hold it at the
//! context (one placement search per strategy), stops at the first wafer count
//! where a configuration meets the targets (unless [`SearchOptions::all`]),
//! and skips a (wafers, shape, strategy) whose placement does not fit or
//! leaves wafers empty (the same pipeline as a smaller count's), and layouts
//! already priced on that wafer count (a fixed shape equal to the placement's
//! choice, layer per region equal to packed). Configurations are judged on the
//! decode plan alone (placement and [`decode_plan_with`], which lowers each
//! distinct region shape once); the full estimate, prefill included, runs only
//! for those meeting the decode rate, best first, until
//! [`SearchOptions::top`] distinct layouts also meet the time to first token
//! (each listed with the fastest K that does).
//!
//! With [`SearchOptions::most_users`] (`--users auto`) each layout meeting the
//! rate with one user is grown to the most users that fit and still each see
//! the target (`grow_users`), and candidates rank by aggregate tokens/s.

pub mod latency;

use crate::cost::{decode_plan_with, Plan, PlanOptions};
use crate::estimate::{estimate_for_users, EstimateOptions, Pipeline};
use crate::placement::{place_for_users, PlaceOptions, Strategy, MAX_USERS};
use anyhow::{bail, Context, Result};
use latency::{ClientAssumptions, ClientLatency};
use serde::Serialize;
use wafer_core::{RegionShape, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::Category;

/// The most wafers `--max-wafers` may ask the planner to search.
pub const MAX_PLAN_WAFERS: u32 = 256;
/// The reduction-tree K values searched (1 = chain, 2 = the MeshGEMV tree).
pub const SEARCHED_K: [u32; 4] = [1, 2, 3, 4];
/// The placement strategies searched.
pub const STRATEGIES: [Strategy; 2] = [Strategy::Packed, Strategy::LayerPerRegion];
/// Side of the smallest fixed square region searched, and the step between
/// the squares ([`searched_shapes`]), in PEs.
pub const SQUARE_STEP: u32 = 60;
/// The smallest fixed square searched is `2 x SQUARE_STEP` on a side.
pub const MIN_SQUARE: u32 = 2 * SQUARE_STEP;
/// The most fixed squares searched (the step widens on a larger fabric).
pub const MAX_SQUARES: u32 = 16;
/// Fixed grids searched: every wafer cut into `cols x rows` equal regions with
/// `cols` and `rows` up to this.
pub const MAX_GRID_SIDE: u32 = 4;
/// The most candidates (layouts, each with its best K) kept per model and
/// wafer count unless asked otherwise.
pub const DEFAULT_TOP: usize = 3;
/// The most candidates `--top` may keep per model and wafer count.
pub const MAX_TOP: usize = 1000;
/// The highest decode target accepted, tokens/s (a bound against unit mistakes).
pub const MAX_TARGET_TOKENS_PER_S: f64 = 1e9;

/// The `--strategy` name of `s`.
pub fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Packed => "packed",
        Strategy::LayerPerRegion => "layer-per-region",
    }
}

/// The fixed region shapes searched on `spec`'s fabric, besides the shape the
/// placement chooses itself on each wafer count:
///
/// - squares (WaferLLM runs each decode layer on a P x P region) from
///   [`MIN_SQUARE`] up to the fabric's shorter side in steps of
///   [`SQUARE_STEP`] PEs (widened to keep at most [`MAX_SQUARES`]);
/// - the regions of every wafer cut into `cols x rows` equal parts, `cols` and
///   `rows` from 1 to [`MAX_GRID_SIDE`] (whole-wafer, half-wafer, ... regions,
///   elongated ones included: the grids the automatic placement search
///   starts from, without idle edges).
///
/// Each shape once, squares first.
pub fn searched_shapes(spec: &WaferSpec) -> Vec<RegionShape> {
    let (fw, fh) = (spec.fabric.width_pes, spec.fabric.height_pes);
    let short = fw.min(fh);
    let mut out: Vec<RegionShape> = Vec::new();
    if short >= MIN_SQUARE {
        let count = (short - MIN_SQUARE) / SQUARE_STEP + 1;
        let step = SQUARE_STEP * count.div_ceil(MAX_SQUARES);
        let mut side = MIN_SQUARE;
        while side <= short {
            out.push(RegionShape {
                width: side,
                height: side,
            });
            side += step;
        }
    }
    for cols in 1..=MAX_GRID_SIDE.min(fw) {
        for rows in 1..=MAX_GRID_SIDE.min(fh) {
            let shape = RegionShape {
                width: fw / cols,
                height: fh / rows,
            };
            if !out.contains(&shape) {
                out.push(shape);
            }
        }
    }
    out
}

/// A model to plan for: how it is named on the command line, and its shape.
#[derive(Debug, Clone)]
pub struct PlanModel {
    /// The `--model` argument that names it (a preset or a path).
    pub arg: String,
    pub config: ModelConfig,
}

/// What a configuration must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// Decode tokens/s each user sees.
    pub tokens_per_s: f64,
    /// KV length of the decode step.
    pub context: usize,
    /// Most time to first token for a `prompt_tokens` prompt, when asked.
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: usize,
    /// Users in flight, each with its own KV cache at `context`.
    pub users: u64,
}

impl Targets {
    /// Refuses targets no search can answer, naming the flag.
    pub fn check(&self) -> Result<()> {
        let t = self.tokens_per_s;
        if !t.is_finite() || t <= 0.0 || t > MAX_TARGET_TOKENS_PER_S {
            bail!(
                "--tokens-per-s must be above 0 and at most {MAX_TARGET_TOKENS_PER_S}, found {t}"
            );
        }
        if let Some(ms) = self.ttft_ms {
            if !ms.is_finite() || ms <= 0.0 {
                bail!("--ttft-ms must be a positive number of milliseconds, found {ms}");
            }
        }
        if self.context == 0 {
            bail!("--context must be at least 1 token");
        }
        if self.prompt_tokens == 0 {
            bail!("--prompt-tokens must be at least 1 token");
        }
        if self.users == 0 || self.users > MAX_USERS {
            bail!(
                "--users must be between 1 and {MAX_USERS}, found {}",
                self.users
            );
        }
        Ok(())
    }
}

/// How far to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// The hardware as `--hw` names it (for the estimate flags).
    pub hw_arg: String,
    /// Wafer counts searched: 1..=max_wafers (at most [`MAX_PLAN_WAFERS`]).
    pub max_wafers: u32,
    /// Keep searching past the first wafer count that meets the targets.
    pub all: bool,
    /// Serve as many users as each configuration can (`--users auto`): the
    /// targets' users must be 1, and every layout meeting the rate with one
    /// user is grown to the most users that fit and still each see the target
    /// ([`Candidate::users`]); candidates rank by aggregate tokens/s.
    pub most_users: bool,
    /// The most candidates kept per model and wafer count (1 to [`MAX_TOP`]):
    /// the layouts (wafers, region, strategy) with the highest rates among the
    /// configurations meeting the targets, each with its fastest K that does.
    pub top: usize,
    /// What the client sees, when given.
    pub client: Option<ClientAssumptions>,
    /// Prompt-lookup speculative decoding, when given: the rate a
    /// configuration is judged on is its speculative rate
    /// ([`crate::cost::speculation`], drafting free).
    pub speculate: Option<SpeculateTarget>,
}

/// Speculative decoding a plan assumes: `k` drafts a step accepted at rate
/// `acceptance` (as `wafer estimate --speculate K --acceptance A`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeculateTarget {
    pub k: usize,
    pub acceptance: f64,
}

/// A candidate's speculation: what it assumed and the plain rate beside it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CandidateSpeculation {
    pub k: usize,
    pub acceptance: f64,
    /// Decode tokens/s without speculation.
    pub plain_decode_tokens_per_s: f64,
    pub speedup: f64,
}

/// A configuration that meets the targets, with the estimate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub model: String,
    pub wafers: u32,
    /// The region of each pipeline stage (serialised `WIDTHxHEIGHT`, as
    /// `wafer estimate --json` writes it).
    #[serde(serialize_with = "shape_text")]
    pub region: RegionShape,
    /// The fixed `--region` the search placed with (`None`: the placement
    /// chose the region itself on these wafers).
    #[serde(serialize_with = "optional_shape_text")]
    pub fixed_region: Option<RegionShape>,
    pub strategy: &'static str,
    pub k: u32,
    /// Users in flight: the targets', or with `--users auto` the most found.
    pub users: u64,
    pub context: usize,
    pub prompt_tokens: usize,
    /// The positions the model is trained for (`max_position_embeddings`): a
    /// context beyond it is a what-if of the shape, not of the model.
    pub trained_positions: usize,
    /// Decode tokens/s each user sees (the estimate's per-user rate; with one
    /// user its `decode_tokens_per_s`).
    pub decode_tokens_per_s: f64,
    /// All users together.
    pub aggregate_tokens_per_s: f64,
    pub ttft_ms: f64,
    /// How far above the decode target: rate / target - 1.
    pub margin: f64,
    /// The most users whose KV caches fit on these wafers at the context (the
    /// estimate's `max_users`), when it reported one (more than one user).
    pub max_users: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientLatency>,
    /// With speculation: `decode_tokens_per_s` is the speculative rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculation: Option<CandidateSpeculation>,
    /// `wafer estimate` flags that reproduce these figures.
    pub estimate_args: Vec<String>,
}

impl Candidate {
    /// The estimate options these figures came from.
    pub fn estimate_options(&self) -> Result<EstimateOptions> {
        Ok(EstimateOptions {
            wafers: Some(self.wafers),
            region: self.fixed_region,
            strategy: self.strategy.parse().map_err(anyhow::Error::msg)?,
            context: self.context,
            prompt_tokens: self.prompt_tokens,
        })
    }
}

fn shape_text<S: serde::Serializer>(shape: &RegionShape, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(shape)
}

fn optional_shape_text<S: serde::Serializer>(
    shape: &Option<RegionShape>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match shape {
        Some(shape) => s.collect_str(shape),
        None => s.serialize_none(),
    }
}

/// What keeps a model from the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// It does not fit in SRAM on at most `--max-wafers` wafers.
    Sram,
    /// The best decode step is mostly PE arithmetic.
    Compute,
    /// ... mostly hops: the fabric and the links between wafers.
    Communication,
    /// ... mostly the fixed latency of reduction levels and hand-offs.
    Sync,
    /// With several users, the slowest pipeline stage, not one token's latency,
    /// bounds each user's rate.
    Pipeline,
    /// The decode target is met, the time to first token is not.
    Ttft,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Sram => "sram",
            Limit::Compute => "compute",
            Limit::Communication => "communication",
            Limit::Sync => "sync",
            Limit::Pipeline => "pipeline",
            Limit::Ttft => "ttft",
        }
    }
}

/// A model with no configuration meeting the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub model: String,
    /// The nearest configuration (the highest decode rate found, or with
    /// [`Limit::Ttft`] the shortest time to first token among those meeting the
    /// rate); `None` when nothing fits.
    pub best: Option<Candidate>,
    pub limited_by: Limit,
    /// Shares of the best decode step: compute, communication (fabric and
    /// off-wafer), sync; `None` without a best.
    pub shares: Option<Shares>,
    /// One sentence on why.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shares {
    pub compute: f64,
    pub communication: f64,
    pub sync: f64,
}

impl Shares {
    fn of(plan: &Plan) -> Shares {
        let c = plan.cost();
        let total = c.total().get().max(f64::MIN_POSITIVE);
        Shares {
            compute: c.get(Category::Compute).get() / total,
            communication: (c.get(Category::Fabric).get() + c.get(Category::OffWafer).get())
                / total,
            sync: c.get(Category::Sync).get() / total,
        }
    }

    fn dominant(&self) -> Limit {
        if self.compute >= self.communication && self.compute >= self.sync {
            Limit::Compute
        } else if self.communication >= self.sync {
            Limit::Communication
        } else {
            Limit::Sync
        }
    }
}

/// One model's answer: its candidates (fewest wafers first, then the largest
/// margin), or why it has none.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPlan {
    pub model: String,
    pub candidates: Vec<Candidate>,
    pub miss: Option<Miss>,
    /// Configurations (wafers x region x strategy x K) whose decode step was
    /// priced.
    pub configurations_priced: usize,
    /// Of those, the ones whose decode rate met the target (the candidates
    /// are the best [`SearchOptions::top`] layouts per wafer count among them
    /// that also meet the time to first token).
    pub configurations_meeting_rate: usize,
}

/// A configuration judged on its decode plan.
#[derive(Clone)]
struct Probe {
    opts: EstimateOptions,
    /// Users in flight (the targets', or with `most_users` the most found).
    users: u64,
    /// All users together: `rate x users`.
    aggregate: f64,
    /// Which layout of its wafer count it priced (an index into those seen).
    layout: usize,
    k: u32,
    rate: f64,
    limit: Limit,
    shares: Shares,
}

/// Decode tokens/s one of `users` users sees on `plan` (the estimate's
/// per-user rate), and whether the slowest stage bounds it.
pub fn per_user_rate(
    spec: &WaferSpec,
    plan: &Plan,
    layout_pipeline: &Pipeline,
    users: u64,
) -> (f64, bool) {
    if users <= 1 {
        return (spec.clock_hz / plan.total().get(), false);
    }
    let aggregate = layout_pipeline.aggregate_tokens_per_s(users, spec.clock_hz);
    let filled = users as f64 * spec.clock_hz / layout_pipeline.latency_cycles.get();
    (aggregate / users as f64, aggregate < filled)
}

/// Where a (shape, strategy) pair starts: the fewest wafers holding `cfg`
/// at the context on it (`None` shape: the placement's own choice), for every
/// pair that fits on at most `max_wafers`, with the reason when the
/// placement's own choice fits on none.
fn starts(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    t: &Targets,
    shapes: &[Option<RegionShape>],
    max_wafers: u32,
) -> (Vec<Start>, String) {
    let mut out = Vec::new();
    let mut why = Vec::new();
    for &region in shapes {
        for s in STRATEGIES {
            let po = PlaceOptions {
                context_tokens: t.context.max(t.prompt_tokens) as u64,
                region,
                wafers: None,
                strategy: s,
            };
            let placed = place_for_users(cfg, spec, &po, t.users);
            if let Ok(p) = &placed {
                if p.fits() && p.wafers <= max_wafers {
                    out.push(Start {
                        strategy: s,
                        region,
                        wafers: p.wafers,
                    });
                }
            }
            if region.is_some() {
                continue;
            }
            match placed {
                Ok(p) if p.fits() && p.wafers <= max_wafers => {}
                Ok(p) if p.fits() => {
                    why.push(format!("{} needs {} wafers", strategy_name(s), p.wafers))
                }
                Ok(_) => why.push(format!("{}: no placement fits", strategy_name(s))),
                Err(e) => why.push(format!("{}: {e}", strategy_name(s))),
            }
        }
    }
    (out, why.join("; "))
}

/// A (strategy, shape) pair the search prices, from `wafers` wafers up.
#[derive(Debug, Clone, Copy)]
struct Start {
    strategy: Strategy,
    /// `None`: the region the placement chooses on each wafer count.
    region: Option<RegionShape>,
    wafers: u32,
}

/// Plans one model: see the module doc.
pub fn plan_model(
    spec: &WaferSpec,
    model: &PlanModel,
    t: &Targets,
    o: &SearchOptions,
) -> Result<ModelPlan> {
    t.check()?;
    if o.max_wafers == 0 || o.max_wafers > MAX_PLAN_WAFERS {
        bail!(
            "--max-wafers must be between 1 and {MAX_PLAN_WAFERS}, found {}",
            o.max_wafers
        );
    }
    if o.speculate.is_some() && t.users > 1 {
        bail!("--speculate prices one user's decode; drop --users or --speculate");
    }
    if o.most_users && o.speculate.is_some() {
        bail!("--users auto searches the users, --speculate prices one user's decode; drop one");
    }
    if o.most_users && t.users != 1 {
        bail!(
            "--users auto grows the users from 1, found a target of {} users",
            t.users
        );
    }
    if o.top == 0 || o.top > MAX_TOP {
        bail!("--top must be between 1 and {MAX_TOP}, found {}", o.top);
    }
    let cfg = &model.config;
    let shapes: Vec<Option<RegionShape>> = std::iter::once(None)
        .chain(searched_shapes(spec).into_iter().map(Some))
        .collect();
    let (starts, why) = starts(spec, cfg, t, &shapes, o.max_wafers);
    let mut plan = ModelPlan {
        model: model.arg.clone(),
        candidates: Vec::new(),
        miss: None,
        configurations_priced: 0,
        configurations_meeting_rate: 0,
    };
    let Some(first) = starts.iter().map(|s| s.wafers).min() else {
        let users = if t.users > 1 {
            format!(" for {} users", t.users)
        } else {
            String::new()
        };
        plan.miss = Some(Miss {
            model: model.arg.clone(),
            best: None,
            limited_by: Limit::Sram,
            shares: None,
            detail: format!(
                "does not fit in SRAM on at most {} {} wafer(s) at {} tokens of context{users} ({why})",
                o.max_wafers, spec.name, t.context.max(t.prompt_tokens)
            ),
        });
        return Ok(plan);
    };
    let mut best: Option<Probe> = None;
    // Among configurations meeting the decode target but not the TTFT: the
    // one with the shortest TTFT.
    let mut best_ttft: Option<Candidate> = None;
    for w in first..=o.max_wafers {
        let mut seen: Vec<crate::layout::Layout> = Vec::new();
        let mut meeting: Vec<Probe> = Vec::new();
        for st in &starts {
            if w < st.wafers {
                continue;
            }
            let opts = EstimateOptions {
                wafers: Some(w),
                region: st.region,
                strategy: st.strategy,
                context: t.context,
                prompt_tokens: t.prompt_tokens,
            };
            let Ok(placement) = crate::estimate::placement_for_users(spec, cfg, &opts, t.users)
            else {
                continue;
            };
            // Some wafers left empty: the same pipeline as a smaller count's
            // (whether more wafers are used again is not monotone, so the
            // search goes on).
            if placement.wafers < w {
                continue;
            }
            // A fixed shape may give the placement's own layout, and layer per
            // region the packed one (one layer a region already): the same
            // configuration, listed once, as first found (the placement's
            // choice before fixed shapes, packed before layer per region).
            let layout = placement.layout();
            if seen.contains(&layout) {
                continue;
            }
            seen.push(layout.clone());
            for k in SEARCHED_K {
                let po = PlanOptions::with_reduce_k(k)?;
                let decode = decode_plan_with(spec, cfg, &layout, t.context, &po);
                plan.configurations_priced += 1;
                let pipeline = Pipeline::of(&decode, &layout);
                let (mut rate, bound) = per_user_rate(spec, &decode, &pipeline, t.users);
                if let Some(sp) = &o.speculate {
                    rate = speculative(spec, cfg, &layout, t.context, sp, &po)?
                        .speculative_tokens_per_s;
                }
                let shares = Shares::of(&decode);
                let limit = if bound {
                    Limit::Pipeline
                } else {
                    shares.dominant()
                };
                let probe = Probe {
                    opts: opts.clone(),
                    users: t.users,
                    aggregate: rate * t.users as f64,
                    layout: seen.len() - 1,
                    k,
                    rate,
                    limit,
                    shares,
                };
                if rate >= t.tokens_per_s {
                    meeting.push(probe.clone());
                }
                if best.as_ref().is_none_or(|b| probe.rate > b.rate) {
                    best = Some(probe);
                }
            }
        }
        plan.configurations_meeting_rate += meeting.len();
        // The full estimates, highest rate first, until `top` layouts have a
        // K that also meets the TTFT (each layout listed once, with the
        // fastest such K; all of them estimated when none does, so the
        // shortest TTFT is then known).
        meeting.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        if o.most_users {
            // Each layout once, with its fastest K, grown to the most users;
            // then the largest aggregate first.
            let mut grown: Vec<Probe> = Vec::new();
            for p in &meeting {
                if !grown.iter().any(|g| g.layout == p.layout) {
                    let mut g = p.clone();
                    grow_users(spec, cfg, t, &mut g)?;
                    grown.push(g);
                }
            }
            grown.sort_by(|a, b| b.aggregate.total_cmp(&a.aggregate));
            meeting = grown;
        }
        let mut kept: Vec<usize> = Vec::new();
        for p in &meeting {
            if kept.len() == o.top {
                break;
            }
            if kept.contains(&p.layout) {
                continue;
            }
            let c = candidate(spec, model, t, o, p)?;
            match t.ttft_ms {
                Some(max) if c.ttft_ms > max => {
                    if best_ttft.as_ref().is_none_or(|b| c.ttft_ms < b.ttft_ms) {
                        best_ttft = Some(c);
                    }
                }
                _ => {
                    plan.candidates.push(c);
                    kept.push(p.layout);
                }
            }
        }
        if !plan.candidates.is_empty() && !o.all {
            break;
        }
    }
    rank(&mut plan.candidates);
    if plan.candidates.is_empty() {
        plan.miss = Some(match (best_ttft, best) {
            (Some(c), _) => Miss {
                detail: format!(
                    "the decode target is met, but the shortest time to first token found for a {}-token prompt is {:.1} ms (target {:.1} ms)",
                    t.prompt_tokens,
                    c.ttft_ms,
                    t.ttft_ms.unwrap_or(0.0)
                ),
                model: model.arg.clone(),
                best: Some(c),
                limited_by: Limit::Ttft,
                shares: None,
            },
            (None, Some(p)) => {
                let c = candidate(spec, model, t, o, &p)?;
                let detail = match p.limit {
                    Limit::Pipeline => format!(
                        "at most {:.1} tokens/s per user (target {}): with {} users the slowest pipeline stage bounds each user's rate",
                        c.decode_tokens_per_s, t.tokens_per_s, t.users
                    ),
                    l => format!(
                        "at most {:.1} tokens/s per user (target {}) on up to {} wafers; the best decode step is {:.0}% compute, {:.0}% communication (fabric and off-wafer hops), {:.0}% sync: {} bound",
                        c.decode_tokens_per_s,
                        t.tokens_per_s,
                        o.max_wafers,
                        100.0 * p.shares.compute,
                        100.0 * p.shares.communication,
                        100.0 * p.shares.sync,
                        l.name()
                    ),
                };
                Miss {
                    model: model.arg.clone(),
                    best: Some(c),
                    limited_by: p.limit,
                    shares: Some(p.shares),
                    detail,
                }
            }
            (None, None) => Miss {
                model: model.arg.clone(),
                best: None,
                limited_by: Limit::Sram,
                shares: None,
                detail: format!(
                    "no placement on {first}..={} wafers fits at {} tokens of context",
                    o.max_wafers, t.context
                ),
            },
        });
    }
    Ok(plan)
}

/// Fewest wafers first, then the largest aggregate tokens/s (with the same
/// users everywhere, the largest margin), then the largest margin, then the
/// model's name.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        a.wafers
            .cmp(&b.wafers)
            .then(
                b.aggregate_tokens_per_s
                    .total_cmp(&a.aggregate_tokens_per_s),
            )
            .then(b.margin.total_cmp(&a.margin))
            .then(a.model.cmp(&b.model))
    });
}

/// Grows `p` (a configuration meeting the rate with one user) to the most
/// users whose KV caches fit on its wafers, region and strategy and who each
/// still see the target rate at its K: doubling from one user until a count
/// fails (does not fit, leaves wafers empty, or misses the rate), then
/// bisection between the last count that met it and that one, each step
/// placing that many users (the layout may change with them) and pricing the
/// decode step. The search assumes meeting the rate is monotone in the users,
/// as fitting is, and as the rate is on one layout (`min(B / L, 1 / S) / B`
/// only falls with B); the candidate's figures are re-estimated at the users
/// found, whatever the layout.
fn grow_users(spec: &WaferSpec, cfg: &ModelConfig, t: &Targets, p: &mut Probe) -> Result<()> {
    let w = p.opts.wafers.unwrap_or(1);
    let po = PlanOptions::with_reduce_k(p.k)?;
    let rate_at = |b: u64| -> Option<f64> {
        let placement = crate::estimate::placement_for_users(spec, cfg, &p.opts, b).ok()?;
        if placement.wafers != w {
            return None;
        }
        let layout = placement.layout();
        let decode = decode_plan_with(spec, cfg, &layout, t.context, &po);
        let pipeline = Pipeline::of(&decode, &layout);
        let (rate, _) = per_user_rate(spec, &decode, &pipeline, b);
        (rate >= t.tokens_per_s).then_some(rate)
    };
    let (mut lo, mut lo_rate) = (1, p.rate);
    let mut hi = MAX_USERS + 1;
    while lo < MAX_USERS {
        let next = (2 * lo).min(MAX_USERS);
        match rate_at(next) {
            Some(r) => (lo, lo_rate) = (next, r),
            None => {
                hi = next;
                break;
            }
        }
    }
    // lo meets the rate; hi (when at most MAX_USERS) does not.
    while hi > lo + 1 {
        let mid = lo + (hi - lo) / 2;
        match rate_at(mid) {
            Some(r) => (lo, lo_rate) = (mid, r),
            None => hi = mid,
        }
    }
    p.users = lo;
    p.rate = lo_rate;
    p.aggregate = lo_rate * lo as f64;
    Ok(())
}

/// Prompt-lookup speculation (drafting free) on `layout` at the context.
fn speculative(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &crate::layout::Layout,
    context: usize,
    sp: &SpeculateTarget,
    po: &PlanOptions,
) -> Result<crate::cost::Speculation> {
    crate::cost::speculation(
        spec,
        cfg,
        layout,
        context,
        sp.k,
        sp.acceptance,
        wafer_core::Cycles::ZERO,
        po,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The full estimate of a probe's configuration, as a candidate.
fn candidate(
    spec: &WaferSpec,
    model: &PlanModel,
    t: &Targets,
    o: &SearchOptions,
    p: &Probe,
) -> Result<Candidate> {
    let po = PlanOptions::with_reduce_k(p.k)?;
    let e = estimate_for_users(spec, &model.config, &p.opts, &po, p.users).with_context(|| {
        format!(
            "estimating {} on {} wafers",
            model.arg,
            p.opts.wafers.unwrap_or(0)
        )
    })?;
    let (mut rate, mut aggregate, max_users) = match &e.users {
        Some(u) => (
            u.per_user_tokens_per_s,
            u.aggregate_tokens_per_s,
            Some(u.max_users),
        ),
        None => (e.decode_tokens_per_s, e.decode_tokens_per_s, None),
    };
    let speculation = match &o.speculate {
        Some(sp) => {
            let s = speculative(spec, &model.config, &e.layout, t.context, sp, &po)?;
            rate = s.speculative_tokens_per_s;
            aggregate = rate;
            Some(CandidateSpeculation {
                k: sp.k,
                acceptance: sp.acceptance,
                plain_decode_tokens_per_s: s.decode_tokens_per_s,
                speedup: s.speedup,
            })
        }
        None => None,
    };
    let strategy = strategy_name(p.opts.strategy);
    let mut args: Vec<String> = [
        "--model",
        &model.arg,
        "--hw",
        &o.hw_arg,
        "--wafers",
        &e.wafers.to_string(),
        "--strategy",
        strategy,
        "--k",
        &p.k.to_string(),
        "--context",
        &t.context.to_string(),
        "--prompt-tokens",
        &t.prompt_tokens.to_string(),
        "--users",
        &p.users.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(r) = p.opts.region {
        args.extend(["--region".to_string(), r.to_string()]);
    }
    if let Some(sp) = &o.speculate {
        args.extend([
            "--speculate".to_string(),
            sp.k.to_string(),
            "--acceptance".to_string(),
            sp.acceptance.to_string(),
        ]);
    }
    if let Some(c) = &o.client {
        args.extend([
            "--rtt-ms".to_string(),
            c.rtt_ms.to_string(),
            "--per-token-overhead-us".to_string(),
            c.per_token_overhead_us.to_string(),
            "--answer-tokens".to_string(),
            c.answer_tokens.to_string(),
        ]);
    }
    Ok(Candidate {
        model: model.arg.clone(),
        wafers: e.wafers,
        region: e.region,
        fixed_region: p.opts.region,
        strategy,
        k: p.k,
        users: p.users,
        context: t.context,
        prompt_tokens: t.prompt_tokens,
        trained_positions: model.config.max_position_embeddings,
        decode_tokens_per_s: rate,
        aggregate_tokens_per_s: aggregate,
        ttft_ms: e.ttft_ms,
        margin: rate / t.tokens_per_s - 1.0,
        max_users,
        client: o.client.map(|c| c.latency(e.ttft_ms, rate)),
        speculation,
        estimate_args: args,
    })
}

/// The best per-user decode rate over the strategies and K values on exactly
/// `wafers` wafers with `region` (`None`: the region the placement chooses at
/// each context; a fixed shape, as a candidate's `fixed_region`) at each of
/// `contexts` (`None` where nothing fits): one model's curve on the frontier
/// plot.
pub fn frontier(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    wafers: u32,
    region: Option<RegionShape>,
    users: u64,
    contexts: &[usize],
) -> Result<Vec<(usize, Option<f64>)>> {
    let mut out = Vec::with_capacity(contexts.len());
    for &context in contexts {
        let mut best: Option<f64> = None;
        for s in STRATEGIES {
            let opts = EstimateOptions {
                wafers: Some(wafers),
                region,
                strategy: s,
                context,
                prompt_tokens: 1,
            };
            let Ok(placement) = crate::estimate::placement_for_users(spec, cfg, &opts, users)
            else {
                continue;
            };
            let layout = placement.layout();
            for k in SEARCHED_K {
                let po = PlanOptions::with_reduce_k(k)?;
                let decode = decode_plan_with(spec, cfg, &layout, context, &po);
                let pipeline = Pipeline::of(&decode, &layout);
                let (rate, _) = per_user_rate(spec, &decode, &pipeline, users);
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            }
        }
        out.push((context, best));
    }
    Ok(out)
}

/// Contexts for the frontier: powers of two from 1,024 up to `max`, and `max`.
pub fn frontier_contexts(max: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (10..usize::BITS)
        .map(|b| 1usize << b)
        .take_while(|&c| c < max)
        .collect();
    out.push(max.max(1));
    out
}
