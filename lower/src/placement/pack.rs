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
