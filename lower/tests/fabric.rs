//! A decode step timed on the fabric simulator: one simulation per region shape
//! (memo) gives the same cycles as simulating every layer, and the token's
//! figure is its parts.

use wafer_core::WaferSpec;
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{placement_for, EstimateOptions};
use wafer_lower::fabric::{fabric_decode, FabricDecode, FabricMemo};
use wafer_lower::layout::Layout;
use wafer_lower::placement::Strategy;
use wafer_models::{ModelConfig, RopeScaling};
use wafer_sim::fabric::RunOptions;

/// A decode step at KV length 40 on `layout`, with a fresh memo and without one.
fn decode_with_and_without_memo(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
) -> (FabricDecode, FabricDecode) {
    let run = |memo: bool| {
        let mut m = FabricMemo::default();
        fabric_decode(
            spec,
            cfg,
            layout,
            40,
            &PlanOptions::default(),
            &RunOptions::default(),
            memo.then_some(&mut m),
        )
        .unwrap()
    };
    (run(true), run(false))
}

fn small_model(layers: usize) -> ModelConfig {
    ModelConfig {
        model_type: "llama".into(),
        family: wafer_models::Family::Llama,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        max_position_embeddings: 256,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::Default,
        tie_word_embeddings: false,
        attention_bias: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// A 24 x 20 wafer of wse3 PEs.
fn small_spec() -> WaferSpec {
    WaferSpec::from_toml_str(
        "base = \"wse3\"\n[fabric]\nwidth_pes = 24\nheight_pes = 20\n",
        "small.toml",
    )
    .unwrap()
}

#[test]
fn one_simulation_per_region_shape_gives_every_layers_cycles() {
    let spec = small_spec();
    let cfg = small_model(5);
    for strategy in [Strategy::LayerPerRegion, Strategy::Packed] {
        let opts = EstimateOptions {
            wafers: Some(1),
            region: None,
            strategy,
            context: 40,
            prompt_tokens: 8,
        };
        let layout = placement_for(&spec, &cfg, &opts).unwrap().layout();
        let (memo, every) = decode_with_and_without_memo(&spec, &cfg, &layout);
        let mut shapes: Vec<_> = layout
            .layers
            .iter()
            .map(|s| (s.region.width(), s.region.height()))
            .collect();
        shapes.sort();
        shapes.dedup();
        assert_eq!(memo.simulations, shapes.len() + 1, "{strategy:?}");
        assert!(shapes.len() < layout.layers.len(), "layers share a shape");
        assert_eq!(every.simulations, layout.layers.len() + 1, "{strategy:?}");
        assert_eq!(memo.layer_cycles, every.layer_cycles, "{strategy:?}");
        assert_eq!(memo.cycles, every.cycles, "{strategy:?}");
        assert_eq!(memo.token_wavelet_hops, every.token_wavelet_hops);
        assert_eq!(
            every.wavelet_hops,
            every.token_wavelet_hops + every.transfer_wavelet_hops
        );
        // Transfers: the same cycles with or without the memo; without it
        // every one of them runs (the embedding's hand-off, one per layer
        // whose successor lies elsewhere, the loop-back), with it each
        // distinct one once.
        assert_eq!(memo.transfer_cycles, every.transfer_cycles, "{strategy:?}");
        assert_eq!(memo.transfer_wavelet_hops, every.transfer_wavelet_hops);
        let handoffs = (0..layout.layers.len())
            .filter(|&l| layout.layers[l] != *layout.layers.get(l + 1).unwrap_or(&layout.lm_head))
            .count();
        let embedding = usize::from(layout.embedding != layout.layers[0]);
        assert_eq!(
            every.transfer_simulations,
            embedding + handoffs + 1,
            "{strategy:?}"
        );
        assert!(memo.transfer_simulations <= every.transfer_simulations);
        assert!(every.transfer_cycles.get() > 0.0, "{strategy:?}");
        assert!(every.analytic_transfer_cycles.get() > 0.0, "{strategy:?}");
        // A memo carried to a later call reruns only what it has not seen: at
        // the same KV length, nothing.
        let mut m = FabricMemo::default();
        let go = |m: &mut FabricMemo, t| {
            fabric_decode(
                &spec,
                &cfg,
                &layout,
                t,
                &PlanOptions::default(),
                &RunOptions::default(),
                Some(m),
            )
            .unwrap()
        };
        let first = go(&mut m, 40);
        let again = go(&mut m, 40);
        assert_eq!(again.simulations, 0, "nothing runs again");
        assert_eq!(again.transfer_simulations, 0, "no transfer runs again");
        assert_eq!(m.transfers(), first.transfer_simulations);
        assert_eq!(again.cycles, first.cycles);
        assert_eq!(m.len(), shapes.len() + 1);
        // The token is its parts, and every layer moved wavelets.
        let sum = memo.layer_cycles.iter().map(|c| c.get()).sum::<f64>()
            + memo.head_cycles.get()
            + memo.transfer_cycles.get()
            + memo.analytic_rest.get();
        assert_eq!(memo.cycles.get(), sum);
        assert!(memo.layer_cycles.iter().all(|c| c.get() > 0.0));
        assert!(memo.head_cycles.get() > 0.0);
    }
}

#[test]
fn a_token_over_two_wafers_pays_the_offwafer_link_once_per_crossing() {
    // Two wafers: the token crosses from the first wafer's last layer to the
    // second's first, and back for the loop-back if the head is elsewhere.
    // Every crossing pays at least the link's latency plus its bytes over the
    // bandwidth (the spec's two figures), which on-wafer hand-offs never do.
    let spec = small_spec();
    let cfg = small_model(6);
    let opts = EstimateOptions {
        wafers: Some(2),
        region: None,
        strategy: Strategy::LayerPerRegion,
        context: 40,
        prompt_tokens: 8,
    };
    let layout = placement_for(&spec, &cfg, &opts).unwrap().layout();
    let sites = std::iter::once(&layout.embedding)
        .chain(&layout.layers)
        .chain(std::iter::once(&layout.lm_head));
    let crossings = sites
        .clone()
        .zip(sites.skip(1))
        .filter(|(a, b)| a.wafer != b.wafer)
        .count() as f64;
    assert!(crossings >= 1.0, "{layout:?}");
    let (memo, every) = decode_with_and_without_memo(&spec, &cfg, &layout);
    assert_eq!(memo.transfer_cycles, every.transfer_cycles);
    assert_eq!(memo.cycles, every.cycles);
    let latency = spec.system.offwafer_latency_s * spec.clock_hz;
    assert!(
        every.transfer_cycles.get() >= crossings * latency,
        "{} cycles for {crossings} crossings of {latency}",
        every.transfer_cycles.get()
    );
}

mod prefill {
    //! The prefill on the fabric: the reported time to first token is its
    //! parts, each re-simulated here by another route (every Cannon step
    //! round by round with `simulate_step`, every transfer on all its lines),
    //! and the memo changes no cycle.

    use super::{small_model, small_spec};
    use wafer_core::{Cycles, WaferSpec};
    use wafer_lower::cost::{
        gemm_prefill_plan, stream_prefill_plan, Chunking, PlanOptions, PrefillScheme,
    };
    use wafer_lower::estimate::{placement_for, EstimateOptions};
    use wafer_lower::fabric::{fabric_prefill, prefill_programs, FabricMemo, FabricPrefill};
    use wafer_lower::layout::Layout;
    use wafer_lower::placement::Strategy;
    use wafer_lower::LayerProgram;
    use wafer_models::ModelConfig;
    use wafer_sim::fabric::{simulate_region, simulate_step, simulate_transfer, RunOptions};
    use wafer_sim::program::RegionProgram;

    fn layout(spec: &WaferSpec, cfg: &ModelConfig, tokens: usize) -> Layout {
        let opts = EstimateOptions {
            wafers: Some(1),
            region: None,
            strategy: Strategy::LayerPerRegion,
            context: 64,
            prompt_tokens: tokens,
        };
        placement_for(spec, cfg, &opts).unwrap().layout()
    }

    /// A prefill layer's span, step by step: runs of steps without Cannon
    /// rounds as one region program, each Cannon step all its rounds.
    fn layer_span(spec: &WaferSpec, p: &LayerProgram) -> u64 {
        let (mut span, mut run) = (0, Vec::new());
        let flush = |run: &mut Vec<_>| {
            if run.is_empty() {
                return 0;
            }
            let region = RegionProgram {
                width: p.width,
                height: p.height,
                tiles: Vec::new(),
                kv_bytes_per_position: 0,
                buffer_bytes: 0,
                steps: std::mem::take(run),
            };
            simulate_region(spec, &region, &RunOptions::default())
                .unwrap()
                .span
        };
        for s in &p.steps {
            if s.cannon.is_some() {
                span += flush(&mut run);
                span += simulate_step(spec, p.width, p.height, s, &RunOptions::default())
                    .unwrap()
                    .span;
            } else {
                run.push(s.clone());
            }
        }
        span + flush(&mut run)
    }

    /// The time to first token re-assembled from the programs' parts.
    fn parts(
        spec: &WaferSpec,
        cfg: &ModelConfig,
        layout: &Layout,
        tokens: usize,
        scheme: PrefillScheme,
        chunking: Chunking,
    ) -> f64 {
        let pre = prefill_programs(
            spec,
            cfg,
            layout,
            tokens,
            scheme,
            chunking,
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(pre.layers.len(), chunking.chunks * layout.layers.len());
        let layers: u64 = pre.layers.iter().map(|p| layer_span(spec, p)).sum();
        let head = simulate_region(spec, &pre.head, &RunOptions::default())
            .unwrap()
            .span;
        // Hand-offs on several lines (the prefill simulates one of them).
        assert!(
            pre.transfers.iter().any(|t| t.lines > 1),
            "{:?}",
            pre.transfers
        );
        let moved: u64 = pre
            .transfers
            .iter()
            .map(|t| {
                simulate_transfer(
                    spec,
                    &t.transfer,
                    t.lines,
                    t.bytes_per_value,
                    &RunOptions::default(),
                )
                .unwrap()
                .cycles
            })
            .sum();
        (layers + head + moved) as f64 + pre.analytic_rest.get()
    }

    fn run(
        spec: &WaferSpec,
        cfg: &ModelConfig,
        layout: &Layout,
        tokens: usize,
        scheme: PrefillScheme,
        chunking: Chunking,
        memo: Option<&mut FabricMemo>,
    ) -> FabricPrefill {
        fabric_prefill(
            spec,
            cfg,
            layout,
            tokens,
            scheme,
            chunking,
            &PlanOptions::default(),
            &RunOptions::default(),
            memo,
        )
        .unwrap()
    }

    #[test]
    fn the_meshgemm_prefill_is_its_simulated_parts() {
        let spec = small_spec();
        let cfg = small_model(3);
        let tokens = 24;
        let layout = layout(&spec, &cfg, tokens);
        let (_, one) = gemm_prefill_plan(&spec, &cfg, &layout, tokens, &PlanOptions::default())
            .expect("the MeshGEMM prefill fits");
        // The chunking the estimate picks, and the prompt in chunks of 8.
        let eight = Chunking {
            chunks: 3,
            chunk_tokens: 8,
        };
        for chunking in [one, eight] {
            let mut m = FabricMemo::default();
            let memo = run(
                &spec,
                &cfg,
                &layout,
                tokens,
                PrefillScheme::Gemm,
                chunking,
                Some(&mut m),
            );
            let every = run(
                &spec,
                &cfg,
                &layout,
                tokens,
                PrefillScheme::Gemm,
                chunking,
                None,
            );
            assert_eq!(memo.cycles, every.cycles, "{chunking:?}");
            assert_eq!(memo.layer_cycles, every.layer_cycles);
            assert_eq!(memo.transfer_cycles, every.transfer_cycles);
            // Without the memo every pass of every layer and the head run;
            // with it, one per distinct program (the layers' regions share a
            // shape, so one per pass).
            assert_eq!(every.simulations, chunking.chunks * layout.layers.len() + 1);
            assert!(memo.simulations < every.simulations, "{chunking:?}");
            assert_eq!(
                memo.extrapolated_cannon_steps, 0,
                "small squares run every round"
            );
            assert!(memo.full_cannon_steps > 0);
            // The figure is its parts, re-simulated another way.
            let expect = parts(&spec, &cfg, &layout, tokens, PrefillScheme::Gemm, chunking);
            assert_eq!(memo.cycles.get(), expect, "{chunking:?}");
            assert_eq!(
                memo.cycles,
                memo.layer_cycles + memo.head_cycles + memo.transfer_cycles + memo.analytic_rest
            );
            // A second call with the memo runs nothing again.
            let again = run(
                &spec,
                &cfg,
                &layout,
                tokens,
                PrefillScheme::Gemm,
                chunking,
                Some(&mut m),
            );
            assert_eq!((again.simulations, again.transfer_simulations), (0, 0));
            assert_eq!(again.cycles, memo.cycles);
        }
        // Three passes of 8 tokens cost more than their layers' one pass of 8.
        let passes = run(
            &spec,
            &cfg,
            &layout,
            tokens,
            PrefillScheme::Gemm,
            eight,
            None,
        );
        let first = run(
            &spec,
            &cfg,
            &layout,
            8,
            PrefillScheme::Gemm,
            Chunking {
                chunks: 1,
                chunk_tokens: 8,
            },
            None,
        );
        assert!(passes.layer_cycles.get() > 3.0 * first.layer_cycles.get() - 1.0);
        assert!(passes.layer_cycles > first.layer_cycles);
    }

    #[test]
    fn the_streamed_prefill_is_its_simulated_parts() {
        let spec = small_spec();
        let cfg = small_model(3);
        let tokens = 12;
        let layout = layout(&spec, &cfg, tokens);
        let (_, chunking) =
            stream_prefill_plan(&spec, &cfg, &layout, tokens, &PlanOptions::default())
                .expect("the streamed prefill fits");
        let mut m = FabricMemo::default();
        let memo = run(
            &spec,
            &cfg,
            &layout,
            tokens,
            PrefillScheme::Stream,
            chunking,
            Some(&mut m),
        );
        let every = run(
            &spec,
            &cfg,
            &layout,
            tokens,
            PrefillScheme::Stream,
            chunking,
            None,
        );
        assert_eq!(memo.cycles, every.cycles);
        assert_eq!(
            memo.full_cannon_steps + memo.extrapolated_cannon_steps,
            0,
            "no Cannon step"
        );
        let expect = parts(
            &spec,
            &cfg,
            &layout,
            tokens,
            PrefillScheme::Stream,
            chunking,
        );
        assert_eq!(memo.cycles.get(), expect);
        assert!(memo.cycles > Cycles::ZERO);
    }

    #[test]
    fn the_token_by_token_prefill_and_a_wrong_chunking_are_refused() {
        let spec = small_spec();
        let cfg = small_model(2);
        let layout = layout(&spec, &cfg, 8);
        let go = |scheme, chunks, chunk_tokens| {
            fabric_prefill(
                &spec,
                &cfg,
                &layout,
                8,
                scheme,
                Chunking {
                    chunks,
                    chunk_tokens,
                },
                &PlanOptions::default(),
                &RunOptions::default(),
                None,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(go(PrefillScheme::TokenByToken, 1, 8).contains("token-by-token"));
        assert!(go(PrefillScheme::Gemm, 1, 4).contains("chunking"));
        assert!(go(PrefillScheme::Stream, 1, 0).contains("chunking"));
    }
}
