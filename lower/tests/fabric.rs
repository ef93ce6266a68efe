//! A decode step timed on the fabric simulator: one simulation per region shape
//! (memo) gives the same cycles as simulating every layer, and the token's
//! figure is its parts.

use wafer_core::WaferSpec;
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{placement_for, EstimateOptions};
use wafer_lower::fabric::{fabric_decode, FabricMemo};
use wafer_lower::placement::Strategy;
use wafer_models::{ModelConfig, RopeScaling};
use wafer_sim::fabric::RunOptions;

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
        let run = |memo: bool| {
            let mut m = FabricMemo::default();
            fabric_decode(
                &spec,
                &cfg,
                &layout,
                40,
                &PlanOptions::default(),
                &RunOptions::default(),
                memo.then_some(&mut m),
            )
            .unwrap()
        };
        let (memo, every) = (run(true), run(false));
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
    let run = |memo: bool| {
        let mut m = FabricMemo::default();
        fabric_decode(
            &spec,
            &cfg,
            &layout,
            40,
            &PlanOptions::default(),
            &RunOptions::default(),
            memo.then_some(&mut m),
        )
        .unwrap()
    };
    let (memo, every) = (run(true), run(false));
    assert_eq!(memo.transfer_cycles, every.transfer_cycles);
    assert_eq!(memo.cycles, every.cycles);
    let latency = spec.system.offwafer_latency_s * spec.clock_hz;
    assert!(
        every.transfer_cycles.get() >= crossings * latency,
        "{} cycles for {crossings} crossings of {latency}",
        every.transfer_cycles.get()
    );
}
