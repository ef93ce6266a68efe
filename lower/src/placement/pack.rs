//! Packing the pipeline onto a grid of equal regions ("slots") of each wafer.
//!
//! Each wafer is cut into `cols x rows` slots of `w x h` PEs from its north-west
//! corner. Slots are visited in serpentine order (row 0 west to east, row 1 east to
//! west, ...) so consecutive pipeline stages are neighbours, and wafer after wafer.
//! The pipeline's units (the embedding — with the LM head when they are tied —,
//! each layer, the LM head) are packed greedily in order: a unit joins the current
//! slot if the slot's PE (0, 0) still fits at the target context, else it opens
//! the next slot. A unit too big for one slot alone takes a block of `k` adjacent
//! slots of one slot-row (`k*w x h`), or of whole slot-rows (`cols*w x m*h`), which
//! it does not share. For a fixed order, greedy packing uses the fewest slots.

use super::budget::{Footprint, Sizes};
use super::tensors::Item;
use std::cell::RefCell;
use wafer_core::{PeCoord, Region, RegionShape};
use wafer_models::config::ModelConfig;

/// How each wafer is cut into slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub slot_w: u32,
    pub slot_h: u32,
    pub cols: u32,
    pub rows: u32,
}

impl Grid {
    pub fn slots(&self) -> u32 {
        self.cols * self.rows
    }

    pub fn slot_shape(&self) -> RegionShape {
        RegionShape {
            width: self.slot_w,
            height: self.slot_h,
        }
    }
}

/// One region of the packing: a rectangle on one wafer and the items on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub wafer: u32,
    pub region: Region,
    pub items: Vec<Item>,
    pub footprint: Footprint,
}

/// Why a packing failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PackFailure {
    /// The units did not all fit on the allowed wafers; `placed` regions were made.
    OutOfWafers { placed: usize },
    /// One unit does not fit even on a whole wafer's worth of slots.
    UnitTooLarge { unit: Vec<Item> },
}

/// The pipeline's units in order.
pub fn units(model: &ModelConfig) -> Vec<Vec<Item>> {
    let mut v = Vec::with_capacity(model.num_hidden_layers + 2);
    if model.tie_word_embeddings {
        v.push(vec![Item::Embedding, Item::LmHead]);
    } else {
        v.push(vec![Item::Embedding]);
    }
    v.extend((0..model.num_hidden_layers).map(|i| vec![Item::Layer(i)]));
    if !model.tie_word_embeddings {
        v.push(vec![Item::LmHead]);
    }
    v
}

fn unit_footprint(model: &ModelConfig, sizes: &Sizes, unit: &[Item], w: u64, h: u64) -> Footprint {
    unit.iter().fold(Footprint::empty(w, h), |acc, &item| {
        acc.plus(&Footprint::of(model, sizes, item, w, h))
    })
}

/// How one unit is placed when it opens a new region.
#[derive(Clone, Copy)]
enum Shape {
    /// One slot, which later units may join.
    Slot(Footprint),
    /// `k` slots of one slot-row, not shared.
    Row(u64, Footprint),
    /// `m` whole slot-rows, not shared.
    Rows(u64, Footprint),
}

/// Units of the same kind (every layer; the embedding; the head) have the same
/// footprint, so their shapes are worked out once per packing.
fn kind(unit: &[Item]) -> usize {
    match unit[0] {
        Item::Embedding => 0,
        Item::Layer(_) => 1,
        Item::LmHead => 2,
    }
}

fn shape_of(
    model: &ModelConfig,
    sizes: &Sizes,
    unit: &[Item],
    grid: Grid,
    t: u64,
) -> Option<Shape> {
    let (sw, sh) = (grid.slot_w as u64, grid.slot_h as u64);
    let alone = unit_footprint(model, sizes, unit, sw, sh);
    if alone.fits(sizes, t) {
        return Some(Shape::Slot(alone));
    }
    for k in 2..=grid.cols as u64 {
        let f = unit_footprint(model, sizes, unit, k * sw, sh);
        if f.fits(sizes, t) {
            return Some(Shape::Row(k, f));
        }
    }
    for m in 2..=grid.rows as u64 {
        let f = unit_footprint(model, sizes, unit, grid.cols as u64 * sw, m * sh);
        if f.fits(sizes, t) {
            return Some(Shape::Rows(m, f));
        }
    }
    None
}

/// Packs `units` onto at most `max_wafers` wafers cut by `grid`, so that every PE
/// fits at context `t`. Without `share`, every unit gets regions of its own.
#[allow(clippy::too_many_arguments)]
pub fn pack(
    model: &ModelConfig,
    sizes: &Sizes,
    units: &[Vec<Item>],
    grid: Grid,
    t: u64,
    max_wafers: u32,
    share: bool,
) -> Result<Vec<Packed>, PackFailure> {
    let per_wafer = grid.slots() as u64;
    let cols = grid.cols as u64;
    let mut shapes: [Option<Option<Shape>>; 3] = [None, None, None];
    // The next free slot, counted over all wafers in serpentine order.
    let mut next: u64 = 0;
    let mut out: Vec<Packed> = Vec::new();
    // Whether the last region is a single slot that may take more units.
    let mut open = false;
    for unit in units {
        let shape =
            *shapes[kind(unit)].get_or_insert_with(|| shape_of(model, sizes, unit, grid, t));
        let Some(shape) = shape else {
            return Err(PackFailure::UnitTooLarge { unit: unit.clone() });
        };
        if let (true, true, Shape::Slot(alone)) = (share, open, shape) {
            let last = out.last_mut().expect("an open slot exists");
            let joined = last.footprint.plus(&alone);
            if joined.fits(sizes, t) {
                last.footprint = joined;
                last.items.extend_from_slice(unit);
                continue;
            }
        }
        let (mut wafer, mut slot) = (next / per_wafer, next % per_wafer);
        let (k, m, footprint) = match shape {
            Shape::Slot(f) => (1, 1, f),
            Shape::Row(k, f) => {
                if slot % cols + k > cols {
                    slot += cols - slot % cols;
                }
                (k, 1, f)
            }
            Shape::Rows(m, f) => {
                if slot % cols != 0 {
                    slot += cols - slot % cols;
                }
                (cols, m, f)
            }
        };
        if slot + k * m > per_wafer {
            wafer += 1;
            slot = 0;
        }
        if wafer >= max_wafers as u64 {
            return Err(PackFailure::OutOfWafers { placed: out.len() });
        }
        out.push(Packed {
            wafer: wafer as u32,
            region: block_region(grid, slot, k, m),
            items: unit.clone(),
            footprint,
        });
        next = wafer * per_wafer + slot + k * m;
        open = matches!(shape, Shape::Slot(_));
    }
    Ok(out)
}

/// Counts the wafers [`pack`] uses on one grid, at any context, without building
/// its regions: what the search asks of every grid, dozens of times each.
///
/// The pipeline is a few runs of identical units (the embedding, every layer, the
/// LM head), so where [`pack`] adds units one at a time, a run of `n` units packed
/// into shared slots is handled a slot at a time: the number of units a slot
/// takes is the largest `j` whose `j`-fold footprint fits, found by binary search
/// (a footprint grows with every unit added). Units that take blocks of slots, or
/// regions of their own, are still counted one by one, with no allocation.
/// Footprints do not depend on the context, so each unit kind's footprint on one
/// slot and on each block of slots is computed once per grid, when first needed.
pub struct Counter<'a> {
    model: &'a ModelConfig,
    sizes: &'a Sizes,
    units: &'a [Vec<Item>],
    /// Maximal runs of consecutive units of one kind: (first unit's index, length).
    runs: Vec<(usize, u64)>,
    grid: Grid,
    share: bool,
    /// Per unit kind, the footprints of the shapes [`shape_of`] tries, in its
    /// order: one slot, then `k` = 2.. slots of a slot-row, then `m` = 2.. slot-rows.
    blocks: [RefCell<Vec<Footprint>>; 3],
}

impl<'a> Counter<'a> {
    pub fn new(
        model: &'a ModelConfig,
        sizes: &'a Sizes,
        units: &'a [Vec<Item>],
        grid: Grid,
        share: bool,
    ) -> Counter<'a> {
        let mut runs: Vec<(usize, u64)> = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            match runs.last_mut() {
                Some((first, n)) if kind(&units[*first]) == kind(unit) => *n += 1,
                _ => runs.push((i, 1)),
            }
        }
        Counter {
            model,
            sizes,
            units,
            runs,
            grid,
            share,
            blocks: Default::default(),
        }
    }

    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// A PE's SRAM bytes.
    pub fn sram(&self) -> u64 {
        self.sizes.sram
    }

    /// The shape `unit` opens a region with at context `t`: what [`shape_of`]
    /// returns, from cached footprints.
    fn shape(&self, unit: &[Item], t: u64) -> Option<Shape> {
        let g = self.grid;
        let (sw, sh, cols, rows) = (
            g.slot_w as u64,
            g.slot_h as u64,
            g.cols as u64,
            g.rows as u64,
        );
        let mut cache = self.blocks[kind(unit)].borrow_mut();
        for i in 0..cols + rows - 1 {
            // Index 0: one slot; 1..cols: k = i + 1 slots of a row; then m slot-rows.
            let (w, h) = if i < cols {
                ((i + 1) * sw, sh)
            } else {
                (cols * sw, (i - cols + 2) * sh)
            };
            if i as usize == cache.len() {
                cache.push(unit_footprint(self.model, self.sizes, unit, w, h));
            }
            let f = cache[i as usize];
            if f.fits(self.sizes, t) {
                return Some(match i {
                    0 => Shape::Slot(f),
                    _ if i < cols => Shape::Row(i + 1, f),
                    _ => Shape::Rows(i - cols + 2, f),
                });
            }
        }
        None
    }

    /// The largest `j` in `0..=n` such that `base` plus `j` copies of `unit` fits
    /// at context `t` (`base` `None`: an empty slot, which always takes one unit
    /// that fits alone). Fitting is monotone in `j`: every unit adds bytes.
    fn most(&self, base: Option<&Footprint>, unit: &Footprint, n: u64, t: u64) -> u64 {
        let fits = |j: u64| {
            let many = unit.times(j);
            match base {
                Some(b) => b.plus(&many),
                None => many,
            }
            .fits(self.sizes, t)
        };
        let (mut lo, mut hi) = (0, n);
        // Invariant: `lo` fits (or is 0); everything above `hi` does not.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// What `pack(.., t, max_wafers, share)` on this grid returns, reduced to the
    /// wafers its regions use (the last region's wafer + 1); its failure is the same.
    pub fn wafers(&self, t: u64, max_wafers: u32) -> Result<u32, PackFailure> {
        let grid = self.grid;
        let per_wafer = grid.slots() as u64;
        let cols = grid.cols as u64;
        let limit = max_wafers as u64 * per_wafer;
        let mut next: u64 = 0;
        let mut regions: usize = 0;
        let mut last_wafer: u64 = 0;
        // The footprint of the last region, when it is a single slot units may join.
        let mut open: Option<Footprint> = None;
        for &(first, n) in &self.runs {
            let unit = &self.units[first];
            let Some(shape) = self.shape(unit, t) else {
                return Err(PackFailure::UnitTooLarge { unit: unit.clone() });
            };
            match shape {
                Shape::Slot(one) => {
                    let mut left = n;
                    if let (true, Some(f)) = (self.share, open) {
                        let j = self.most(Some(&f), &one, left, t);
                        open = Some(f.plus(&one.times(j)));
                        left -= j;
                    }
                    if left == 0 {
                        continue;
                    }
                    // Each new slot takes `per_slot` units; the last one the rest.
                    let per_slot = if self.share {
                        self.most(None, &one, left, t).max(1)
                    } else {
                        1
                    };
                    let slots = left.div_ceil(per_slot);
                    if next + slots > limit {
                        return Err(PackFailure::OutOfWafers {
                            placed: regions + (limit.saturating_sub(next)) as usize,
                        });
                    }
                    next += slots;
                    regions += slots as usize;
                    last_wafer = (next - 1) / per_wafer;
                    open = Some(one.times(left - (slots - 1) * per_slot));
                }
                Shape::Row(k, _) | Shape::Rows(k, _) => {
                    // As in `pack`: `k` slots of one slot-row, or `k` whole slot-rows.
                    let (k, m) = match shape {
                        Shape::Row(..) => (k, 1),
                        _ => (cols, k),
                    };
                    for _ in 0..n {
                        let (mut wafer, mut slot) = (next / per_wafer, next % per_wafer);
                        let breaks_row = if m == 1 {
                            slot % cols + k > cols
                        } else {
                            slot % cols != 0
                        };
                        if breaks_row {
                            slot += cols - slot % cols;
                        }
                        if slot + k * m > per_wafer {
                            wafer += 1;
                            slot = 0;
                        }
                        if wafer >= max_wafers as u64 {
                            return Err(PackFailure::OutOfWafers { placed: regions });
                        }
                        regions += 1;
                        last_wafer = wafer;
                        next = wafer * per_wafer + slot + k * m;
                    }
                    open = None;
                }
            }
        }
        Ok(if regions == 0 {
            1
        } else {
            last_wafer as u32 + 1
        })
    }
}

/// The rectangle of `k` slots of one slot-row (or `m` whole rows when `k` = cols)
/// starting at serpentine slot index `slot`.
fn block_region(grid: Grid, slot: u64, k: u64, m: u64) -> Region {
    let cols = grid.cols as u64;
    let row = slot / cols;
    let pos = slot % cols;
    // Even slot-rows run west to east, odd ones east to west.
    let col0 = if row.is_multiple_of(2) {
        pos
    } else {
        cols - pos - k
    };
    Region::new(
        PeCoord::new(
            (col0 * grid.slot_w as u64) as u32,
            (row * grid.slot_h as u64) as u32,
        ),
        RegionShape {
            width: (k * grid.slot_w as u64) as u32,
            height: (m * grid.slot_h as u64) as u32,
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use wafer_core::WaferSpec;
    use wafer_models::{Family, RopeScaling};

    /// A small random model with up to `max_layers` layers.
    pub(crate) fn random_model(rng: &mut ChaCha8Rng, max_layers: usize) -> ModelConfig {
        let kv = rng.gen_range(1..=3);
        let m = ModelConfig {
            model_type: "llama".into(),
            family: Family::Llama,
            vocab_size: rng.gen_range(5..=60),
            hidden_size: rng.gen_range(4..=24),
            intermediate_size: rng.gen_range(4..=40),
            num_hidden_layers: rng.gen_range(1..=max_layers),
            num_attention_heads: kv * rng.gen_range(1..=3),
            num_key_value_heads: kv,
            head_dim: 2 * rng.gen_range(1..=4),
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::Default,
            tie_word_embeddings: rng.gen_bool(0.5),
            attention_bias: rng.gen_bool(0.5),
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        m.validate().unwrap();
        m
    }

    /// Sizes of an edited wse3 with `sram`-byte PEs, 256 of them reserved.
    pub(crate) fn sizes(sram: u64) -> Sizes {
        let spec = WaferSpec::from_toml_str(
            &format!("base = \"wse3\"\n[pe]\nsram_bytes = {sram}\nreserve_bytes = 256\n"),
            "test.toml",
        )
        .unwrap();
        Sizes::from_spec(&spec)
    }

    /// The wafers `pack` uses, as the counter reports them.
    fn packed_wafers(packed: Result<Vec<Packed>, PackFailure>) -> Result<u32, PackFailure> {
        packed.map(|p| p.last().map_or(1, |r| r.wafer + 1))
    }

    #[test]
    fn the_counter_agrees_with_packing_unit_by_unit() {
        // (fits, out of wafers, a unit too large, a unit on a block of slots)
        let mut seen = [0; 4];
        for seed in 0..3000u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let model = random_model(&mut rng, 60);
            let sizes = sizes(rng.gen_range(400..=6000));
            let units = units(&model);
            let grid = Grid {
                slot_w: rng.gen_range(1..=6),
                slot_h: rng.gen_range(1..=6),
                cols: rng.gen_range(1..=5),
                rows: rng.gen_range(1..=5),
            };
            let t = match rng.gen_range(0..4) {
                0 => 0,
                1 => rng.gen_range(1..=8),
                2 => rng.gen_range(1..=200),
                _ => rng.gen_range(1..=u64::MAX),
            };
            let max_wafers = rng.gen_range(1..=8);
            let share = rng.gen_bool(0.7);
            let expected = pack(&model, &sizes, &units, grid, t, max_wafers, share);
            if let Ok(p) = &expected {
                let slot_pes = (grid.slot_w * grid.slot_h) as u64;
                if p.iter().any(|r| r.region.pes() > slot_pes) {
                    seen[3] += 1;
                }
            }
            seen[match &expected {
                Ok(_) => 0,
                Err(PackFailure::OutOfWafers { .. }) => 1,
                Err(PackFailure::UnitTooLarge { .. }) => 2,
            }] += 1;
            let counter = Counter::new(&model, &sizes, &units, grid, share);
            assert_eq!(
                counter.wafers(t, max_wafers),
                packed_wafers(expected),
                "seed {seed}: {grid:?} t={t} max_wafers={max_wafers} share={share}"
            );
            // The counter caches footprints: asking again, at another context, agrees too.
            let t2 = t / 2;
            assert_eq!(
                counter.wafers(t2, max_wafers),
                packed_wafers(pack(&model, &sizes, &units, grid, t2, max_wafers, share)),
                "seed {seed}: again at t={t2}"
            );
        }
        assert!(
            seen.iter().all(|&n| n >= 50),
            "cases not all exercised: {seen:?}"
        );
    }
}
