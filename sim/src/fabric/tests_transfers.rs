//! Tests of the ring allreduce and of the transfers between regions and
//! wafers on the fabric: values against a plain sum computed here in the
//! ring's order, cycles against hand derivations.

use super::engine::*;
use super::programs::interleaved_ring;
use super::ring::{ring_allreduce_program, ring_chunks, ring_pipeline_limit, ring_program};
use super::tests::spec_h1_r2;
use super::transfer::*;
use super::FabricError;
use crate::program::{Route as TRoute, Transfer};
use crate::tiling::Axis;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn ring_chunks_cover_the_vector_in_near_equal_parts() {
    assert_eq!(ring_chunks(10, 4), vec![0, 2, 5, 7, 10]);
    assert_eq!(ring_chunks(2, 3), vec![0, 0, 1, 2]);
    assert_eq!(ring_chunks(6, 3), vec![0, 2, 4, 6]);
}

#[test]
fn a_ring_allreduce_gives_every_pe_the_sum_in_ring_order_bit_for_bit() {
    // The reference: for each chunk k (of the logical ring positions), the
    // sum starting at its owner k and adding positions k + 1, ..., k + P - 1
    // (mod P) in order, in f32; every PE of the line ends with it.
    let s = spec_h1_r2();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (axis, across) in [(Axis::Column, 2u32), (Axis::Row, 3)] {
        for p in 1..=7u32 {
            for w in [1u64, 3, p as u64, 2 * p as u64 + 1, 10] {
                let (width, height) = match axis {
                    Axis::Column => (across, p),
                    Axis::Row => (p, across),
                };
                for pipelined in [false, true] {
                    let sp = ring_program(&s, width, height, axis, w, 4, Some(pipelined)).unwrap();
                    let n = (width * height) as usize;
                    let input: Vec<f32> = (0..n * w as usize)
                        .map(|_| rng.gen_range(-1.0f32..1.0))
                        .collect();
                    let opts = RunOptions {
                        values: Some(input.clone()),
                        ..RunOptions::default()
                    };
                    let got = run(&s, &sp.program, &opts).unwrap().values.unwrap();
                    let ring = interleaved_ring(p);
                    let bounds = ring_chunks(w, p);
                    assert_eq!(sp.lines.len(), across as usize);
                    for line in &sp.lines {
                        let v = |l: usize, j: usize| input[line[ring[l] as usize] * w as usize + j];
                        // Wavelet j lies in chunk k, whose owner is position k.
                        let want: Vec<f32> = (0..w as usize)
                            .map(|j| {
                                let k = bounds.partition_point(|&b| b <= j as u64) - 1;
                                let mut acc = v(k, j);
                                for m in 1..p as usize {
                                    acc += v((k + m) % p as usize, j);
                                }
                                acc
                            })
                            .collect();
                        for &pe in line {
                            let have = &got[pe * w as usize..][..w as usize];
                            let bits =
                                |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(have),
                                bits(&want),
                                "{axis:?} P {p} W {w} PE {pe} pipelined {pipelined}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_step_by_step_ring_allreduce_takes_the_hand_derived_cycles() {
    // A column of P PEs, hop h = 1, ramp r = 2, 1 cycle per wavelet sent,
    // added or stored, no setup. A wavelet sent at t over k links is in its
    // receiver's input queue at t + 2r + k h (t + 5 for one link, t + 6 for
    // two) and received by t + 6 (t + 7) if the receiver waits for it. Every
    // step, an even logical position sends then receives, an odd one
    // receives then sends (the step-by-step schedule, forced here: these
    // chunks would fit the queues).
    //
    // P = 2, chunks of c wavelets (W = 2c), two steps. Step 0: PE 0 sends at
    // 0 .. c - 1; PE 1 has wavelet j by 6 + j, so it is done at 5 + c and
    // sends at 5 + c .. 4 + 2c, done at 5 + 2c; PE 0 has its last by
    // 4 + 2c + 6 = 10 + 2c. So a step takes PE 0 a round trip of 10 + 2c,
    // and PE 1 is done 5 cycles (one wavelet's trip) before PE 0. Two steps:
    // PE 0 at 20 + 4c, PE 1 at 15 + 4c; c = 1: 24 and 19; c = 2: 28 and 23.
    //
    // P = 3: ring PE 0, PE 2, PE 1 (logical 0, 1, 2), links 0->2 (two hops),
    // 2->1, 1->0 (one each); one wavelet per chunk (W = 3), 4 steps. With
    // (send, receive) cycles, logical 0 = PE 0: step 0 sends at 0, receives
    // PE 1's (sent at 0) by 6; step 1 sends at 6, receives PE 1's (sent at
    // 13) by 19; step 2: 19, receives (sent 19) by 25; step 3: 25, receives
    // (sent 32) by 38. Logical 1 = PE 2 (odd): receives PE 0's (sent 0) by 7,
    // sends at 7; receives (sent 6, there at 12) by 13, sends at 13;
    // receives (sent 19) by 26, sends at 26; receives (sent 25, there at 31)
    // by 32, sends at 32, ends 33. Logical 2 = PE 1: sends at 0, receives
    // PE 2's (sent 7) by 13; sends 13, receives (sent 13) by 19; sends 19,
    // receives (sent 26) by 32; sends 32, receives (sent 32) by 38.
    //
    // P = 4: ring PE 0, 2, 3, 1; links 0->2 and 3->1 two hops, 2->3 and 1->0
    // one. Evens (PEs 0 and 3) send at 13 s and receive by 13 (s + 1); odds
    // (PEs 2 and 1) receive the even's wavelet (two hops: sent 13 s, there at
    // 13 s + 6) by 13 s + 7 and send it at once, ending 13 s + 8; the evens
    // have it (one hop) by 13 s + 13. Six steps: evens 78, odds 73.
    let s = spec_h1_r2();
    for (p, w, want, hops) in [
        (2u32, 2u64, vec![24u64, 19], 4u64),
        (2, 4, vec![28, 23], 8),
        (3, 3, vec![38, 38, 33], 16),
        (4, 4, vec![78, 73, 73, 78], 36),
    ] {
        let sp = ring_program(&s, 1, p, Axis::Column, w, 4, Some(false)).unwrap();
        let out = run(&s, &sp.program, &RunOptions::default()).unwrap();
        assert_eq!(out.pe_cycles, want, "P {p} W {w}");
        // Each of the 2 (P - 1) steps, every PE sends one chunk over its
        // link's hops (P = 2: 1 + 1; P = 3: 2 + 1 + 1; P = 4: 2 + 1 + 2 + 1).
        assert_eq!(out.wavelet_hops, hops, "P {p} W {w}");
    }
}

#[test]
fn a_pipelined_ring_allreduce_takes_the_hand_derived_cycles() {
    // As above (h = 1, r = 2, 1 cycle per wavelet, no setup; a wavelet sent
    // at t is received by t + 6 over one link, t + 7 over two), pipelined:
    // every PE sends its chunk at 0, then each receive passes every wavelet
    // on as it is added or stored (a forward leaves when the add ends, as a
    // send would), and the last receive passes nothing on.
    //
    // P = 2, chunks of one wavelet: each PE has the other's by 6 and passes
    // the sum back at 6; it is back by 12. Chunks of two: the second
    // wavelet is one cycle behind all the way: 13.
    //
    // P = 3 (ring PE 0, PE 2, PE 1; 0 -> 2 two links, the others one): the
    // k-th receive of logical 0, 1, 2 ends at (6, 7, 6), (12, 13, 13),
    // (19, 19, 19), then the last (25, 26, 25): logical 0 takes logical 2's
    // wavelets, passed on at 0, 6, 13, 19, one link later; logical 1 takes
    // logical 0's (0, 6, 12, 19) two links later; logical 2 takes logical
    // 1's (0, 7, 13, 19) one link later. PEs 0, 1, 2: 25, 25, 26.
    //
    // P = 4 (ring PE 0, 2, 3, 1; links of two, one, two, one): the receives
    // end at (6, 7, 6, 7), then 13 everywhere (each takes what its
    // predecessor passed on at 6 or 7 over one or two links), (19, 20, 19,
    // 20), 26, (32, 33, 32, 33) and the last at 39 everywhere.
    let s = spec_h1_r2();
    for (p, w, want) in [
        (2u32, 2u64, vec![12u64, 12]),
        (2, 4, vec![13, 13]),
        (3, 3, vec![25, 25, 26]),
        (4, 4, vec![39, 39, 39, 39]),
    ] {
        let sp = ring_program(&s, 1, p, Axis::Column, w, 4, Some(true)).unwrap();
        let out = run(&s, &sp.program, &RunOptions::default()).unwrap();
        assert_eq!(out.pe_cycles, want, "P {p} W {w}");
        // These chunks fit the queues: the default schedule is this one.
        let auto = ring_allreduce_program(&s, 1, p, Axis::Column, w, 4).unwrap();
        let again = run(&s, &auto.program, &RunOptions::default()).unwrap();
        assert_eq!(again.pe_cycles, want, "P {p} W {w}");
    }
}

#[test]
fn a_ring_allreduce_with_large_chunks_does_not_deadlock_and_fits_the_colours() {
    // Chunks far larger than any queue: the even/odd order keeps it moving,
    // where the pipelined schedule deadlocks (every PE blocked in its first
    // send), which is why it runs only chunks that fit the queues.
    let s = wafer_core::spec::wse3();
    assert_eq!(ring_pipeline_limit(&s), 16);
    let sp = ring_program(&s, 1, 4, Axis::Column, 4 * 100, 4, Some(true)).unwrap();
    let err = run(&s, &sp.program, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, FabricError::Deadlock(_)), "{err}");
    for p in [2u32, 3, 5, 16] {
        let sp = ring_allreduce_program(&s, 2, p, Axis::Column, 200 * p as u64, 2).unwrap();
        let used = sp.program.colours_used().len();
        assert_eq!(used, if p == 2 { 2 } else { 3 }, "P {p}");
        let out = run(&s, &sp.program, &RunOptions::default()).unwrap();
        assert!(out.cycles.get() > 0.0);
    }
    // A router with fewer colours than the ring needs refuses it.
    let mut small = spec_h1_r2();
    small.router.colors = 2;
    let sp = ring_allreduce_program(&small, 1, 3, Axis::Column, 3, 4).unwrap();
    let err = run(&small, &sp.program, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, FabricError::TooManyColours { .. }), "{err}");
    // Too many operations for the simulator is an error, not an allocation.
    let big = wafer_core::spec::wse3();
    let err = ring_allreduce_program(&big, 720, 720, Axis::Column, 1, 2).unwrap_err();
    assert!(matches!(err, FabricError::TooLarge(_)), "{err}");
}

fn on_wafer(w: u64, hops: u64, replicate: Option<(u32, u64)>) -> Transfer {
    Transfer {
        route: TRoute::OnWafer {
            wavelets_per_line: w,
            hops,
        },
        replicate,
    }
}

#[test]
fn a_transfer_between_regions_takes_the_hand_derived_cycles() {
    // On every line the source PE sends wavelet j at S + j (after its
    // operation setup S); it enters its router at + r, crosses the `hops`
    // links to the destination's edge and the `pes - 1` links along the
    // destination's row, and is in the last PE's input queue at
    // S + j + 2r + (hops + pes - 1) h, received by one cycle later. The
    // receivers issue their receives at once (their setup is hidden). So the
    // span is S + W + 2r + (hops + pes - 1) h; each wavelet crosses
    // hops + pes - 1 links on each line.
    for (h, r, setup) in [(1u64, 2u64, 0u64), (2, 1, 16)] {
        let mut s = spec_h1_r2();
        s.router.hop_latency_cycles = h as f64;
        s.router.ramp_latency_cycles = r as f64;
        s.pe.fabric_op_setup_cycles = setup as f64;
        for (w, hops, pes, lines) in [(1u64, 1u64, 1u32, 1u32), (3, 5, 1, 2), (4, 7, 6, 3)] {
            let replicate = (pes > 1).then_some((pes, w));
            let t = on_wafer(w, hops, replicate);
            let out = simulate_transfer(&s, &t, lines, 2, &RunOptions::default()).unwrap();
            let want = setup + w + 2 * r + (hops + pes as u64 - 1) * h;
            assert_eq!(out.cycles, want, "h {h} r {r} W {w} hops {hops} pes {pes}");
            assert_eq!(out.link_cycles, 0);
            let run = out.run.unwrap();
            assert_eq!(run.span, want);
            assert_eq!(run.wavelet_hops, lines as u64 * w * (hops + pes as u64 - 1));
        }
    }
}

#[test]
fn an_offwafer_transfer_is_the_link_then_the_replication_on_the_fabric() {
    // Link: 1 us + 1000 B / 1 GB/s at 1 GHz = 2,000 cycles. Then each of the
    // destination's 2 rows multicasts its 2 wavelets from its edge PE along
    // 4 PEs: 2 + 2r + 3h = 9 cycles (h = 1, r = 2, no setup).
    let mut s = spec_h1_r2();
    s.clock_hz = 1e9;
    s.system.offwafer_latency_s = 1e-6;
    s.system.offwafer_bandwidth_bytes_per_s = 1e9;
    let t = Transfer {
        route: TRoute::OffWafer { bytes: 1000 },
        replicate: Some((4, 2)),
    };
    let out = simulate_transfer(&s, &t, 2, 2, &RunOptions::default()).unwrap();
    assert_eq!(out.link_cycles, 2000);
    assert_eq!(out.cycles, 2009);
    assert_eq!(out.wavelet_hops(), 2 * 2 * 3);
    // Without a replication only the link counts; a fraction of a cycle
    // rounds up (1 us + 1 B / 2 GB/s = 1,000.5 cycles).
    s.system.offwafer_bandwidth_bytes_per_s = 2e9;
    let t = Transfer {
        route: TRoute::OffWafer { bytes: 1 },
        replicate: None,
    };
    let out = simulate_transfer(&s, &t, 1, 2, &RunOptions::default()).unwrap();
    assert_eq!((out.cycles, out.run.is_none()), (1001, true));
}

#[test]
fn bad_transfers_are_errors_naming_the_problem() {
    let s = spec_h1_r2();
    let opts = RunOptions::default();
    // A replication of another size than what arrives.
    let err = simulate_transfer(&s, &on_wafer(3, 2, Some((4, 5))), 1, 2, &opts).unwrap_err();
    assert!(matches!(err, FabricError::Unsupported(_)), "{err}");
    assert!(
        err.to_string().contains("replicated as 5 wavelets"),
        "{err}"
    );
    // A path too long to hold: refused before anything is allocated.
    let err = simulate_transfer(&s, &on_wafer(1, 1 << 40, None), 1, 2, &opts).unwrap_err();
    assert!(matches!(err, FabricError::TooLarge(_)), "{err}");
    let err = line_transfer_program(0, 1, 2, 1, 1).unwrap_err();
    assert!(err.to_string().contains("0 lines"), "{err}");
    // Values of a size the fabric does not carry.
    let err = line_transfer_program(1, 1, 8, 1, 1).unwrap_err();
    assert!(err.to_string().contains("8-byte"), "{err}");
    // A zero-bandwidth link (a spec file could say so) is an error by name.
    let mut bad = s.clone();
    bad.system.offwafer_bandwidth_bytes_per_s = 0.0;
    let t = Transfer {
        route: TRoute::OffWafer { bytes: 10 },
        replicate: None,
    };
    let err = simulate_transfer(&bad, &t, 1, 2, &opts).unwrap_err();
    assert!(err.to_string().contains("offwafer_bandwidth"), "{err}");
}

#[test]
fn a_sixteen_bit_ring_allreduce_rounds_each_partial_as_it_is_sent() {
    // 16-bit values travel two to a wavelet, rounded to f16 when sent. The
    // reference, per value of chunk k: the owner's value rounded, then at
    // each next position its own f32 value plus what arrived, rounded again
    // when passed on; the last adder keeps its f32 sum, every other PE
    // receives it rounded.
    let s = spec_h1_r2();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let r16 = |x: f32| half::f16::from_f32(x).to_f32();
    for p in [2u32, 3, 5] {
        for values in [2u64, 2 * p as u64, 14] {
            for pipelined in [false, true] {
                let sp = ring_program(&s, 1, p, Axis::Column, values, 2, Some(pipelined)).unwrap();
                let n = values as usize;
                let input: Vec<f32> = (0..p as usize * n)
                    .map(|_| rng.gen_range(-4.0f32..4.0))
                    .collect();
                let opts = RunOptions {
                    values: Some(input.clone()),
                    ..RunOptions::default()
                };
                let got = run(&s, &sp.program, &opts).unwrap().values.unwrap();
                let ring = interleaved_ring(p);
                let bounds = ring_chunks(values / 2, p);
                let v = |l: usize, i: usize| input[ring[l] as usize * n + i];
                for i in 0..n {
                    // Value i is in wavelet i / 2, of chunk k.
                    let k = bounds.partition_point(|&b| b <= (i / 2) as u64) - 1;
                    let mut acc = v(k, i);
                    for m in 1..p as usize {
                        acc = v((k + m) % p as usize, i) + r16(acc);
                    }
                    let last = ring[(k + p as usize - 1) % p as usize] as usize;
                    for pe in 0..p as usize {
                        let want = if pe == last { acc } else { r16(acc) };
                        assert_eq!(
                            got[pe * n + i].to_bits(),
                            want.to_bits(),
                            "P {p} n {values} value {i} PE {pe} pipelined {pipelined}"
                        );
                    }
                }
            }
        }
    }
}
