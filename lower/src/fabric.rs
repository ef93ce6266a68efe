//! A decode step timed on the fabric simulator (`--sim fabric`): every layer's
//! placed program and the LM head's steps run as whole region programs
//! ([`wafer_sim::fabric::simulate_region`], timing-only), in place of the
//! analytic price of their steps.
//!
//! The transfers between regions and wafers (the embedding's hand-off to
//! layer 0, each layer's hand-off to the next region, the token's loop-back,
//! hand-offs between wafers) run on the fabric too, each on a fabric of its
//! own ([`wafer_sim::fabric::simulate_transfer`]: parallel lines across the
//! wafer, or the off-wafer link and then the destination's replication), and
//! are reported apart (`transfer_cycles`). What still comes from the analytic
//! pricer, reported as `analytic_rest`, is the embedding lookup.
//!
//! A layer's figure is its run's span (first PE start to last PE end): the next
//! layer starts from the last PE's result. Layers on regions of one shape run
//! the same program at one KV length (and at every KV length with the same
//! cached positions per PE), and timing never depends on values, so with a
//! [`FabricMemo`] one simulation serves every identical program, across calls
//! (and one every identical transfer: same route, replication and lines);
//! without one every layer and transfer is simulated, in parallel over both
//! cores, and gives the same cycles (a test checks it).
//!
//! The prefill ([`fabric_prefill`]) likewise: every pass of the chosen scheme
//! through every layer ([`wafer_sim::fabric::simulate_prefill_layer`]: the
//! MeshGEMM scheme's Cannon steps and the steps between them; the streamed
//! scheme's chunk passes as whole region programs), the hand-offs between
//! regions, and the last position's final norm, LM head and argmax; the
//! embedding lookups stay analytic.

use crate::cost::{Chunking, OpKind, PlanOptions, PrefillScheme};
use crate::layout::{Layout, Site};
use crate::program::{
    decode_layer_program, embedding_step, handoff, layer_pass_program, model_steps,
    prefill_handoff, prefill_layer_program, LayerProgram,
};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use wafer_core::{Cycles, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::fabric::{
    simulate_prefill_layer, simulate_region, simulate_transfer, FabricRun, Launch, PrefillRun,
    RunOptions, TransferRun,
};
use wafer_sim::program::{RegionProgram, Step, Transfer};

/// One decode step's cycles from the fabric simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FabricDecode {
    /// The token: every layer's and the head's simulated span, the simulated
    /// transfers, plus `analytic_rest`.
    pub cycles: Cycles,
    /// Each decoder layer's simulated span.
    pub layer_cycles: Vec<Cycles>,
    /// The final norm, LM head and argmax, simulated on the head's region.
    pub head_cycles: Cycles,
    /// The embedding lookup, priced analytically (not simulated).
    pub analytic_rest: Cycles,
    /// Every transfer between regions and wafers of the token, simulated
    /// (one after another: each waits for the region before it).
    pub transfer_cycles: Cycles,
    /// The analytic price of the same transfers.
    pub analytic_transfer_cycles: Cycles,
    /// Region program runs made by this call (the head's included); with a
    /// memo, programs simulated before are not run again.
    pub simulations: usize,
    /// Transfer runs made by this call (likewise memoised).
    pub transfer_simulations: usize,
    /// Events and wavelet-hops of the runs this call made (transfers included).
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of the token's region programs (every layer and the
    /// head, simulated or shared).
    pub token_wavelet_hops: u64,
    /// Wavelet-hops of the token's transfers (simulated or shared).
    pub transfer_wavelet_hops: u64,
    /// The most wavelets any buffer or queue held in any run.
    pub max_queue_occupancy: u32,
}

/// Fabric runs of layer programs already simulated: identical programs (same
/// region, same steps: the KV length enters only as cached positions per PE)
/// share one run, since timing never depends on values.
#[derive(Debug, Default)]
pub struct FabricMemo {
    runs: Vec<(LayerProgram, FabricRun)>,
    transfers: Vec<(TokenTransfer, TransferRun)>,
    prefill_layers: Vec<(LayerProgram, PrefillRun)>,
}

impl FabricMemo {
    /// Distinct region programs simulated so far.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Distinct prefill layer programs simulated so far.
    pub fn prefill_layers(&self) -> usize {
        self.prefill_layers.len()
    }

    /// Distinct transfers simulated so far.
    pub fn transfers(&self) -> usize {
        self.transfers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// What the token's figures need of one fabric run: its cycles (a region
/// program's span, a transfer's cycles), events, wavelet-hops and peak queue.
#[derive(Debug, Clone, Copy)]
struct Figures {
    cycles: u64,
    events: u64,
    wavelet_hops: u64,
    peak: u32,
}

impl Figures {
    fn of_region(r: &FabricRun) -> Figures {
        Figures {
            cycles: r.span,
            events: r.events,
            wavelet_hops: r.wavelet_hops,
            peak: r.max_queue_occupancy,
        }
    }

    fn of_transfer(r: &TransferRun) -> Figures {
        Figures {
            cycles: r.cycles,
            events: r.events(),
            wavelet_hops: r.wavelet_hops(),
            peak: r.max_queue_occupancy(),
        }
    }
}

/// Every item's fabric run, in order, seen through `view`, and this call's
/// fresh runs seen the same way. Without a memo table every item is
/// simulated; with one, each item the table does not hold yet is simulated
/// once and kept there. The simulations run in parallel.
fn memoised<K, R, T>(
    items: &[&K],
    table: Option<&mut Vec<(K, R)>>,
    simulate: impl Fn(&K) -> Result<R> + Sync,
    view: impl Fn(&R) -> T,
) -> Result<(Vec<T>, Vec<T>)>
where
    K: Clone + PartialEq + Sync,
    R: Send,
{
    let mut todo: Vec<&K> = Vec::new();
    for &k in items {
        let held = |t: &Vec<(K, R)>| t.iter().any(|(q, _)| q == k) || todo.contains(&k);
        if !table.as_deref().is_some_and(held) {
            todo.push(k);
        }
    }
    let fresh = todo
        .par_iter()
        .map(|k| simulate(k))
        .collect::<Result<Vec<R>>>()?;
    let fresh_view: Vec<T> = fresh.iter().map(&view).collect();
    let each = match table {
        None => fresh.iter().map(&view).collect(),
        Some(t) => {
            t.extend(todo.into_iter().cloned().zip(fresh));
            items
                .iter()
                .map(|&k| t.iter().find(|(q, _)| q == k).map(|(_, r)| view(r)))
                .collect::<Option<_>>()
                .context("a simulated program")?
        }
    };
    Ok((each, fresh_view))
}

/// The decode step at KV length `context` on `layout`, each layer and the head
/// run on the fabric (see the module doc). With `memo`, a layer whose program
/// was simulated before (in this call or an earlier one) reuses that run;
/// without it every layer is simulated.
pub fn fabric_decode(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
    run: &RunOptions,
    memo: Option<&mut FabricMemo>,
) -> Result<FabricDecode> {
    let token = token_programs(spec, cfg, layout, context, opts);
    let programs: Vec<&LayerProgram> = token.runs.iter().map(|(_, p)| p).collect();
    let mut memo = memo;
    let (runs, fresh) = memoised(
        &programs,
        memo.as_deref_mut().map(|m| &mut m.runs),
        |p| {
            simulate_region(spec, p, run).with_context(|| {
                format!(
                    "a program of {} steps on a {}x{} region at KV length {context}",
                    p.steps.len(),
                    p.width,
                    p.height
                )
            })
        },
        Figures::of_region,
    )?;
    let (head, layers) = runs.split_last().context("the head's program")?;
    let layer_cycles: Vec<Cycles> = layers.iter().map(|r| Cycles(r.cycles as f64)).collect();
    let head_cycles = Cycles(head.cycles as f64);
    let moved = token_transfers(spec, &token, run, memo)?;
    let rest = token.analytic_rest;
    Ok(FabricDecode {
        cycles: layer_cycles.iter().copied().sum::<Cycles>() + head_cycles + moved.cycles + rest,
        layer_cycles,
        head_cycles,
        analytic_rest: rest,
        transfer_cycles: moved.cycles,
        analytic_transfer_cycles: token
            .transfers
            .iter()
            .fold(Cycles::ZERO, |a, t| a + t.transfer.cost(spec).total()),
        simulations: fresh.len(),
        transfer_simulations: moved.simulations,
        events: fresh.iter().map(|r| r.events).sum::<u64>() + moved.events,
        wavelet_hops: fresh.iter().map(|r| r.wavelet_hops).sum::<u64>() + moved.wavelet_hops,
        token_wavelet_hops: runs.iter().map(|r| r.wavelet_hops).sum(),
        transfer_wavelet_hops: moved.token_wavelet_hops,
        max_queue_occupancy: fresh
            .iter()
            .map(|r| r.peak)
            .max()
            .unwrap_or(0)
            .max(moved.max_queue_occupancy),
    })
}

/// One transfer of a decode token, as the fabric runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTransfer {
    pub transfer: Transfer,
    /// Parallel lines: the destination region's rows for a hand-off of the
    /// residual, one for the token's loop-back.
    pub lines: u32,
    /// Bytes per value moved (the activations', or 4 for token ids).
    pub bytes_per_value: u64,
}

/// The token's transfers on the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TransferTiming {
    /// Every transfer's cycles, added up (in token order).
    pub cycles: Cycles,
    /// Runs made by this call (with a memo, only transfers it did not hold).
    pub simulations: usize,
    /// Events and wavelet-hops of the runs this call made.
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of every transfer of the token, simulated or shared.
    pub token_wavelet_hops: u64,
    pub max_queue_occupancy: u32,
}

/// Simulates the transfers of `token` (each distinct one once with `memo`,
/// every one without), in parallel.
pub fn token_transfers(
    spec: &WaferSpec,
    token: &TokenPrograms,
    run: &RunOptions,
    memo: Option<&mut FabricMemo>,
) -> Result<TransferTiming> {
    let transfers: Vec<&TokenTransfer> = token.transfers.iter().collect();
    let (runs, fresh) = memoised(
        &transfers,
        memo.map(|m| &mut m.transfers),
        |t| {
            simulate_transfer(spec, &t.transfer, t.lines, t.bytes_per_value, run)
                .with_context(|| format!("the transfer {:?} on {} lines", t.transfer, t.lines))
        },
        Figures::of_transfer,
    )?;
    let timing = TransferTiming {
        cycles: runs.iter().map(|r| Cycles(r.cycles as f64)).sum(),
        simulations: fresh.len(),
        events: fresh.iter().map(|r| r.events).sum(),
        wavelet_hops: fresh.iter().map(|r| r.wavelet_hops).sum(),
        token_wavelet_hops: runs.iter().map(|r| r.wavelet_hops).sum(),
        max_queue_occupancy: fresh.iter().map(|r| r.peak).max().unwrap_or(0),
    };
    Ok(timing)
}

/// What one decode token runs on the fabric, in order, and what it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPrograms {
    /// Every decoder layer's program on its site, in layer order, then the
    /// LM head's steps (final norm, head, argmax) on the head's site (last).
    pub runs: Vec<(Site, LayerProgram)>,
    /// Every transfer between regions and wafers, in token order: the
    /// embedding's hand-off, the layers' hand-offs, the token's loop-back.
    pub transfers: Vec<TokenTransfer>,
    /// The embedding lookup, priced analytically (not simulated).
    pub analytic_rest: Cycles,
}

/// The region programs of one decode token at KV length `context` on
/// `layout` (see [`TokenPrograms`]): what [`fabric_decode`] simulates, and
/// what `wafer trace --token` traces.
pub fn token_programs(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
) -> TokenPrograms {
    let shape = |s: &Site| (s.region.width(), s.region.height());
    let around = model_steps(spec, cfg, layout, opts);
    let (head_region, head_rest): (Vec<_>, Vec<_>) = around
        .head
        .iter()
        .cloned()
        .partition(|s| s.transfer.is_none());
    let (hw, hh) = shape(&layout.lm_head);
    let mut runs: Vec<(Site, LayerProgram)> = layout
        .layers
        .iter()
        .map(|site| {
            let (w, h) = shape(site);
            (*site, decode_layer_program(spec, cfg, w, h, context, opts))
        })
        .collect();
    runs.push((layout.lm_head, region_of(hw, hh, head_region)));
    // What the steps around the layers move, and their kernels (the embedding
    // lookup), which stay analytic.
    let act = spec.precision.activation_dtype.size_bytes();
    let mut transfers = Vec::new();
    let mut rest = Cycles::ZERO;
    let mut around_step = |step: &Step<OpKind>, lines: u32, bytes_per_value: u64| {
        let mut local = step.clone();
        if let Some(t) = local.transfer.take() {
            transfers.push(TokenTransfer {
                transfer: t,
                lines: lines.max(1),
                bytes_per_value,
            });
        }
        rest += local.cost(spec).total();
    };
    let first = layout.layers.first().unwrap_or(&layout.lm_head);
    for s in &around.embedding {
        around_step(s, first.region.height(), act);
    }
    for (l, steps) in around.after_layer.iter().enumerate() {
        let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
        for s in steps {
            around_step(s, next.region.height(), act);
        }
    }
    // The token's loop-back: one 32-bit id on one line.
    for s in &head_rest {
        around_step(s, 1, 4);
    }
    TokenPrograms {
        runs,
        transfers,
        analytic_rest: rest,
    }
}

/// Steps on a `w x h` region as a program with no tiles (only its steps run).
fn region_of(w: u32, h: u32, steps: Vec<Step<OpKind>>) -> LayerProgram {
    RegionProgram {
        width: w,
        height: h,
        tiles: Vec::new(),
        kv_bytes_per_position: 0,
        buffer_bytes: 0,
        steps,
    }
}

/// A prefill up to its first token, timed on the fabric simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FabricPrefill {
    pub scheme: PrefillScheme,
    /// Passes of the prompt through the layers.
    pub chunks: usize,
    /// Time to first token: the layers, the head, the transfers and the
    /// analytic rest, one after another.
    pub cycles: Cycles,
    /// Every pass through every layer, simulated (summed).
    pub layer_cycles: Cycles,
    /// The last position's final norm, LM head and argmax, simulated.
    pub head_cycles: Cycles,
    /// The hand-offs between regions and wafers of every pass, simulated.
    pub transfer_cycles: Cycles,
    pub analytic_transfer_cycles: Cycles,
    /// The embedding lookups, priced analytically.
    pub analytic_rest: Cycles,
    /// Layer programs simulated by this call (the head's included when it
    /// ran); with a memo, programs simulated before are not run again.
    pub simulations: usize,
    /// Fabric runs those simulations made (segments and Cannon steps).
    pub fabric_runs: usize,
    pub transfer_simulations: usize,
    /// Cannon steps (of distinct programs simulated here) too large to run
    /// every round, whose span was extrapolated from their first rounds.
    pub extrapolated_cannon_steps: usize,
    /// Cannon steps run round by round to the end.
    pub full_cannon_steps: usize,
    pub events: u64,
    pub wavelet_hops: u64,
    pub max_queue_occupancy: u32,
}

/// What a prefill runs on the fabric, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefillPrograms {
    /// Every pass's every layer program, pass by pass, in layer order.
    pub layers: Vec<LayerProgram>,
    /// The head's final norm, LM head and argmax for the last position.
    pub head: LayerProgram,
    /// Every pass's hand-offs (the embedding's to layer 0, each layer's to
    /// the next region or the head's).
    pub transfers: Vec<TokenTransfer>,
    /// The embedding lookups, priced analytically.
    pub analytic_rest: Cycles,
}

/// The programs of the `scheme` prefill of `tokens` prompt tokens in
/// `chunking`'s passes (as [`crate::cost::prefill`] lowers them); an error for
/// the token-by-token scheme, which is not simulated.
pub fn prefill_programs(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    scheme: PrefillScheme,
    chunking: Chunking,
    opts: &PlanOptions,
) -> Result<PrefillPrograms> {
    if scheme == PrefillScheme::TokenByToken {
        bail!("the token-by-token prefill is not simulated on the fabric (only the gemm and stream schemes)");
    }
    let tokens = tokens.max(1);
    if chunking.chunk_tokens == 0 || chunking.chunks != tokens.div_ceil(chunking.chunk_tokens) {
        bail!(
            "a chunking of {} chunks of {} tokens for a {tokens}-token prompt",
            chunking.chunks,
            chunking.chunk_tokens
        );
    }
    let gemm = scheme == PrefillScheme::Gemm;
    let d = cfg.hidden_size;
    let act = spec.precision.activation_dtype.size_bytes();
    let side = |s: &Site| s.region.width().min(s.region.height());
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let mut out = PrefillPrograms {
        layers: Vec::new(),
        head: token_programs(spec, cfg, layout, tokens, opts)
            .runs
            .pop()
            .context("the head's program")?
            .1,
        transfers: Vec::new(),
        analytic_rest: Cycles::ZERO,
    };
    let mut moved = |t: Option<Transfer>, lines: u32| {
        if let Some(transfer) = t {
            out.transfers.push(TokenTransfer {
                transfer,
                lines: lines.max(1),
                bytes_per_value: act,
            });
        }
    };
    let mut transfers = Vec::new();
    let mut rest = Cycles::ZERO;
    let mut layers = Vec::new();
    for j in 0..chunking.chunks {
        let start = j * chunking.chunk_tokens;
        let n = chunking.chunk_tokens.min(tokens - start);
        let keys = start + n;
        // The embedding lookup (analytic) and its hand-off to layer 0.
        if gemm {
            let p0 = side(&first) as u64;
            let work = (n as u64).div_ceil(p0) * (d as u64).div_ceil(p0);
            rest += wafer_kernels::Kernel::Scale { n: work }.cycles(spec);
            transfers.push((
                prefill_handoff(spec, &layout.embedding, &first, n, d),
                side(&layout.embedding),
            ));
        } else {
            let mut e = embedding_step(spec, layout, d, n);
            transfers.push((e.transfer.take(), first.region.height()));
            rest += e.cost(spec).total();
        }
        for (l, site) in layout.layers.iter().enumerate() {
            let (w, h) = (site.region.width(), site.region.height());
            let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
            if gemm {
                layers.push(prefill_layer_program(spec, cfg, w, h, n, keys, opts));
                transfers.push((prefill_handoff(spec, site, next, n, d), side(site)));
            } else {
                layers.push(layer_pass_program(spec, cfg, w, h, keys, n, opts));
                transfers.push((
                    handoff(spec, site, next, (n * d) as u64),
                    next.region.height(),
                ));
            }
        }
    }
    for (t, lines) in transfers {
        moved(t, lines);
    }
    out.layers = layers;
    out.analytic_rest = rest;
    Ok(out)
}

/// The prefill of `tokens` prompt tokens by `scheme` in `chunking`'s passes
/// on the fabric (see the module doc). With `memo`, each distinct layer
/// program, head program and transfer runs once (across calls too); without
/// it every one runs, in parallel.
#[allow(clippy::too_many_arguments)]
pub fn fabric_prefill(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    scheme: PrefillScheme,
    chunking: Chunking,
    opts: &PlanOptions,
    run: &RunOptions,
    memo: Option<&mut FabricMemo>,
) -> Result<FabricPrefill> {
    let pre = prefill_programs(spec, cfg, layout, tokens, scheme, chunking, opts)?;
    let mut memo = memo;
    let layers: Vec<&LayerProgram> = pre.layers.iter().collect();
    let (each, fresh) = memoised(
        &layers,
        memo.as_deref_mut().map(|m| &mut m.prefill_layers),
        |p| {
            simulate_prefill_layer(spec, p, run).with_context(|| {
                format!(
                    "a prefill layer program of {} steps on a {}x{} region",
                    p.steps.len(),
                    p.width,
                    p.height
                )
            })
        },
        |r: &PrefillRun| *r,
    )?;
    // The head: one decode head program (shared with decode's in a memo).
    let (head, head_fresh) = memoised(
        &[&pre.head],
        memo.as_deref_mut().map(|m| &mut m.runs),
        |p| simulate_region(spec, p, run).context("the LM head's program"),
        Figures::of_region,
    )?;
    let mut made = PrefillRun::default();
    for r in &fresh {
        made.events += r.events;
        made.wavelet_hops += r.wavelet_hops;
        made.max_queue_occupancy = made.max_queue_occupancy.max(r.max_queue_occupancy);
        made.runs += r.runs;
        made.extrapolated_steps += r.extrapolated_steps;
        made.full_steps += r.full_steps;
    }
    let simulations = fresh.len() + head_fresh.len();
    let spans: Vec<u64> = each.iter().map(|r| r.span).collect();
    let layer_cycles = Cycles(spans.iter().map(|&s| s as f64).sum());
    let head_cycles = Cycles(head[0].cycles as f64);
    // A transfer's lines share no link, router or PE and, launched together,
    // run the same route at once: every line takes the one line's cycles, so
    // one line is simulated (a prefill moves hundreds of wavelets per line).
    let one_line = run.launch == Launch::Together;
    let token = TokenPrograms {
        runs: Vec::new(),
        transfers: pre
            .transfers
            .iter()
            .map(|t| TokenTransfer {
                lines: if one_line { 1 } else { t.lines },
                ..*t
            })
            .collect(),
        analytic_rest: pre.analytic_rest,
    };
    let moved = token_transfers(spec, &token, run, memo)?;
    let (head_events, head_hops, head_peak) = head_fresh
        .first()
        .map_or((0, 0, 0), |r| (r.events, r.wavelet_hops, r.peak));
    Ok(FabricPrefill {
        scheme,
        chunks: chunking.chunks,
        cycles: layer_cycles + head_cycles + moved.cycles + pre.analytic_rest,
        layer_cycles,
        head_cycles,
        transfer_cycles: moved.cycles,
        analytic_transfer_cycles: pre
            .transfers
            .iter()
            .fold(Cycles::ZERO, |a, t| a + t.transfer.cost(spec).total()),
        analytic_rest: pre.analytic_rest,
        simulations,
        fabric_runs: made.runs + head_fresh.len(),
        transfer_simulations: moved.simulations,
        extrapolated_cannon_steps: made.extrapolated_steps,
        full_cannon_steps: made.full_steps,
        events: made.events + head_events + moved.events,
        wavelet_hops: made.wavelet_hops + head_hops + moved.wavelet_hops,
        max_queue_occupancy: made
            .max_queue_occupancy
            .max(head_peak)
            .max(moved.max_queue_occupancy),
    })
}
