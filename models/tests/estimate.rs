//! `wafer estimate`'s model: calibration rows C1/C2 (LLaMA3-8B on `wse2`) within
//! 10% with their trends, the plan's internal consistency, and growth with KV length.

use wafer_core::spec::{wse2, wse3};
use wafer_core::RegionShape;
use wafer_models::cost::{decode_plan, OpKind};
use wafer_models::estimate::{estimate, interim_layout, EstimateOptions};
use wafer_models::{ModelConfig, RopeScaling};

/// LLaMA3-8B's shape as calibration.md gives it (the calibration config, not a preset).
fn llama3_8b() -> ModelConfig {
    ModelConfig {
        model_type: "llama".into(),
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
        wafers: 1,
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
    let mut prefill = Vec::new();
    for (side, tps) in [(480, 20320.6), (600, 25037.2), (720, 27686.5)] {
        let e = estimate(&spec, &cfg, &opts(side, 4096)).unwrap();
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
    let layout = interim_layout(&spec, &cfg, RegionShape::square(360).unwrap(), 1).unwrap();
    let at = |t| decode_plan(&spec, &cfg, &layout, t).total().get();
    let (a, b, c) = (at(4096), at(65_536), at(131_072));
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn pipelining_over_more_wafers_adds_off_wafer_hops() {
    let (spec, cfg) = (wse3(), llama3_8b());
    let mut o = opts(600, 4096);
    let one = estimate(&spec, &cfg, &o).unwrap();
    o.wafers = 4;
    let four = estimate(&spec, &cfg, &o).unwrap();
    assert_eq!(one.decode.cost().off_wafer.get(), 0.0);
    assert!(four.decode.cost().off_wafer.get() > 0.0);
    assert!(four.wafers > 1 && four.regions > one.regions);
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
