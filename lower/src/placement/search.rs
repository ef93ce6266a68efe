//! Choosing the region grid and the number of wafers, and finding the longest
//! context a grid holds. Everything here evaluates regions in closed form
//! (`budget`), so a full search over grids for the largest presets takes
//! milliseconds (see `benches/benches/placement.rs`).

use super::budget::Sizes;
use super::pack::{pack, units, Grid, PackFailure};
use super::tensors::Item;
use super::{Advice, Placement};
use thiserror::Error;
use wafer_core::{RegionShape, WaferSpec};
use wafer_models::config::ModelConfig;

/// The most wafers a placement may use: a bound on the search, far above any preset.
pub const MAX_WAFERS: u32 = 4096;

/// What `place` is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOptions {
    /// The context length (tokens in the KV cache) to account for.
    pub context_tokens: u64,
    /// Fixed region size (`--region PxQ`); automatic when `None`.
    pub region: Option<RegionShape>,
    /// Fixed wafer count (`--wafers N`); the smallest that fits when `None`.
    pub wafers: Option<u32>,
    pub strategy: Strategy,
}

/// How layers share regions (`--strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Consecutive layers share a region while its PEs have room (fewest wafers).
    #[default]
    Packed,
    /// Every layer on a region of its own, as WaferLLM runs each decode layer on
    /// its own P x P region; the embedding and LM head too.
    LayerPerRegion,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "packed" => Ok(Strategy::Packed),
            "layer-per-region" => Ok(Strategy::LayerPerRegion),
            other => Err(format!(
                "unknown strategy `{other}` (expected packed or layer-per-region)"
            )),
        }
    }
}

#[derive(Debug, Error)]
pub enum PlaceError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{model_bytes} bytes of weights do not fit on {wafers} wafer(s) at any context: their regions \
         offer {region_data_bytes} bytes of SRAM for data ({available_bytes} bytes of SRAM on the wafers \
         in all, less idle edges and the per-PE reserve), and each region must also hold whole layers \
         with padded tiles and buffers. {hint}"
    )]
    NoPlacement {
        wafers: u32,
        model_bytes: u64,
        region_data_bytes: u64,
        available_bytes: u64,
        hint: String,
    },
    #[error(
        "{item} alone does not fit on a whole wafer at {context} tokens of context \
         (its PE (0, 0) needs {needed_bytes} bytes of {available_bytes}). {hint}"
    )]
    UnitTooLarge {
        item: String,
        context: u64,
        needed_bytes: u64,
        available_bytes: u64,
        hint: String,
    },
}

/// Places `model` on wafers described by `spec`. Returns a placement even when it
/// does not fit at the requested context (then `fits()` is false and `advice` says
/// what would); errors only when no placement exists at all on the allowed wafers.
pub fn place(
    model: &ModelConfig,
    spec: &WaferSpec,
    opts: &PlaceOptions,
) -> Result<Placement, PlaceError> {
    model
        .validate()
        .map_err(|e| PlaceError::Invalid(format!("model: {e:#}")))?;
    spec.validate()
        .map_err(|e| PlaceError::Invalid(e.to_string()))?;
    let t = opts.context_tokens;
    if t == 0 {
        return Err(PlaceError::Invalid(
            "context must be at least 1 token, found 0".into(),
        ));
    }
    if let Some(n) = opts.wafers {
        if n == 0 || n > MAX_WAFERS {
            return Err(PlaceError::Invalid(format!(
                "--wafers must be between 1 and {MAX_WAFERS}, found {n}"
            )));
        }
    }
    let fabric = RegionShape {
        width: spec.fabric.width_pes,
        height: spec.fabric.height_pes,
    };
    let sizes = Sizes::from_spec(spec);
    let units = units(model);
    let grids = match opts.region {
        Some(shape) => vec![fixed_grid(shape, fabric)?],
        None => auto_grids(
            fabric,
            units.len(),
            min_wafers_by_bytes(model, &sizes, fabric),
        ),
    };
    let ctx = Ctx {
        model,
        sizes: &sizes,
        units: &units,
        share: opts.strategy == Strategy::Packed,
    };

    let (grid, wafers, t_max) = match opts.wafers {
        Some(n) => match best_on(&ctx, &grids, n, t) {
            Some((g, tm)) => (g, n, tm),
            None => {
                let hint = match smallest_wafers(&ctx, &grids, t) {
                    Some((_, n2)) => format!("At {t} tokens it needs {n2} wafer(s): try --wafers {n2}."),
                    None => "It does not fit on any number of wafers with these regions; try another --region.".into(),
                };
                let region_pes = grids
                    .iter()
                    .map(|g| g.slots() as u64 * g.slot_w as u64 * g.slot_h as u64)
                    .max()
                    .unwrap_or(0);
                return Err(PlaceError::NoPlacement {
                    wafers: n,
                    model_bytes: model.param_count() * sizes.weight,
                    region_data_bytes: n as u64 * region_pes * (sizes.sram - sizes.reserve),
                    available_bytes: n as u64 * fabric.pes() * sizes.sram,
                    hint,
                });
            }
        },
        None => match smallest_wafers(&ctx, &grids, t) {
            Some((_, n)) => {
                let candidates: Vec<Grid> = grids
                    .iter()
                    .copied()
                    .filter(|g| wafers_needed(&ctx, *g, t) == Ok(n))
                    .collect();
                debug_assert!(!candidates.is_empty());
                let (g, tm) =
                    best_on(&ctx, &candidates, n, t).expect("a grid that fits at t fits at 0");
                (g, n, tm)
            }
            None => return Err(unit_too_large(&ctx, &grids, t)),
        },
    };

    // With an automatic region, or a wafer budget (`--wafers N`), the grid is packed
    // for the longest context it holds, so layers spread over every wafer given.
    // With only `--region` fixed, the user chose the region each pipeline stage runs
    // on (as WaferLLM's P x P decode regions), so it is packed for the requested
    // context: a layer takes a block of several regions only when one region cannot
    // hold it at that context, and no more wafers are used than that needs.
    let pack_tokens = if opts.region.is_some() && opts.wafers.is_none() && t <= t_max {
        t
    } else {
        t_max
    };
    let regions = pack(model, &sizes, &units, grid, pack_tokens, wafers, ctx.share)
        .expect("the search only returns packings that succeed");
    let max_context_tokens = regions
        .iter()
        .map(|r| r.footprint.max_tokens(&sizes).unwrap_or(0))
        .min()
        .unwrap_or(u64::MAX);
    // Wafers that hold at least one region: `--wafers N` may give more than the
    // pipeline can use (each holds at least one unit).
    let used = regions.iter().map(|r| r.wafer + 1).max().unwrap_or(1);
    let mut placement = Placement {
        context_tokens: t,
        wafers: used,
        wafers_requested: opts.wafers,
        fabric,
        grid,
        auto_region: opts.region.is_none(),
        sizes,
        regions,
        max_context_tokens,
        advice: None,
    };
    if !placement.fits() {
        let overflow = placement
            .first_overflow()
            .expect("a placement that does not fit overflows");
        let wafers_needed = smallest_wafers(&ctx, &grids, t).map(|(_, n)| n);
        let auto_region = if opts.region.is_some() {
            let grids = auto_grids(fabric, units.len(), wafers);
            best_on(&ctx, &grids, wafers, t).map(|(g, tm)| (g.slot_shape(), tm))
        } else {
            None
        };
        placement.advice = Some(Advice {
            overflow,
            wafers_needed,
            auto_region,
        });
    }
    Ok(placement)
}

struct Ctx<'a> {
    model: &'a ModelConfig,
    sizes: &'a Sizes,
    units: &'a [Vec<Item>],
    /// Whether units may share a region.
    share: bool,
}

/// The grid of `--region PxQ`: as many whole regions as fit, from the corner.
fn fixed_grid(shape: RegionShape, fabric: RegionShape) -> Result<Grid, PlaceError> {
    if shape.width == 0 || shape.height == 0 {
        return Err(PlaceError::Invalid(format!(
            "region {shape} has a zero side"
        )));
    }
    if shape.width > fabric.width || shape.height > fabric.height {
        return Err(PlaceError::Invalid(format!(
            "region {shape} is larger than the {fabric} fabric of the wafer"
        )));
    }
    Ok(Grid {
        slot_w: shape.width,
        slot_h: shape.height,
        cols: fabric.width / shape.width,
        rows: fabric.height / shape.height,
    })
}

/// Every grid of equal regions with at most about two regions per pipeline unit
/// that one of `wafers` wafers must hold: more regions than units cannot help,
/// so the search stays small for big multi-wafer models. Elongated regions are
/// included; the search prefers near-square ones ([`near_square`]) and takes an
/// elongated grid only when it needs fewer wafers.
pub fn auto_grids(fabric: RegionShape, units: usize, wafers: u32) -> Vec<Grid> {
    let per_wafer = (units as u32).div_ceil(wafers.max(1));
    let cap = (2 * per_wafer + 2).max(4);
    let mut grids = Vec::new();
    for cols in 1..=fabric.width.min(cap) {
        for rows in 1..=fabric.height.min(cap / cols) {
            let w = fabric.width / cols;
            let h = fabric.height / rows;
            if w == 0 || h == 0 {
                continue;
            }
            grids.push(Grid {
                slot_w: w,
                slot_h: h,
                cols,
                rows,
            });
        }
    }
    grids
}

/// Region aspect within 1:2 .. 2:1, as WaferLLM runs each decode layer on a
/// P x P region (short reduction lines both ways).
pub fn near_square(g: &Grid) -> bool {
    2 * g.slot_w >= g.slot_h && 2 * g.slot_h >= g.slot_w
}

/// A lower bound on the wafers the weights need: their bytes over the SRAM a wafer
/// has for data (its PEs less the reserve).
fn min_wafers_by_bytes(model: &ModelConfig, sizes: &Sizes, fabric: RegionShape) -> u32 {
    let data_per_wafer = fabric.pes() * (sizes.sram - sizes.reserve);
    let weights = model.param_count() * sizes.weight;
    weights.div_ceil(data_per_wafer).clamp(1, MAX_WAFERS as u64) as u32
}

fn wafers_needed(ctx: &Ctx, grid: Grid, t: u64) -> Result<u32, PackFailure> {
    let packed = pack(
        ctx.model, ctx.sizes, ctx.units, grid, t, MAX_WAFERS, ctx.share,
    )?;
    Ok(packed.last().map_or(1, |r| r.wafer + 1))
}

/// The grid needing the fewest wafers at context `t`, and that count.
fn smallest_wafers(ctx: &Ctx, grids: &[Grid], t: u64) -> Option<(Grid, u32)> {
    grids
        .iter()
        .filter_map(|g| wafers_needed(ctx, *g, t).ok().map(|n| (*g, n)))
        .min_by_key(|(_, n)| *n)
}

/// The longest context `grid` holds on `wafers` wafers (`None`: not even at 0).
fn max_context_on(ctx: &Ctx, grid: Grid, wafers: u32) -> Option<u64> {
    let fits = |t: u64| pack(ctx.model, ctx.sizes, ctx.units, grid, t, wafers, ctx.share).is_ok();
    if !fits(0) {
        return None;
    }
    // No region is taller than the fabric and a token costs a PE at least one byte,
    // so no context beyond this fits.
    let mut hi = (grid.rows as u64 * grid.slot_h as u64 + 1) * (ctx.sizes.sram + 1);
    if fits(hi) {
        return Some(hi);
    }
    let mut lo = 0;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// The best grid on `wafers` wafers for context `t`, with the longest context it
/// holds: among the grids holding `t`, near-square ones first ([`near_square`]),
/// then the longest context, then the squarer region, then the larger; when
/// none holds `t`, the one holding the longest context.
fn best_on(ctx: &Ctx, grids: &[Grid], wafers: u32, t: u64) -> Option<(Grid, u64)> {
    let squareness = |g: &Grid| {
        let (a, b) = (g.slot_w.min(g.slot_h) as u64, g.slot_w.max(g.slot_h) as u64);
        // a/b compared as a rational: larger is squarer.
        (a * 1_000_000 / b, g.slot_w as u64 * g.slot_h as u64)
    };
    let key = |g: &Grid, tm: u64| (tm >= t, tm >= t && near_square(g), tm, squareness(g));
    grids
        .iter()
        .filter_map(|g| max_context_on(ctx, *g, wafers).map(|tm| (*g, tm)))
        .max_by(|(ga, ta), (gb, tb)| key(ga, *ta).cmp(&key(gb, *tb)))
}

/// The error for a unit that fits on no grid at context `t`, with the longest
/// context at which every unit fits on a wafer of its own.
fn unit_too_large(ctx: &Ctx, grids: &[Grid], t: u64) -> PlaceError {
    // Find the failing unit on the grid with the largest regions.
    let grid = grids
        .iter()
        .copied()
        .max_by_key(|g| g.cols as u64 * g.slot_w as u64 * g.rows as u64 * g.slot_h as u64)
        .expect("at least one grid");
    let unit = match pack(
        ctx.model, ctx.sizes, ctx.units, grid, t, MAX_WAFERS, ctx.share,
    ) {
        Err(PackFailure::UnitTooLarge { unit }) => unit,
        _ => ctx.units[0].clone(),
    };
    let w = grid.cols as u64 * grid.slot_w as u64;
    let h = grid.rows as u64 * grid.slot_h as u64;
    let f = unit.iter().fold(super::Footprint::empty(w, h), |acc, &i| {
        acc.plus(&super::Footprint::of(ctx.model, ctx.sizes, i, w, h))
    });
    let hint = match grids
        .iter()
        .filter_map(|g| max_context_on(ctx, *g, MAX_WAFERS))
        .max()
    {
        Some(tm) if tm > 0 => {
            format!("The longest context any placement holds is {tm} tokens: try --context {tm}.")
        }
        _ => {
            "No context fits: the weights alone overflow; try a spec with more SRAM per PE.".into()
        }
    };
    PlaceError::UnitTooLarge {
        item: super::describe_items(&unit),
        context: t,
        needed_bytes: f.max(ctx.sizes, t).total(),
        available_bytes: ctx.sizes.sram,
        hint,
    }
}
