//! Point-to-point transfers: between PEs of one wafer (dimension-ordered X-then-Y
//! routes, with link contention when flows share a link) and between wafers
//! (the system's off-wafer link).
//!
//! On-wafer cost of a set of concurrent flows: one phase overhead, ramps in and
//! out, the longest route at `hop_latency_cycles` per hop, and the wavelets of
//! the busiest link (a link carries one 32-bit wavelet per cycle per direction,
//! so two flows sharing a link take twice as long to drain). Off-wafer:
//! `system.offwafer_latency_s` plus bytes over `system.offwafer_bandwidth_bytes_per_s`.

use crate::cost::Cost;
use std::collections::HashMap;
use wafer_core::{Cycles, PeCoord, WaferSpec};

/// One message stream from `src` to `dst` of `wavelets` 32-bit wavelets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: PeCoord,
    pub dst: PeCoord,
    pub wavelets: u64,
}

/// Directed links (from, to) an X-then-Y route crosses.
pub fn xy_route(src: PeCoord, dst: PeCoord) -> Vec<(PeCoord, PeCoord)> {
    let mut links = Vec::with_capacity(src.hops_to(dst) as usize);
    let mut cur = src;
    while cur.x != dst.x {
        let next = if dst.x > cur.x {
            PeCoord::new(cur.x + 1, cur.y)
        } else {
            PeCoord::new(cur.x - 1, cur.y)
        };
        links.push((cur, next));
        cur = next;
    }
    while cur.y != dst.y {
        let next = if dst.y > cur.y {
            PeCoord::new(cur.x, cur.y + 1)
        } else {
            PeCoord::new(cur.x, cur.y - 1)
        };
        links.push((cur, next));
        cur = next;
    }
    links
}

/// The most wavelets any one directed link carries.
pub fn max_link_load(flows: &[Flow]) -> u64 {
    let mut load: HashMap<(PeCoord, PeCoord), u64> = HashMap::new();
    for f in flows {
        for link in xy_route(f.src, f.dst) {
            *load.entry(link).or_default() += f.wavelets;
        }
    }
    load.values().copied().max().unwrap_or(0)
}

/// Cost of running `flows` concurrently (routes computed link by link).
pub fn flows_cost(spec: &WaferSpec, flows: &[Flow]) -> Cost {
    if flows.is_empty() {
        return Cost::default();
    }
    let hops = flows
        .iter()
        .map(|f| f.src.hops_to(f.dst))
        .max()
        .unwrap_or(0);
    let busiest = max_link_load(flows).max(flows.iter().map(|f| f.wavelets).max().unwrap_or(0));
    Cost::sync(Cycles(spec.cost.phase_overhead_cycles))
        + Cost::fabric(Cycles(
            2.0 * spec.router.ramp_latency_cycles
                + spec.router.hop_latency_cycles * hops as f64
                + busiest as f64,
        ))
}

/// Closed form for the hand-off between two regions: `lines` parallel rows each
/// carry `wavelets_per_line` over `hops` hops on their own links (no sharing).
pub fn parallel_lines_cost(spec: &WaferSpec, wavelets_per_line: u64, hops: u64) -> Cost {
    if wavelets_per_line == 0 {
        return Cost::default();
    }
    Cost::sync(Cycles(spec.cost.phase_overhead_cycles))
        + Cost::fabric(Cycles(
            2.0 * spec.router.ramp_latency_cycles
                + spec.router.hop_latency_cycles * hops as f64
                + wavelets_per_line as f64,
        ))
}

/// Moving `bytes` from one wafer to the next over the system's off-wafer link.
pub fn offwafer_cost(spec: &WaferSpec, bytes: u64) -> Cost {
    let s = &spec.system;
    let seconds = s.offwafer_latency_s + bytes as f64 / s.offwafer_bandwidth_bytes_per_s;
    Cost::off_wafer(Cycles(seconds * spec.clock_hz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn spec() -> WaferSpec {
        let mut s = wse3();
        s.cost.phase_overhead_cycles = 10.0;
        s.router.ramp_latency_cycles = 2.0;
        s.router.hop_latency_cycles = 1.0;
        s
    }

    #[test]
    fn contention_doubles_the_drain_time_of_a_shared_link() {
        let s = spec();
        let a = Flow {
            src: PeCoord::new(0, 0),
            dst: PeCoord::new(3, 0),
            wavelets: 100,
        };
        // Alone: 10 + 4 + 3 hops + 100 wavelets.
        assert_eq!(flows_cost(&s, &[a]).total(), Cycles(117.0));
        // A second flow over links (1,0)->(2,0)->(3,0): the shared links carry 200.
        let b = Flow {
            src: PeCoord::new(1, 0),
            dst: PeCoord::new(3, 1),
            wavelets: 100,
        };
        assert_eq!(max_link_load(&[a, b]), 200);
        assert_eq!(flows_cost(&s, &[a, b]).total(), Cycles(217.0));
        // Disjoint rows do not contend.
        let c = Flow {
            src: PeCoord::new(0, 5),
            dst: PeCoord::new(3, 5),
            wavelets: 100,
        };
        assert_eq!(flows_cost(&s, &[a, c]).total(), Cycles(117.0));
        assert_eq!(parallel_lines_cost(&s, 100, 3).total(), Cycles(117.0));
    }

    #[test]
    fn routes_go_x_then_y() {
        let r = xy_route(PeCoord::new(2, 2), PeCoord::new(0, 3));
        assert_eq!(
            r,
            vec![
                (PeCoord::new(2, 2), PeCoord::new(1, 2)),
                (PeCoord::new(1, 2), PeCoord::new(0, 2)),
                (PeCoord::new(0, 2), PeCoord::new(0, 3)),
            ]
        );
    }

    #[test]
    fn offwafer_is_latency_plus_bytes_over_bandwidth() {
        let mut s = spec();
        s.clock_hz = 1e9;
        s.system.offwafer_latency_s = 1e-6;
        s.system.offwafer_bandwidth_bytes_per_s = 1e9;
        // 1 us + 1000 B / 1 GB/s = 2 us = 2000 cycles.
        assert_eq!(offwafer_cost(&s, 1000).off_wafer, Cycles(2000.0));
    }
}
