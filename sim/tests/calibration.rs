//! The WSE-3 kernel measurements C5-C7 of `shared/calibration.md` against the
//! `wse3` preset's estimate: every row within 10% (docs/validation.md lists them
//! with the command reproducing each).

use wafer_core::spec::wse3;
use wafer_sim::collective::Algorithm;
use wafer_sim::matrix::{mesh_gemm_cost, mesh_gemv_cost, shift_broadcast_cost, total};

fn check(name: &str, got: f64, measured: f64) -> Option<String> {
    let err = got / measured - 1.0;
    (err.abs() > 0.10).then(|| {
        format!(
            "{name}: estimate {got:.1} vs measured {measured:.1} ({:+.1}%)",
            err * 100.0
        )
    })
}

#[test]
fn wse3_kernels_within_ten_percent() {
    let spec = wse3();
    let mut failures = Vec::new();
    // C5: (values per PE, steps L, cycles), P = 144.
    for (m, l, c) in [
        (1, 1, 124.97),
        (1, 4, 383.93),
        (1, 16, 1299.69),
        (1, 64, 4968.16),
        (1, 256, 18375.50),
        (64, 1, 197.97),
        (64, 64, 9119.34),
    ] {
        let got = total(&shift_broadcast_cost(&spec, 144, m, l)).total().get();
        failures.extend(check(&format!("C5 shift m={m} L={l}"), got, c));
    }
    // C6: (P, M = N, G, cycles).
    for (p, mn, g, c) in [
        (80, 80, 8, 416.96),
        (400, 400, 8, 1372.08),
        (720, 720, 8, 2327.22),
        (720, 5760, 8, 2358.03),
        (144, 144, 2, 948.96),
        (144, 144, 4, 708.95),
        (144, 144, 8, 601.95),
    ] {
        let alg = Algorithm::KTree {
            k: 2,
            groups: Some(g),
        };
        let got = total(&mesh_gemv_cost(&spec, p, p, mn, mn, alg))
            .total()
            .get();
        failures.extend(check(&format!("C6 gemv P={p} M=N={mn} G={g}"), got, c));
    }
    // C7: (P, M, K, N, cycles).
    for (p, m, k, n, c) in [
        (16, 16, 16, 16, 2637.4),
        (400, 400, 400, 400, 63788.4),
        (720, 720, 720, 720, 114748.4),
        (720, 720, 5760, 720, 324070.0),
        (720, 5760, 5760, 5760, 480747.7),
    ] {
        let got = total(&mesh_gemm_cost(&spec, p, m, k, n)).total().get();
        failures.extend(check(&format!("C7 gemm P={p} {m}x{k}x{n}"), got, c));
    }
    assert!(
        failures.is_empty(),
        "rows outside 10%:\n{}",
        failures.join("\n")
    );
}

#[test]
fn c6_trends_more_groups_is_faster_and_larger_regions_slower() {
    let spec = wse3();
    let gemv = |p: u32, g: u32| {
        total(&mesh_gemv_cost(
            &spec,
            p,
            p,
            p as u64,
            p as u64,
            Algorithm::KTree {
                k: 2,
                groups: Some(g),
            },
        ))
        .total()
        .get()
    };
    assert!(gemv(144, 2) > gemv(144, 4) && gemv(144, 4) > gemv(144, 8));
    assert!(gemv(80, 8) < gemv(400, 8) && gemv(400, 8) < gemv(720, 8));
}
