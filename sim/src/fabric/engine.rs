//! The discrete-event engine: routers, links, queues and PEs, advanced from one
//! event to the next (never cycle by cycle).
//!
//! State. Every router holds, for each colour routed through it, one input
//! buffer on the colour's single receive port (`rx`): on the ramp it is the
//! PE's output queue for that colour (the spec's output queue depth), on a link
//! port it is the router's per-colour buffer ([`FabricParams`], an assumption).
//! A colour whose transmit set (`tx`) includes the ramp also has a PE input
//! queue (the spec's input queue depth). Each directed link carries at most one
//! wavelet per cycle, whatever its colour.
//!
//! Events, ordered by `(cycle, sequence number)` so a run is deterministic:
//! - `Start(pe)`: the PE's launch; its start tasks are activated.
//! - `Forward(buffer)`: the buffer's head wavelet leaves for every port of the
//!   colour's `tx` set at once (multicast), if every target has a free slot and
//!   every outgoing link is free this cycle; otherwise the buffer waits for the
//!   link (retried the cycle it frees) or for a slot (woken when one frees).
//! - `Arrive(queue, payload)`: a wavelet lands in a buffer or input queue after
//!   the hop (or ramp) latency. Its slot was reserved when it was sent, so a
//!   full queue stalls its sender: that is the back-pressure.
//! - `Ce(pe)`: the PE's compute engine advances its running task by one
//!   operation or one wavelet, or picks the next task.
//!
//! A PE runs one task at a time to completion; the picker takes the lowest
//! numbered task that is activated (by the launch or an `Activate` operation)
//! or, for a data task, whose colour's input queue holds a wavelet. Fabric
//! operations are synchronous: the task blocks until each wavelet can be
//! sent (a free output-queue slot) or has arrived.
//!
//! Cost: one `Forward` and one `Arrive` per wavelet per router crossed, one
//! `Ce` per wavelet a PE sends or receives and per compute operation, plus the
//! retries of blocked wavelets: it grows with wavelet-hops and tasks, not with
//! PEs x cycles.
//!
//! Speed: a full-wafer run is bound by fetching the queue or compute engine
//! each event names, so a queue is one cache line, a timing-only run keeps
//! no payloads, and the run loop prefetches for the events a few places
//! ahead in the cycle's bucket; none of it changes an event or its order.
//!
//! Tracing: a run started by [`super::trace::run_traced`] carries a recorder
//! that a few hooks fill (task begin and end, each operation step, each wait,
//! each link crossing, each queue arrival); [`run`] carries none, and each
//! hook is then one test of an empty option.

use super::trace::{QueueInfo, QueueRole, Recorder, Wait, BUDGET_EXCEEDED};
use super::FabricError;
use half::f16;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use wafer_core::{Cycles, DType, WaferSpec};
use wafer_kernels::cost::{vector_op_cycles, SimdOp};

/// A router port: the four links and the ramp to the PE's own compute engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Toward row `y - 1`.
    North,
    /// Toward row `y + 1`.
    South,
    /// Toward column `x + 1`.
    East,
    /// Toward column `x - 1`.
    West,
    Ramp,
}

impl Dir {
    pub const ALL: [Dir; 5] = [Dir::North, Dir::South, Dir::East, Dir::West, Dir::Ramp];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The port a wavelet sent out of `self` enters the neighbour by.
    pub fn opposite(self) -> Dir {
        match self {
            Dir::North => Dir::South,
            Dir::South => Dir::North,
            Dir::East => Dir::West,
            Dir::West => Dir::East,
            Dir::Ramp => Dir::Ramp,
        }
    }

    /// The neighbour of `(x, y)` across this link on a `width x height` fabric.
    fn step(self, x: u32, y: u32, width: u32, height: u32) -> Option<(u32, u32)> {
        match self {
            Dir::North => y.checked_sub(1).map(|y| (x, y)),
            Dir::South => (y + 1 < height).then_some((x, y + 1)),
            Dir::East => (x + 1 < width).then_some((x + 1, y)),
            Dir::West => x.checked_sub(1).map(|x| (x, y)),
            Dir::Ramp => Some((x, y)),
        }
    }
}

/// A set of ports (a route's transmit set; several ports = multicast).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirSet(u8);

impl DirSet {
    pub fn of(dirs: &[Dir]) -> DirSet {
        DirSet(dirs.iter().fold(0, |a, d| a | d.bit()))
    }

    pub fn with(self, d: Dir) -> DirSet {
        DirSet(self.0 | d.bit())
    }

    pub fn contains(self, d: Dir) -> bool {
        self.0 & d.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Dir> {
        Dir::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

/// A colour (virtual channel) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Colour(pub u8);

/// The static route of one colour at one router: the one port it receives
/// from and the ports it transmits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub rx: Dir,
    pub tx: DirSet,
}

/// How values travel in 32-bit wavelets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// One f32 per wavelet.
    F32,
    /// Two 16-bit floats per wavelet (low half first); values are rounded to
    /// f16 when they are sent.
    F16Pair,
}

impl Packing {
    pub fn values_per_wavelet(self) -> u64 {
        match self {
            Packing::F32 => 1,
            Packing::F16Pair => 2,
        }
    }

    fn dtype(self) -> DType {
        match self {
            Packing::F32 => DType::F32,
            Packing::F16Pair => DType::F16,
        }
    }
}

/// What a receive does with each arriving wavelet's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Overwrite the PE's values (a broadcast's receivers).
    Store,
    /// Add into the PE's values (a reduction).
    Add,
}

/// One operation of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Local work of `cycles` whole cycles.
    Compute { cycles: u64 },
    /// Send wavelets `first..first + wavelets` of the PE's values on `colour`,
    /// one per cycle at most, blocking while the output queue is full.
    Send {
        colour: Colour,
        first: u32,
        wavelets: u32,
    },
    /// Receive `wavelets` wavelets on `colour` into wavelets `first..` of the
    /// PE's values; with `forward`, each combined wavelet is sent on at once on
    /// that colour (an element-pipelined reduce-and-forward).
    Recv {
        colour: Colour,
        first: u32,
        wavelets: u32,
        combine: Combine,
        forward: Option<Colour>,
    },
    /// Activate a task of this PE (it runs when the picker next chooses).
    Activate(u16),
    /// The running task ends here by activating its successor, which holds
    /// the operations that follow; the picker starts it at once, and the
    /// compute engine pays the task switch (`pe.task_switch_cycles`). A
    /// chain of tasks each activating the next, written as one operation
    /// list: only for PEs with no other task that could run in between.
    NextTask,
}

/// What makes a task runnable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Activated when the PE is launched.
    Start,
    /// Activated only by an `Activate` operation.
    Activation,
    /// A data task: runnable while its colour's input queue holds a wavelet;
    /// its first operation must receive exactly one wavelet on that colour.
    Wavelet(Colour),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: &'static str,
    pub trigger: Trigger,
    pub ops: Vec<Op>,
}

/// The tasks of one PE (at most [`MAX_TASKS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeProgram {
    pub tasks: Vec<Task>,
}

/// The most tasks a PE may hold (the hardware has 64 task ids).
pub const MAX_TASKS: usize = 64;

/// A program on a `width x height` fabric: every router's routes and every
/// PE's tasks, with `values_per_pe` values of state per PE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricProgram {
    pub width: u32,
    pub height: u32,
    pub packing: Packing,
    pub values_per_pe: u64,
    /// Per PE (row-major, `y * width + x`): its routes.
    pub routes: Vec<Vec<(Colour, Route)>>,
    /// Per PE (row-major): its tasks.
    pub pes: Vec<PeProgram>,
}

impl FabricProgram {
    /// An empty program: no routes, no tasks.
    pub fn new(width: u32, height: u32, packing: Packing, values_per_pe: u64) -> FabricProgram {
        let n = width as usize * height as usize;
        FabricProgram {
            width,
            height,
            packing,
            values_per_pe,
            routes: vec![Vec::new(); n],
            pes: vec![PeProgram::default(); n],
        }
    }

    pub fn pe(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }

    pub fn wavelets_per_pe(&self) -> u64 {
        self.values_per_pe
            .div_ceil(self.packing.values_per_wavelet())
    }

    /// Distinct colours any router uses.
    pub fn colours_used(&self) -> Vec<Colour> {
        let mut c: Vec<Colour> = self.routes.iter().flatten().map(|(c, _)| *c).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// Fabric parameters the spec does not hold (assumptions, `docs/fabric.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricParams {
    /// Wavelets a router buffers per colour on a link input port. Not found in
    /// any public source.
    pub router_buffer_wavelets: u32,
    /// Whether a PE's queues are re-bound from phase to phase. Without it every
    /// colour a PE receives (sends) on holds an input (output) queue for the
    /// whole run, and a PE needing more than the spec's queues is refused. With
    /// it, a program whose phases each fit the queues may use more colours in
    /// all: the `i`-th receiving colour of a PE takes the depth of queue
    /// `i mod queues` (WSE-3 re-binds a drained queue to another colour;
    /// the re-binding itself is charged nothing, an assumption).
    pub rebind_queues: bool,
}

impl Default for FabricParams {
    fn default() -> Self {
        FabricParams {
            router_buffer_wavelets: 2,
            rebind_queues: false,
        }
    }
}

/// When each PE starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// Every PE at cycle 0.
    Together,
    /// PE `(x, y)` at `hop_latency * (|x - x0| + |y - y0|)`: a launch signal
    /// spreading from one PE at one hop per hop latency.
    Wavefront { x: u32, y: u32 },
}

/// The most queue and router-buffer slots a run may hold (4 GiB of slots).
pub const MAX_QUEUE_SLOTS: u64 = 1 << 30;

/// The largest number of events a run may take before it is stopped.
pub const DEFAULT_MAX_EVENTS: u64 = 1 << 34;

#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub params: FabricParams,
    pub launch: Launch,
    /// Initial values, `values_per_pe` per PE in row-major PE order; `None`
    /// runs timing-only (wavelets carry no values).
    pub values: Option<Vec<f32>>,
    pub max_events: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            params: FabricParams::default(),
            launch: Launch::Together,
            values: None,
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FabricRun {
    /// Each PE's own start-to-end cycles (end = its last task's completion).
    pub pe_cycles: Vec<u64>,
    /// Mean of `pe_cycles`.
    pub cycles: Cycles,
    /// Last completion minus first start.
    pub span: u64,
    pub events: u64,
    /// Wavelets times links crossed (ramp crossings not counted).
    pub wavelet_hops: u64,
    /// The most wavelets any buffer or queue held at once.
    pub max_queue_occupancy: u32,
    /// Final values (row-major PEs), when the run carried values.
    pub values: Option<Vec<f32>>,
}

/// Whole-cycle latency from a spec field.
pub(crate) fn whole_cycles(field: &str, v: f64) -> Result<u64, FabricError> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 1e6 {
        Ok(v as u64)
    } else {
        Err(FabricError::Unsupported(format!(
            "{field} = {v}: the fabric simulator runs in whole cycles (0 to 1,000,000)"
        )))
    }
}

/// Whole cycles of a cost (rounded up: a PE works in whole cycles).
pub fn ceil_cycles(c: Cycles) -> u64 {
    c.get().max(0.0).ceil() as u64
}

/// A router's buffer for one colour, or a PE's input queue: what every
/// event touches, kept to one cache line (the engine's time goes mostly to
/// fetching these).
#[repr(align(64))]
struct Queue {
    /// Wavelets held plus wavelets in flight toward this queue.
    reserved: u32,
    cap: u32,
    /// The wavelets held: a ring of `cap` slots at `base` in the engine's
    /// one slot arena, `len` of them from `head` (never more than `cap`:
    /// a wavelet is sent only into a reserved slot). A timing-only run keeps
    /// the counts and no slots.
    base: u32,
    head: u32,
    len: u32,
    pe: u32,
    /// A router buffer's: the queue a wavelet forwarded to port `d` lands in.
    targets: [u32; 5],
    /// Who waits on this queue, in the order each first waited
    /// ([`Waiter::code`]).
    waiters: [u32; 2],
    n_waiters: u8,
    /// A `Forward` event is scheduled.
    pending: bool,
    /// A router buffer (else a PE's input queue).
    router: bool,
    /// A router buffer's transmit set.
    tx: DirSet,
    colour: Colour,
}

impl Queue {
    fn new(pe: u32, colour: Colour, cap: u32, router: Option<DirSet>) -> Queue {
        Queue {
            reserved: 0,
            cap,
            base: 0,
            head: 0,
            len: 0,
            pe,
            targets: [NONE; 5],
            waiters: [0; 2],
            n_waiters: 0,
            pending: false,
            router: router.is_some(),
            tx: router.unwrap_or_default(),
            colour,
        }
    }

    /// Whether every slot is taken; if so, `waiter` waits for one to free.
    fn full_then_wait(&mut self, waiter: Waiter) -> bool {
        let full = self.reserved >= self.cap;
        if full {
            self.wait(waiter);
        }
        full
    }

    /// Adds `waiter` to the waiters, unless it waits already. At most two
    /// distinct waiters ever wait on one queue: the one thing that feeds it
    /// (the router buffer upstream on its colour, whose route has a single
    /// receive port, or the PE's compute engine for an output queue) and, on
    /// an input queue, the PE's compute engine waiting for a wavelet. A
    /// waiter that waits again before it is woken is kept once: waking it
    /// twice in a row schedules it once (it is then pending), so the order
    /// of the events is that of one list of every wait.
    fn wait(&mut self, waiter: Waiter) {
        let code = waiter.code();
        let n = self.n_waiters as usize;
        if self.waiters[..n].contains(&code) {
            return;
        }
        assert!(n < 2, "a third distinct waiter on one queue");
        self.waiters[n] = code;
        self.n_waiters += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    Router(u32),
    Ce(u32),
}

/// The top bit of a waiter's code: a PE's compute engine (else a router buffer).
const CE_BIT: u32 = 1 << 31;

impl Waiter {
    /// One word: the buffer's index, or the PE's with [`CE_BIT`] (both are
    /// below 2^31, checked when the run is built).
    fn code(self) -> u32 {
        match self {
            Waiter::Router(b) => b,
            Waiter::Ce(pe) => pe | CE_BIT,
        }
    }

    fn of(code: u32) -> Waiter {
        if code & CE_BIT != 0 {
            Waiter::Ce(code & !CE_BIT)
        } else {
            Waiter::Router(code)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ev {
    Start(u32),
    Ce(u32),
    Forward(u32),
    Arrive(u32, u32),
}

#[derive(PartialEq, Eq)]
struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (cycle, seq).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The pending events: a calendar of per-cycle buckets for the next
/// [`WINDOW`] cycles, and a heap for events further out. Events leave in
/// `(cycle, order of scheduling)` order, exactly as one heap keyed by
/// `(cycle, sequence number)` would give them: a bucket is first in first
/// out, and a far event enters its bucket when its cycle enters the window,
/// before any event can be scheduled directly into that bucket.
struct Calendar {
    /// The cycle being processed; buckets hold cycles `now .. now + WINDOW`.
    now: u64,
    /// Index of the next event in the current bucket.
    next: usize,
    buckets: Vec<Vec<Ev>>,
    /// Events in the buckets, not yet taken.
    near: usize,
    /// Large drained buckets kept for reuse (at most [`SPARE`]).
    spare: Vec<Vec<Ev>>,
    far: BinaryHeap<Entry>,
    seq: u64,
}

/// Cycles the calendar's buckets cover (a power of two).
const WINDOW: u64 = 1 << 12;

/// Events' room a drained bucket keeps.
const BUCKET_KEEP: usize = 1 << 10;

/// Drained buckets larger than that kept whole, for the next busy cycles.
const SPARE: usize = 4;

impl Calendar {
    fn new() -> Calendar {
        Calendar {
            now: 0,
            next: 0,
            buckets: (0..WINDOW).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            near: 0,
            far: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn bucket(&mut self, at: u64) -> &mut Vec<Ev> {
        &mut self.buckets[(at & (WINDOW - 1)) as usize]
    }

    /// The bucket of cycle `at`, with room for one more event: a full one
    /// moves into a spare large allocation when there is one (instead of
    /// growing by reallocation, cycle after cycle).
    fn room(&mut self, at: u64) -> &mut Vec<Ev> {
        let b = &mut self.buckets[(at & (WINDOW - 1)) as usize];
        if b.len() == b.capacity() {
            if let Some(mut big) = self.spare.pop() {
                big.extend_from_slice(b);
                *b = big;
            }
        }
        b
    }

    /// Schedules `ev` at cycle `at` (never before the current cycle).
    fn push(&mut self, at: u64, ev: Ev) {
        let at = at.max(self.now);
        if at - self.now < WINDOW {
            self.room(at).push(ev);
            self.near += 1;
        } else {
            self.seq += 1;
            self.far.push(Entry {
                at,
                seq: self.seq,
                ev,
            });
        }
    }

    /// Moves far events whose cycle is inside the window into their buckets.
    fn admit(&mut self) {
        while let Some(e) = self.far.peek() {
            if e.at - self.now >= WINDOW {
                break;
            }
            let Entry { at, ev, .. } = self.far.pop().expect("peeked");
            self.room(at).push(ev);
            self.near += 1;
        }
    }

    /// The event `k` places after the next one of the current cycle, if the
    /// current cycle holds that many more.
    fn ahead(&self, k: usize) -> Option<Ev> {
        self.buckets[(self.now & (WINDOW - 1)) as usize]
            .get(self.next + k)
            .copied()
    }

    /// Prefetches the current cycle's bucket `k` events past the next one.
    fn prefetch_bucket(&self, k: usize) {
        if let Some(ev) = self.buckets[(self.now & (WINDOW - 1)) as usize].get(self.next + k) {
            prefetch(ev);
        }
    }

    fn pop(&mut self) -> Option<(u64, Ev)> {
        loop {
            let now = self.now;
            let (next, bucket) = (self.next, self.bucket(now));
            if next < bucket.len() {
                let ev = bucket[next];
                self.next += 1;
                self.near -= 1;
                return Some((now, ev));
            }
            bucket.clear();
            // A bucket keeps a modest allocation: a lockstep program fills
            // some cycles with an event per PE, and 4,096 buckets each
            // keeping their peak would hold gigabytes.
            // Up to `SPARE` large ones are kept for the next busy cycles.
            if bucket.capacity() > BUCKET_KEEP {
                if self.spare.len() < SPARE {
                    let big = std::mem::take(self.bucket(now));
                    self.spare.push(big);
                } else {
                    self.bucket(now).shrink_to(BUCKET_KEEP);
                }
            }
            self.next = 0;
            if self.near == 0 {
                // Jump to the next far event, if any.
                let at = self.far.peek()?.at;
                self.now = at;
            } else {
                self.now += 1;
            }
            self.admit();
        }
    }
}

#[derive(Clone, Copy)]
struct Cursor {
    task: u16,
    op: u32,
    j: u32,
    /// The current fabric operation has been issued (its setup is paid).
    issued: bool,
}

#[derive(Clone, Copy)]
struct Ce<'p> {
    started: bool,
    pending: bool,
    task: Option<Cursor>,
    activated: u64,
    /// A task has run: later picks pay the task switch (the launch's own
    /// entry into the first task is before any timer starts).
    entered: bool,
    /// The running task's operations (one fetch per event instead of the
    /// program's PE, task and operation lists in turn).
    ops: &'p [Op],
    /// The queues of the running task's operation `resolved_op` (a send's
    /// output queue; a receive's input queue and the output queue it
    /// forwards into, or `NONE`), looked up once per operation, not per
    /// wavelet.
    resolved_op: u32,
    resolved: (u32, u32),
}

impl Default for Ce<'_> {
    fn default() -> Self {
        Ce {
            started: false,
            pending: false,
            task: None,
            activated: 0,
            entered: false,
            ops: &[],
            resolved_op: NONE,
            resolved: (NONE, NONE),
        }
    }
}

/// A PE's start and end cycles (end: its last task's completion).
#[derive(Clone, Copy, Default)]
struct Times {
    start: u64,
    end: u64,
}

/// Per-wavelet cycles of the PE's fabric operations, from the kernels' vector
/// instruction cost over one wavelet's values.
#[derive(Clone, Copy)]
struct WaveletCosts {
    send: u64,
    store: u64,
    add: u64,
}

struct Sim<'p> {
    prog: &'p FabricProgram,
    hop: u64,
    ramp: u64,
    /// Cycles to issue a send or receive before its first wavelet.
    setup: u64,
    /// Cycles from the picker choosing a task to its first operation.
    switch: u64,
    costs: WaveletCosts,
    queues: Vec<Queue>,
    /// Every queue's ring of slots, one after another (`Queue::base`).
    slots: Vec<u32>,
    /// Per PE: (colour, router buffer, PE input queue or u32::MAX).
    lookup: Vec<Vec<(Colour, u32, u32)>>,
    link_free: Vec<u64>,
    ces: Vec<Ce<'p>>,
    times: Vec<Times>,
    queue: Calendar,
    events: u64,
    hops: u64,
    max_occ: u32,
    values: Option<Vec<f32>>,
    /// The trace recorder, when the run is traced (`None`: no hook records).
    rec: Option<Box<Recorder>>,
}

const NONE: u32 = u32::MAX;

/// How many events ahead the run loop prefetches the queue or compute
/// engine an event names, and (nearer, once that has arrived) what those
/// point to: the targets of a buffer, the operation of a compute engine.
const PREFETCH_FAR: usize = 16;
const PREFETCH_NEAR: usize = 6;
/// How many events ahead the run loop prefetches the cycle's bucket itself.
const PREFETCH_BUCKET: usize = 64;

/// Asks the memory system for the cache line holding `r`; no effect on
/// anything but timing.
#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and reads nothing into
    // the program's state; the address is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(r as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Runs `prog` on the fabric of `spec`.
pub fn run(
    spec: &WaferSpec,
    prog: &FabricProgram,
    opts: &RunOptions,
) -> Result<FabricRun, FabricError> {
    run_recorded(spec, prog, opts, None).map(|(run, _)| run)
}

/// Runs `prog`, filling `rec` when given ([`super::trace::run_traced`]).
pub(crate) fn run_recorded(
    spec: &WaferSpec,
    prog: &FabricProgram,
    opts: &RunOptions,
    rec: Option<Box<Recorder>>,
) -> Result<(FabricRun, Option<Box<Recorder>>), FabricError> {
    let mut sim = Sim::build(spec, prog, opts)?;
    if let Some(mut r) = rec {
        r.bind_queues(sim.queue_infos());
        sim.rec = Some(r);
    }
    sim.launch(opts.launch);
    while let Some((at, ev)) = sim.queue.pop() {
        sim.events += 1;
        if sim.events > opts.max_events {
            return Err(FabricError::TooLarge(format!(
                "the run passed {} events at cycle {at}",
                opts.max_events
            )));
        }
        if sim.rec.as_ref().is_some_and(|r| r.overflowed()) {
            // No point running on: the trace cannot be kept.
            return Err(FabricError::TooLarge(BUDGET_EXCEEDED.into()));
        }
        // Fetch what the events a little further on will touch (the run is
        // bound by cache misses; this changes nothing else).
        sim.queue.prefetch_bucket(PREFETCH_BUCKET);
        if let Some(ev) = sim.queue.ahead(PREFETCH_FAR) {
            sim.prefetch(ev);
        }
        if let Some(ev) = sim.queue.ahead(PREFETCH_NEAR) {
            sim.prefetch_deep(ev);
        }
        match ev {
            Ev::Start(pe) => sim.start(pe, at),
            Ev::Ce(pe) => sim.ce(pe, at)?,
            Ev::Forward(q) => sim.forward(q, at),
            Ev::Arrive(q, payload) => sim.arrive(q, payload, at),
        }
    }
    sim.finish()
}

impl<'p> Sim<'p> {
    fn build(
        spec: &WaferSpec,
        prog: &'p FabricProgram,
        opts: &RunOptions,
    ) -> Result<Sim<'p>, FabricError> {
        let (w, h) = (prog.width, prog.height);
        let n = w as usize * h as usize;
        if w == 0 || h == 0 || prog.routes.len() != n || prog.pes.len() != n {
            return Err(FabricError::InvalidProgram(format!(
                "a {w}x{h} program needs one route list and one PE program per PE"
            )));
        }
        let r = &spec.router;
        // The routers modelled here have exactly the N, S, E, W and ramp ports.
        if r.ports != 5 {
            return Err(FabricError::InvalidProgram(format!(
                "hardware spec `{}` gives routers {} ports; the fabric simulator models 5 (N, S, E, W and the ramp)",
                spec.name, r.ports
            )));
        }
        let hop = whole_cycles("router.hop_latency_cycles", r.hop_latency_cycles)?;
        let ramp = whole_cycles("router.ramp_latency_cycles", r.ramp_latency_cycles)?;
        let setup = whole_cycles("pe.fabric_op_setup_cycles", spec.pe.fabric_op_setup_cycles)?;
        let switch = whole_cycles("pe.task_switch_cycles", spec.pe.task_switch_cycles)?;
        if opts.params.router_buffer_wavelets == 0 {
            return Err(FabricError::InvalidProgram(
                "a router buffer needs room for at least one wavelet".into(),
            ));
        }
        // The colour limit.
        let colours = prog.colours_used();
        let limit = r.colors;
        if colours.len() as u64 > limit as u64 || colours.iter().any(|c| c.0 as u32 >= limit) {
            return Err(FabricError::TooManyColours {
                used: colours.len(),
                highest: colours.last().map_or(0, |c| c.0 as u32),
                limit,
                hw: spec.name.clone(),
            });
        }
        // The depth of a PE's `i`-th queue of one kind (none past the last,
        // unless queues are re-bound phase by phase).
        let queue_depth = |depths: &[u32], i: usize| match depths.len() {
            0 => None,
            n if opts.params.rebind_queues => Some(depths[i % n]),
            _ => depths.get(i).copied(),
        };
        let at = |pe: usize| (pe as u32 % w, pe as u32 / w);
        let mut queues: Vec<Queue> = Vec::new();
        let mut lookup: Vec<Vec<(Colour, u32, u32)>> = vec![Vec::new(); n];
        for (pe, routes) in prog.routes.iter().enumerate() {
            let (x, y) = at(pe);
            let (mut ins, mut outs) = (0usize, 0usize);
            for &(colour, route) in routes {
                if lookup[pe].iter().any(|e| e.0 == colour) {
                    return Err(FabricError::InvalidProgram(format!(
                        "PE ({x},{y}) has two routes for colour {}",
                        colour.0
                    )));
                }
                if route.tx.is_empty() {
                    return Err(FabricError::InvalidProgram(format!(
                        "PE ({x},{y}) colour {}: a route must transmit somewhere",
                        colour.0
                    )));
                }
                let cap = if route.rx == Dir::Ramp {
                    let depth = queue_depth(&r.output_queue_depths, outs).ok_or_else(|| {
                        FabricError::InvalidProgram(format!(
                            "PE ({x},{y}) sends on more colours than the {} output queues of {}",
                            r.output_queue_depths.len(),
                            spec.name
                        ))
                    })?;
                    outs += 1;
                    depth
                } else {
                    opts.params.router_buffer_wavelets
                };
                let buf = queues.len() as u32;
                queues.push(Queue::new(pe as u32, colour, cap, Some(route.tx)));
                let mut inq = NONE;
                if route.tx.contains(Dir::Ramp) {
                    let depth = queue_depth(&r.input_queue_depths, ins).ok_or_else(|| {
                        FabricError::InvalidProgram(format!(
                            "PE ({x},{y}) receives on more colours than the {} input queues of {}",
                            r.input_queue_depths.len(),
                            spec.name
                        ))
                    })?;
                    ins += 1;
                    inq = queues.len() as u32;
                    queues.push(Queue::new(pe as u32, colour, depth, None));
                }
                lookup[pe].push((colour, buf, inq));
            }
        }
        // Wire every transmit port to the queue it feeds.
        for pe in 0..n {
            let (x, y) = at(pe);
            for &(colour, route) in &prog.routes[pe] {
                let (_, buf, inq) = *lookup[pe].iter().find(|e| e.0 == colour).unwrap();
                let mut targets = [NONE; 5];
                for d in route.tx.iter() {
                    targets[d as usize] = if d == Dir::Ramp {
                        inq
                    } else {
                        let Some((nx, ny)) = d.step(x, y, w, h) else {
                            return Err(FabricError::InvalidProgram(format!(
                                "PE ({x},{y}) colour {}: route leaves the fabric going {d:?}",
                                colour.0
                            )));
                        };
                        let npe = prog.pe(nx, ny);
                        let next = prog.routes[npe].iter().find(|e| e.0 == colour);
                        match next {
                            Some((_, nr)) if nr.rx == d.opposite() => {
                                lookup[npe].iter().find(|e| e.0 == colour).unwrap().1
                            }
                            _ => {
                                return Err(FabricError::InvalidProgram(format!(
                                    "PE ({x},{y}) sends colour {} {d:?} to ({nx},{ny}), which does not receive it from {:?}",
                                    colour.0,
                                    d.opposite()
                                )))
                            }
                        }
                    };
                }
                queues[buf as usize].targets = targets;
            }
        }
        // Check every PE's tasks against its routes.
        let wpp = prog.wavelets_per_pe();
        for (pe, p) in prog.pes.iter().enumerate() {
            let (x, y) = at(pe);
            let bad = |m: String| Err(FabricError::InvalidProgram(format!("PE ({x},{y}): {m}")));
            if p.tasks.len() > MAX_TASKS {
                return bad(format!("{} tasks, at most {MAX_TASKS}", p.tasks.len()));
            }
            let route = |c: Colour| prog.routes[pe].iter().find(|e| e.0 == c).map(|e| e.1);
            let sends = |c: Colour| route(c).is_some_and(|r| r.rx == Dir::Ramp);
            let receives = |c: Colour| route(c).is_some_and(|r| r.tx.contains(Dir::Ramp));
            for t in &p.tasks {
                if let Trigger::Wavelet(c) = t.trigger {
                    let ok = matches!(t.ops.first(), Some(Op::Recv { colour, wavelets: 1, .. }) if *colour == c);
                    if !ok || !receives(c) {
                        return bad(format!(
                            "data task `{}` must start by receiving one wavelet on colour {}, which the PE receives",
                            t.name, c.0
                        ));
                    }
                }
                for op in &t.ops {
                    match *op {
                        Op::Compute { .. } | Op::NextTask => {}
                        Op::Activate(i) if (i as usize) < p.tasks.len() => {}
                        Op::Activate(i) => {
                            return bad(format!("activates task {i}, which is not there"))
                        }
                        Op::Send {
                            colour,
                            first,
                            wavelets,
                        } => {
                            if !sends(colour) {
                                return bad(format!(
                                    "sends on colour {} without a route from its ramp",
                                    colour.0
                                ));
                            }
                            if first as u64 + wavelets as u64 > wpp {
                                return bad(format!("sends past its {wpp} wavelets of values"));
                            }
                        }
                        Op::Recv {
                            colour,
                            first,
                            wavelets,
                            forward,
                            ..
                        } => {
                            if !receives(colour) {
                                return bad(format!(
                                    "receives on colour {} without a route to its ramp",
                                    colour.0
                                ));
                            }
                            if forward.is_some_and(|f| !sends(f)) {
                                return bad(
                                    "forwards on a colour without a route from its ramp".into()
                                );
                            }
                            if first as u64 + wavelets as u64 > wpp {
                                return bad(format!("receives past its {wpp} wavelets of values"));
                            }
                        }
                    }
                }
            }
        }
        let values = match &opts.values {
            Some(v) => {
                let want = n as u64 * prog.values_per_pe;
                if v.len() as u64 != want {
                    return Err(FabricError::InvalidProgram(format!(
                        "{} initial values for {n} PEs of {} values",
                        v.len(),
                        prog.values_per_pe
                    )));
                }
                Some(v.clone())
            }
            None => None,
        };
        // One arena holds every queue's slots.
        let mut total: u64 = 0;
        for q in &mut queues {
            q.base = u32::try_from(total).map_err(|_| {
                FabricError::TooLarge(format!("queue slots past {total} on a {w}x{h} fabric"))
            })?;
            total += q.cap as u64;
        }
        if total > MAX_QUEUE_SLOTS {
            return Err(FabricError::TooLarge(format!(
                "{total} queue and buffer slots on a {w}x{h} fabric; at most {MAX_QUEUE_SLOTS}"
            )));
        }
        // Waiters are coded in 31 bits (`Waiter::code`).
        if queues.len() as u64 >= CE_BIT as u64 || n as u64 >= CE_BIT as u64 {
            return Err(FabricError::TooLarge(format!(
                "{} queues and buffers on a {w}x{h} fabric; at most {}",
                queues.len(),
                CE_BIT - 1
            )));
        }
        // A timing-only run keeps no wavelets, only their counts.
        let slots = if values.is_some() {
            vec![0u32; total as usize]
        } else {
            Vec::new()
        };
        let vpw = prog.packing.values_per_wavelet();
        let dt = prog.packing.dtype();
        let costs = WaveletCosts {
            send: ceil_cycles(vector_op_cycles(spec, SimdOp::Mul, dt, vpw, 1)).max(1),
            store: ceil_cycles(vector_op_cycles(spec, SimdOp::Mul, dt, vpw, 0)).max(1),
            add: ceil_cycles(vector_op_cycles(spec, SimdOp::Add, dt, vpw, 1)).max(1),
        };
        Ok(Sim {
            prog,
            hop,
            ramp,
            setup,
            switch,
            costs,
            queues,
            slots,
            lookup,
            link_free: vec![0; n * 4],
            ces: vec![Ce::default(); n],
            times: vec![Times::default(); n],
            queue: Calendar::new(),
            events: 0,
            hops: 0,
            max_occ: 0,
            values,
            rec: None,
        })
    }

    /// What each buffer and queue is, for the trace's peak occupancies.
    fn queue_infos(&self) -> Vec<QueueInfo> {
        self.queues
            .iter()
            .map(|q| {
                let role = match q.router {
                    false => QueueRole::Input,
                    true => {
                        let rx = self.prog.routes[q.pe as usize]
                            .iter()
                            .find(|e| e.0 == q.colour)
                            .map_or(Dir::Ramp, |e| e.1.rx);
                        if rx == Dir::Ramp {
                            QueueRole::Output
                        } else {
                            QueueRole::Buffer(rx)
                        }
                    }
                };
                QueueInfo {
                    pe: q.pe,
                    colour: q.colour,
                    role,
                    capacity: q.cap,
                }
            })
            .collect()
    }

    fn push(&mut self, at: u64, ev: Ev) {
        // An event for the current cycle may be too near to be prefetched
        // by the run loop: fetch its queue or engine now.
        if at <= self.queue.now {
            self.prefetch(ev);
        }
        self.queue.push(at, ev);
    }

    /// Prefetches the queue or compute engine `ev` names.
    fn prefetch(&self, ev: Ev) {
        match ev {
            Ev::Forward(q) | Ev::Arrive(q, _) => prefetch(&self.queues[q as usize]),
            Ev::Ce(pe) | Ev::Start(pe) => prefetch(&self.ces[pe as usize]),
        }
    }

    /// Prefetches what `ev` reaches through its queue or compute engine
    /// (read from them: [`Sim::prefetch`] fetched them a few events before).
    fn prefetch_deep(&self, ev: Ev) {
        match ev {
            Ev::Forward(q) => {
                let queue = &self.queues[q as usize];
                prefetch(&self.link_free[queue.pe as usize * 4]);
                // Whom a wavelet leaving wakes.
                for &code in &queue.waiters[..queue.n_waiters as usize] {
                    match Waiter::of(code) {
                        Waiter::Router(b) => prefetch(&self.queues[b as usize]),
                        Waiter::Ce(pe) => prefetch(&self.ces[pe as usize]),
                    }
                }
                for d in queue.tx.iter() {
                    if let Some(t) = self.queues.get(queue.targets[d as usize] as usize) {
                        prefetch(t);
                    }
                }
            }
            Ev::Arrive(q, _) => {
                let queue = &self.queues[q as usize];
                if !queue.router {
                    prefetch(&self.ces[queue.pe as usize]);
                }
            }
            Ev::Ce(pe) => {
                let ce = &self.ces[pe as usize];
                if let Some(cur) = ce.task {
                    if let Some(op) = ce.ops.get(cur.op as usize) {
                        prefetch(op);
                    }
                    if ce.resolved_op == cur.op {
                        for q in [ce.resolved.0, ce.resolved.1] {
                            if let Some(queue) = self.queues.get(q as usize) {
                                prefetch(queue);
                            }
                        }
                    }
                }
            }
            Ev::Start(_) => {}
        }
    }

    fn launch(&mut self, launch: Launch) {
        let w = self.prog.width;
        for pe in 0..self.ces.len() as u32 {
            let (x, y) = (pe % w, pe / w);
            let start = match launch {
                Launch::Together => 0,
                Launch::Wavefront { x: x0, y: y0 } => {
                    self.hop * (x.abs_diff(x0) as u64 + y.abs_diff(y0) as u64)
                }
            };
            self.times[pe as usize] = Times { start, end: start };
            self.push(start, Ev::Start(pe));
        }
    }

    fn start(&mut self, pe: u32, t: u64) {
        let tasks = &self.prog.pes[pe as usize].tasks;
        let mut bits = 0u64;
        for (i, task) in tasks.iter().enumerate() {
            if task.trigger == Trigger::Start {
                bits |= 1 << i;
            }
        }
        let ce = &mut self.ces[pe as usize];
        ce.started = true;
        ce.activated |= bits;
        self.kick_ce(pe, t);
    }

    fn kick_ce(&mut self, pe: u32, t: u64) {
        let ce = &mut self.ces[pe as usize];
        if ce.started && !ce.pending {
            ce.pending = true;
            self.push(t, Ev::Ce(pe));
        }
    }

    fn kick_forward(&mut self, q: u32, t: u64) {
        let queue = &mut self.queues[q as usize];
        if !queue.pending && queue.len > 0 {
            queue.pending = true;
            self.push(t, Ev::Forward(q));
        }
    }

    fn wake(&mut self, q: u32, t: u64) {
        let queue = &mut self.queues[q as usize];
        let (waiters, n) = (queue.waiters, queue.n_waiters as usize);
        queue.n_waiters = 0;
        // Kicks schedule events and add no waiter.
        for &code in &waiters[..n] {
            match Waiter::of(code) {
                Waiter::Router(b) => self.kick_forward(b, t),
                Waiter::Ce(pe) => self.kick_ce(pe, t),
            }
        }
    }

    /// Appends a wavelet to queue `q`; returns how many it then holds.
    fn q_push(&mut self, q: u32, payload: u32) -> u32 {
        let queue = &mut self.queues[q as usize];
        assert!(
            queue.len < queue.cap,
            "a wavelet arrived at a full queue without a reserved slot"
        );
        let mut at = queue.head + queue.len;
        if at >= queue.cap {
            at -= queue.cap;
        }
        queue.len += 1;
        let (held, slot) = (queue.len, queue.base + at);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = payload;
        }
        held
    }

    /// Takes the oldest wavelet of queue `q`, which holds at least one.
    fn q_pop(&mut self, q: u32) -> u32 {
        let queue = &mut self.queues[q as usize];
        debug_assert!(queue.len > 0);
        let slot = queue.base + queue.head;
        queue.head += 1;
        if queue.head == queue.cap {
            queue.head = 0;
        }
        queue.len -= 1;
        // Timing-only: no slots, and every payload is 0.
        self.slots.get(slot as usize).copied().unwrap_or(0)
    }

    fn find(&self, pe: u32, c: Colour) -> (u32, u32) {
        let e = self.lookup[pe as usize]
            .iter()
            .find(|e| e.0 == c)
            .expect("colours checked when the program was built");
        (e.1, e.2)
    }

    /// The queues of operation `index` (`op`) of the PE's running task: a
    /// send's output queue; a receive's input queue and the output queue it
    /// forwards into (or `NONE`).
    fn resolve(&mut self, pe: u32, index: u32, op: &Op) -> (u32, u32) {
        let ce = &self.ces[pe as usize];
        if ce.resolved_op == index {
            return ce.resolved;
        }
        let r = match *op {
            Op::Send { colour, .. } => (self.find(pe, colour).0, NONE),
            Op::Recv {
                colour, forward, ..
            } => (
                self.find(pe, colour).1,
                forward.map_or(NONE, |f| self.find(pe, f).0),
            ),
            _ => (NONE, NONE),
        };
        let ce = &mut self.ces[pe as usize];
        ce.resolved_op = index;
        ce.resolved = r;
        r
    }

    fn arrive(&mut self, q: u32, payload: u32, t: u64) {
        let held = self.q_push(q, payload);
        let queue = &self.queues[q as usize];
        self.max_occ = self.max_occ.max(held);
        if let Some(r) = &mut self.rec {
            r.occupancy(q, held);
        }
        match queue.router {
            true => self.kick_forward(q, t),
            false => {
                let pe = queue.pe;
                self.wake(q, t);
                if self.ces[pe as usize].task.is_none() {
                    self.kick_ce(pe, t);
                }
            }
        }
    }

    fn forward(&mut self, b: u32, t: u64) {
        let queue = &mut self.queues[b as usize];
        queue.pending = false;
        if queue.len == 0 {
            return;
        }
        if !queue.router {
            return;
        }
        let (tx, targets) = (queue.tx, queue.targets);
        let pe = queue.pe as usize;
        // Every outgoing link must be free this cycle...
        for d in tx.iter().filter(|d| *d != Dir::Ramp) {
            let free = self.link_free[pe * 4 + d as usize];
            if free > t {
                self.queues[b as usize].pending = true;
                self.push(free, Ev::Forward(b));
                return;
            }
        }
        // ... and every target must have a free slot.
        for d in tx.iter() {
            if self.queues[targets[d as usize] as usize].full_then_wait(Waiter::Router(b)) {
                return;
            }
        }
        let payload = self.q_pop(b);
        self.queues[b as usize].reserved -= 1;
        for d in tx.iter() {
            let target = targets[d as usize];
            self.queues[target as usize].reserved += 1;
            let delay = if d == Dir::Ramp {
                self.ramp
            } else {
                self.link_free[pe * 4 + d as usize] = t + 1;
                self.hops += 1;
                if let Some(r) = &mut self.rec {
                    r.link(pe as u32, d, t, self.queues[b as usize].colour);
                }
                self.hop
            };
            self.push(t + delay, Ev::Arrive(target, payload));
        }
        self.wake(b, t);
        // The buffer's next wavelet leaves at the earliest next cycle.
        self.kick_forward(b, t + 1);
    }

    fn encode(&self, pe: u32, wavelet: u32) -> u32 {
        let Some(values) = &self.values else { return 0 };
        let vpp = self.prog.values_per_pe as usize;
        let base = pe as usize * vpp;
        match self.prog.packing {
            Packing::F32 => values[base + wavelet as usize].to_bits(),
            Packing::F16Pair => {
                let i = 2 * wavelet as usize;
                let get = |k: usize| {
                    if k < vpp {
                        f16::from_f32(values[base + k]).to_bits() as u32
                    } else {
                        0
                    }
                };
                get(i) | (get(i + 1) << 16)
            }
        }
    }

    fn combine(&mut self, pe: u32, wavelet: u32, payload: u32, how: Combine) {
        let vpp = self.prog.values_per_pe as usize;
        let packing = self.prog.packing;
        let Some(values) = &mut self.values else {
            return;
        };
        let base = pe as usize * vpp;
        let mut put = |k: usize, v: f32| {
            if k < vpp {
                let slot = &mut values[base + k];
                match how {
                    Combine::Store => *slot = v,
                    Combine::Add => *slot += v,
                }
            }
        };
        match packing {
            Packing::F32 => put(wavelet as usize, f32::from_bits(payload)),
            Packing::F16Pair => {
                let i = 2 * wavelet as usize;
                put(i, f16::from_bits(payload as u16).to_f32());
                put(i + 1, f16::from_bits((payload >> 16) as u16).to_f32());
            }
        }
    }

    fn record_wait(&mut self, pe: u32, t: u64, why: Wait) {
        if let Some(r) = &mut self.rec {
            r.blocked(pe, t, why);
        }
    }

    /// The PE's task continues at `cur` once its compute engine is free at `at`.
    fn busy_until(&mut self, pe: u32, cur: Cursor, at: u64) {
        let ce = &mut self.ces[pe as usize];
        ce.task = Some(cur);
        ce.pending = true;
        self.push(at, Ev::Ce(pe));
    }

    fn ce(&mut self, pe: u32, t: u64) -> Result<(), FabricError> {
        let p = pe as usize;
        self.ces[p].pending = false;
        if !self.ces[p].started {
            return Ok(());
        }
        let prog = self.prog;
        let tasks = &prog.pes[p].tasks;
        loop {
            let Some(mut cur) = self.ces[p].task else {
                // The picker: the lowest numbered runnable task.
                let activated = self.ces[p].activated;
                let pick = tasks.iter().enumerate().position(|(i, task)| {
                    activated & (1 << i) != 0
                        || matches!(task.trigger, Trigger::Wavelet(c)
                            if self.queues[self.find(pe, c).1 as usize].len > 0)
                });
                let Some(i) = pick else {
                    return Ok(());
                };
                self.ces[p].activated &= !(1u64 << i);
                self.ces[p].ops = &tasks[i].ops;
                self.ces[p].resolved_op = NONE;
                if let Some(r) = &mut self.rec {
                    r.task_begin(pe, t, i as u16);
                }
                let cur = Cursor {
                    task: i as u16,
                    op: 0,
                    j: 0,
                    issued: false,
                };
                if std::mem::replace(&mut self.ces[p].entered, true) && self.switch > 0 {
                    self.busy_until(pe, cur, t + self.switch);
                    return Ok(());
                }
                self.ces[p].task = Some(cur);
                continue;
            };
            let Some(op) = self.ces[p].ops.get(cur.op as usize) else {
                self.ces[p].task = None;
                self.times[p].end = t;
                if let Some(r) = &mut self.rec {
                    r.task_end(pe, t);
                }
                continue;
            };
            // A send or a receive that has moved all its wavelets is done.
            if let Op::Send { wavelets, .. } | Op::Recv { wavelets, .. } = *op {
                if cur.j == wavelets {
                    cur.op += 1;
                    cur.j = 0;
                    cur.issued = false;
                    self.ces[p].task = Some(cur);
                    continue;
                }
                // Issuing the operation occupies the compute engine first.
                if !cur.issued && self.setup > 0 {
                    cur.issued = true;
                    self.busy_until(pe, cur, t + self.setup);
                    return Ok(());
                }
            }
            if let Some(r) = &mut self.rec {
                r.op(pe, t, cur.op, op);
            }
            match *op {
                Op::Compute { cycles } => {
                    cur.op += 1;
                    self.busy_until(pe, cur, t + cycles);
                    return Ok(());
                }
                Op::Activate(i) => {
                    self.ces[p].activated |= 1 << i;
                    cur.op += 1;
                    self.ces[p].task = Some(cur);
                }
                Op::NextTask => {
                    cur.op += 1;
                    self.busy_until(pe, cur, t + self.switch);
                    return Ok(());
                }
                Op::Send { colour, first, .. } => {
                    let (q, _) = self.resolve(pe, cur.op, op);
                    let queue = &mut self.queues[q as usize];
                    if queue.full_then_wait(Waiter::Ce(pe)) {
                        self.record_wait(pe, t, Wait::Slot(colour));
                        return Ok(());
                    }
                    queue.reserved += 1;
                    let payload = self.encode(pe, first + cur.j);
                    self.push(t + self.ramp, Ev::Arrive(q, payload));
                    cur.j += 1;
                    self.busy_until(pe, cur, t + self.costs.send);
                    return Ok(());
                }
                Op::Recv {
                    colour,
                    first,
                    combine,
                    forward,
                    ..
                } => {
                    let (inq, o) = self.resolve(pe, cur.op, op);
                    if self.queues[inq as usize].len == 0 {
                        self.queues[inq as usize].wait(Waiter::Ce(pe));
                        self.record_wait(pe, t, Wait::Wavelet(colour));
                        return Ok(());
                    }
                    let out = forward.map(|f| (f, o));
                    if let Some((f, o)) = out {
                        if self.queues[o as usize].full_then_wait(Waiter::Ce(pe)) {
                            self.record_wait(pe, t, Wait::Slot(f));
                            return Ok(());
                        }
                    }
                    let payload = self.q_pop(inq);
                    self.queues[inq as usize].reserved -= 1;
                    self.wake(inq, t);
                    let wavelet = first + cur.j;
                    self.combine(pe, wavelet, payload, combine);
                    let dur = match combine {
                        Combine::Store => self.costs.store,
                        Combine::Add => self.costs.add,
                    };
                    if let Some((_, o)) = out {
                        self.queues[o as usize].reserved += 1;
                        let payload = self.encode(pe, wavelet);
                        self.push(t + dur + self.ramp, Ev::Arrive(o, payload));
                    }
                    cur.j += 1;
                    self.busy_until(pe, cur, t + dur);
                    return Ok(());
                }
            }
        }
    }

    fn finish(self) -> Result<(FabricRun, Option<Box<Recorder>>), FabricError> {
        let w = self.prog.width;
        for (pe, ce) in self.ces.iter().enumerate() {
            let (x, y) = (pe as u32 % w, pe as u32 / w);
            if let Some(cur) = ce.task {
                let task = &self.prog.pes[pe].tasks[cur.task as usize];
                return Err(FabricError::Deadlock(format!(
                    "PE ({x},{y}) is stuck in task `{}` at operation {} ({:?}), wavelet {}",
                    task.name, cur.op, task.ops[cur.op as usize], cur.j
                )));
            }
            if ce.activated != 0 {
                return Err(FabricError::Deadlock(format!(
                    "PE ({x},{y}) has activated tasks that never ran"
                )));
            }
        }
        if let Some(q) = self.queues.iter().find(|q| q.len > 0) {
            let (x, y) = (q.pe % w, q.pe / w);
            return Err(FabricError::Deadlock(format!(
                "{} wavelets on colour {} were never consumed at PE ({x},{y})",
                q.len, q.colour.0
            )));
        }
        let pe_cycles: Vec<u64> = self.times.iter().map(|c| c.end - c.start).collect();
        let n = pe_cycles.len() as f64;
        let mean = pe_cycles.iter().map(|&c| c as f64).sum::<f64>() / n;
        let first = self.times.iter().map(|c| c.start).min().unwrap_or(0);
        let last = self.times.iter().map(|c| c.end).max().unwrap_or(0);
        let run = FabricRun {
            pe_cycles,
            cycles: Cycles(mean),
            span: last - first,
            events: self.events,
            wavelet_hops: self.hops,
            max_queue_occupancy: self.max_occ,
            values: self.values,
        };
        Ok((run, self.rec))
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    /// A queue's waiters: each kept once, in the order each first waited,
    /// and both kinds told apart through their one-word code.
    #[test]
    fn waiters_are_kept_once_in_first_wait_order() {
        let mut q = Queue::new(3, Colour(1), 1, None);
        q.reserved = 1;
        assert!(q.full_then_wait(Waiter::Router(7)));
        assert!(q.full_then_wait(Waiter::Router(7)));
        q.wait(Waiter::Ce(7));
        q.wait(Waiter::Router(7));
        let n = q.n_waiters as usize;
        let got: Vec<Waiter> = q.waiters[..n].iter().map(|&c| Waiter::of(c)).collect();
        assert_eq!(got, vec![Waiter::Router(7), Waiter::Ce(7)]);
        q.reserved = 0;
        assert!(!q.full_then_wait(Waiter::Router(9)), "a free slot: no wait");
        assert_eq!(q.n_waiters, 2);
    }

    /// The ring wraps without a division: three pushes and pops through a
    /// two-slot queue hand the payloads back in order, timing-only (no slots)
    /// as zeros.
    #[test]
    fn a_queue_ring_wraps_and_keeps_order() {
        let spec = wafer_core::spec::wse3();
        let mut prog = FabricProgram::new(2, 1, Packing::F32, 1);
        let route = |rx, tx: &[Dir]| Route {
            rx,
            tx: DirSet::of(tx),
        };
        prog.routes[0].push((Colour(0), route(Dir::Ramp, &[Dir::East])));
        prog.routes[1].push((Colour(0), route(Dir::West, &[Dir::Ramp])));
        for values in [Some(vec![0.0; 2]), None] {
            let opts = RunOptions {
                values: values.clone(),
                ..RunOptions::default()
            };
            let mut sim = Sim::build(&spec, &prog, &opts).unwrap();
            // PE 1's router buffer on colour 0: two slots (the default).
            let q = sim.lookup[1][0].1;
            assert_eq!(sim.queues[q as usize].cap, 2);
            for (push, pop) in [(11, None), (12, Some(11)), (13, Some(12)), (14, Some(13))] {
                sim.q_push(q, push);
                if let Some(want) = pop {
                    let want = if values.is_some() { want } else { 0 };
                    assert_eq!(sim.q_pop(q), want);
                }
            }
            assert_eq!(sim.queues[q as usize].len, 1);
        }
    }
}

#[cfg(test)]
mod calendar_tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The calendar hands events out in the order of one heap keyed by
    /// `(cycle, sequence number)`, with events scheduled while others are
    /// taken, near and far (past the window) alike.
    #[test]
    fn the_calendar_keeps_the_order_of_a_heap_on_cycle_then_sequence() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let mut cal = Calendar::new();
            let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
            let (mut seq, mut id) = (0u64, 0u32);
            let mut schedule = |cal: &mut Calendar,
                                heap: &mut BinaryHeap<Entry>,
                                now: u64,
                                rng: &mut ChaCha8Rng| {
                let at = now
                    + match rng.gen_range(0..4) {
                        0 => 0,
                        1 => rng.gen_range(0..8),
                        2 => rng.gen_range(0..2 * WINDOW),
                        _ => rng.gen_range(0..50 * WINDOW),
                    };
                id += 1;
                seq += 1;
                cal.push(at, Ev::Ce(id));
                heap.push(Entry {
                    at,
                    seq,
                    ev: Ev::Ce(id),
                });
            };
            for _ in 0..200 {
                schedule(&mut cal, &mut heap, 0, &mut rng);
            }
            let mut taken = 0;
            while let Some((at, ev)) = cal.pop() {
                let want = heap.pop().expect("the heap has as many");
                assert!(want.at == at && want.ev == ev, "event {taken}");
                taken += 1;
                if taken < 2000 {
                    for _ in 0..rng.gen_range(0..3) {
                        schedule(&mut cal, &mut heap, at, &mut rng);
                    }
                }
            }
            assert!(heap.is_empty());
        }
    }
}
