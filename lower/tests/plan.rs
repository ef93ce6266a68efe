//! The serving planner: every candidate it returns re-estimates, through the
//! call `wafer estimate` makes and from nothing but its `estimate_args`, to the
//! figures it reported and meets the targets (fixed `--region` shapes
//! included); no configuration of the searched space on fewer wafers, and none
//! faster than a miss's nearest, exists by brute-force estimates; targets that
//! cannot be met by hand-checked arithmetic give no candidate and the right
//! reason.

use wafer_core::{RegionShape, WaferSpec};
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{estimate_for_users, EstimateOptions};
use wafer_lower::placement::Strategy;
use wafer_lower::plan::{
    plan_model, searched_shapes, Limit, ModelPlan, PlanModel, SearchOptions, Targets,
};
use wafer_models::presets;
use wafer_sim::Category;

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
        most_users: false,
        top: 3,
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
    optional_flag(args, flag).unwrap_or_else(|| panic!("{flag} missing from {args:?}"))
}

fn optional_flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    Some(&args[i + 1])
}

/// Every region the planner may place with: the placement's choice, then the
/// fixed shapes.
fn all_regions(spec: &WaferSpec) -> Vec<Option<RegionShape>> {
    std::iter::once(None)
        .chain(searched_shapes(spec).into_iter().map(Some))
        .collect()
}

/// Re-estimates every candidate from its `estimate_args` alone and compares.
fn check_candidates(plan: &ModelPlan, t: &Targets) {
    let spec = WaferSpec::preset("wse3").unwrap();
    for c in &plan.candidates {
        let a = &c.estimate_args;
        let cfg = presets::lookup(flag(a, "--model")).unwrap();
        assert_eq!(flag(a, "--hw"), "wse3");
        let region = optional_flag(a, "--region").map(|r| r.parse::<RegionShape>().unwrap());
        assert_eq!(region, c.fixed_region, "{a:?}");
        let opts = EstimateOptions {
            wafers: Some(flag(a, "--wafers").parse().unwrap()),
            region,
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
    let mut fixed = 0;
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
        fixed += plan
            .candidates
            .iter()
            .filter(|c| c.fixed_region.is_some())
            .count();
        // At most `top` layouts per wafer count, each listed once.
        for c in &plan.candidates {
            let same = plan
                .candidates
                .iter()
                .filter(|d| d.wafers == c.wafers)
                .collect::<Vec<_>>();
            assert!(same.len() <= 3, "{name}: {same:?}");
            assert_eq!(
                same.iter()
                    .filter(|d| (d.fixed_region, d.strategy) == (c.fixed_region, c.strategy))
                    .count(),
                1,
                "{name}: a layout listed twice"
            );
        }
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
    // Fixed shapes are among those re-estimated.
    assert!(fixed >= 2, "{fixed} fixed-shape candidates");
}

#[test]
fn the_searched_shapes_on_wse3_and_on_a_larger_fabric() {
    let spec = WaferSpec::preset("wse3").unwrap();
    assert_eq!((spec.fabric.width_pes, spec.fabric.height_pes), (762, 1172));
    let shapes = searched_shapes(&spec);
    let text: Vec<String> = shapes.iter().map(|s| s.to_string()).collect();
    // Squares 120, 180, ..., 720 (780 > 762), then 762/c x 1172/r for c, r in
    // 1..=4: 762, 381, 254, 190 by 1172, 586, 390, 293.
    let mut expected: Vec<String> = (2..=12).map(|i| format!("{0}x{0}", 60 * i)).collect();
    for w in [762, 381, 254, 190] {
        for h in [1172, 586, 390, 293] {
            expected.push(format!("{w}x{h}"));
        }
    }
    assert_eq!(text, expected);
    // A 1,200-PE square fabric: (1200 - 120) / 60 + 1 = 19 squares would
    // exceed 16, so the step doubles: 120, 240, ..., 1200 (10 squares); the
    // 1x1 grid is the 1200 square again and is not repeated.
    let mut big = spec.clone();
    big.fabric.width_pes = 1200;
    big.fabric.height_pes = 1200;
    let shapes = searched_shapes(&big);
    let squares: Vec<u32> = shapes
        .iter()
        .take_while(|s| s.width == s.height && s.width % 120 == 0)
        .map(|s| s.width)
        .collect();
    assert_eq!(squares, (1..=10).map(|i| 120 * i).collect::<Vec<_>>());
    assert_eq!(shapes.len(), 10 + 16 - 2); // 1x1 = 1200x1200, 2x2 = 600x600
    for (i, a) in shapes.iter().enumerate() {
        assert!(!shapes[i + 1..].contains(a), "{a} twice");
    }
}

#[test]
fn a_fixed_shape_beats_the_placements_choice_and_re_estimates() {
    // Llama-3.2-1B at 128k on one wafer: the placement's own region (the grid
    // holding the longest context) against the whole search.
    let spec = WaferSpec::preset("wse3").unwrap();
    let m = model("llama-3.2-1b");
    let t = targets(1000.0, 131072, 1);
    let plan = plan_model(&spec, &m, &t, &search(1, false)).unwrap();
    check_candidates(&plan, &t);
    let best = plan.candidates.first().expect("a candidate on one wafer");
    let mut auto_best: f64 = 0.0;
    for strategy in [Strategy::Packed, Strategy::LayerPerRegion] {
        for k in 1..=4 {
            let opts = EstimateOptions {
                wafers: Some(1),
                region: None,
                strategy,
                context: t.context,
                prompt_tokens: t.prompt_tokens,
            };
            let po = PlanOptions::with_reduce_k(k).unwrap();
            if let Ok(e) = estimate_for_users(&spec, &m.config, &opts, &po, 1) {
                auto_best = auto_best.max(e.decode_tokens_per_s);
            }
        }
    }
    assert!(auto_best > 0.0);
    assert!(best.fixed_region.is_some(), "{best:?}");
    // More than 10% faster than any configuration on the placement's region.
    assert!(
        best.decode_tokens_per_s > 1.1 * auto_best,
        "{} against {auto_best}",
        best.decode_tokens_per_s
    );
}

#[test]
fn fewer_wafers_than_the_first_candidate_do_not_meet_the_target() {
    // Checked by estimating every region searched, strategy and K on fewer
    // wafers.
    let spec = WaferSpec::preset("wse3").unwrap();
    let t = targets(1345.0, 131072, 1);
    let m = model("llama-3.2-3b");
    let plan = plan_model(&spec, &m, &t, &search(6, false)).unwrap();
    let first = plan
        .candidates
        .first()
        .expect("a candidate within 6 wafers");
    assert!(first.wafers >= 2, "the test checks nothing: {first:?}");
    let mut estimated = 0;
    for w in 1..first.wafers {
        for region in all_regions(&spec) {
            for strategy in [Strategy::Packed, Strategy::LayerPerRegion] {
                for k in 1..=4 {
                    let opts = EstimateOptions {
                        wafers: Some(w),
                        region,
                        strategy,
                        context: t.context,
                        prompt_tokens: t.prompt_tokens,
                    };
                    let po = PlanOptions::with_reduce_k(k).unwrap();
                    if let Ok(e) = estimate_for_users(&spec, &m.config, &opts, &po, 1) {
                        estimated += 1;
                        assert!(
                            e.decode_tokens_per_s < t.tokens_per_s || e.wafers < w,
                            "{w} wafers, {region:?}, {strategy:?}, K {k}: {} tokens/s",
                            e.decode_tokens_per_s
                        );
                    }
                }
            }
        }
    }
    assert!(estimated > 0);
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
    // wafer counts, with any region searched, strategy or K, beats it, and
    // one equals it.
    let mut fastest: f64 = 0.0;
    for w in 1..=3 {
        for region in all_regions(&spec) {
            for strategy in [Strategy::Packed, Strategy::LayerPerRegion] {
                for k in 1..=4 {
                    let opts = EstimateOptions {
                        wafers: Some(w),
                        region,
                        strategy,
                        context: 4096,
                        prompt_tokens: 512,
                    };
                    let po = PlanOptions::with_reduce_k(k).unwrap();
                    let cfg = model("smollm2-135m").config;
                    if let Ok(e) = estimate_for_users(&spec, &cfg, &opts, &po, 1) {
                        if e.wafers == w {
                            fastest = fastest.max(e.decode_tokens_per_s);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(fastest, best.decode_tokens_per_s);
    // limited_by is the largest share of that configuration's decode step,
    // read from the estimate's own breakdown.
    let a = &best.estimate_args;
    let e = estimate_for_users(
        &spec,
        &model("smollm2-135m").config,
        &best.estimate_options().unwrap(),
        &PlanOptions::with_reduce_k(flag(a, "--k").parse().unwrap()).unwrap(),
        1,
    )
    .unwrap();
    let c = e.decode.cost();
    let (compute, comm, sync) = (
        c.get(Category::Compute).get(),
        c.get(Category::Fabric).get() + c.get(Category::OffWafer).get(),
        c.get(Category::Sync).get(),
    );
    let expected = if compute >= comm && compute >= sync {
        Limit::Compute
    } else if comm >= sync {
        Limit::Communication
    } else {
        Limit::Sync
    };
    assert_eq!(miss.limited_by, expected, "{compute} {comm} {sync}");
    assert!((s.sync - sync / c.total().get()).abs() < 1e-12, "{s:?}");
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
            SearchOptions {
                top: 0,
                ..search(2, false)
            },
            "--top",
        ),
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

#[test]
fn users_auto_finds_the_most_users_that_fit_and_still_meet_the_rate() {
    // Llama-3.2-1B at 128k, 2,100 tokens/s each, on one wafer: every candidate
    // re-estimates at its users, and one user more either does not fit on the
    // same wafers or sees less than the target, checked by the estimate.
    let spec = WaferSpec::preset("wse3").unwrap();
    let m = model("llama-3.2-1b");
    let t = targets(2100.0, 131072, 1);
    let o = SearchOptions {
        most_users: true,
        ..search(1, false)
    };
    let plan = plan_model(&spec, &m, &t, &o).unwrap();
    check_candidates(&plan, &t);
    assert!(!plan.candidates.is_empty());
    let (mut by_fit, mut by_rate) = (0, 0);
    for c in &plan.candidates {
        assert!(
            (c.aggregate_tokens_per_s - c.users as f64 * c.decode_tokens_per_s).abs()
                < 1e-6 * c.aggregate_tokens_per_s,
            "{c:?}"
        );
        let k: u32 = flag(&c.estimate_args, "--k").parse().unwrap();
        let po = PlanOptions::with_reduce_k(k).unwrap();
        let opts = c.estimate_options().unwrap();
        match estimate_for_users(&spec, &m.config, &opts, &po, c.users + 1) {
            Err(_) => by_fit += 1,
            Ok(e) if e.wafers != c.wafers => by_fit += 1,
            Ok(e) => {
                let rate = e.users.as_ref().unwrap().per_user_tokens_per_s;
                assert!(rate < t.tokens_per_s, "{} users: {rate}", c.users + 1);
                by_rate += 1;
            }
        }
    }
    // Both limits occur among the candidates, and some serve several users.
    assert!(by_fit >= 1 && by_rate >= 1, "{by_fit} {by_rate}");
    assert!(plan.candidates.iter().any(|c| c.users > 1));
    // Ranked by aggregate on the one wafer count.
    for w in plan.candidates.windows(2) {
        assert!(w[0].aggregate_tokens_per_s >= w[1].aggregate_tokens_per_s);
    }
    // Speculation prices one user: refused with --users auto.
    let o = SearchOptions {
        speculate: Some(wafer_lower::plan::SpeculateTarget {
            k: 4,
            acceptance: 0.5,
        }),
        ..o
    };
    let e = plan_model(&spec, &m, &t, &o).unwrap_err().to_string();
    assert!(e.contains("--users auto"), "{e}");
}
