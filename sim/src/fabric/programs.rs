//! Fabric programs generated from the placed program: one step of a
//! [`RegionProgram`](crate::program::RegionProgram) — its PE kernels, then its
//! collective along every line of one axis — as per-PE tasks plus routes.
//!
//! Nothing here describes a tree of its own: the reduction runs the
//! transfers of the step's [`Schedule`](crate::Schedule) (the tree the pricer charges and the
//! functional mesh executes). Per line:
//! - every transfer `from -> to` is a stream of the PE's wavelets on a colour
//!   routed straight along the line (`from`'s ramp, through the routers in
//!   between, into `to`'s ramp). Two transfers share a colour only if their
//!   paths share no router (greedy interval colouring, in order of the lowest
//!   PE on the path: as many colours as transfers meet at the busiest router);
//! - a PE receives its children's streams in schedule order, adding each into
//!   its values; the last child's stream is element-pipelined: each wavelet is
//!   added and sent on to the parent at once. A PE without children sends its
//!   values. So every PE's partial is the schedule's: own + children in order;
//! - an allreduce then multicasts the root's values along the line on one more
//!   colour (each router passes it on and delivers it to its PE).
//!
//! The kernels' cycles come from [`wafer_kernels::Kernel::cycles`], rounded up
//! to whole cycles, as one compute operation before the collective.
//!
//! Also here: MeshGEMM's Cannon rounds ([`cannon_program`]) and the shift
//! microbenchmark ([`row_shift_program`]), both synchronous double-buffered
//! neighbour exchanges.

use super::engine::{
    ceil_cycles, run, Colour, Combine, Dir, DirSet, FabricProgram, FabricRun, Op, Packing, Route,
    RunOptions, Task, Trigger,
};
use super::FabricError;
use crate::program::{Collective, CollectiveKind, Step};
use crate::schedule::TreeShape;
use crate::tiling::Axis;
use wafer_core::{Cycles, WaferSpec};

/// The most wavelets a generated program may send in all (PEs x wavelets per
/// PE, each crossing at least one link): bounds a run's events and memory.
pub const MAX_PROGRAM_WAVELETS: u64 = 1 << 28;

/// A step's fabric program and where its lines lie.
#[derive(Debug, Clone)]
pub struct StepProgram {
    pub program: FabricProgram,
    /// For each line of the collective (none without one): its PEs in line
    /// order (row-major PE indices), index 0 at the north or west end.
    pub lines: Vec<Vec<usize>>,
}

/// How `bytes_per_value`-byte values travel.
pub fn packing_of(bytes_per_value: u64) -> Result<Packing, FabricError> {
    match bytes_per_value {
        4 => Ok(Packing::F32),
        2 => Ok(Packing::F16Pair),
        b => Err(FabricError::Unsupported(format!(
            "{b}-byte values (the fabric carries 16- and 32-bit floats)"
        ))),
    }
}

/// An allreduce of `values` values of `bytes_per_value` bytes along every
/// column of a region, on `tree` (over the column's PEs), as a step with no
/// kernels (the `wafer kernel allreduce` microbenchmark).
pub fn column_allreduce_step(
    tree: TreeShape,
    values: u64,
    bytes_per_value: u64,
) -> Step<&'static str> {
    Step {
        label: "allreduce",
        work_per_pe: values,
        kernels: Vec::new(),
        collective: Some(Collective {
            kind: CollectiveKind::Allreduce,
            axis: Axis::Column,
            tree,
            values_per_pe: values,
            bytes_per_value,
            in_layer: false,
        }),
        transfer: None,
        cannon: None,
    }
}

/// Along a line: toward index 0 or away from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    Low,
    High,
}

/// One line's routes `(index, colour, rx, tx)` and per-index operations, in
/// line terms; the same for every line of the step.
pub(crate) struct LinePlan {
    pub(crate) routes: Vec<(u32, Colour, LPort, Vec<LPort>)>,
    pub(crate) ops: Vec<Vec<Op>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LPort {
    Ramp,
    Toward(Way),
}

/// The router port a line-relative port is along `axis` (a line along a
/// column runs north to south, one along a row west to east).
pub(crate) fn port_on(axis: Axis, p: LPort) -> Dir {
    match (p, axis) {
        (LPort::Ramp, _) => Dir::Ramp,
        (LPort::Toward(Way::Low), Axis::Column) => Dir::North,
        (LPort::Toward(Way::High), Axis::Column) => Dir::South,
        (LPort::Toward(Way::Low), Axis::Row) => Dir::West,
        (LPort::Toward(Way::High), Axis::Row) => Dir::East,
    }
}

/// Colours for straight paths `from -> to` along a line that all carry data at
/// once: two paths share a colour only if they share no router. Greedy interval
/// colouring in order of each path's lowest PE (optimal for intervals: as many
/// colours as paths meet at the busiest router). Returns each path's colour and
/// the number of colours.
pub(crate) fn colour_paths(pairs: &[(u32, u32)]) -> Result<(Vec<u8>, u8), FabricError> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&k| pairs[k].0.min(pairs[k].1));
    let mut last_hi: Vec<u32> = Vec::new();
    let mut colour = vec![0u8; pairs.len()];
    for k in order {
        let (from, to) = pairs[k];
        let (lo, hi) = (from.min(to), from.max(to));
        let c = match last_hi.iter().position(|&h| h < lo) {
            Some(c) => c,
            None => {
                last_hi.push(0);
                last_hi.len() - 1
            }
        };
        if c >= u8::MAX as usize {
            return Err(FabricError::Unsupported(
                "a pattern needing more than 254 colours".into(),
            ));
        }
        last_hi[c] = hi;
        colour[k] = c as u8;
    }
    Ok((colour, last_hi.len() as u8))
}

/// The routes of a straight path `from -> to` on `colour`, in line terms.
pub(crate) fn path_routes(
    from: u32,
    to: u32,
    colour: Colour,
) -> Vec<(u32, Colour, LPort, Vec<LPort>)> {
    let way = if to < from { Way::Low } else { Way::High };
    let back = if way == Way::Low { Way::High } else { Way::Low };
    let mut routes = vec![(from, colour, LPort::Ramp, vec![LPort::Toward(way)])];
    let mut i = from;
    loop {
        i = if way == Way::Low { i - 1 } else { i + 1 };
        if i == to {
            break;
        }
        routes.push((i, colour, LPort::Toward(back), vec![LPort::Toward(way)]));
    }
    routes.push((to, colour, LPort::Toward(back), vec![LPort::Ramp]));
    routes
}

pub(crate) fn plan_line(c: &Collective, wavelets: u32) -> Result<LinePlan, FabricError> {
    let sched = c.schedule()?;
    let n = sched.len();
    let transfers = sched.transfers();
    let pairs: Vec<(u32, u32)> = transfers.iter().map(|t| (t.from, t.to)).collect();
    let (colour, used) = colour_paths(&pairs)?;
    let bcast = Colour(used);
    let mut routes = Vec::new();
    for (k, t) in transfers.iter().enumerate() {
        routes.extend(path_routes(t.from, t.to, Colour(colour[k])));
    }
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); n as usize];
    for (i, pe_ops) in ops.iter_mut().enumerate() {
        let i = i as u32;
        let children: Vec<usize> = (0..transfers.len())
            .filter(|&k| transfers[k].to == i)
            .collect();
        let parent = transfers.iter().position(|t| t.from == i);
        for (m, &k) in children.iter().enumerate() {
            let last = m + 1 == children.len();
            pe_ops.push(Op::Recv {
                colour: Colour(colour[k]),
                first: 0,
                wavelets,
                combine: Combine::Add,
                forward: parent.filter(|_| last).map(|p| Colour(colour[p])),
            });
        }
        if let (true, Some(p)) = (children.is_empty(), parent) {
            pe_ops.push(Op::Send {
                colour: Colour(colour[p]),
                first: 0,
                wavelets,
            });
        }
    }
    if c.kind == CollectiveKind::Allreduce && n > 1 {
        let root = sched.root();
        for i in 0..n {
            let mut tx = vec![LPort::Ramp];
            let rx = if i == root {
                tx.clear();
                LPort::Ramp
            } else if i < root {
                LPort::Toward(Way::High)
            } else {
                LPort::Toward(Way::Low)
            };
            if i <= root && i > 0 {
                tx.push(LPort::Toward(Way::Low));
            }
            if i >= root && i + 1 < n {
                tx.push(LPort::Toward(Way::High));
            }
            routes.push((i, bcast, rx, tx));
            ops[i as usize].push(if i == root {
                Op::Send {
                    colour: bcast,
                    first: 0,
                    wavelets,
                }
            } else {
                Op::Recv {
                    colour: bcast,
                    first: 0,
                    wavelets,
                    combine: Combine::Store,
                    forward: None,
                }
            });
        }
    }
    Ok(LinePlan { routes, ops })
}

/// The fabric program of one step on a `width x height` region.
pub fn step_program<L>(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    step: &Step<L>,
) -> Result<StepProgram, FabricError> {
    if width == 0 || height == 0 || width > spec.fabric.width_pes || height > spec.fabric.height_pes
    {
        return Err(FabricError::InvalidProgram(format!(
            "a {width}x{height} region on the {}x{} fabric of {}",
            spec.fabric.width_pes, spec.fabric.height_pes, spec.name
        )));
    }
    if step.transfer.is_some() {
        return Err(FabricError::Unsupported("transfers between regions".into()));
    }
    if step.cannon.is_some() {
        return Err(FabricError::Unsupported(
            "Cannon rounds in a step program (see cannon_program)".into(),
        ));
    }
    let compute = ceil_cycles(
        step.kernels
            .iter()
            .fold(Cycles::ZERO, |a, k| a + k.cycles(spec)),
    );
    let pes = width as u64 * height as u64;
    let (packing, values) = match &step.collective {
        Some(c) => (packing_of(c.bytes_per_value)?, c.values_per_pe),
        None => (Packing::F32, 0),
    };
    let wavelets = values.div_ceil(packing.values_per_wavelet());
    if pes.saturating_mul(wavelets) > MAX_PROGRAM_WAVELETS {
        return Err(FabricError::TooLarge(format!(
            "{pes} PEs x {wavelets} wavelets each; at most {MAX_PROGRAM_WAVELETS} wavelets in all"
        )));
    }
    let mut prog = FabricProgram::new(width, height, packing, values);
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); pes as usize];
    if compute > 0 {
        for o in &mut ops {
            o.push(Op::Compute { cycles: compute });
        }
    }
    let mut lines = Vec::new();
    if let Some(c) = step.collective.as_ref().filter(|c| c.values_per_pe > 0) {
        let (along, across) = match c.axis {
            Axis::Column => (height, width),
            Axis::Row => (width, height),
        };
        if c.tree.len() != along {
            return Err(FabricError::InvalidProgram(format!(
                "a tree over {} PEs on lines of {along}",
                c.tree.len()
            )));
        }
        let plan = plan_line(c, wavelets as u32)?;
        let port = |p: LPort| port_on(c.axis, p);
        for l in 0..across {
            let pe = |i: u32| match c.axis {
                Axis::Column => i as usize * width as usize + l as usize,
                Axis::Row => l as usize * width as usize + i as usize,
            };
            for (i, colour, rx, tx) in &plan.routes {
                let tx = tx.iter().fold(DirSet::default(), |s, p| s.with(port(*p)));
                prog.routes[pe(*i)].push((*colour, Route { rx: port(*rx), tx }));
            }
            for (i, o) in plan.ops.iter().enumerate() {
                ops[pe(i as u32)].extend_from_slice(o);
            }
            lines.push((0..along).map(pe).collect());
        }
    }
    for (p, o) in prog.pes.iter_mut().zip(ops) {
        if !o.is_empty() {
            p.tasks.push(Task {
                name: "main",
                trigger: Trigger::Start,
                ops: o,
            });
        }
    }
    Ok(StepProgram {
        program: prog,
        lines,
    })
}

/// Runs one step on the fabric ([`cannon_program`] for a step of Cannon
/// rounds, [`step_program`] otherwise).
pub fn simulate_step<L>(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    step: &Step<L>,
    opts: &RunOptions,
) -> Result<FabricRun, FabricError> {
    let sp = if step.cannon.is_some() {
        cannon_program(spec, width, height, step)?
    } else {
        step_program(spec, width, height, step)?
    };
    run(spec, &sp.program, opts)
}

/// The most operations a generated shift program may hold in all (PEs x
/// operations per PE): bounds its memory.
pub const MAX_PROGRAM_OPS: u64 = 1 << 24;

/// The shift microbenchmark of `wafer kernel shift` (`matrix::shift_broadcast_cost`):
/// on every row of a `width x height` region, each PE's tile of `values`
/// values moves one PE east per step for `steps` synchronous neighbour
/// exchanges (no wrap: the west PE only sends, the east PE only receives),
/// then, with `broadcast`, the west PE's tile is multicast along the row.
///
/// Tiles are double-buffered (a PE's values are two tiles of whole wavelets;
/// step `s` sends from tile `s mod 2` and receives into the other), so the
/// order of a PE's send and receive does not change the values: even columns
/// send first, odd ones receive first, and no PE waits on a PE that waits on it.
/// Links east are coloured by the sender's column parity, the broadcast on a
/// third colour.
pub fn row_shift_program(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    values: u64,
    bytes_per_value: u64,
    steps: u32,
    broadcast: bool,
) -> Result<StepProgram, FabricError> {
    if width < 2 || height == 0 || width > spec.fabric.width_pes || height > spec.fabric.height_pes
    {
        return Err(FabricError::InvalidProgram(format!(
            "a shift needs a region at least 2 PEs wide on the {}x{} fabric of {}, found {width}x{height}",
            spec.fabric.width_pes, spec.fabric.height_pes, spec.name
        )));
    }
    let packing = packing_of(bytes_per_value)?;
    let tile = values.div_ceil(packing.values_per_wavelet());
    let pes = width as u64 * height as u64;
    let sent = pes
        .saturating_mul(tile)
        .saturating_mul(steps as u64 + u64::from(broadcast));
    if sent > MAX_PROGRAM_WAVELETS {
        return Err(FabricError::TooLarge(format!(
            "{pes} PEs x {tile} wavelets x {steps} steps; at most {MAX_PROGRAM_WAVELETS} wavelets in all"
        )));
    }
    if pes.saturating_mul(3 * steps as u64 + 2) > MAX_PROGRAM_OPS {
        return Err(FabricError::TooLarge(format!(
            "{pes} PEs x {steps} steps; at most {MAX_PROGRAM_OPS} operations in all"
        )));
    }
    let tile = u32::try_from(tile)
        .map_err(|_| FabricError::TooLarge(format!("a tile of {tile} wavelets")))?;
    let mut prog = FabricProgram::new(
        width,
        height,
        packing,
        2 * tile as u64 * packing.values_per_wavelet(),
    );
    let bcast = Colour(2);
    let mut lines = Vec::new();
    for y in 0..height {
        let pe = |x: u32| y as usize * width as usize + x as usize;
        for x in 0..width {
            let p = pe(x);
            let out = Colour((x % 2) as u8);
            let inc = Colour(((x + 1) % 2) as u8);
            if x + 1 < width {
                prog.routes[p].push((
                    out,
                    Route {
                        rx: Dir::Ramp,
                        tx: DirSet::of(&[Dir::East]),
                    },
                ));
            }
            if x > 0 {
                prog.routes[p].push((
                    inc,
                    Route {
                        rx: Dir::West,
                        tx: DirSet::of(&[Dir::Ramp]),
                    },
                ));
            }
            let mut ops = Vec::with_capacity(3 * steps as usize + 2);
            for s in 0..steps {
                // Every step after the first is a task the previous one
                // activates (software store-and-forward).
                if s > 0 {
                    ops.push(Op::NextTask);
                }
                let (from, to) = ((s % 2) * tile, ((s + 1) % 2) * tile);
                let send = (x + 1 < width).then_some(Op::Send {
                    colour: out,
                    first: from,
                    wavelets: tile,
                });
                let recv = (x > 0).then_some(Op::Recv {
                    colour: inc,
                    first: to,
                    wavelets: tile,
                    combine: Combine::Store,
                    forward: None,
                });
                if x % 2 == 0 {
                    ops.extend(send.into_iter().chain(recv));
                } else {
                    ops.extend(recv.into_iter().chain(send));
                }
            }
            if broadcast {
                if steps > 0 {
                    ops.push(Op::NextTask);
                }
                let at = (steps % 2) * tile;
                let route = if x == 0 {
                    Route {
                        rx: Dir::Ramp,
                        tx: DirSet::of(&[Dir::East]),
                    }
                } else if x + 1 < width {
                    Route {
                        rx: Dir::West,
                        tx: DirSet::of(&[Dir::Ramp, Dir::East]),
                    }
                } else {
                    Route {
                        rx: Dir::West,
                        tx: DirSet::of(&[Dir::Ramp]),
                    }
                };
                prog.routes[p].push((bcast, route));
                ops.push(if x == 0 {
                    Op::Send {
                        colour: bcast,
                        first: at,
                        wavelets: tile,
                    }
                } else {
                    Op::Recv {
                        colour: bcast,
                        first: at,
                        wavelets: tile,
                        combine: Combine::Store,
                        forward: None,
                    }
                });
            }
            if !ops.is_empty() {
                prog.pes[p].tasks.push(Task {
                    name: "shift",
                    trigger: Trigger::Start,
                    ops,
                });
            }
        }
        lines.push((0..width).map(pe).collect());
    }
    Ok(StepProgram {
        program: prog,
        lines,
    })
}

/// The interleaved ring over the `p` PEs of a line: logical position `l` is
/// PE `ring[l]`, the even PEs ascending and then the odd ones descending, so
/// logical neighbours are at most two PEs apart and no link wraps around.
pub fn interleaved_ring(p: u32) -> Vec<u32> {
    let mut ring: Vec<u32> = (0..p).step_by(2).collect();
    ring.extend((1..p).step_by(2).rev());
    ring
}

/// A MeshGEMM step (a step with [`Cannon`](crate::program::Cannon) rounds) on
/// the `p x p` square at the region's origin: every round, the step's kernels,
/// then every PE passes its A tile one logical PE west around its row's
/// interleaved ring and its B tile one logical PE north around its column's
/// (logical position `l` sends to `l - 1`, mod `p`).
///
/// Exchanges are synchronous and tiles double-buffered, as in
/// [`row_shift_program`]: a PE at an even logical position sends then
/// receives, at an odd one receives then sends. Row rings take the colours
/// their paths need (3 for `p >= 4`), column rings as many again.
pub fn cannon_program<L>(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    step: &Step<L>,
) -> Result<StepProgram, FabricError> {
    cannon_rounds(spec, width, height, step, None)
}

pub(crate) fn cannon_rounds<L>(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    step: &Step<L>,
    rounds: Option<u32>,
) -> Result<StepProgram, FabricError> {
    let Some(c) = step.cannon else {
        return Err(FabricError::InvalidProgram(
            "a MeshGEMM program needs a step with Cannon rounds".into(),
        ));
    };
    if step.collective.is_some() || step.transfer.is_some() {
        return Err(FabricError::Unsupported(
            "a Cannon step with a collective or a transfer".into(),
        ));
    }
    let p = c.p;
    if p == 0
        || p > width
        || p > height
        || width > spec.fabric.width_pes
        || height > spec.fabric.height_pes
    {
        return Err(FabricError::InvalidProgram(format!(
            "Cannon rounds on a {p}x{p} square of a {width}x{height} region on the {}x{} fabric",
            spec.fabric.width_pes, spec.fabric.height_pes
        )));
    }
    let rounds = rounds.unwrap_or(p);
    let packing = packing_of(c.bytes_per_value)?;
    let vpw = packing.values_per_wavelet();
    let (wa, wb) = (c.a_values.div_ceil(vpw), c.b_values.div_ceil(vpw));
    let square = p as u64 * p as u64;
    let sent = square
        .saturating_mul(wa.saturating_add(wb))
        .saturating_mul(rounds as u64);
    if sent > MAX_PROGRAM_WAVELETS {
        return Err(FabricError::TooLarge(format!(
            "{square} PEs x {} wavelets x {rounds} rounds; at most {MAX_PROGRAM_WAVELETS} wavelets in all",
            wa + wb
        )));
    }
    if square.saturating_mul(5 * rounds as u64) > MAX_PROGRAM_OPS {
        return Err(FabricError::TooLarge(format!(
            "{square} PEs x {rounds} rounds; at most {MAX_PROGRAM_OPS} operations in all"
        )));
    }
    let (wa, wb) = (wa as u32, wb as u32);
    let compute = ceil_cycles(
        step.kernels
            .iter()
            .fold(Cycles::ZERO, |a, k| a + k.cycles(spec)),
    );
    // A's two tiles, then B's two.
    let mut prog = FabricProgram::new(width, height, packing, 2 * (wa + wb) as u64 * vpw);
    let ring = interleaved_ring(p);
    let mut pos = vec![0u32; p as usize];
    for (l, &x) in ring.iter().enumerate() {
        pos[x as usize] = l as u32;
    }
    let pairs: Vec<(u32, u32)> = (0..p as usize)
        .map(|l| (ring[l], ring[(l + p as usize - 1) % p as usize]))
        .collect();
    let (colour, used) = colour_paths(&pairs)?;
    let pe = |x: u32, y: u32| y as usize * width as usize + x as usize;
    let mut lines = Vec::new();
    if p > 1 {
        for line in 0..p {
            for (k, &(from, to)) in pairs.iter().enumerate() {
                for (i, col, rx, tx) in path_routes(from, to, Colour(colour[k])) {
                    // Along row `line` (West/East), then along column `line` (North/South).
                    let row = |q: LPort| port_on(Axis::Row, q);
                    let column = |q: LPort| port_on(Axis::Column, q);
                    let txr = tx.iter().fold(DirSet::default(), |s, q| s.with(row(*q)));
                    prog.routes[pe(i, line)].push((
                        col,
                        Route {
                            rx: row(rx),
                            tx: txr,
                        },
                    ));
                    let txc = tx.iter().fold(DirSet::default(), |s, q| s.with(column(*q)));
                    let colc = Colour(col.0 + used);
                    prog.routes[pe(line, i)].push((
                        colc,
                        Route {
                            rx: column(rx),
                            tx: txc,
                        },
                    ));
                }
            }
            lines.push((0..p).map(|i| pe(i, line)).collect());
        }
    }
    let n = p as usize;
    for y in 0..p {
        for x in 0..p {
            let (lx, ly) = (pos[x as usize] as usize, pos[y as usize] as usize);
            let mut ops = Vec::with_capacity(5 * rounds as usize);
            for r in 0..rounds {
                if compute > 0 {
                    ops.push(Op::Compute { cycles: compute });
                }
                if p == 1 {
                    continue;
                }
                let (cur, next) = (r % 2, (r + 1) % 2);
                for (l, base, w, offset) in [(lx, 0, wa, 0u8), (ly, 2 * wa, wb, used)] {
                    let send = Op::Send {
                        colour: Colour(colour[l] + offset),
                        first: base + cur * w,
                        wavelets: w,
                    };
                    let recv = Op::Recv {
                        colour: Colour(colour[(l + 1) % n] + offset),
                        first: base + next * w,
                        wavelets: w,
                        combine: Combine::Store,
                        forward: None,
                    };
                    if w == 0 {
                        continue;
                    }
                    if l % 2 == 0 {
                        ops.extend([send, recv]);
                    } else {
                        ops.extend([recv, send]);
                    }
                }
            }
            if !ops.is_empty() {
                prog.pes[pe(x, y)].tasks.push(Task {
                    name: "cannon",
                    trigger: Trigger::Start,
                    ops,
                });
            }
        }
    }
    Ok(StepProgram {
        program: prog,
        lines,
    })
}
