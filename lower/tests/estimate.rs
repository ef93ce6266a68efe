//! `wafer estimate`'s model: calibration rows C1/C2 (LLaMA3-8B on `wse2`) within
//! 10% with their trends, the plan's internal consistency, growth with KV length,
//! the time-to-first-token rule (cheaper of MeshGEMM and token-by-token prefill)
//! and the reduction tree's K.

use wafer_core::spec::{wse2, wse3};
use wafer_core::{Cycles, PeCoord, Region, RegionShape};
use wafer_lower::cost::{
    decode_plan, gemm_prefill_plan, prefill, prefill_bytes_per_pe, prefill_chunking,
    stream_prefill_plan, token_prefill, OpKind, Plan, PlanOptions, PrefillScheme,
};
use wafer_lower::estimate::{estimate, estimate_with, placement_for, Estimate, EstimateOptions};
use wafer_lower::layout::{Layout, Site};
use wafer_lower::{decode_layer_program, layer_pass_program, prefill_layer_program, LayerTiling};
use wafer_models::{ModelConfig, RopeScaling};
use wafer_sim::Algorithm;

/// LLaMA3-8B's shape as calibration.md gives it (the calibration config, not a preset).
fn llama3_8b() -> ModelConfig {
    ModelConfig {
        model_type: "llama".into(),
        family: wafer_models::Family::Llama,
        vocab_size: 128_256,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 128,
        max_position_embeddings: 131_072,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Default,
        tie_word_embeddings: false,
        attention_bias: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001],
    }
}

fn opts(side: u32, context: usize) -> EstimateOptions {
    EstimateOptions {
        wafers: None,
        strategy: Default::default(),
        region: Some(RegionShape::square(side).unwrap()),
        context,
        prompt_tokens: 4096,
    }
}

#[test]
fn c1_c2_within_ten_percent_with_their_trends() {
    let (spec, cfg) = (wse2(), llama3_8b());
    let mut failures = Vec::new();
    let mut decode = Vec::new();
    for (side, tps) in [(420, 2699.9), (540, 2501.5), (660, 2243.3)] {
        let e = estimate(&spec, &cfg, &opts(side, 4096)).unwrap();
        let err = e.decode_tokens_per_s / tps - 1.0;
        if err.abs() > 0.10 {
            failures.push(format!(
                "C1 {side}: {:.1} vs {tps} tok/s ({:+.1}%)",
                e.decode_tokens_per_s,
                err * 100.0
            ));
        }
        decode.push(e.decode_tokens_per_s);
    }
    // C2 measured WaferLLM's MeshGEMM prefill: cost that scheme.
    let gemm = PlanOptions::default().with_prefill_scheme(Some(PrefillScheme::Gemm));
    let mut prefill = Vec::new();
    for (side, tps) in [(480, 20320.6), (600, 25037.2), (720, 27686.5)] {
        let e = estimate_with(&spec, &cfg, &opts(side, 4096), &gemm).unwrap();
        assert_eq!(e.prefill_scheme, PrefillScheme::Gemm);
        let err = e.prefill_tokens_per_s / tps - 1.0;
        if err.abs() > 0.10 {
            failures.push(format!(
                "C2 {side}: {:.1} vs {tps} tok/s ({:+.1}%)",
                e.prefill_tokens_per_s,
                err * 100.0
            ));
        }
        prefill.push(e.prefill_tokens_per_s);
    }
    assert!(
        failures.is_empty(),
        "rows outside 10%:\n{}",
        failures.join("\n")
    );
    assert!(
        decode[0] > decode[1] && decode[1] > decode[2],
        "decode must slow as the region grows: {decode:?}"
    );
    assert!(
        prefill[0] < prefill[1] && prefill[1] < prefill[2],
        "prefill must speed up as the region grows: {prefill:?}"
    );
}

#[test]
fn plan_totals_are_the_sum_of_their_phases_and_breakdowns() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let e = estimate(&spec, &cfg, &opts(360, 8192)).unwrap();
    let plan = &e.decode;
    let phases: f64 = plan.phases().map(|p| p.cycles.get()).sum();
    assert!((phases - e.decode_cycles_per_token.get()).abs() < 1e-6 * phases);
    let by_kind: f64 = plan.by_kind().iter().map(|(_, c)| c.total().get()).sum();
    assert!((by_kind - phases).abs() < 1e-6 * phases);
    let layers: f64 = plan.by_layer(32).iter().map(|c| c.get()).sum();
    let outside: f64 = plan
        .ops
        .iter()
        .filter(|o| o.layer.is_none())
        .map(|o| o.cost.total().get())
        .sum();
    assert!((layers + outside - phases).abs() < 1e-6 * phases);
    // Every layer carries every decode operation once (two norms, two residuals).
    for kind in [OpKind::QkvProj, OpKind::AttnScores, OpKind::DownProj] {
        assert_eq!(
            plan.ops.iter().filter(|o| o.kind == kind).count(),
            32,
            "{kind:?}"
        );
    }
    assert_eq!(
        plan.ops
            .iter()
            .filter(|o| o.kind == OpKind::RmsNorm)
            .count(),
        64
    );
    assert!((e.decode_tokens_per_s - spec.clock_hz / e.decode_cycles_per_token.get()).abs() < 1e-6);
}

#[test]
fn decode_grows_with_kv_length() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let layout = placement_for(&spec, &cfg, &opts(360, 4096))
        .unwrap()
        .layout();
    let at = |t| decode_plan(&spec, &cfg, &layout, t).total().get();
    let (a, b, c) = (at(4096), at(65_536), at(131_072));
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn pipelining_over_more_wafers_adds_off_wafer_hops() {
    // Automatic regions: one WSE-3 holds LLaMA3-8B at 4k; spread over four, every
    // wafer boundary adds an off-wafer hand-off to each token.
    let (spec, cfg) = (wse3(), llama3_8b());
    let mut o = opts(600, 4096);
    o.region = None;
    o.wafers = Some(1);
    let one = estimate(&spec, &cfg, &o).unwrap();
    o.wafers = Some(4);
    let four = estimate(&spec, &cfg, &o).unwrap();
    assert_eq!(one.wafers, 1);
    assert_eq!(one.decode.cost().off_wafer.get(), 0.0);
    assert_eq!(four.wafers, 4);
    assert!(four.decode.cost().off_wafer.get() > 0.0);
    // Every wafer holds a region of the pipeline. (Four wafers need not have more
    // regions than one: with the measured 4,176-byte reserve one wafer already gives
    // each layer a region of its own, 32 of 152x167, where four use 16 of 381x586.)
    assert!(four.regions >= four.wafers);
}

#[test]
fn bad_requests_are_clear_errors() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let mut o = opts(2000, 4096);
    let err = estimate(&spec, &cfg, &o).unwrap_err().to_string();
    assert!(
        err.contains("2000x2000") && err.contains("762x1172"),
        "{err}"
    );
    o.region = None;
    o.context = 10_000_000;
    let err = estimate(&spec, &cfg, &o).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
}

/// C4's synthetic single-head layer (dim = seq = 9 P, ffn = 30 P).
fn c4_layer(p: usize) -> ModelConfig {
    let mut c = llama3_8b();
    c.hidden_size = 9 * p;
    c.head_dim = 9 * p;
    c.intermediate_size = 30 * p;
    c.num_attention_heads = 1;
    c.num_key_value_heads = 1;
    c.num_hidden_layers = 1;
    c.vocab_size = 1000;
    c
}

#[test]
fn c4_decode_layer_within_ten_percent() {
    let spec = wse3();
    for (p, cycles) in [(240u32, 19_546.0), (360, 22_029.0)] {
        let cfg = c4_layer(p as usize);
        let e = estimate(&spec, &cfg, &opts(p, 9 * p as usize)).unwrap();
        let layer = e.decode.by_layer(1)[0].get();
        let err = layer / cycles - 1.0;
        assert!(
            err.abs() <= 0.10,
            "C4 P={p}: {layer:.0} vs {cycles} ({:+.1}%)",
            err * 100.0
        );
    }
}

fn op_cycles(plan: &Plan, keep: impl Fn(OpKind, Option<u32>) -> bool) -> f64 {
    plan.ops
        .iter()
        .filter(|o| keep(o.kind, o.layer))
        .map(|o| o.cost.total().get())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Two region shapes on two wafers (so the hand-off to the LM head's region is
/// an off-wafer hop) with short columns (h = 8 and 5), so that a prompt of a few
/// dozen tokens crosses several `ceil(t / h)` groups.
fn two_shape_layout() -> Layout {
    let a = Site {
        wafer: 0,
        region: Region::new(PeCoord::new(0, 0), "40x8".parse::<RegionShape>().unwrap()),
    };
    let b = Site {
        wafer: 1,
        region: Region::new(PeCoord::new(0, 0), "30x5".parse::<RegionShape>().unwrap()),
    };
    let c = Site {
        wafer: 1,
        region: Region::new(PeCoord::new(40, 0), "30x5".parse::<RegionShape>().unwrap()),
    };
    Layout {
        embedding: a,
        layers: vec![a, a, b, b],
        lm_head: c,
    }
}

fn small_model() -> ModelConfig {
    let mut c = llama3_8b();
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.vocab_size = 1000;
    c
}

#[test]
fn decode_cost_never_falls_as_the_kv_length_grows() {
    // The token-by-token prefill's lower bound relies on this.
    let (spec, cfg, layout) = (wse3(), small_model(), two_shape_layout());
    let costs: Vec<f64> = (1..=60)
        .map(|t| decode_plan(&spec, &cfg, &layout, t).total().get())
        .collect();
    assert!(costs.windows(2).all(|w| w[1] >= w[0]), "{costs:?}");
    assert!(
        costs[59] > costs[0],
        "attention must grow over 60 positions"
    );
}

#[test]
fn token_by_token_prefill_is_the_decode_steps_summed_by_hand() {
    let (mut spec, cfg, layout) = (wse3(), small_model(), two_shape_layout());
    // Room for every scheme on this hand-made layout's small squares.
    spec.pe.sram_bytes = 1 << 20;
    let opts = PlanOptions::default();
    let exact = |n: usize| {
        token_prefill(&spec, &cfg, &layout, n, &opts, Cycles(f64::INFINITY))
            .plan
            .unwrap()
    };
    // One token: exactly one decode step at KV length 1 without the loop-back
    // of the chosen token to the embedding.
    let step1 = decode_plan(&spec, &cfg, &layout, 1);
    let one = exact(1);
    let loopback = op_cycles(&step1, |k, _| k == OpKind::TokenLoopback);
    assert!(loopback > 0.0);
    assert!(close(one.total().get(), step1.total().get() - loopback));
    // 23 tokens (h = 8: groups of 8, 8, 7; h = 5: 5 groups): steps 1..22 without
    // the head (final norm, LM head, argmax), the loop-back and the last layer's
    // hand-off to the head's region; step 23 without the loop-back only.
    let n = 23;
    let head = |k: OpKind, l: Option<u32>| {
        matches!(
            k,
            OpKind::FinalNorm | OpKind::LmHead | OpKind::Argmax | OpKind::TokenLoopback
        ) || (k == OpKind::Handoff && l == Some(3))
    };
    let mut want = 0.0;
    for t in 1..=n {
        let step = decode_plan(&spec, &cfg, &layout, t);
        want += step.total().get() - op_cycles(&step, head);
    }
    let last = decode_plan(&spec, &cfg, &layout, n);
    let last_head = op_cycles(&last, head) - loopback;
    assert!(op_cycles(&last, |k, l| k == OpKind::Handoff && l == Some(3)) > 0.0);
    want += last_head;
    let plan = exact(n);
    assert!(
        close(plan.total().get(), want),
        "{} vs {want}",
        plan.total()
    );
    // The breakdowns add up to the total, and the head ran once.
    let by_kind: f64 = plan.by_kind().iter().map(|(_, c)| c.total().get()).sum();
    let outside = op_cycles(&plan, |_, l| l.is_none());
    let layers: f64 = plan.by_layer(4).iter().map(|c| c.get()).sum();
    assert!(close(by_kind, want) && close(layers + outside, want));
    assert!(close(
        op_cycles(&plan, |k, _| k == OpKind::LmHead),
        op_cycles(&last, |k, _| k == OpKind::LmHead)
    ));
    assert_eq!(op_cycles(&plan, |k, _| k == OpKind::TokenLoopback), 0.0);
    // TTFT is the cheapest scheme (GEMM, then streamed, on a tie); with only
    // GEMM and token-by-token costed, both occur on this layout (its 8- and
    // 5-PE squares make the Cannon schedule short, so GEMM wins early).
    let two = opts.with_prefill_scheme(Some(PrefillScheme::Gemm));
    let mut schemes = Vec::new();
    for n in [1, 2, 23, 400] {
        let gemm = gemm_prefill_plan(&spec, &cfg, &layout, n, &opts)
            .unwrap()
            .0
            .total();
        let stream = stream_prefill_plan(&spec, &cfg, &layout, n, &opts)
            .unwrap()
            .0
            .total();
        let tbt = exact(n).total();
        let p = prefill(&spec, &cfg, &layout, n, &opts).unwrap();
        assert_eq!((p.gemm_cycles, p.stream_cycles), (Some(gemm), Some(stream)));
        let want = if tbt < gemm && tbt < stream {
            PrefillScheme::TokenByToken
        } else if stream < gemm {
            PrefillScheme::Stream
        } else {
            PrefillScheme::Gemm
        };
        assert_eq!(
            p.scheme, want,
            "n = {n}: gemm {gemm}, stream {stream}, token by token {tbt}"
        );
        assert!(close(
            p.plan.total().get(),
            gemm.get().min(tbt.get()).min(stream.get())
        ));
        // What is reported for the token-by-token plan is a true lower bound.
        assert!(p.token_by_token_cycles.get() <= tbt.get() * (1.0 + 1e-12));
        let g = prefill(&spec, &cfg, &layout, n, &two).unwrap();
        assert_eq!(g.stream_cycles, None);
        schemes.push(g.scheme);
    }
    assert_eq!(
        schemes,
        [
            PrefillScheme::TokenByToken,
            PrefillScheme::TokenByToken,
            PrefillScheme::Gemm,
            PrefillScheme::Gemm
        ]
    );
}

#[test]
fn ttft_grows_with_short_prompts_and_long_prompts_use_the_gemm_prefill() {
    let (spec, cfg) = (wse2(), llama3_8b());
    // Only the MeshGEMM and the token-by-token prefill.
    let two = [PrefillScheme::Gemm, PrefillScheme::TokenByToken];
    let at = |n: usize| {
        let mut o = opts(420, 4096);
        o.prompt_tokens = n;
        let only = |s| PlanOptions::default().with_prefill_scheme(Some(s));
        let [g, t] = two.map(|s| estimate_with(&spec, &cfg, &o, &only(s)).unwrap());
        if t.ttft_cycles < g.ttft_cycles {
            Estimate {
                prefill_gemm_cycles: g.prefill_gemm_cycles,
                ..t
            }
        } else {
            g
        }
    };
    let (one, six, long) = (at(1), at(6), at(4096));
    assert_eq!(one.prefill_scheme, PrefillScheme::TokenByToken);
    assert_eq!(six.prefill_scheme, PrefillScheme::TokenByToken);
    // Six steps at KV <= 6 cost about six times one step (same cached positions per PE).
    let ratio = six.ttft_cycles.get() / one.ttft_cycles.get();
    assert!(ratio > 5.0 && ratio < 6.5, "{ratio}");
    assert!(six.ttft_cycles < six.prefill_gemm_cycles.unwrap());
    assert!(one.ttft_cycles.get() < one.decode_cycles_per_token.get());
    assert_eq!(long.prefill_scheme, PrefillScheme::Gemm);
    assert_eq!(Some(long.ttft_cycles), long.prefill_gemm_cycles);
    // The MeshGEMM prefill costs nearly the same for 1 and 6 tokens (P shift steps).
    assert!(
        six.prefill_gemm_cycles.unwrap().get() / one.prefill_gemm_cycles.unwrap().get() < 1.001
    );
    // The chosen plan's breakdown adds up to the TTFT.
    for e in [&one, &six, &long] {
        let by_kind: f64 = e
            .prefill
            .by_kind()
            .iter()
            .map(|(_, c)| c.total().get())
            .sum();
        assert!(close(by_kind, e.ttft_cycles.get()));
    }
}

#[test]
fn reduction_tree_k_two_is_the_default_and_the_chain_is_slower() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let o = opts(600, 4096);
    let default = estimate(&spec, &cfg, &o).unwrap();
    assert_eq!(default.reduce_k, 2);
    // By hand: a 600-PE line is rooted at PE 299; its longer half has 301 PEs;
    // ceil(301 / g) + g is smallest (35) first at g = 16 groups.
    let program = decode_layer_program(&spec, &cfg, 600, 600, 4096, &PlanOptions::default());
    let tree = program.steps[0].collective.as_ref().unwrap().tree.clone();
    assert_eq!(
        tree.algorithm(),
        Algorithm::MidKTree {
            k: 2,
            groups: Some(16)
        }
    );
    assert_eq!(
        (tree.root(), tree.levels(), tree.depth()),
        (299, &[19u32, 16][..], 18 + 15 + 1)
    );
    let chain = estimate_with(&spec, &cfg, &o, &PlanOptions::with_reduce_k(1).unwrap()).unwrap();
    assert_eq!(chain.reduce_k, 1);
    // On 600-PE lines a chain has ~300 dependent levels per half-line, the
    // K = 2 tree ~2 sqrt(300).
    assert!(
        chain.decode_cycles_per_token.get() > 1.3 * default.decode_cycles_per_token.get(),
        "{} vs {}",
        chain.decode_cycles_per_token,
        default.decode_cycles_per_token
    );
    // Only reductions change: compute is the same.
    assert_eq!(chain.decode.cost().compute, default.decode.cost().compute);
    let k3 = estimate_with(&spec, &cfg, &o, &PlanOptions::with_reduce_k(3).unwrap()).unwrap();
    assert_eq!(k3.reduce_k, 3);
    assert!(k3.decode_cycles_per_token < chain.decode_cycles_per_token);
    assert_eq!(k3.decode.cost().compute, default.decode.cost().compute);
    assert!(PlanOptions::with_reduce_k(0).is_err());
}

/// The most layers any region of `layout` with the shape `(w, h)` holds.
fn sharing(layout: &Layout, (w, h): (u32, u32)) -> usize {
    layout
        .layers
        .iter()
        .filter(|s| (s.region.width(), s.region.height()) == (w, h))
        .map(|s| layout.layers.iter().filter(|t| *t == s).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn streamed_prefill_chunks_are_the_largest_whose_pass_fits_every_region() {
    let (spec, cfg) = (wse3(), llama3_8b());
    for (side, tokens) in [(152u32, 4096usize), (300, 8192), (600, 4096)] {
        let mut o = opts(side, 8192);
        o.prompt_tokens = tokens;
        let layout = placement_for(&spec, &cfg, &o).unwrap().layout();
        let (plan, c) =
            stream_prefill_plan(&spec, &cfg, &layout, tokens, &PlanOptions::default()).unwrap();
        assert_eq!(c.chunks, tokens.div_ceil(c.chunk_tokens));
        // A pass's footprint from its program: the layers' tiles and the
        // prompt's cache, the pass's buffers, the reserve.
        let bytes = |n: usize| {
            let (w, h) = (side, side);
            let p = layer_pass_program(&spec, &cfg, w, h, tokens, n, &PlanOptions::default());
            let layers = sharing(&layout, (w, h)) as u64;
            layers
                * (p.weight_bytes_per_pe()
                    + (tokens as u64).div_ceil(h as u64) * p.kv_bytes_per_position)
                + p.buffer_bytes
                + spec.pe.reserve_bytes
        };
        assert!(bytes(c.chunk_tokens) <= spec.pe.sram_bytes, "{side}: {c:?}");
        assert!(c.chunk_tokens == tokens || bytes(c.chunk_tokens + 1) > spec.pe.sram_bytes);
        // Every prompt token goes through every projection once: the Q/K/V
        // MACs of layer 0, summed over the chunks, are the prompt's tokens times
        // one decode step's.
        let decode = decode_layer_program(&spec, &cfg, side, side, 1, &PlanOptions::default());
        let per_token = decode
            .steps
            .iter()
            .find(|s| s.label == OpKind::QkvProj)
            .unwrap()
            .macs_per_pe();
        let qkv: u64 = plan
            .ops
            .iter()
            .filter(|o| o.kind == OpKind::QkvProj && o.layer == Some(0))
            .map(|o| o.work_per_pe)
            .sum();
        assert_eq!(qkv, tokens as u64 * per_token);
    }
}

#[test]
fn meshgemm_prefill_chunks_fit_the_square_and_elongated_regions_may_not_fit_at_all() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let o = PlanOptions::default();
    // On the default 8B layout the whole 4096-token prompt does not fit the
    // square; the chunk chosen does, and one more row of tokens per PE does not.
    let mut eo = opts(152, 8192);
    eo.region = Some("152x167".parse().unwrap());
    eo.strategy = "layer-per-region".parse().unwrap();
    let layout = placement_for(&spec, &cfg, &eo).unwrap().layout();
    let tokens = 4096;
    let c = prefill_chunking(&spec, &cfg, &layout, tokens, &o).unwrap();
    assert!(c.chunks > 1 && c.chunk_tokens.is_multiple_of(152), "{c:?}");
    let bytes = |n: usize| {
        let p = prefill_layer_program(&spec, &cfg, 152, 167, n, tokens, &o);
        prefill_bytes_per_pe(&spec, &cfg, &p, (152, 167), 1, tokens)
    };
    assert!(bytes(c.chunk_tokens) <= spec.pe.sram_bytes);
    assert!(bytes(c.chunk_tokens + 152) > spec.pe.sram_bytes);
    // By hand, one row of tokens on the 152 x 152 square: the gate/up block
    // is 27 x 189 f16 values (ceil(4096/152) x ceil(28672/152)).
    let p = prefill_layer_program(&spec, &cfg, 152, 167, 152, 152, &o);
    assert!(p.tiles.iter().any(|t| t.bytes_per_pe() == 27 * 189 * 2));
    // A region ten times taller than wide cannot hold a layer on its square.
    let mut tall = opts(108, 8192);
    tall.region = Some("108x1172".parse().unwrap());
    let big = wafer_models::presets::lookup("llama-3.1-70b").unwrap();
    let layout = placement_for(&spec, &big, &tall).unwrap().layout();
    assert_eq!(prefill_chunking(&spec, &big, &layout, tokens, &o), None);
    let e = estimate_with(&spec, &big, &tall, &o).unwrap();
    assert_eq!(e.prefill_gemm_cycles, None);
    assert_ne!(e.prefill_scheme, PrefillScheme::Gemm);
    // Asked for by name, the scheme that does not fit is an error.
    let only = o.with_prefill_scheme(Some(PrefillScheme::Gemm));
    let err = estimate_with(&spec, &big, &tall, &only)
        .unwrap_err()
        .to_string();
    assert!(err.contains("MeshGEMM prefill does not fit"), "{err}");
    // The tiling the square holds is not the decode tiling of the region.
    let decode = LayerTiling::new(
        &big,
        spec.precision.weight_dtype,
        spec.precision.kv_dtype,
        108,
        1172,
    );
    let square = prefill_layer_program(&spec, &big, 108, 1172, 1, 1, &o);
    assert!(square.weight_bytes_per_pe() > 10 * decode.weight_bytes_per_pe());
}
