//! Several users in flight: placement holds every user's KV cache, and the
//! decode is pipelined over the regions (aggregate tokens/s bounded by the
//! slowest stage). Hand-worked pipeline cases, and the placement's context
//! per user against one user's.

use wafer_core::spec::wse3;
use wafer_core::{Cycles, PeCoord, Region, RegionShape};
use wafer_lower::cost::{decode_plan, OpKind, Plan, PlanOptions};
use wafer_lower::estimate::{
    estimate_for_users, estimate_with, max_users, placement_for, ttft_under_load, EstimateOptions,
    Pipeline,
};
use wafer_lower::layout::{Layout, Site};
use wafer_lower::placement::{place, place_for_users, PlaceOptions, Strategy, MAX_USERS};
use wafer_sim::Cost;

fn site(wafer: u32, x: u32) -> Site {
    Site {
        wafer,
        region: Region::new(PeCoord::new(x, 0), RegionShape::new(10, 10).unwrap()),
    }
}

fn op(plan: &mut Plan, kind: OpKind, layer: Option<u32>, cycles: f64) {
    plan.push(kind, layer, 0, None, Cost::compute(Cycles(cycles)));
}

/// Embedding alone on E; layers 0-1 on R1 (with the hand-off out of it);
/// layer 2 and the head on R2 of the next wafer.
fn small_case() -> (Plan, Layout, [Site; 3]) {
    let (e, r1, r2) = (site(0, 0), site(0, 10), site(1, 0));
    let mut p = Plan::default();
    op(&mut p, OpKind::Embedding, None, 100.0);
    op(&mut p, OpKind::QkvProj, Some(0), 300.0);
    op(&mut p, OpKind::QkvProj, Some(1), 250.0);
    op(&mut p, OpKind::Handoff, Some(1), 50.0);
    op(&mut p, OpKind::QkvProj, Some(2), 400.0);
    op(&mut p, OpKind::LmHead, None, 120.0);
    op(&mut p, OpKind::TokenLoopback, None, 30.0);
    let layout = Layout {
        embedding: e,
        layers: vec![r1, r1, r2],
        lm_head: r2,
    };
    (p, layout, [e, r1, r2])
}

#[test]
fn the_slowest_stage_bounds_a_hand_worked_pipeline() {
    let (plan, layout, [e, r1, r2]) = small_case();
    let pipe = Pipeline::of(&plan, &layout);
    let stages: Vec<(Site, f64)> = pipe
        .stages
        .iter()
        .map(|s| (s.site, s.cycles.get()))
        .collect();
    // E: 100; R1: 300 + 250 + 50 = 600; R2: 400 + 120 + 30 = 550.
    assert_eq!(stages, vec![(e, 100.0), (r1, 600.0), (r2, 550.0)]);
    assert_eq!(pipe.latency_cycles.get(), 1250.0);
    assert_eq!(pipe.slowest_stage_cycles.get(), 600.0);
    // At 1 GHz: one user 1e9 / 1250 = 800,000 tokens/s; the bound 1e9 / 600.
    let clock = 1e9;
    let agg = |b| pipe.aggregate_tokens_per_s(b, clock);
    assert_eq!(agg(1), 800_000.0);
    assert_eq!(agg(2), 1_600_000.0);
    let bound = 1e9 / 600.0;
    for b in [3, 4, 10, 1000] {
        assert_eq!(agg(b), bound, "{b} users");
    }
}

#[test]
fn a_site_used_twice_is_one_stage() {
    // The head back on the embedding's region: that region is busy for both.
    let (plan, mut layout, [e, r1, r2]) = small_case();
    layout.lm_head = e;
    let pipe = Pipeline::of(&plan, &layout);
    let stages: Vec<(Site, f64)> = pipe
        .stages
        .iter()
        .map(|s| (s.site, s.cycles.get()))
        .collect();
    assert_eq!(stages, vec![(e, 250.0), (r1, 600.0), (r2, 400.0)]);
    assert_eq!(pipe.slowest_stage_cycles.get(), 600.0);
}

#[test]
fn aggregate_grows_to_the_pipeline_bound_then_stays_flat_and_per_user_falls() {
    let spec = wse3();
    let cfg = wafer_models::presets::lookup("llama-3.1-8b").unwrap();
    let opts = EstimateOptions {
        wafers: Some(1),
        region: None,
        strategy: Strategy::Packed,
        context: 8192,
        prompt_tokens: 512,
    };
    let layout = placement_for(&spec, &cfg, &opts).unwrap().layout();
    let plan = decode_plan(&spec, &cfg, &layout, 8192);
    let pipe = Pipeline::of(&plan, &layout);
    // Every operation is charged to exactly one stage, each a distinct site.
    let sum: f64 = pipe.stages.iter().map(|s| s.cycles.get()).sum();
    assert!((sum - plan.total().get()).abs() < 1e-6 * sum, "{sum}");
    let mut sites: Vec<Site> = layout.layers.clone();
    sites.push(layout.embedding);
    sites.push(layout.lm_head);
    sites.sort_by_key(|s| (s.wafer, s.region.origin.y, s.region.origin.x));
    sites.dedup();
    assert_eq!(pipe.stages.len(), sites.len());
    assert!(pipe.slowest_stage_cycles < pipe.latency_cycles);

    let knee = (pipe.latency_cycles.get() / pipe.slowest_stage_cycles.get()).ceil() as u64;
    assert!(knee > 2, "{knee}");
    let agg = |b| pipe.aggregate_tokens_per_s(b, spec.clock_hz);
    let one = agg(1);
    assert!((one - spec.clock_hz / plan.total().get()).abs() < 1e-9 * one);
    for b in 1..knee - 1 {
        assert!(agg(b + 1) > agg(b), "{b} users");
        // Below the bound every user gets one user's speed.
        assert!((agg(b) / b as f64 - one).abs() < 1e-9 * one);
    }
    let top = spec.clock_hz / pipe.slowest_stage_cycles.get();
    for b in [knee, knee + 1, 4 * knee] {
        assert_eq!(agg(b), top, "{b} users");
    }
    for b in 1..4 * knee {
        assert!(
            agg(b + 1) / (b + 1) as f64 <= agg(b) / b as f64 * (1.0 + 1e-12),
            "{b} users"
        );
    }
    let crowded = 4 * knee;
    assert!(agg(crowded) / (crowded as f64) < one / 2.0);
}

#[test]
fn two_users_halve_the_context_a_placement_holds() {
    let spec = wse3();
    for name in ["llama-3.1-8b", "smollm2-135m", "llama-2-13b"] {
        let cfg = wafer_models::presets::lookup(name).unwrap();
        let opts = PlaceOptions {
            context_tokens: 4096,
            region: None,
            wafers: Some(1),
            strategy: Strategy::Packed,
        };
        let one = place(&cfg, &spec, &opts).unwrap();
        assert_eq!(place_for_users(&cfg, &spec, &opts, 1).unwrap(), one);
        let two = place_for_users(&cfg, &spec, &opts, 2).unwrap();
        assert_eq!(two.users(), 2);
        assert_eq!(two.grid, one.grid, "{name}");
        let h = one.grid.slot_h as u64;
        let (t1, t2) = (one.max_context_tokens, two.max_context_tokens);
        // Row 0 holds floor(free / (2 kv)) positions per user where one user
        // had floor(free / kv): half, less at most one row's worth.
        assert!(t2 <= t1 / 2 && t2 + h >= t1 / 2, "{name}: {t1} -> {t2}");
        assert_eq!(two.kv_bytes(), 2 * one.kv_bytes(), "{name}");
    }
}

#[test]
fn the_estimate_for_users_reports_the_pipeline_and_the_most_users_that_fit() {
    let spec = wse3();
    let cfg = wafer_models::presets::lookup("llama-3.1-8b").unwrap();
    let opts = EstimateOptions {
        wafers: Some(1),
        region: None,
        strategy: Strategy::Packed,
        context: 8192,
        prompt_tokens: 512,
    };
    let po = PlanOptions::default();
    let single = estimate_with(&spec, &cfg, &opts, &po).unwrap();
    assert!(single.users.is_none());
    assert!(estimate_for_users(&spec, &cfg, &opts, &po, 1)
        .unwrap()
        .users
        .is_none());

    let e = estimate_for_users(&spec, &cfg, &opts, &po, 2).unwrap();
    let u = e.users.as_ref().unwrap();
    assert_eq!(u.users, 2);
    assert!((u.per_user_tokens_per_s * 2.0 - u.aggregate_tokens_per_s).abs() < 1e-6);
    // The most users: that many fit on the wafer at the context, one more does not.
    let m = u.max_users;
    assert!((2..MAX_USERS).contains(&m), "{m}");
    let fits = |b| {
        let o = PlaceOptions {
            context_tokens: 8192,
            region: None,
            wafers: Some(1),
            strategy: Strategy::Packed,
        };
        place_for_users(&cfg, &spec, &o, b).unwrap().fits()
    };
    assert!(fits(m) && !fits(m + 1), "{m}");
    // About one user's longest context over the context.
    let t1 = placement_for(&spec, &cfg, &opts)
        .unwrap()
        .max_context_tokens;
    assert!(m <= t1 / 8192 && m + 2 >= t1 / 8192, "{m} vs {t1}");
    assert_eq!(max_users(&spec, &cfg, &opts, 1, 1), m);
    // More users than fit is an error, and so are 0 and past the bound.
    assert!(estimate_for_users(&spec, &cfg, &opts, &po, m + 1).is_err());
    assert!(estimate_for_users(&spec, &cfg, &opts, &po, 0).is_err());
    assert!(estimate_for_users(&spec, &cfg, &opts, &po, MAX_USERS + 1).is_err());
}

/// The small case's prefill: E 1000, R1 6000 (layers 0-1), R2 4000 (layer 2
/// and the head): 11,000 cycles alone.
fn small_prefill() -> Plan {
    let mut p = Plan::default();
    op(&mut p, OpKind::Embedding, None, 1000.0);
    op(&mut p, OpKind::QkvProj, Some(0), 3500.0);
    op(&mut p, OpKind::QkvProj, Some(1), 2500.0);
    op(&mut p, OpKind::QkvProj, Some(2), 3000.0);
    op(&mut p, OpKind::LmHead, None, 1000.0);
    p
}

#[test]
fn ttft_under_load_of_a_hand_worked_pipeline() {
    // Decode stages E 100, R1 600, R2 550; latency 1250, slowest 600.
    let (plan, layout, _) = small_case();
    let pipe = Pipeline::of(&plan, &layout);
    let pre = small_prefill();
    let ttft = |b| ttft_under_load(&pre, &pipe, &layout, b).get();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
    // One user: the prefill alone.
    assert!(close(ttft(1), 11_000.0), "{}", ttft(1));
    // Two: one user decodes at 1 / 1250 tokens/cycle, busying E 0.08, R1 0.48,
    // R2 0.44: 1000 / 0.92 + 6000 / 0.52 + 4000 / 0.56.
    let two = 1000.0 / 0.92 + 6000.0 / 0.52 + 4000.0 / 0.56;
    assert!(close(ttft(2), two), "{} vs {two}", ttft(2));
    assert!((ttft(2) - 19_768.28).abs() < 0.01);
    // Three: 2 / 1250 = 1 / 625 (below the 1 / 600 bound): E 0.16, R1 0.96,
    // R2 0.88; R1 and R2 fall to the fair third: 1000 / 0.84 + 3 x 6000 + 3 x 4000.
    let three = 1000.0 / 0.84 + 18_000.0 + 12_000.0;
    assert!(close(ttft(3), three), "{} vs {three}", ttft(3));
    // Four: 3 / 1250 is past the bound, so 1 / 600: E 1/6, R1 1, R2 11/12;
    // 1000 / (5/6) + 4 x 6000 + 4 x 4000 = 1200 + 24000 + 16000.
    assert!(close(ttft(4), 41_200.0), "{}", ttft(4));
}

#[test]
fn more_users_never_lower_the_ttft_under_load() {
    let (plan, layout, _) = small_case();
    let pipe = Pipeline::of(&plan, &layout);
    let pre = small_prefill();
    let mut last = 0.0;
    for b in 1..200 {
        let t = ttft_under_load(&pre, &pipe, &layout, b).get();
        assert!(t >= last, "{b} users: {t} < {last}");
        last = t;
    }

    // On a real placement, through the estimate (which holds every user's cache).
    let spec = wse3();
    let cfg = wafer_models::presets::lookup("llama-3.1-8b").unwrap();
    let opts = EstimateOptions {
        wafers: Some(1),
        region: None,
        strategy: Strategy::Packed,
        context: 8192,
        prompt_tokens: 512,
    };
    let po = PlanOptions::default();
    let alone = estimate_with(&spec, &cfg, &opts, &po).unwrap().ttft_cycles;
    let mut last = alone;
    for b in [2, 3, 5, 8] {
        let e = estimate_for_users(&spec, &cfg, &opts, &po, b).unwrap();
        let u = e.users.unwrap();
        // Same prefill plan as one user (the placement is the same grid).
        assert!(u.ttft_under_load_cycles >= e.ttft_cycles, "{b} users");
        assert!(u.ttft_under_load_cycles >= last, "{b} users");
        // Never past every region at the fair 1/B share.
        assert!(u.ttft_under_load_cycles.get() <= e.ttft_cycles.get() * b as f64 * (1.0 + 1e-12));
        let ms = u.ttft_under_load_cycles.seconds_at(spec.clock_hz) * 1e3;
        assert!((u.ttft_under_load_ms - ms).abs() < 1e-12 * ms);
        last = u.ttft_under_load_cycles;
    }
}
