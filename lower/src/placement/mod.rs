//! Placement: where the embedding, every decoder layer and the LM head live on the
//! wafer(s), and what every PE's 48 KB holds at a given context length.
//!
//! - Tiling of each tensor over its region, and what each item stores: [`tensors`].
//! - The per-PE budget of a region (weights, KV slice, buffers, reserve) in closed
//!   form, and the largest context a region holds: [`budget`].
//! - Packing the pipeline onto a grid of equal regions, wafer after wafer: [`pack`].
//! - Choosing the grid and the number of wafers: [`search`].
//!
//! Region rule (automatic): each wafer is cut into a `cols x rows` grid of equal
//! regions. Every such grid is tried: the pipeline is packed greedily onto it; the
//! grid needing the fewest wafers at the requested context wins. Among those,
//! near-square regions (aspect between 1:2 and 2:1, as WaferLLM runs each decode
//! layer on a P x P region, so reductions stay short both ways) are preferred
//! whenever one of them needs no more wafers; an elongated grid is taken only when
//! it saves wafers. Ties go to the placement holding the longest context, then to
//! the squarest region. With `--region PxQ` the grid is fixed to regions of that
//! size (from the north-west corner; leftover edges stay idle). With `--wafers N`
//! the grid holding the longest context on N wafers wins (near-square ones when
//! any holds the requested context there). The chosen grid is then
//! packed for the longest context it can hold on those wafers, so layers spread
//! over all of them rather than crowding the first — except when only `--region`
//! is given: then it is packed for the requested context, so every stage runs on
//! the region size asked for (a layer takes a block of regions only if one region
//! cannot hold it at that context). `--strategy layer-per-region`
//! keeps every layer on a region of its own (WaferLLM's decode layout) instead of
//! letting consecutive layers share one. With several users in flight
//! ([`place_for_users`]) every layer holds each user's KV cache, and the
//! context is each user's.

pub mod budget;
pub mod pack;
pub mod search;
pub mod tensors;

pub use budget::{Footprint, PeBytes, PeBytesMean, Sizes};
pub use pack::{Grid, Packed};
pub use search::{place, place_for_users, PlaceError, PlaceOptions, Strategy, MAX_USERS};
pub use tensors::{item_tiles, Item};

use crate::layout::{Layout, Site};
use serde::Serialize;
use wafer_core::{PeCoord, RegionShape};

/// A model placed on one or more wafers, accounted at `context_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub context_tokens: u64,
    /// Wafers holding at least one region.
    pub wafers: u32,
    /// `--wafers N`, when given (it may exceed `wafers`: more wafers than
    /// pipeline units cannot all be used).
    pub wafers_requested: Option<u32>,
    pub fabric: RegionShape,
    pub grid: Grid,
    /// Whether the grid was chosen automatically (else `--region` gave it).
    pub auto_region: bool,
    pub sizes: Sizes,
    pub regions: Vec<Packed>,
    /// The largest context every PE of this placement holds (`u64::MAX`: unbounded).
    pub max_context_tokens: u64,
    /// Filled when the placement does not fit at `context_tokens`.
    pub advice: Option<Advice>,
}

/// What would fit instead, when a placement does not fit at the requested context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// The PE that overflows first as the context grows, and by what.
    pub overflow: Overflow,
    /// The smallest wafer count that fits at the requested context (same region rule).
    pub wafers_needed: Option<u32>,
    /// With `--region`: the automatic region size on the same wafers and its context.
    pub auto_region: Option<(RegionShape, u64)>,
}

/// The first PE whose SRAM overflows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overflow {
    pub region_index: usize,
    pub wafer: u32,
    /// Absolute coordinate on its wafer.
    pub pe: PeCoord,
    pub needed: PeBytes,
    pub available: u64,
    /// "weights" if the context-independent part alone overflows, else "KV cache".
    pub component: &'static str,
}

/// One region's numbers, as printed and serialised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionReport {
    pub wafer: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub items: String,
    pub max_pe: PeBytes,
    pub max_pe_total: u64,
    pub mean_pe: PeBytesMean,
    pub mean_pe_total: f64,
    pub max_context_tokens: u64,
    pub fits: bool,
}

impl Placement {
    pub fn fits(&self) -> bool {
        self.max_context_tokens >= self.context_tokens
    }

    /// Sequences in flight whose KV caches every layer holds.
    pub fn users(&self) -> u64 {
        self.sizes.users
    }

    /// Where each part of the model sits: the interface to the cost model.
    pub fn layout(&self) -> Layout {
        let site = |item: Item| -> Site {
            let r = self
                .regions
                .iter()
                .find(|r| r.items.contains(&item))
                .expect("every item is placed");
            Site {
                wafer: r.wafer,
                region: r.region,
            }
        };
        let layers = self
            .regions
            .iter()
            .flat_map(|r| {
                r.items.iter().filter_map(move |i| match i {
                    Item::Layer(_) => Some(Site {
                        wafer: r.wafer,
                        region: r.region,
                    }),
                    _ => None,
                })
            })
            .collect();
        Layout {
            embedding: site(Item::Embedding),
            layers,
            lm_head: site(Item::LmHead),
        }
    }

    /// Model weight bytes placed (no padding).
    pub fn weight_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.footprint.real_weight).sum()
    }

    /// KV-cache bytes of the model at the requested context (no padding).
    pub fn kv_bytes(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.footprint.real_kv_per_token * self.context_tokens)
            .sum()
    }

    /// Every byte the placed regions store at the requested context, padding,
    /// buffers and reserve included.
    pub fn stored_bytes(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.footprint.total(&self.sizes, self.context_tokens))
            .sum()
    }

    /// SRAM of all wafers used.
    pub fn sram_bytes(&self) -> u64 {
        self.wafers as u64 * self.fabric.pes() * self.sizes.sram
    }

    pub fn sram_utilization(&self) -> f64 {
        self.stored_bytes() as f64 / self.sram_bytes() as f64
    }

    /// PEs inside placed regions.
    pub fn pes_used(&self) -> u64 {
        self.regions.iter().map(|r| r.region.pes()).sum()
    }

    /// What PE `pe` of wafer `wafer` stores at the requested context (`None`: idle).
    pub fn pe_bytes(&self, wafer: u32, pe: PeCoord) -> Option<PeBytes> {
        self.region_at(wafer, pe).map(|i| {
            let r = &self.regions[i];
            r.footprint.at(
                &self.sizes,
                self.context_tokens,
                (pe.x - r.region.origin.x) as u64,
                (pe.y - r.region.origin.y) as u64,
            )
        })
    }

    /// The index of the region holding `pe` on `wafer`.
    pub fn region_at(&self, wafer: u32, pe: PeCoord) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| r.wafer == wafer && r.region.contains(pe))
    }

    pub fn region_report(&self, i: usize) -> RegionReport {
        let r = &self.regions[i];
        let t = self.context_tokens;
        let max_pe = r.footprint.max(&self.sizes, t);
        let mean_pe = r.footprint.mean(&self.sizes, t);
        let cap = r.footprint.max_tokens(&self.sizes).unwrap_or(0);
        RegionReport {
            wafer: r.wafer,
            x: r.region.origin.x,
            y: r.region.origin.y,
            width: r.region.width(),
            height: r.region.height(),
            items: describe_items(&r.items),
            max_pe,
            max_pe_total: max_pe.total(),
            mean_pe,
            mean_pe_total: mean_pe.total(),
            max_context_tokens: cap,
            fits: max_pe.total() <= self.sizes.sram,
        }
    }

    /// The fullest PE over all regions, and the mean over all placed PEs.
    pub fn pe_summary(&self) -> (PeBytes, PeBytesMean) {
        let t = self.context_tokens;
        let max = self
            .regions
            .iter()
            .map(|r| r.footprint.max(&self.sizes, t))
            .max_by_key(|b| b.total())
            .unwrap_or_default();
        let pes = self.pes_used() as f64;
        let mut mean = PeBytesMean::default();
        for r in &self.regions {
            let m = r.footprint.mean(&self.sizes, t);
            let share = r.region.pes() as f64 / pes;
            mean.weights += m.weights * share;
            mean.kv += m.kv * share;
            mean.buffers += m.buffers * share;
            mean.reserve += m.reserve * share;
        }
        (max, mean)
    }

    /// The PE that overflows first as the context grows: PE (0, 0) of the region
    /// holding the shortest context. `None` when everything fits.
    pub fn first_overflow(&self) -> Option<Overflow> {
        if self.fits() {
            return None;
        }
        let (i, r) = self
            .regions
            .iter()
            .enumerate()
            // A region without KV cache holds any context (`u64::MAX`): never first.
            .min_by_key(|(_, r)| {
                r.footprint
                    .max_tokens(&self.sizes)
                    .map_or(0, |t| t.saturating_add(1))
            })?;
        let needed = r.footprint.max(&self.sizes, self.context_tokens);
        let fixed = r.footprint.fixed_max(&self.sizes);
        Some(Overflow {
            region_index: i,
            wafer: r.wafer,
            pe: r.region.origin,
            needed,
            available: self.sizes.sram,
            component: if fixed > self.sizes.sram {
                "weights"
            } else {
                "KV cache"
            },
        })
    }
}

/// `embedding, layers 0-13` style summary of a region's items.
pub fn describe_items(items: &[Item]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        match items[i] {
            Item::Layer(a) => {
                let mut b = a;
                while i + 1 < items.len() && items[i + 1] == Item::Layer(b + 1) {
                    b += 1;
                    i += 1;
                }
                parts.push(if a == b {
                    format!("layer {a}")
                } else {
                    format!("layers {a}-{b}")
                });
            }
            other => parts.push(other.to_string()),
        }
        i += 1;
    }
    parts.join(", ")
}
