//! `wafer estimate` from shapes alone: lower a model onto a layout and report
//! decode cycles per token at KV length T, time-to-first-token for an N-token
//! prompt, and the breakdowns. Closed-form per layer (no per-PE loops), so a
//! 405B-shaped model at 131,072 tokens takes milliseconds.
//!
//! Until placement (issue 3) provides `Placement::layout()`, [`interim_layout`]
//! builds the layout: the wafer is cut into as many regions of the requested shape
//! as fit, over `wafers` wafers; the decoder layers are dealt to those regions in
//! contiguous blocks (layers sharing a region run one after another); the
//! embedding shares the first layer's region and the LM head the last one's.

use crate::config::ModelConfig;
use crate::cost::{decode_plan, prefill_plan, Plan};
use crate::layout::{Layout, Site};
use anyhow::{bail, Result};
use serde::Serialize;
use wafer_core::{Bytes, Cycles, PeCoord, Region, RegionShape, WaferSpec};

/// What to estimate.
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    pub wafers: u32,
    /// `None`: pick the square region with the fastest decode that fits in SRAM.
    pub region: Option<RegionShape>,
    /// KV length of the decode step.
    pub context: usize,
    pub prompt_tokens: usize,
}

/// Whether the layout's weights and KV cache fit the PEs' data SRAM.
#[derive(Debug, Clone, Serialize)]
pub struct SramCheck {
    pub fits: bool,
    /// Bytes the fullest PE would hold (weights + KV cache at the context).
    pub bytes_per_pe: Bytes,
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
    pub decode: Plan,
    pub prefill: Plan,
    pub decode_cycles_per_token: Cycles,
    pub decode_tokens_per_s: f64,
    pub ttft_cycles: Cycles,
    pub ttft_ms: f64,
    pub prefill_tokens_per_s: f64,
}

/// Regions of `shape` that fit on one wafer (tiled from the north-west corner).
pub fn regions_per_wafer(spec: &WaferSpec, shape: RegionShape) -> u32 {
    (spec.fabric.width_pes / shape.width) * (spec.fabric.height_pes / shape.height)
}

/// The interim layout (see the module doc); replaced by placement at merge.
pub fn interim_layout(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    shape: RegionShape,
    wafers: u32,
) -> Result<Layout> {
    let per_wafer = regions_per_wafer(spec, shape);
    if per_wafer == 0 {
        bail!(
            "region {shape} does not fit the {}x{} fabric of {}",
            spec.fabric.width_pes,
            spec.fabric.height_pes,
            spec.name
        );
    }
    if wafers == 0 {
        bail!("--wafers must be at least 1");
    }
    let cols = spec.fabric.width_pes / shape.width;
    let regions = (per_wafer * wafers)
        .min(cfg.num_hidden_layers as u32)
        .max(1);
    let per_region = (cfg.num_hidden_layers as u32).div_ceil(regions);
    let site = |i: u32| {
        let local = i % per_wafer;
        // Snake order so consecutive regions are neighbours.
        let (row, c) = (local / cols, local % cols);
        let col = if row % 2 == 0 { c } else { cols - 1 - c };
        Site {
            wafer: i / per_wafer,
            region: Region::new(PeCoord::new(col * shape.width, row * shape.height), shape),
        }
    };
    let layers: Vec<Site> = (0..cfg.num_hidden_layers as u32)
        .map(|l| site(l / per_region))
        .collect();
    Ok(Layout {
        embedding: layers[0],
        lm_head: *layers
            .last()
            .expect("a validated config has at least one layer"),
        layers,
    })
}

/// Per-PE bytes of the fullest region: its layers' weights and KV cache at
/// `context`, plus the embedding / LM head where they share it.
pub fn sram_check(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
) -> SramCheck {
    let wbytes = spec.precision.weight_dtype.size_bytes();
    let abytes = spec.precision.activation_dtype.size_bytes();
    let layer = cfg.layer_params() * wbytes + 2 * (context * cfg.kv_dim()) as u64 * abytes;
    let table = (cfg.vocab_size * cfg.hidden_size) as u64 * wbytes;
    let mut worst = 0u64;
    let mut sites: Vec<Site> = layout.layers.clone();
    sites.dedup();
    for s in &sites {
        let mut bytes = layout.layers.iter().filter(|x| *x == s).count() as u64 * layer;
        if *s == layout.embedding {
            bytes += table;
        }
        if *s == layout.lm_head && !cfg.tie_word_embeddings {
            bytes += table;
        }
        worst = worst.max(bytes.div_ceil(s.region.pes()));
    }
    let budget = spec.pe.sram_bytes - spec.pe.reserve_bytes;
    SramCheck {
        fits: worst <= budget,
        bytes_per_pe: Bytes(worst),
        budget_per_pe: Bytes(budget),
    }
}

/// Lowers decode and prefill on `layout` and gathers the figures.
pub fn estimate_on(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
) -> Estimate {
    let decode = decode_plan(spec, cfg, layout, opts.context.max(1));
    let prefill = prefill_plan(spec, cfg, layout, opts.prompt_tokens.max(1));
    let d = decode.total();
    let t = prefill.total();
    let shape = layout.layers[0].region.shape;
    let mut sites = layout.layers.clone();
    sites.dedup();
    Estimate {
        hw: spec.name.clone(),
        region: shape,
        wafers: layout.wafers(),
        regions: sites.len() as u32,
        layers_per_region: (layout.layers.len() as u32).div_ceil(sites.len() as u32),
        context: opts.context,
        prompt_tokens: opts.prompt_tokens,
        sram: sram_check(spec, cfg, layout, opts.context),
        decode_tokens_per_s: spec.clock_hz / d.get(),
        ttft_ms: t.seconds_at(spec.clock_hz) * 1e3,
        prefill_tokens_per_s: opts.prompt_tokens.max(1) as f64 / t.seconds_at(spec.clock_hz),
        decode_cycles_per_token: d,
        ttft_cycles: t,
        decode,
        prefill,
    }
}

/// The estimate with the interim layout; with no region given, tries squares
/// of side 60, 120, ... and keeps the fastest decode among those that fit.
pub fn estimate(spec: &WaferSpec, cfg: &ModelConfig, opts: &EstimateOptions) -> Result<Estimate> {
    if let Some(shape) = opts.region {
        let layout = interim_layout(spec, cfg, shape, opts.wafers)?;
        return Ok(estimate_on(spec, cfg, &layout, opts));
    }
    let side_max = spec.fabric.width_pes.min(spec.fabric.height_pes);
    let mut best: Option<Estimate> = None;
    for side in (60..=side_max).step_by(60) {
        let shape = RegionShape::square(side)?;
        let layout = interim_layout(spec, cfg, shape, opts.wafers)?;
        if !sram_check(spec, cfg, &layout, opts.context).fits {
            continue;
        }
        let e = estimate_on(spec, cfg, &layout, opts);
        if best.as_ref().map_or(true, |b| {
            e.decode_cycles_per_token < b.decode_cycles_per_token
        }) {
            best = Some(e);
        }
    }
    match best {
        Some(e) => Ok(e),
        None => bail!(
            "the model does not fit in the SRAM of {} {} wafer(s) at context {} with any square region; try more --wafers or give --region to estimate anyway",
            opts.wafers,
            spec.name,
            opts.context
        ),
    }
}
