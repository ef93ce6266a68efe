//! The serving planner: every candidate it returns re-estimates, through the
//! call `wafer estimate` makes and from nothing but its `estimate_args`, to the
//! figures it reported and meets the targets; targets that cannot be met by
//! hand-checked arithmetic give no candidate and the right reason.

use wafer_core::WaferSpec;
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{estimate_for_users, EstimateOptions};
use wafer_lower::placement::Strategy;
use wafer_lower::plan::{plan_model, Limit, ModelPlan, PlanModel, SearchOptions, Targets};
use wafer_models::presets;

fn model(name: &str) -> PlanModel {
    PlanModel {
        arg: name.into(),
        config: presets::lookup(name).unwrap(),
    }
}

fn search(max_wafers: u32, all: bool) -> SearchOptions {
    SearchOptions {
        hw_arg: "wse3".into(),
        max_wafers,
        all,
        client: None,
        speculate: None,
    }
}

fn targets(tokens_per_s: f64, context: usize, users: u64) -> Targets {
    Targets {
        tokens_per_s,
        context,
        ttft_ms: None,
        prompt_tokens: 512,
        users,
    }
}

/// The value after `flag` in an argument list.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    &args[i + 1]
}

/// Re-estimates every candidate from its `estimate_args` alone and compares.
fn check_candidates(plan: &ModelPlan, t: &Targets) {
    let spec = WaferSpec::preset("wse3").unwrap();
    for c in &plan.candidates {
        let a = &c.estimate_args;
        let cfg = presets::lookup(flag(a, "--model")).unwrap();
        assert_eq!(flag(a, "--hw"), "wse3");
        let opts = EstimateOptions {
            wafers: Some(flag(a, "--wafers").parse().unwrap()),
            region: None,
            strategy: flag(a, "--strategy").parse::<Strategy>().unwrap(),
            context: flag(a, "--context").parse().unwrap(),
            prompt_tokens: flag(a, "--prompt-tokens").parse().unwrap(),
        };
        let po = PlanOptions::with_reduce_k(flag(a, "--k").parse().unwrap()).unwrap();
        let users: u64 = flag(a, "--users").parse().unwrap();
        let e = estimate_for_users(&spec, &cfg, &opts, &po, users).unwrap();
        let rate = e
            .users
            .as_ref()
            .map_or(e.decode_tokens_per_s, |u| u.per_user_tokens_per_s);
        assert_eq!(rate, c.decode_tokens_per_s, "{a:?}");
        assert_eq!(e.ttft_ms, c.ttft_ms, "{a:?}");
        assert_eq!(e.wafers, c.wafers, "{a:?}");
        assert_eq!(e.region, c.region, "{a:?}");
        assert_eq!(e.context, t.context);
        assert!(e.sram.fits);
        assert!(c.decode_tokens_per_s >= t.tokens_per_s, "{c:?}");
        assert!(
            (c.margin - (c.decode_tokens_per_s / t.tokens_per_s - 1.0)).abs() < 1e-12,
            "{c:?}"
        );
    }
}

#[test]
fn every_candidate_re_estimates_to_its_figures() {
    let spec = WaferSpec::preset("wse3").unwrap();
    let mut found = 0;
    for (name, tps, context, users, all) in [
        ("smollm2-135m", 2000.0, 8192, 1, false),
        ("llama-3.2-1b", 1000.0, 8192, 1, true),
        ("llama-3.2-1b", 200.0, 8192, 4, false),
        ("llama-3.1-8b", 300.0, 32768, 1, false),
    ] {
        let t = targets(tps, context, users);
        let plan = plan_model(&spec, &model(name), &t, &search(6, all)).unwrap();
        check_candidates(&plan, &t);
        found += plan.candidates.len();
        // Ranked: fewest wafers first, then the larger margin.
        for w in plan.candidates.windows(2) {
            assert!(
                (w[0].wafers, -w[0].margin) <= (w[1].wafers, -w[1].margin),
                "{name}: {w:?}"
            );
        }
        // Without --all every candidate uses the same (the fewest) wafers.
        if !all {
            if let Some(first) = plan.candidates.first() {
                assert!(plan.candidates.iter().all(|c| c.wafers == first.wafers));
            }
        }
        assert!(
            plan.candidates.is_empty() != plan.miss.is_none(),
            "{name}: a candidate or a miss"
        );
    }
    assert!(found >= 4, "{found} candidates: the test checks too little");
}

#[test]
fn fewer_wafers_than_the_first_candidate_do_not_meet_the_target() {
    // Checked by estimating every strategy and K on one wafer fewer.
    let spec = WaferSpec::preset("wse3").unwrap();
    let t = targets(700.0, 32768, 1);
    let m = model("llama-3.1-8b");
    let plan = plan_model(&spec, &m, &t, &search(8, false)).unwrap();
    let first = plan
        .candidates
        .first()
        .expect("a candidate within 8 wafers");
    for w in 1..first.wafers {
        for strategy in [Strategy::Packed, Strategy::LayerPerRegion] {
            for k in 1..=4 {
                let opts = EstimateOptions {
                    wafers: Some(w),
                    region: None,
                    strategy,
                    context: t.context,
                    prompt_tokens: t.prompt_tokens,
                };
                let po = PlanOptions::with_reduce_k(k).unwrap();
                if let Ok(e) = estimate_for_users(&spec, &m.config, &opts, &po, 1) {
                    assert!(
                        e.decode_tokens_per_s < t.tokens_per_s || e.wafers < w,
                        "{w} wafers, {strategy:?}, K {k}: {} tokens/s",
                        e.decode_tokens_per_s
                    );
                }
            }
        }
    }
}

#[test]
fn a_model_larger_than_the_wafers_allowed_misses_on_sram() {
    // 405B parameters at 2 bytes are 810 GB; four WSE-3 wafers hold
    // 4 x 762 x 1172 PEs x 48 KiB = 175.6 GB of SRAM in all.
    let spec = WaferSpec::preset("wse3").unwrap();
    let m = model("llama-3.1-405b");
    let weights = m.config.param_count() * 2;
    let sram = 4 * 762 * 1172 * 48 * 1024u64;
    assert_eq!(spec.pe.sram_bytes, 48 * 1024);
    assert!(weights > sram, "{weights} {sram}");
    let plan = plan_model(&spec, &m, &targets(10.0, 8192, 1), &search(4, false)).unwrap();
    assert!(plan.candidates.is_empty());
    let miss = plan.miss.unwrap();
    assert_eq!(miss.limited_by, Limit::Sram);
    assert!(miss.best.is_none());
    assert!(miss.detail.contains("SRAM"), "{}", miss.detail);
}

#[test]
fn a_rate_no_decode_step_reaches_misses_with_the_nearest_configuration() {
    // 10^8 tokens/s at 1.1 GHz is 11 cycles a token; SmolLM2-135M's 30 layers
    // each end in at least one reduction over the fabric, so no step is that short.
    let spec = WaferSpec::preset("wse3").unwrap();
    assert_eq!(spec.clock_hz, 1.1e9);
    let t = targets(1e8, 4096, 1);
    let plan = plan_model(&spec, &model("smollm2-135m"), &t, &search(3, false)).unwrap();
    assert!(plan.candidates.is_empty());
    let miss = plan.miss.unwrap();
    let best = miss.best.as_ref().expect("it fits, so there is a nearest");
    assert!(best.decode_tokens_per_s < 1e8 && best.decode_tokens_per_s > 0.0);
    assert!(best.wafers <= 3);
    assert!(
        matches!(
            miss.limited_by,
            Limit::Compute | Limit::Communication | Limit::Sync
        ),
        "{:?}",
        miss.limited_by
    );
    let s = miss.shares.unwrap();
    assert!(
        (s.compute + s.communication + s.sync - 1.0).abs() < 1e-9,
        "{s:?}"
    );
    // The nearest is the fastest configuration searched: no estimate on its
    // wafer counts beats it.
    for w in 1..=3 {
        for k in 1..=4 {
            let opts = EstimateOptions {
                wafers: Some(w),
                region: None,
                strategy: Strategy::Packed,
                context: 4096,
                prompt_tokens: 512,
            };
            let po = PlanOptions::with_reduce_k(k).unwrap();
            if let Ok(e) = estimate_for_users(&spec, &model("smollm2-135m").config, &opts, &po, 1) {
                if e.wafers == w {
                    assert!(e.decode_tokens_per_s <= best.decode_tokens_per_s);
                }
            }
        }
    }
}

#[test]
fn a_ttft_below_one_decode_step_misses_on_ttft() {
    // Any prefill costs at least one pass through the layers, far above 1 ns.
    let spec = WaferSpec::preset("wse3").unwrap();
    let t = Targets {
        ttft_ms: Some(1e-6),
        ..targets(1.0, 4096, 1)
    };
    let plan = plan_model(&spec, &model("smollm2-135m"), &t, &search(2, false)).unwrap();
    assert!(plan.candidates.is_empty());
    let miss = plan.miss.unwrap();
    assert_eq!(miss.limited_by, Limit::Ttft);
    let best = miss.best.unwrap();
    assert!(best.ttft_ms > 1e-6 && best.decode_tokens_per_s >= 1.0);
}

#[test]
fn bad_targets_are_refused_naming_the_flag() {
    let spec = WaferSpec::preset("wse3").unwrap();
    let m = model("smollm2-135m");
    for (t, o, needle) in [
        (targets(0.0, 4096, 1), search(2, false), "--tokens-per-s"),
        (
            targets(f64::NAN, 4096, 1),
            search(2, false),
            "--tokens-per-s",
        ),
        (targets(10.0, 0, 1), search(2, false), "--context"),
        (targets(10.0, 4096, 0), search(2, false), "--users"),
        (targets(10.0, 4096, 1), search(0, false), "--max-wafers"),
        (
            targets(10.0, 4096, 1),
            search(100_000, false),
            "--max-wafers",
        ),
        (
            Targets {
                ttft_ms: Some(-1.0),
                ..targets(10.0, 4096, 1)
            },
            search(2, false),
            "--ttft-ms",
        ),
    ] {
        let e = plan_model(&spec, &m, &t, &o).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}
