//! The cost of point-to-point transfers: between regions of one wafer (parallel
//! rows, each on its own links) and between wafers (the system's off-wafer link).
//!
//! On-wafer: one phase overhead, ramps in and out, the route at
//! `cost.hop_cycles` per hop, and one cycle per wavelet streamed (a link
//! carries one 32-bit wavelet per cycle per direction). Off-wafer:
//! `system.offwafer_latency_s` plus bytes over `system.offwafer_bandwidth_bytes_per_s`.
//! Link contention between flows is not modelled here.

use crate::cost::Cost;
use wafer_core::{Cycles, WaferSpec};

/// Closed form for the hand-off between two regions: `lines` parallel rows each
/// carry `wavelets_per_line` over `hops` hops on their own links (no sharing).
pub fn parallel_lines_cost(spec: &WaferSpec, wavelets_per_line: u64, hops: u64) -> Cost {
    if wavelets_per_line == 0 {
        return Cost::default();
    }
    Cost::sync(Cycles(spec.cost.phase_overhead_cycles))
        + Cost::fabric(Cycles(
            2.0 * spec.router.ramp_latency_cycles
                + spec.cost.hop_cycles * hops as f64
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
        s.cost.hop_cycles = 1.0;
        s
    }

    #[test]
    fn parallel_lines_pay_one_phase_ramps_hops_and_wavelets() {
        // 10 + 4 + 3 hops + 100 wavelets.
        assert_eq!(parallel_lines_cost(&spec(), 100, 3).total(), Cycles(117.0));
        assert_eq!(parallel_lines_cost(&spec(), 0, 3).total(), Cycles(0.0));
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
