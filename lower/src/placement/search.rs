//! Choosing the region grid and the number of wafers, and finding the longest
//! context a grid holds. Everything here evaluates regions in closed form
//! (`budget`), so a full search over grids for the largest presets takes
//! milliseconds (see `benches/benches/placement.rs`). Grids are judged by
//! counting what packing them would use ([`Counter`]: a slot's worth of identical
//! layers at a time, footprints computed once per grid), and grids that cannot
//! beat the best found are not searched further (`best_on`), so a model of
//! hundreds of layers, with thousands of candidate grids, places in milliseconds
//! too; only the chosen grid is packed region by region.

use super::budget::Sizes;
use super::pack::{pack, units, Counter, Grid, PackFailure};
use super::tensors::Item;
use super::{Advice, Placement};
use thiserror::Error;
use wafer_core::{RegionShape, WaferSpec};
use wafer_models::config::ModelConfig;

/// The most wafers a placement may use: a bound on the search, far above any preset.
pub const MAX_WAFERS: u32 = 4096;

/// The most sequences in flight (`--users`) a placement accounts for.
pub const MAX_USERS: u64 = 65_536;

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
    place_for_users(model, spec, opts, 1)
}

/// [`place`] with the KV caches of `users` sequences in flight (1..=[`MAX_USERS`]):
/// every layer holds each sequence's cache at `opts.context_tokens`, so the
/// context reported is each sequence's. `users = 1` is [`place`].
pub fn place_for_users(
    model: &ModelConfig,
    spec: &WaferSpec,
    opts: &PlaceOptions,
    users: u64,
) -> Result<Placement, PlaceError> {
    if users == 0 || users > MAX_USERS {
        return Err(PlaceError::Invalid(format!(
            "--users must be between 1 and {MAX_USERS}, found {users}"
        )));
    }
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
    let sizes = Sizes::from_spec(spec).with_users(users);
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
    let counters: Vec<Counter> = grids.iter().map(|g| counter(&ctx, *g)).collect();

    let (grid, wafers, t_max) = match opts.wafers {
        Some(n) => match best_on(&counters, n, t) {
            Some((g, tm)) => (g, n, tm),
            None => {
                let hint = match smallest_wafers(&counters, t) {
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
        None => {
            let needed: Vec<Option<u32>> = counters
                .iter()
                .map(|c| c.wafers(t, MAX_WAFERS).ok())
                .collect();
            match needed.iter().flatten().min() {
                Some(&n) => {
                    let candidates = counters
                        .iter()
                        .zip(&needed)
                        .filter(|(_, w)| **w == Some(n))
                        .map(|(c, _)| c);
                    let (g, tm) =
                        best_on(candidates, n, t).expect("a grid that fits at t fits at 0");
                    (g, n, tm)
                }
                None => return Err(unit_too_large(&ctx, &counters, t)),
            }
        }
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
        let wafers_needed = smallest_wafers(&counters, t).map(|(_, n)| n);
        let auto_region = if opts.region.is_some() {
            let grids = auto_grids(fabric, units.len(), wafers);
            let counters: Vec<Counter> = grids.iter().map(|g| counter(&ctx, *g)).collect();
            best_on(&counters, wafers, t).map(|(g, tm)| (g.slot_shape(), tm))
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

fn counter<'a>(ctx: &Ctx<'a>, grid: Grid) -> Counter<'a> {
    Counter::new(ctx.model, ctx.sizes, ctx.units, grid, ctx.share)
}

/// The grid needing the fewest wafers at context `t`, and that count.
fn smallest_wafers(counters: &[Counter], t: u64) -> Option<(Grid, u32)> {
    counters
        .iter()
        .filter_map(|c| c.wafers(t, MAX_WAFERS).ok().map(|n| (c.grid(), n)))
        .min_by_key(|(_, n)| *n)
}

/// The largest context [`max_context_on`] can return for `grid`: no region is
/// taller than the fabric and a token costs a PE at least one byte, so no context
/// beyond this fits.
fn context_cap(grid: Grid, sram: u64) -> u64 {
    (grid.rows as u64 * grid.slot_h as u64 + 1) * (sram + 1)
}

/// The longest context `counter`'s grid holds on `wafers` wafers (`None`: not even
/// at 0, or — when `need` > 0 — the answer is below `need`). The search probes
/// the same contexts whatever `need` is; `need` only stops it once its answer
/// is known to lie below `need`, so a grid that cannot beat the best found so
/// far costs a few packings instead of dozens.
fn max_context_on(counter: &Counter, wafers: u32, need: u64) -> Option<u64> {
    let fits = |t: u64| counter.wafers(t, wafers).is_ok();
    if !fits(0) {
        return None;
    }
    let mut hi = context_cap(counter.grid(), counter.sram());
    if fits(hi) {
        return (hi >= need).then_some(hi);
    }
    // The answer lies in lo..hi.
    let mut lo = 0;
    while hi - lo > 1 {
        if hi - 1 < need {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo >= need).then_some(lo)
}

/// How [`best_on`] ranks a grid holding `tm` tokens at a requested `t`; larger
/// is better. The last component, the grid's index in the list, breaks the ties
/// that remain towards the later grid.
type Rank = (bool, bool, u64, (u64, u64), usize);

fn rank(g: &Grid, tm: u64, t: u64, index: usize) -> Rank {
    let (a, b) = (g.slot_w.min(g.slot_h) as u64, g.slot_w.max(g.slot_h) as u64);
    // a/b compared as a rational: larger is squarer.
    let squareness = (a * 1_000_000 / b, g.slot_w as u64 * g.slot_h as u64);
    (tm >= t, tm >= t && near_square(g), tm, squareness, index)
}

/// The best grid on `wafers` wafers for context `t`, with the longest context it
/// holds: among the grids holding `t`, near-square ones first ([`near_square`]),
/// then the longest context, then the squarer region, then the larger (then the
/// later in the list); when none holds `t`, the one holding the longest context.
///
/// A rank grows with the context, so a grid is searched only for contexts that
/// would beat the best rank found so far: grids ranked below it even at their
/// context cap are skipped unsearched (every elongated grid, once a near-square
/// one holds `t`, which is why near-square grids go first).
fn best_on<'c, 'a: 'c>(
    counters: impl IntoIterator<Item = &'c Counter<'a>>,
    wafers: u32,
    t: u64,
) -> Option<(Grid, u64)> {
    let counters: Vec<&Counter> = counters.into_iter().collect();
    let mut order: Vec<usize> = (0..counters.len()).collect();
    order.sort_by_key(|&i| !near_square(&counters[i].grid()));
    let mut best: Option<(Rank, Grid, u64)> = None;
    for i in order {
        let c = counters[i];
        let g = c.grid();
        let need = match &best {
            None => 0,
            Some((top, _, _)) => {
                // The smallest context whose rank beats the best: ranks grow with it.
                let cap = context_cap(g, c.sram());
                if rank(&g, cap, t, i) <= *top {
                    continue;
                }
                let (mut lo, mut hi) = (0, cap);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if rank(&g, mid, t, i) > *top {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            }
        };
        if let Some(tm) = max_context_on(c, wafers, need) {
            let r = rank(&g, tm, t, i);
            if !matches!(&best, Some((top, _, _)) if r <= *top) {
                best = Some((r, g, tm));
            }
        }
    }
    best.map(|(_, g, tm)| (g, tm))
}

/// [`best_on`] without skipping: every grid searched in full, the best kept.
#[cfg(test)]
fn best_on_exhaustive(counters: &[Counter], wafers: u32, t: u64) -> Option<(Grid, u64)> {
    counters
        .iter()
        .enumerate()
        .filter_map(|(i, c)| max_context_on(c, wafers, 0).map(|tm| (i, c.grid(), tm)))
        .max_by_key(|&(i, g, tm)| rank(&g, tm, t, i))
        .map(|(_, g, tm)| (g, tm))
}

/// The error for a unit that fits on no grid at context `t`, with the longest
/// context at which every unit fits on a wafer of its own.
fn unit_too_large(ctx: &Ctx, counters: &[Counter], t: u64) -> PlaceError {
    // Find the failing unit on the grid with the largest regions.
    let grid = counters
        .iter()
        .map(Counter::grid)
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
    // The longest context any grid holds: each grid is searched only above the
    // best so far.
    let mut longest: Option<u64> = None;
    for c in counters {
        let need = longest.map_or(0, |l| l.saturating_add(1));
        if let Some(tm) = max_context_on(c, MAX_WAFERS, need) {
            longest = Some(tm);
        }
    }
    let hint = match longest {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::pack::tests::{random_model, sizes};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn skipping_grids_that_cannot_win_picks_the_grid_a_full_search_picks() {
        let mut differing_context = 0;
        for seed in 0..150u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let model = random_model(&mut rng, 40);
            let sizes = sizes(rng.gen_range(500..=6000));
            let units = units(&model);
            let fabric = RegionShape {
                width: rng.gen_range(1..=12),
                height: rng.gen_range(1..=12),
            };
            let wafers = rng.gen_range(1..=4);
            let ctx = Ctx {
                model: &model,
                sizes: &sizes,
                units: &units,
                share: rng.gen_bool(0.7),
            };
            let counters: Vec<Counter> = auto_grids(fabric, units.len(), wafers)
                .iter()
                .map(|g| counter(&ctx, *g))
                .collect();
            let t = rng.gen_range(1..=300);
            let full = best_on_exhaustive(&counters, wafers, t);
            assert_eq!(best_on(&counters, wafers, t), full, "seed {seed}");
            // The longest context over the grids, as the hint of `unit_too_large` finds it.
            let longest = counters
                .iter()
                .filter_map(|c| max_context_on(c, wafers, 0))
                .max();
            let mut pruned: Option<u64> = None;
            for c in &counters {
                let need = pruned.map_or(0, |l| l.saturating_add(1));
                if let Some(tm) = max_context_on(c, wafers, need) {
                    pruned = Some(tm);
                }
            }
            assert_eq!(pruned, longest, "seed {seed}");
            if full.is_some_and(|(_, tm)| tm != longest.unwrap()) {
                differing_context += 1;
            }
        }
        // Cases where the winner is not simply the grid of the longest context
        // (near-square preference, ties) are among those checked.
        assert!(differing_context >= 5, "{differing_context}");
    }

    #[test]
    fn presets_use_the_fewest_wafers_any_grid_packs_them_on() {
        // Checked with the unit-by-unit packing, not the counter the search uses.
        let spec = WaferSpec::preset("wse3").unwrap();
        let fabric = RegionShape {
            width: spec.fabric.width_pes,
            height: spec.fabric.height_pes,
        };
        let mut multi_wafer = 0;
        for name in wafer_models::presets::names() {
            let model = wafer_models::presets::lookup(name).unwrap();
            for t in [8192, 131072] {
                let opts = PlaceOptions {
                    context_tokens: t,
                    region: None,
                    wafers: None,
                    strategy: Strategy::Packed,
                };
                let p = place(&model, &spec, &opts).unwrap();
                assert!(p.fits(), "{name} at {t}");
                for r in &p.regions {
                    assert!(r.footprint.fits(&p.sizes, t), "{name} at {t}: {r:?}");
                }
                if p.wafers == 1 {
                    continue;
                }
                multi_wafer += 1;
                let units = units(&model);
                let wmin = min_wafers_by_bytes(&model, &p.sizes, fabric);
                for g in auto_grids(fabric, units.len(), wmin) {
                    assert!(
                        pack(&model, &p.sizes, &units, g, t, p.wafers - 1, true).is_err(),
                        "{name} at {t}: {g:?} packs on fewer than {} wafers",
                        p.wafers
                    );
                }
            }
        }
        assert!(multi_wafer >= 5, "{multi_wafer}");
    }
}
