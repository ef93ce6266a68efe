//! Tests of the fabric simulator: the router (ordering, back-pressure, the
//! colour limit), collectives' values against the functional schedule and their
//! cycles against hand-derived formulas.

use super::engine::*;
use super::programs::*;
use super::FabricError;
use crate::collective::Algorithm;
use crate::matrix::mesh_gemv_program;
use crate::schedule::{Schedule, TreeShape};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wafer_core::spec::wse3;
use wafer_core::WaferSpec;

/// wse3 with the latencies every hand derivation of the fabric's tests
/// uses: hop h = 1, ramp r = 2, and no per-element loop overhead, operation
/// setup, task switch or residual (the tests that need them set their own).
pub(crate) fn spec_h1_r2() -> WaferSpec {
    let mut s = wse3();
    s.router.hop_latency_cycles = 1.0;
    s.router.ramp_latency_cycles = 2.0;
    s.pe.fabric_op_setup_cycles = 0.0;
    s.pe.task_switch_cycles = 0.0;
    s.cost.loop_overhead_cycles_per_element = 0.0;
    s.cost.fabric_collective_residual_cycles = 0.0;
    s
}

fn route(rx: Dir, tx: &[Dir]) -> Route {
    Route {
        rx,
        tx: DirSet::of(tx),
    }
}

fn task(trigger: Trigger, ops: Vec<Op>) -> Task {
    Task {
        name: "t",
        trigger,
        ops,
    }
}

/// A straight eastward route on `colour` from PE `from` to PE `to` of row 0.
fn east_route(p: &mut FabricProgram, colour: Colour, from: u32, to: u32) {
    let c = colour;
    p.routes[from as usize].push((c, route(Dir::Ramp, &[Dir::East])));
    for x in from + 1..to {
        p.routes[x as usize].push((c, route(Dir::West, &[Dir::East])));
    }
    p.routes[to as usize].push((c, route(Dir::West, &[Dir::Ramp])));
}

#[test]
fn wavelets_on_one_colour_arrive_in_order_while_sharing_links() {
    // Row of 4 PEs: PE 0 streams 10 values on colour 0 to PE 3, PE 1 streams 10
    // on colour 1 to PE 3; both cross the links 1->2 and 2->3. PE 3 stores each
    // stream's wavelets in arrival order: any reordering would misplace a value.
    let s = spec_h1_r2();
    let mut p = FabricProgram::new(4, 1, Packing::F32, 20);
    east_route(&mut p, Colour(0), 0, 3);
    east_route(&mut p, Colour(1), 1, 3);
    let send = |c, first| Op::Send {
        colour: Colour(c),
        first,
        wavelets: 10,
    };
    let recv = |c, first| Op::Recv {
        colour: Colour(c),
        first,
        wavelets: 10,
        combine: Combine::Store,
        forward: None,
    };
    p.pes[0].tasks.push(task(Trigger::Start, vec![send(0, 0)]));
    p.pes[1].tasks.push(task(Trigger::Start, vec![send(1, 10)]));
    p.pes[3]
        .tasks
        .push(task(Trigger::Start, vec![recv(0, 0), recv(1, 10)]));
    let mut values = vec![0.0f32; 4 * 20];
    for i in 0..10 {
        values[i] = i as f32 + 1.0; // PE 0's 1..10
        values[20 + 10 + i] = 100.0 + i as f32; // PE 1's 100..109
    }
    let opts = RunOptions {
        values: Some(values.clone()),
        ..RunOptions::default()
    };
    let out = run(&s, &p, &opts).unwrap();
    let v = out.values.unwrap();
    assert_eq!(&v[60..70], &values[0..10]);
    assert_eq!(&v[70..80], &values[30..40]);
    // 10 wavelets over 3 links and 10 over 2.
    assert_eq!(out.wavelet_hops, 50);
}

/// Two PEs in a row: PE 0 sends `n` wavelets east to PE 1, whose data task
/// receives one wavelet and then computes for `slow` cycles.
fn producer_consumer(n: u32, slow: u64, depth: u32) -> (u64, u64) {
    let mut s = spec_h1_r2();
    s.router.input_queue_depths = vec![depth];
    s.router.output_queue_depths = vec![depth];
    let mut p = FabricProgram::new(2, 1, Packing::F32, n as u64);
    east_route(&mut p, Colour(0), 0, 1);
    p.pes[0].tasks.push(task(
        Trigger::Start,
        vec![Op::Send {
            colour: Colour(0),
            first: 0,
            wavelets: n,
        }],
    ));
    p.pes[1].tasks.push(task(
        Trigger::Wavelet(Colour(0)),
        vec![
            Op::Recv {
                colour: Colour(0),
                first: 0,
                wavelets: 1,
                combine: Combine::Store,
                forward: None,
            },
            Op::Compute { cycles: slow },
        ],
    ));
    let opts = RunOptions {
        params: FabricParams {
            router_buffer_wavelets: depth,
            ..FabricParams::default()
        },
        ..RunOptions::default()
    };
    let out = run(&s, &p, &opts).unwrap();
    (out.pe_cycles[0], out.pe_cycles[1])
}

#[test]
fn a_full_queue_stalls_the_sender_by_the_hand_computed_cycles() {
    // h = 1, r = 2; sending or storing one f32 wavelet costs the PE 1 cycle
    // (the kernels' vector cost of one value: ceil(1/4) issue, ceil(4/8) port).
    // Wavelet k leaves PE 0 at cycle k if it can, reaches PE 0's router at
    // k + r, PE 1's router at k + r + h, PE 1's input queue at k + 2r + h, so
    // w0 is taken at p0 = 5. With slow = S >= 2, PE 1 takes w_k at
    // p_k = 5 + k (S + 1) (1 to receive, S to compute), and each w_k is there
    // in time. PE 1 ends at p_{n-1} + 1 + S = 5 + n (S + 1), whatever the
    // queue depths.
    //
    // Depth 1 everywhere: between PE 0's compute engine and PE 1's there are
    // three one-wavelet slots (PE 0's output queue, PE 1's router buffer, PE 1's
    // input queue). Once they are full, a slot frees only when PE 1 takes a
    // wavelet, and the free slot travels back in the same cycle (credits
    // return at once), so for k >= 4 PE 0 puts w_k out at p_{k-3}, and ends
    // one cycle after its last: 5 + (n - 4)(S + 1) + 1.
    //
    // Depth 64: nothing fills; PE 0 puts w_k out at k and ends at n.
    for (n, slow) in [(8u32, 10u64), (12, 3), (5, 7)] {
        let consumer = 5 + n as u64 * (slow + 1);
        let (sender, recv) = producer_consumer(n, slow, 1);
        assert_eq!(recv, consumer, "n {n} slow {slow}");
        assert_eq!(
            sender,
            5 + (n as u64 - 4) * (slow + 1) + 1,
            "n {n} slow {slow}"
        );
        let (sender, recv) = producer_consumer(n, slow, 64);
        assert_eq!(recv, consumer, "n {n} slow {slow}");
        assert_eq!(sender, n as u64, "n {n} slow {slow}");
    }
}

#[test]
fn a_program_with_more_colours_than_the_router_is_refused() {
    let s = wse3();
    let limit = s.router.colors as u8;
    // One colour per PE pair, limit + 1 of them.
    let n = limit as u32 + 2;
    let mut p = FabricProgram::new(n, 1, Packing::F32, 1);
    for c in 0..=limit {
        east_route(&mut p, Colour(c), c as u32, c as u32 + 1);
    }
    let err = run(&s, &p, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, FabricError::TooManyColours { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{} colours", limit + 1)), "{msg}");
    assert!(msg.contains(&format!("has {limit}")), "{msg}");
    // A generated collective on a router with too few colours: a chain
    // allreduce needs two alternating colours and a broadcast colour.
    let mut small = wse3();
    small.router.colors = 2;
    let step = column_allreduce_step(TreeShape::new(4, Algorithm::Chain).unwrap(), 1, 4);
    let err = simulate_step(&small, 1, 4, &step, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("uses 3 colours"), "{err}");
}

#[test]
fn bad_programs_are_errors_not_panics() {
    let s = spec_h1_r2();
    // A route off the fabric.
    let mut p = FabricProgram::new(2, 1, Packing::F32, 1);
    p.routes[1].push((Colour(0), route(Dir::Ramp, &[Dir::East])));
    let err = run(&s, &p, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("leaves the fabric"), "{err}");
    // A receive nobody feeds: a deadlock, reported with the PE.
    let mut p = FabricProgram::new(2, 1, Packing::F32, 1);
    east_route(&mut p, Colour(0), 0, 1);
    p.pes[1].tasks.push(task(
        Trigger::Start,
        vec![Op::Recv {
            colour: Colour(0),
            first: 0,
            wavelets: 1,
            combine: Combine::Add,
            forward: None,
        }],
    ));
    let err = run(&s, &p, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, FabricError::Deadlock(_)), "{err}");
    assert!(err.to_string().contains("PE (1,0)"), "{err}");
    // Routers with other than five ports.
    let mut four = s.clone();
    four.router.ports = 4;
    let err = run(&four, &p, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("4 ports"), "{err}");
    // Non-whole latencies.
    let mut frac = s.clone();
    frac.router.hop_latency_cycles = 1.5;
    let err = run(&frac, &p, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("whole cycles"), "{err}");
    // A mid K-tree whose root would need more input queues than wse3 has
    // (a child per level from each half: 2 K = 10 > 8).
    let tree = TreeShape::new(200, Algorithm::MidKTree { k: 5, groups: None }).unwrap();
    let step = column_allreduce_step(tree, 1, 2);
    let err = simulate_step(&s, 1, 200, &step, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("input queues"), "{err}");
}

#[test]
fn time_costs_events_not_cycles() {
    // A billion-cycle compute is three events (start, run, finish), not a billion.
    let s = spec_h1_r2();
    let mut p = FabricProgram::new(1, 1, Packing::F32, 0);
    p.pes[0].tasks.push(task(
        Trigger::Start,
        vec![Op::Compute {
            cycles: 1_000_000_000,
        }],
    ));
    let out = run(&s, &p, &RunOptions::default()).unwrap();
    assert_eq!(out.pe_cycles, vec![1_000_000_000]);
    assert!(out.events <= 3, "{}", out.events);
}

fn trees(n: u32) -> Vec<Algorithm> {
    vec![
        Algorithm::Chain,
        Algorithm::KTree { k: 2, groups: None },
        Algorithm::KTree {
            k: 2,
            groups: Some(1 + n / 4),
        },
        Algorithm::KTree { k: 3, groups: None },
        Algorithm::MidKTree { k: 1, groups: None },
        Algorithm::MidKTree { k: 2, groups: None },
        Algorithm::MidKTree { k: 3, groups: None },
    ]
}

#[test]
fn allreduce_values_equal_the_schedules_sum_bit_for_bit() {
    // f32 values in wavelets: every PE ends with exactly the root's sum in the
    // schedule's order (the functional executor's `Schedule::sum`).
    let s = spec_h1_r2();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for n in 1..=20u32 {
        for alg in trees(n) {
            let (w, values) = (2u32, 3usize);
            let tree = TreeShape::new(n, alg).unwrap();
            let sched = Schedule::from_shape(tree.clone()).unwrap();
            let step = column_allreduce_step(tree, values as u64, 4);
            let input: Vec<f32> = (0..(w * n) as usize * values)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();
            let opts = RunOptions {
                values: Some(input.clone()),
                ..RunOptions::default()
            };
            let out = simulate_step(&s, w, n, &step, &opts).unwrap();
            let got = out.values.unwrap();
            for x in 0..w as usize {
                // The column's lines, PE-ordered along the column.
                let mut parts: Vec<f32> = (0..n as usize)
                    .flat_map(|y| input[(y * w as usize + x) * values..][..values].to_vec())
                    .collect();
                let want = sched.sum(&mut parts, values, n as usize).to_vec();
                for y in 0..n as usize {
                    let pe = y * w as usize + x;
                    let have = &got[pe * values..][..values];
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(have), bits(&want), "n {n} {alg:?} PE ({x},{y})");
                }
            }
        }
    }
}

#[test]
fn a_chain_allreduce_takes_the_hand_derived_cycles() {
    // A chain reduce toward PE 0 of a column of n PEs, then a broadcast from
    // PE 0; W f32 wavelets per PE; all PEs start at cycle 0; hop h, ramp r;
    // sending, adding or storing one wavelet costs the PE 1 cycle.
    //
    // The leaf n-1 puts wavelet j out at cycle j; it reaches its router at
    // j + r, the next router at + h and that PE's input queue at + r. A middle
    // PE adds it (1 cycle) and puts the sum out at once (element-pipelined), so
    // each level adds h + 2r + 1 and no queue ever stalls (one wavelet per
    // cycle everywhere). The root's last add ends at
    //   R = (W - 1) + (n - 1)(h + 2r + 1).
    // The root then sends the W broadcast wavelets at R .. R + W - 1 and ends at
    // R + W. Broadcast wavelet j reaches PE k's input queue at
    // R + j + r + k h + r (routers pass it on and deliver it in the same cycle),
    // so PE k ends at E_k = R + (W - 1) + 2r + k h + 1.
    // The figure is the mean over the n PEs of their end cycles.
    for (h, r) in [(1u64, 2u64), (2, 3)] {
        let mut s = spec_h1_r2();
        s.router.hop_latency_cycles = h as f64;
        s.router.ramp_latency_cycles = r as f64;
        for n in 2..=12u64 {
            for w in [1u64, 3, 8] {
                let step = column_allreduce_step(
                    TreeShape::new(n as u32, Algorithm::Chain).unwrap(),
                    w,
                    4,
                );
                let out = simulate_step(&s, 1, n as u32, &step, &RunOptions::default()).unwrap();
                let big_r = (w - 1) + (n - 1) * (h + 2 * r + 1);
                let mut want = vec![big_r + w];
                want.extend((1..n).map(|k| big_r + (w - 1) + 2 * r + k * h + 1));
                assert_eq!(out.pe_cycles, want, "h {h} r {r} n {n} W {w}");
                let mean = want.iter().sum::<u64>() as f64 / n as f64;
                assert_eq!(out.cycles.get(), mean);
                // Every wavelet crosses n - 1 links on the way in and on the way out.
                assert_eq!(out.wavelet_hops, 2 * w * (n - 1), "h {h} r {r} n {n} W {w}");
            }
        }
    }
}

#[test]
fn issuing_each_fabric_operation_adds_its_setup_where_nothing_hides_it() {
    // The chain allreduce above with a setup of S cycles per send or receive.
    // The leaf issues its send (S), so every reduction wavelet leaves S later;
    // the other PEs issue their receives while they wait for data, which hides
    // those setups. The root then issues the broadcast's send (S more); every
    // other PE issues its broadcast receive long before the broadcast arrives.
    // So every PE ends 2S later than with no setup.
    let (h, r) = (1u64, 2u64);
    for setup in [5u64, 16] {
        let mut s = spec_h1_r2();
        s.pe.fabric_op_setup_cycles = setup as f64;
        for n in 2..=8u64 {
            for w in [1u64, 3] {
                let step = column_allreduce_step(
                    TreeShape::new(n as u32, Algorithm::Chain).unwrap(),
                    w,
                    4,
                );
                let out = simulate_step(&s, 1, n as u32, &step, &RunOptions::default()).unwrap();
                let big_r = (w - 1) + (n - 1) * (h + 2 * r + 1);
                let mut want = vec![big_r + w + 2 * setup];
                want.extend((1..n).map(|k| big_r + (w - 1) + 2 * r + k * h + 1 + 2 * setup));
                assert_eq!(out.pe_cycles, want, "S {setup} n {n} W {w}");
            }
        }
    }
    // A setup that is not a whole number of cycles is refused by name.
    let mut s = spec_h1_r2();
    s.pe.fabric_op_setup_cycles = 2.5;
    let step = column_allreduce_step(TreeShape::new(2, Algorithm::Chain).unwrap(), 1, 4);
    let err = simulate_step(&s, 1, 2, &step, &RunOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("pe.fabric_op_setup_cycles"),
        "{err}"
    );
}

#[test]
fn gemv_on_the_fabric_delivers_the_functional_result() {
    // MeshGEMV as `wafer kernel gemv` lowers it: tile GEMVs, then the column
    // allreduce of 16-bit partial sums packed two to a wavelet. The reference:
    // the same tile GEMVs (the kernels' function) and the schedule's transfers
    // in order, each partial rounded to f16 as it is sent; the root keeps its
    // f32 sum, the other PEs receive it rounded to f16.
    let s = spec_h1_r2();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (w, h, m, n, alg) in [
        (
            4u32,
            6u32,
            30u64,
            13u64,
            Algorithm::MidKTree { k: 2, groups: None },
        ),
        (
            3,
            9,
            18,
            7,
            Algorithm::KTree {
                k: 2,
                groups: Some(3),
            },
        ),
        (2, 5, 5, 9, Algorithm::Chain),
    ] {
        let tree = TreeShape::new(h, alg).unwrap();
        let sched = Schedule::from_shape(tree.clone()).unwrap();
        let prog = mesh_gemv_program(&s, w, h, m, n, tree);
        let step = &prog.steps[0];
        let wafer_sim_tiling = match &prog.tiles[0] {
            crate::tiling::Tile::Matrix { tiling, .. } => *tiling,
            _ => unreachable!("a gemv program holds its matrix"),
        };
        let (kt, nt) = (wafer_sim_tiling.inp.chunk, wafer_sim_tiling.out.chunk);
        let x: Vec<f32> = (0..m).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let wt: Vec<f16> = (0..m * n)
            .map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0)))
            .collect();
        // PE (c, r): rows chunk r of M (input), columns chunk c of N (output).
        let mut partial = vec![0.0f32; (w * h) as usize * nt];
        for r in 0..h as usize {
            for c in 0..w as usize {
                let xs: Vec<f32> = (0..kt)
                    .map(|i| x.get(r * kt + i).copied().unwrap_or(0.0))
                    .collect();
                let tile: Vec<f16> = (0..kt * nt)
                    .map(|e| {
                        let (i, j) = (r * kt + e / nt, c * nt + e % nt);
                        if i < m as usize && j < n as usize {
                            wt[i * n as usize + j]
                        } else {
                            f16::ZERO
                        }
                    })
                    .collect();
                let pe = r * w as usize + c;
                wafer_kernels::matrix::gemv_tile(&xs, &tile, &mut partial[pe * nt..][..nt]);
            }
        }
        let opts = RunOptions {
            values: Some(partial.clone()),
            ..RunOptions::default()
        };
        let out = simulate_step(&s, w, h, step, &opts).unwrap();
        let got = out.values.unwrap();
        let round = |v: f32| f16::from_f32(v).to_f32();
        for c in 0..w as usize {
            let mut parts: Vec<Vec<f32>> = (0..h as usize)
                .map(|r| partial[(r * w as usize + c) * nt..][..nt].to_vec())
                .collect();
            for t in sched.transfers() {
                let sent: Vec<f32> = parts[t.from as usize].iter().map(|&v| round(v)).collect();
                for (d, v) in parts[t.to as usize].iter_mut().zip(sent) {
                    *d += v;
                }
            }
            let root = sched.root() as usize;
            for r in 0..h as usize {
                let pe = r * w as usize + c;
                let have: Vec<u32> = got[pe * nt..][..nt].iter().map(|f| f.to_bits()).collect();
                let want: Vec<u32> = parts[root]
                    .iter()
                    .map(|&v| if r == root { v } else { round(v) }.to_bits())
                    .collect();
                assert_eq!(have, want, "{w}x{h} {alg:?} PE ({c},{r})");
            }
            // And the plain product, to f16 rounding of the partial sums.
            let real = nt.min((n as usize).saturating_sub(c * nt));
            for (j, &got) in parts[root].iter().enumerate().take(real) {
                let col = c * nt + j;
                let exact: f64 = (0..m as usize)
                    .map(|i| x[i] as f64 * wt[i * n as usize + col].to_f64())
                    .sum();
                assert!((got as f64 - exact).abs() < 2e-2, "{got} vs {exact}");
            }
        }
        // The local GEMV's cycles come first, from the kernel's cost.
        let compute = ceil_cycles(step.kernels[0].cycles(&s));
        assert!(out.pe_cycles.iter().all(|&c| c > compute));
    }
}

#[test]
fn row_collectives_run_along_rows() {
    // The same allreduce along every row (west to east) instead of every column.
    let s = spec_h1_r2();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (w, h, values) = (7u32, 3u32, 5usize);
    let tree = TreeShape::new(w, Algorithm::MidKTree { k: 2, groups: None }).unwrap();
    let sched = Schedule::from_shape(tree.clone()).unwrap();
    let mut step = column_allreduce_step(tree, values as u64, 4);
    step.collective.as_mut().unwrap().axis = crate::tiling::Axis::Row;
    let input: Vec<f32> = (0..(w * h) as usize * values)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let opts = RunOptions {
        values: Some(input.clone()),
        ..RunOptions::default()
    };
    let got = simulate_step(&s, w, h, &step, &opts)
        .unwrap()
        .values
        .unwrap();
    for y in 0..h as usize {
        let row = y * w as usize * values;
        let mut parts = input[row..][..w as usize * values].to_vec();
        let want = sched.sum(&mut parts, values, w as usize).to_vec();
        for x in 0..w as usize {
            assert_eq!(&got[row + x * values..][..values], &want[..], "({x},{y})");
        }
    }
    // A tree over the wrong axis's length is refused.
    let bad = column_allreduce_step(
        TreeShape::new(h, Algorithm::Chain).unwrap(),
        values as u64,
        4,
    );
    let mut bad = bad;
    bad.collective.as_mut().unwrap().axis = crate::tiling::Axis::Row;
    let err = simulate_step(&s, w, h, &bad, &RunOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("a tree over 3 PEs on lines of 7"),
        "{err}"
    );
}

#[test]
fn a_wavefront_launch_starts_each_pe_one_hop_latency_per_hop_later() {
    // Every PE computes 40 cycles and nothing else: each PE's own figure is 40
    // whatever the launch, and the span grows by the hop latency h times the
    // Manhattan distance of the farthest PE from the launch PE (0, 0).
    let mut s = spec_h1_r2();
    s.router.hop_latency_cycles = 3.0;
    let (w, h) = (5u32, 4u32);
    let mut p = FabricProgram::new(w, h, Packing::F32, 0);
    for pe in &mut p.pes {
        pe.tasks
            .push(task(Trigger::Start, vec![Op::Compute { cycles: 40 }]));
    }
    let opts = RunOptions {
        launch: Launch::Wavefront { x: 0, y: 0 },
        ..RunOptions::default()
    };
    let out = run(&s, &p, &opts).unwrap();
    assert!(out.pe_cycles.iter().all(|&c| c == 40));
    assert_eq!(out.span, 40 + 3 * ((w - 1) + (h - 1)) as u64);
    let together = run(&s, &p, &RunOptions::default()).unwrap();
    assert_eq!(together.span, 40);
}

#[test]
fn a_two_level_tree_takes_the_hand_derived_cycles() {
    // K = 2 with 2 groups over a column of 4 PEs: the schedule is 1 -> 0,
    // 3 -> 2, then 2 -> 0 (two hops, through PE 1's router on a colour of its
    // own). W f32 wavelets per PE, W <= 7; all start at 0; h = 1, r = 2; each
    // wavelet costs a PE 1 cycle to send, add or store.
    //
    // PE 1's wavelet j reaches PE 0's input queue at j + 2r + h; PE 0 adds it
    // in 1 cycle, so PE 0 has taken all of PE 1's by W + 2r + h. PE 3's wavelet
    // j reaches PE 2 at j + 2r + h; PE 2 adds it and sends it on at once:
    // + 1 + r to its router, 2 hops, + r into PE 0: j + 4r + 3h + 1 = j + 12,
    // later than PE 0 becomes free (W + 5 <= 12 for W <= 7), so PE 0's last add
    // ends at R = W - 1 + 4r + 3h + 1 + 1 = W + 12. The two streams share the
    // link 1 -> 0 but never in the same cycle (PE 1's uses it at cycles
    // r .. r + W - 1 = 2 .. W + 1 < 9, PE 2's from 3r + 2h + 1 = 9 on).
    // Then the broadcast, as in the chain: PE 0 ends at R + W, PE k at
    // R + (W - 1) + 2r + k h + 1.
    let s = spec_h1_r2();
    let alg = Algorithm::KTree {
        k: 2,
        groups: Some(2),
    };
    for w in [1u64, 3, 7] {
        let step = column_allreduce_step(TreeShape::new(4, alg).unwrap(), w, 4);
        let out = simulate_step(&s, 1, 4, &step, &RunOptions::default()).unwrap();
        let big_r = w + 12;
        let mut want = vec![big_r + w];
        want.extend((1..4).map(|k| big_r + (w - 1) + 4 + k + 1));
        assert_eq!(out.pe_cycles, want, "W {w}");
    }
}

#[test]
fn two_colours_on_one_link_share_its_cycles() {
    // Row of 4 PEs: PE 0 streams W wavelets on colour 0 to PE 3, PE 1 streams
    // W on colour 1 to PE 2; both cross the link 1 -> 2, which carries one
    // wavelet per cycle. h = 1, r = 2; receivers store at 1 cycle per wavelet.
    // PE 1's first wavelet reaches its router at r and PE 0's at r + h, and from
    // then on one of the two always waits there, so the link is busy from
    // cycle r to r + 2W - 1 and its last wavelet crosses at r + 2W - 1. If it
    // is PE 1's, PE 2 stores it at r + 2W - 1 + h + r and ends a cycle later;
    // if PE 0's, PE 3 does one hop later. Alone, PE 0's stream ends at
    // PE 3 at (W - 1) + 3h + 2r + 1.
    let s = spec_h1_r2();
    let w = 40u32;
    let program = |both: bool| {
        let mut p = FabricProgram::new(4, 1, Packing::F32, w as u64);
        east_route(&mut p, Colour(0), 0, 3);
        let send = |c| Op::Send {
            colour: Colour(c),
            first: 0,
            wavelets: w,
        };
        let recv = |c| Op::Recv {
            colour: Colour(c),
            first: 0,
            wavelets: w,
            combine: Combine::Store,
            forward: None,
        };
        p.pes[0].tasks.push(task(Trigger::Start, vec![send(0)]));
        p.pes[3].tasks.push(task(Trigger::Start, vec![recv(0)]));
        if both {
            east_route(&mut p, Colour(1), 1, 2);
            p.pes[1].tasks.push(task(Trigger::Start, vec![send(1)]));
            p.pes[2].tasks.push(task(Trigger::Start, vec![recv(1)]));
        }
        p
    };
    let (h, r, w64) = (1u64, 2u64, w as u64);
    let alone = run(&s, &program(false), &RunOptions::default()).unwrap();
    assert_eq!(alone.pe_cycles[3], (w64 - 1) + 3 * h + 2 * r + 1);
    let out = run(&s, &program(true), &RunOptions::default()).unwrap();
    let last = out.pe_cycles[2].max(out.pe_cycles[3]);
    let via_pe2 = r + 2 * w64 - 1 + h + r + 1;
    assert!(
        last == via_pe2 || (last == via_pe2 + h && out.pe_cycles[3] == last),
        "{:?}",
        out.pe_cycles
    );
    assert!(
        out.max_queue_occupancy >= 2,
        "a queue backs up behind the link"
    );
}

#[test]
fn shifted_tiles_land_where_the_shift_puts_them() {
    let s = spec_h1_r2();
    let (w, h, vals) = (6u32, 2u32, 3usize);
    for steps in [1u32, 2, 3, 5] {
        for broadcast in [false, true] {
            let sp = row_shift_program(&s, w, h, vals as u64, 4, steps, broadcast).unwrap();
            let per = sp.program.values_per_pe as usize; // two tiles
            assert_eq!(per, 2 * vals);
            // PE p's tile 0 holds 1000 p + i, tile 1 holds -(1000 p + i).
            let input: Vec<f32> = (0..(w * h) as usize)
                .flat_map(|p| {
                    (0..per).map(move |i| {
                        let v = (1000 * p + i % vals) as f32;
                        if i < vals {
                            v
                        } else {
                            -v
                        }
                    })
                })
                .collect();
            let opts = RunOptions {
                values: Some(input.clone()),
                ..RunOptions::default()
            };
            let got = run(&s, &sp.program, &opts).unwrap().values.unwrap();
            let at = (steps as usize % 2) * vals;
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let p = y * w as usize + x;
                    let have = &got[p * per + at..][..vals];
                    // After L steps a PE's tile L mod 2 holds the first tile
                    // of the PE L to its west; a broadcast then copies the west
                    // PE's tile L mod 2 (which never received anything).
                    let want = if broadcast {
                        y * w as usize * per + at
                    } else if x >= steps as usize {
                        (p - steps as usize) * per
                    } else {
                        continue;
                    };
                    assert_eq!(
                        have,
                        &input[want..][..vals],
                        "L {steps} bcast {broadcast} ({x},{y})"
                    );
                }
            }
        }
    }
}

#[test]
fn a_shift_takes_the_hand_derived_cycles() {
    // A row of 3 PEs, one f32 wavelet per tile, L steps, h = 1, r = 2, 1 cycle
    // per wavelet sent or stored. PE 0 only sends: at cycles 0 .. L - 1, ending
    // at L (the queues hold everything; PE 1 takes one per 2 cycles). PE 1
    // receives first: step s's wavelet reaches it at s + 2r + h = s + 5, but it
    // also sends each step, so it takes one at 5 + 2s and sends at 6 + 2s,
    // ending at 2L + 5. PE 2 only receives: PE 1's wavelet of step s arrives
    // at 6 + 2s + 2r + h = 11 + 2s, stored by 12 + 2s: PE 2 ends at 2L + 10.
    //
    // Every step after the first is a new task: with a task switch of T
    // cycles, PE 0 sends step s at s (1 + T) and ends at L + (L - 1) T. PE 1
    // starts step s at 5 + s (2 + T) (PE 0's wavelet is there by then) and
    // ends at 2L + 5 + (L - 1) T. PE 2 is ready for step s at 10 + s (2 + T),
    // a cycle before PE 1's wavelet lands, and ends at 2L + 10 + (L - 1) T.
    let mut s = spec_h1_r2();
    for switch in [0u64, 9] {
        s.pe.task_switch_cycles = switch as f64;
        for steps in [1u64, 3, 6] {
            let sp = row_shift_program(&s, 3, 1, 1, 4, steps as u32, false).unwrap();
            let out = run(&s, &sp.program, &RunOptions::default()).unwrap();
            let t = (steps - 1) * switch;
            assert_eq!(
                out.pe_cycles,
                vec![steps + t, 2 * steps + 5 + t, 2 * steps + 10 + t],
                "L {steps} T {switch}"
            );
        }
    }
    let err = row_shift_program(&s, 1, 4, 1, 4, 3, true).unwrap_err();
    assert!(err.to_string().contains("at least 2 PEs wide"), "{err}");
}

#[test]
fn cannon_rounds_rotate_the_tiles_around_the_interleaved_rings() {
    // After R rounds the PE at logical position l of its row holds the A tile
    // that started at position l + R (mod p), and the PE at logical position l
    // of its column the B tile that started at l + R, in tile R mod 2.
    let s = spec_h1_r2();
    assert_eq!(interleaved_ring(6), vec![0, 2, 4, 5, 3, 1]);
    assert_eq!(interleaved_ring(5), vec![0, 2, 4, 3, 1]);
    for (p, m, k, n) in [(2u32, 2u64, 6u64, 4u64), (5, 10, 5, 15), (6, 12, 18, 6)] {
        let prog = crate::matrix::mesh_gemm_program(&s, p, m, k, n);
        let step = &prog.steps[0];
        let c = step.cannon.unwrap();
        let ring = interleaved_ring(p);
        for rounds in [1u32, 2, 3] {
            let sp = cannon_rounds(&s, p + 1, p, step, Some(rounds)).unwrap();
            let per = sp.program.values_per_pe as usize;
            let (wa, wb) = (
                c.a_values.div_ceil(2) as usize,
                c.b_values.div_ceil(2) as usize,
            );
            assert_eq!(per, 2 * 2 * (wa + wb));
            let input: Vec<f32> = (0..((p + 1) * p) as usize * per)
                .map(|i| (i % 2048) as f32)
                .collect();
            let opts = RunOptions {
                values: Some(input.clone()),
                ..RunOptions::default()
            };
            let got = run(&s, &sp.program, &opts).unwrap().values.unwrap();
            let at = |x: u32, y: u32| (y * (p + 1) + x) as usize * per;
            let cur = rounds as usize % 2;
            let src = |l: usize| ring[(l + rounds as usize) % p as usize];
            for y in 0..p {
                for x in 0..p {
                    let lx = ring.iter().position(|&v| v == x).unwrap();
                    let ly = ring.iter().position(|&v| v == y).unwrap();
                    // A: values [cur * 2 wa, ...) of its tile (2 per wavelet).
                    let a = |pe: usize, t: usize| &input[pe + t * 2 * wa..][..2 * wa];
                    let have_a = &got[at(x, y) + cur * 2 * wa..][..2 * wa];
                    assert_eq!(have_a, a(at(src(lx), y), 0), "p {p} R {rounds} A ({x},{y})");
                    let b0 = 4 * wa;
                    let have_b = &got[at(x, y) + b0 + cur * 2 * wb..][..2 * wb];
                    let want_b = &input[at(x, src(ly)) + b0..][..2 * wb];
                    assert_eq!(have_b, want_b, "p {p} R {rounds} B ({x},{y})");
                }
            }
        }
        // A column of PEs outside the square runs nothing.
        let out = simulate_step(&s, p + 1, p, step, &RunOptions::default()).unwrap();
        assert_eq!(out.pe_cycles[p as usize], 0);
    }
}

#[test]
fn a_cannon_round_on_two_by_two_takes_the_hand_derived_cycles() {
    // p = 2, one wavelet per tile, one round; each PE first computes for C
    // cycles (the Gemm kernel's cost, rounded up). Rings of 2: each PE sends to
    // the other one of its row (A) and of its column (B); even logical
    // positions (x or y = 0) send first, odd ones receive first. A wavelet sent
    // at t is stored by its receiver at t + 2r + h = t + 5, done at t + 6.
    // (0,0): sends A at C, (1,0) stores it by C + 6 and sends A back at C + 6,
    //   stored at (0,0) by C + 12; (0,0) sends B at C + 12; (0,1) (receiving B
    //   first) stores it by C + 18 and sends B back at C + 18, stored at (0,0)
    //   by C + 24. (0,0) ends at C + 24, (0,1) at C + 19.
    // (1,0): A done at C + 7 (its send), sends B at C + 7; (1,1) (A done at
    //   C + 7 too: it received (0,1)'s A by C + 6 and sent it back) stores B by
    //   C + 13, sends B at C + 13 (ends C + 14), stored at (1,0) by C + 19.
    let s = spec_h1_r2();
    let prog = crate::matrix::mesh_gemm_program(&s, 2, 2, 2, 2);
    let step = &prog.steps[0];
    let c = ceil_cycles(step.kernels[0].cycles(&s));
    let sp = cannon_rounds(&s, 2, 2, step, Some(1)).unwrap();
    let out = run(&s, &sp.program, &RunOptions::default()).unwrap();
    assert_eq!(out.pe_cycles, vec![c + 24, c + 19, c + 19, c + 14]);
}

#[test]
fn a_task_switch_is_paid_between_tasks_but_not_on_entering_the_first() {
    // One PE: 5 cycles of work, then a second task, 3 cycles. Activated by an
    // `Activate` (the picker chooses it when the first task ends) or written
    // as `NextTask`, the second task starts T cycles after the first ends;
    // the launch's entry into the first task is not timed.
    for switch in [0u64, 37] {
        let mut s = spec_h1_r2();
        s.pe.task_switch_cycles = switch as f64;
        let activate = vec![
            task(
                Trigger::Start,
                vec![Op::Compute { cycles: 5 }, Op::Activate(1)],
            ),
            task(Trigger::Activation, vec![Op::Compute { cycles: 3 }]),
        ];
        let chained = vec![task(
            Trigger::Start,
            vec![
                Op::Compute { cycles: 5 },
                Op::NextTask,
                Op::Compute { cycles: 3 },
            ],
        )];
        for tasks in [activate, chained] {
            let mut p = FabricProgram::new(1, 1, Packing::F32, 1);
            p.pes[0].tasks = tasks;
            let out = run(&s, &p, &RunOptions::default()).unwrap();
            assert_eq!(out.pe_cycles, vec![5 + switch + 3], "T {switch}");
        }
    }
    // A switch that is not a whole number of cycles is refused by name.
    let mut s = spec_h1_r2();
    s.pe.task_switch_cycles = 0.5;
    let mut p = FabricProgram::new(1, 1, Packing::F32, 1);
    p.pes[0].tasks = vec![task(Trigger::Start, vec![Op::Compute { cycles: 1 }])];
    let err = run(&s, &p, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("pe.task_switch_cycles"), "{err}");
}
