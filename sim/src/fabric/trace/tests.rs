//! Tests of the trace recorder: hand-worked spans of small sends, the trace's
//! agreement with the run it records (spans within each PE's time, link busy
//! cycles summing to the wavelet-hops), the sampling against the budget, and
//! the Chrome JSON.

use super::chrome::write_chrome;
use super::*;
use crate::collective::Algorithm;
use crate::fabric::engine::{run, DirSet, Packing, Route, Task, Trigger};
use crate::fabric::programs::{column_allreduce_step, step_program};
use crate::fabric::FabricParams;
use crate::matrix::mesh_gemv_program;
use crate::schedule::TreeShape;
use serde_json::{Map, Value};
use wafer_core::spec::wse3;

use crate::fabric::tests::spec_h1_r2;

const C0: Colour = Colour(0);

/// PE 0 of a 2x1 row sends `n` f32 wavelets east on colour 0; PE 1 receives
/// them, in one start task, or with `slow = Some(S)` in a data task that
/// receives one wavelet then computes for S cycles.
fn two_pe(n: u32, slow: Option<u64>) -> FabricProgram {
    let mut p = FabricProgram::new(2, 1, Packing::F32, n as u64);
    let route = |rx, tx: &[Dir]| Route {
        rx,
        tx: DirSet::of(tx),
    };
    p.routes[0].push((C0, route(Dir::Ramp, &[Dir::East])));
    p.routes[1].push((C0, route(Dir::West, &[Dir::Ramp])));
    let recv = |wavelets| Op::Recv {
        colour: C0,
        first: 0,
        wavelets,
        combine: Combine::Store,
        forward: None,
    };
    p.pes[0].tasks.push(Task {
        name: "producer",
        trigger: Trigger::Start,
        ops: vec![Op::Send {
            colour: C0,
            first: 0,
            wavelets: n,
        }],
    });
    p.pes[1].tasks.push(match slow {
        None => Task {
            name: "consumer",
            trigger: Trigger::Start,
            ops: vec![recv(n)],
        },
        Some(s) => Task {
            name: "consumer",
            trigger: Trigger::Wavelet(C0),
            ops: vec![recv(1), Op::Compute { cycles: s }],
        },
    });
    p
}

fn traced(s: &WaferSpec, p: &FabricProgram, opts: &RunOptions, budget: u64) -> (FabricRun, Trace) {
    run_traced(s, p, opts, &TraceOptions { max_events: budget }).unwrap()
}

fn sp(task: u16, kind: SpanKind, start: u64, end: u64) -> PeSpan {
    PeSpan {
        task,
        kind,
        start,
        end,
    }
}

#[test]
fn a_two_pe_send_has_the_hand_worked_spans() {
    // h = 1, r = 2, one cycle per wavelet sent or stored, deep queues. PE 0
    // puts wavelet k out at cycle k (k = 0, 1, 2) and ends at 3. Wavelet k
    // reaches PE 0's router at k + 2, crosses the east link in cycle k + 2
    // (busy [2, 5)), reaches PE 1's router at k + 3 and its input queue at
    // k + 5. PE 1 starts its receive at 0, waits for a wavelet until 5, then
    // stores one per cycle: 5, 6, 7, and ends at 8.
    let s = spec_h1_r2();
    let p = two_pe(3, None);
    let (out, tr) = traced(&s, &p, &RunOptions::default(), 1000);
    assert_eq!(out.pe_cycles, vec![3, 8]);
    let send = SpanKind::Send {
        colour: C0,
        wavelets: 3,
    };
    let recv = SpanKind::Recv {
        colour: C0,
        wavelets: 3,
        combine: Combine::Store,
        forward: None,
    };
    assert_eq!(tr.stride, 1);
    assert_eq!(tr.pes.len(), 2);
    assert_eq!(
        (tr.pes[0].x, tr.pes[0].tasks.clone()),
        (0, vec!["producer"])
    );
    assert_eq!(
        tr.pes[0].spans,
        vec![sp(0, SpanKind::Task, 0, 3), sp(0, send, 0, 3)]
    );
    assert_eq!(
        tr.pes[1].spans,
        vec![
            sp(0, SpanKind::Task, 0, 8),
            sp(0, recv, 0, 8),
            sp(0, SpanKind::Blocked(Wait::Wavelet(C0)), 0, 5),
        ]
    );
    assert_eq!(tr.links.len(), 1);
    assert_eq!(
        (tr.links[0].x, tr.links[0].y, tr.links[0].dir),
        (0, 0, Dir::East)
    );
    assert_eq!(
        tr.links[0].intervals,
        vec![LinkInterval {
            start: 2,
            end: 5,
            colour: Some(C0)
        }]
    );
    assert_eq!(tr.link_busy(0, 0, Dir::East), 3);
    assert_eq!(tr.link_wavelets.iter().sum::<u64>(), 3);
    // Every wavelet leaves a queue the cycle it lands: no queue holds two.
    assert_eq!(tr.queues.len(), 3);
    assert!(tr.queues.iter().all(|q| q.peak == 1), "{:?}", tr.queues);
    // Events: 2 + 3 PE spans, 1 link interval, metadata 2 x (3 + 1 task),
    // 2 for the link's track and 2 for the links process.
    assert_eq!(tr.events, 5 + 1 + 8 + 2 + 2);
}

#[test]
fn back_pressure_shows_as_waits_for_a_queue_slot() {
    // Depth-1 queues and buffer, n = 5 wavelets, a consumer data task that
    // receives one wavelet then computes S = 3 cycles (h = 1, r = 2). The
    // three slots between the PEs are PE 0's output queue (OQ), PE 1's
    // router buffer (B) and input queue (IQ); a slot is reserved when a
    // wavelet is sent toward it and freed when the wavelet leaves.
    // PE 0 sends w0 at 0 (OQ busy until w0 leaves it at 2); at 1 it waits; at
    // 2 it sends w1 (OQ until 4); waits 3..4; sends w2 at 4 (OQ until 6);
    // waits 5..6; sends w3 at 6, which reaches OQ at 8 while w2 sits in B
    // (IQ holds w1 until PE 1 takes it at 9); so PE 0 waits 7..9, sends w4 at
    // 9 and ends at 10. OQ forwards w0..w4 over the link at 2, 4, 6, 9 and 13
    // (w4 waits in OQ until w3 leaves B at 13).
    // PE 1 takes w_k at 5 + 4k (1 cycle, then 3 of compute): five task runs.
    let mut s = spec_h1_r2();
    s.router.input_queue_depths = vec![1];
    s.router.output_queue_depths = vec![1];
    let p = two_pe(5, Some(3));
    let opts = RunOptions {
        params: FabricParams {
            router_buffer_wavelets: 1,
            ..FabricParams::default()
        },
        ..RunOptions::default()
    };
    let (out, tr) = traced(&s, &p, &opts, 1000);
    assert_eq!(out.pe_cycles, vec![10, 25]);
    let wait = SpanKind::Blocked(Wait::Slot(C0));
    let send = SpanKind::Send {
        colour: C0,
        wavelets: 5,
    };
    assert_eq!(
        tr.pes[0].spans,
        vec![
            sp(0, SpanKind::Task, 0, 10),
            sp(0, send, 0, 10),
            sp(0, wait, 1, 2),
            sp(0, wait, 3, 4),
            sp(0, wait, 5, 6),
            sp(0, wait, 7, 9),
        ]
    );
    let recv = SpanKind::Recv {
        colour: C0,
        wavelets: 1,
        combine: Combine::Store,
        forward: None,
    };
    let mut want = Vec::new();
    for k in 0..5u64 {
        let p = 5 + 4 * k;
        want.push(sp(0, SpanKind::Task, p, p + 4));
        want.push(sp(0, recv, p, p + 1));
        want.push(sp(0, SpanKind::Compute, p + 1, p + 4));
    }
    assert_eq!(tr.pes[1].spans, want);
    let cycles: Vec<u64> = tr.links[0].intervals.iter().map(|i| i.start).collect();
    assert_eq!(cycles, vec![2, 4, 6, 9, 13]);
    assert!(tr.links[0].intervals.iter().all(|i| i.wavelets() == 1));
    assert!(tr.queues.iter().all(|q| q.peak == 1 && q.capacity == 1));
}

/// Checks a trace against the run it records: spans nest (task > operation >
/// wait) inside each PE's own start and end, the last task ends at the PE's
/// end, and the links' busy cycles sum to the run's wavelet-hops.
fn check_against_run(p: &FabricProgram, out: &FabricRun, tr: &Trace) {
    assert_eq!(tr.link_wavelets.iter().sum::<u64>(), out.wavelet_hops);
    assert_eq!(tr.span, out.span);
    for pe in &tr.pes {
        let i = pe.y as usize * p.width as usize + pe.x as usize;
        let end = out.pe_cycles[i]; // launched together: starts at 0
        assert_eq!(pe.tasks.len(), p.pes[i].tasks.len());
        let tasks: Vec<&PeSpan> = pe
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::Task)
            .collect();
        assert!(!tasks.is_empty(), "PE ({},{}) ran no task", pe.x, pe.y);
        assert_eq!(tasks.iter().map(|s| s.end).max(), Some(end));
        for w in tasks.windows(2) {
            assert!(w[0].end <= w[1].start, "one task at a time");
        }
        for s in &pe.spans {
            assert!(s.start <= s.end && s.end <= end, "{s:?} outside [0, {end}]");
            let parent = pe.spans.iter().any(|q| {
                q.kind.depth() + 1 == s.kind.depth()
                    && q.task == s.task
                    && q.start <= s.start
                    && s.end <= q.end
            });
            assert!(
                s.kind == SpanKind::Task || parent,
                "PE ({},{}): {s:?} is not inside its parent",
                pe.x,
                pe.y
            );
        }
    }
    // Link tracks: intervals are disjoint, in order, and add up to the link's total.
    for l in &tr.links {
        for w in l.intervals.windows(2) {
            assert!(w[0].end < w[1].start, "merged intervals are separated");
        }
        let sum: u64 = l.intervals.iter().map(|i| i.wavelets()).sum();
        assert_eq!(sum, tr.link_busy(l.x, l.y, l.dir));
    }
}

#[test]
fn a_chain_allreduce_trace_agrees_with_its_run_and_the_hand_counts() {
    // A 1x4 column, chain allreduce of W wavelets toward PE 0 and back: each
    // northward link carries the W partial sums once, each southward link the
    // W broadcast wavelets once.
    let s = spec_h1_r2();
    for w in [1u64, 5] {
        let tree = TreeShape::new(4, Algorithm::Chain).unwrap();
        let step = column_allreduce_step(tree, w, 4);
        let p = step_program(&s, 1, 4, &step).unwrap().program;
        let (out, tr) = traced(&s, &p, &RunOptions::default(), 100_000);
        check_against_run(&p, &out, &tr);
        for y in 0..4 {
            let north = if y > 0 { w } else { 0 };
            let south = if y < 3 { w } else { 0 };
            assert_eq!(tr.link_busy(0, y, Dir::North), north, "W {w} y {y}");
            assert_eq!(tr.link_busy(0, y, Dir::South), south, "W {w} y {y}");
            assert_eq!(
                tr.link_busy(0, y, Dir::East) + tr.link_busy(0, y, Dir::West),
                0
            );
        }
        // The untraced run is the same run.
        assert_eq!(run(&s, &p, &RunOptions::default()).unwrap(), out);
    }
}

fn gemv16() -> (WaferSpec, FabricProgram) {
    let s = wse3();
    let tree = TreeShape::new(16, Algorithm::KTree { k: 2, groups: None }).unwrap();
    let step = mesh_gemv_program(&s, 16, 16, 16, 16, tree)
        .steps
        .swap_remove(0);
    let p = step_program(&s, 16, 16, &step).unwrap().program;
    (s, p)
}

#[test]
fn a_mesh_gemv_trace_agrees_with_its_run() {
    let (s, p) = gemv16();
    let (out, tr) = traced(&s, &p, &RunOptions::default(), DEFAULT_TRACE_EVENTS);
    assert_eq!(tr.stride, 1);
    assert_eq!(tr.pes.len(), 256);
    check_against_run(&p, &out, &tr);
    // The heat map's figures are the aggregates, over every PE.
    let heat = tr.heat();
    assert_eq!(heat.link_utilisation.len(), 256);
    assert_eq!(
        heat.queue_peak.iter().max().copied(),
        Some(out.max_queue_occupancy)
    );
    let b = tr.busiest_link().unwrap();
    assert_eq!(b.wavelets, *tr.link_wavelets.iter().max().unwrap());
    let top = heat.link_utilisation.iter().cloned().fold(0.0, f64::max);
    assert_eq!(top, b.wavelets as f64 / out.span as f64);
}

/// Events a stride-`k` trace would hold, counted from a full trace.
fn events_at_stride(full: &Trace, p: &FabricProgram, k: u32) -> u64 {
    let on = |x: u32, y: u32| x.is_multiple_of(k) && y.is_multiple_of(k);
    let mut n = 2; // the links process
    for pe in full.pes.iter().filter(|pe| on(pe.x, pe.y)) {
        n += 3 + pe.tasks.len() as u64 + pe.spans.len() as u64;
    }
    for l in full.links.iter().filter(|l| on(l.x, l.y)) {
        n += 2 + l.intervals.len() as u64;
    }
    assert_eq!(
        full.pes.len(),
        p.pes.iter().filter(|t| !t.tasks.is_empty()).count()
    );
    n
}

#[test]
fn sampling_keeps_the_budget_with_the_smallest_stride_and_exact_tracks() {
    let (s, p) = gemv16();
    let opts = RunOptions::default();
    let (_, full) = traced(&s, &p, &opts, MAX_TRACE_EVENTS);
    assert_eq!(full.stride, 1);
    assert_eq!(events_at_stride(&full, &p, 1), full.events);
    for budget in [full.events - 1, full.events / 5, full.events / 40, 200] {
        let (out, tr) = traced(&s, &p, &opts, budget);
        let k = tr.stride;
        assert!(k > 1 && k.is_power_of_two(), "budget {budget}: stride {k}");
        assert!(tr.events <= budget, "budget {budget}: {} events", tr.events);
        assert_eq!(tr.events, events_at_stride(&full, &p, k));
        // The smallest power of two that fits.
        assert!(events_at_stride(&full, &p, k / 2) > budget);
        // The kept tracks are the full trace's tracks of those PEs and links.
        let on = |x: u32, y: u32| x.is_multiple_of(k) && y.is_multiple_of(k);
        let want: Vec<&PeTrack> = full.pes.iter().filter(|t| on(t.x, t.y)).collect();
        assert_eq!(tr.pes.iter().collect::<Vec<_>>(), want);
        let want: Vec<&LinkTrack> = full.links.iter().filter(|l| on(l.x, l.y)).collect();
        assert_eq!(tr.links.iter().collect::<Vec<_>>(), want);
        // The aggregates still cover every link.
        assert_eq!(tr.link_wavelets, full.link_wavelets);
        assert_eq!(tr.link_wavelets.iter().sum::<u64>(), out.wavelet_hops);
        assert_eq!(tr.queues, full.queues);
        // The JSON holds exactly the events counted against the budget.
        let written = write_chrome(&tr, Map::new(), std::io::sink()).unwrap();
        assert_eq!(written, tr.events);
    }
}

#[test]
fn with_a_wavefront_launch_each_pe_track_starts_at_its_launch() {
    // PE (0, y) of a 1x4 column starts at y hops (h = 1) and ends pe_cycles later.
    let s = spec_h1_r2();
    let tree = TreeShape::new(4, Algorithm::Chain).unwrap();
    let step = column_allreduce_step(tree, 3, 4);
    let p = step_program(&s, 1, 4, &step).unwrap().program;
    let opts = RunOptions {
        launch: crate::fabric::Launch::Wavefront { x: 0, y: 0 },
        ..RunOptions::default()
    };
    let (out, tr) = traced(&s, &p, &opts, 100_000);
    assert_eq!(out, run(&s, &p, &opts).unwrap());
    for pe in &tr.pes {
        let start = pe.y as u64;
        let first = pe.spans.first().unwrap();
        let last_end = pe.spans.iter().map(|s| s.end).max().unwrap();
        assert_eq!((first.kind, first.start), (SpanKind::Task, start));
        assert_eq!(last_end, start + out.pe_cycles[pe.y as usize]);
        assert!(pe.spans.iter().all(|s| s.start >= start));
    }
}

#[test]
fn a_budget_too_small_for_one_pe_is_an_error() {
    let (s, p) = gemv16();
    let opts = RunOptions::default();
    let err = run_traced(&s, &p, &opts, &TraceOptions { max_events: 10 }).unwrap_err();
    assert_eq!(err, TraceError::Budget { budget: 10 });
    for bad in [0, MAX_TRACE_EVENTS + 1] {
        let err = run_traced(&s, &p, &opts, &TraceOptions { max_events: bad }).unwrap_err();
        assert_eq!(err, TraceError::BadBudget(bad));
    }
    // A broken program is the engine's error, as from an untraced run.
    let mut broken = p.clone();
    let dup = broken.routes[0][0];
    broken.routes[0].push(dup);
    let err = run_traced(&s, &broken, &opts, &TraceOptions::default()).unwrap_err();
    assert_eq!(err, TraceError::Run(run(&s, &broken, &opts).unwrap_err()));
}

#[test]
fn the_chrome_json_parses_and_holds_the_trace() {
    let s = spec_h1_r2();
    let p = two_pe(3, None);
    let (_, tr) = traced(&s, &p, &RunOptions::default(), 1000);
    let mut other = Map::new();
    other.insert("program".into(), Value::from("two-PE send"));
    let mut buf = Vec::new();
    let written = write_chrome(&tr, other, &mut buf).unwrap();
    let v: Value = serde_json::from_slice(&buf).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert_eq!(events.len() as u64, written);
    assert_eq!(written, tr.events);
    assert_eq!(v["displayTimeUnit"], "ms");
    assert_eq!(v["otherData"]["time_unit"], "cycle");
    assert_eq!(v["otherData"]["program"], "two-PE send");
    assert_eq!(v["otherData"]["sample_stride"], 1);
    assert_eq!(v["otherData"]["wavelet_hops"], 3);
    assert_eq!(v["otherData"]["busiest_link"]["dir"], "E");
    let named = |ph: &str, name: &str| {
        events
            .iter()
            .filter(|e| e["ph"] == ph && e["name"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let procs: Vec<String> = named("M", "process_name")
        .iter()
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(procs, vec!["PE (0,0)", "PE (1,0)", "links"]);
    // PE 1's wait: pid 2 (PE index 1 + 1), its task's thread 1, cycles 0..5.
    let wait = named("X", "wait: wavelet on c0");
    assert_eq!(wait.len(), 1);
    assert_eq!(
        (
            &wait[0]["pid"],
            &wait[0]["tid"],
            &wait[0]["ts"],
            &wait[0]["dur"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(0),
            &Value::from(5)
        )
    );
    let link = named("X", "c0");
    assert_eq!(link.len(), 1);
    assert_eq!(
        (&link[0]["ts"], &link[0]["dur"]),
        (&Value::from(2), &Value::from(3))
    );
    assert_eq!(link[0]["args"]["wavelets"], 3);
    let threads = named("M", "thread_name");
    assert!(threads
        .iter()
        .any(|e| e["args"]["name"] == "(0,0) -> E (3 wavelets)"));
    assert!(threads
        .iter()
        .any(|e| e["args"]["name"] == "task 0: consumer"));
    for e in events.iter().filter(|e| e["ph"] == "X") {
        for key in ["name", "cat", "pid", "tid", "ts", "dur"] {
            assert!(!e[key].is_null(), "{e} lacks {key}");
        }
    }
}

#[test]
fn merged_runs_add_their_links_at_their_origins() {
    // The two-PE send (3 wavelets on (0,0) -> E, span 8) run twice on a 4x2
    // grid: once at (0,0), once at (2,1); a 5-wavelet run at (1,0).
    let s = spec_h1_r2();
    let (_, three) = traced(&s, &two_pe(3, None), &RunOptions::default(), 1000);
    let (_, five) = traced(&s, &two_pe(5, None), &RunOptions::default(), 1000);
    let part = |trace, x0, y0| MergePart {
        trace,
        x0,
        y0,
        copies: 1,
    };
    let m = merge(
        4,
        2,
        40,
        &[part(&three, 0, 0), part(&five, 1, 0), part(&three, 2, 1)],
    )
    .unwrap();
    assert_eq!((m.width, m.height, m.span), (4, 2, 40));
    assert_eq!(m.link_busy(0, 0, Dir::East), 3);
    assert_eq!(m.link_busy(1, 0, Dir::East), 5);
    assert_eq!(m.link_busy(2, 1, Dir::East), 3);
    assert_eq!(m.link_wavelets.iter().sum::<u64>(), 11);
    // One queue per PE a run touched, its peak the highest (each 1 here).
    let at: Vec<(u32, u32)> = m.queues.iter().map(|q| (q.x, q.y)).collect();
    assert_eq!(at, vec![(0, 0), (1, 0), (2, 0), (2, 1), (3, 1)]);
    let heat = m.heat();
    assert_eq!(heat.link_utilisation[1], 5.0 / 40.0);
    assert_eq!(heat.link_utilisation[4 + 2], 3.0 / 40.0);
    assert_eq!(heat.link_utilisation[3], 0.0);
    let b = m.busiest_link().unwrap();
    assert_eq!((b.x, b.y, b.dir, b.wavelets), (1, 0, Dir::East, 5));
    // A run that does not fit the grid, and a grid past the bound.
    assert!(matches!(
        merge(4, 2, 40, &[part(&three, 3, 0)]),
        Err(MergeError::OutOfGrid { x0: 3, .. })
    ));
    assert!(matches!(
        merge(4000, 4000, 1, &[]),
        Err(MergeError::TooLarge { .. })
    ));
}

#[test]
fn placed_traces_move_to_their_origin_and_start() {
    use super::chrome::{phase_events, write_placed, Phase, Placed};
    let s = spec_h1_r2();
    let (_, tr) = traced(&s, &two_pe(3, None), &RunOptions::default(), 1000);
    let parts = [
        Placed {
            trace: &tr,
            label: "layer 0",
            x0: 0,
            y0: 0,
            t0: 0,
            part: 0,
        },
        Placed {
            trace: &tr,
            label: "LM head",
            x0: 1,
            y0: 2,
            t0: 8,
            part: 1,
        },
    ];
    let phases = [
        Phase {
            name: "layer 0".into(),
            start: 0,
            dur: 8,
        },
        Phase {
            name: "LM head".into(),
            start: 8,
            dur: 8,
        },
    ];
    let mut buf = Vec::new();
    let n = write_placed(&parts, 3, 3, &phases, Map::new(), &mut buf).unwrap();
    let v: Value = serde_json::from_slice(&buf).unwrap();
    let ev = v["traceEvents"].as_array().unwrap();
    assert_eq!(n, ev.len() as u64);
    // Each part's events less the links process metadata written once.
    assert_eq!(n, 2 * tr.events - 2 + phase_events(&phases));
    // PE (1,0) of the second part is grid PE (2,2): pid 2 * 3 + 2 + 1; its
    // receive's task runs [0, 8) + 8, on the part's own thread.
    let task = ev
        .iter()
        .find(|e| e["ph"] == "X" && e["pid"] == 9 && e["cat"] == "task")
        .unwrap();
    assert_eq!(
        (task["ts"].as_u64(), task["dur"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(task["tid"], (1u64 << 16) + 1);
    let name = ev
        .iter()
        .find(|e| e["name"] == "thread_name" && e["pid"] == 9)
        .unwrap();
    assert_eq!(name["args"]["name"], "LM head, task 0: consumer");
    // Its link (1,2) -> E carries wavelets in [2, 5) + 8.
    let link = ev
        .iter()
        .find(|e| e["cat"] == "link" && e["ts"].as_u64() == Some(10))
        .unwrap();
    assert_eq!(link["dur"], 3);
    // The token track: its slices as given.
    let token: Vec<_> = ev
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"] == 3 * 3 + 2)
        .map(|e| (e["name"].as_str().unwrap(), e["ts"].as_u64().unwrap()))
        .collect();
    assert_eq!(token, vec![("layer 0", 0), ("LM head", 8)]);
}
