//! Tracing a fabric run: what each PE did and waited for, what each link
//! carried, how full each buffer got — recorded by the engine during a run
//! ([`run_traced`]) and kept as a [`Trace`] for a timeline viewer
//! ([`chrome`]) and a heat map ([`Trace::heat`]).
//!
//! The recorder is off unless a run is traced: [`super::run`] carries no
//! recorder, and every engine hook is one `if let Some(..)` on an empty option.
//!
//! What is recorded, timestamps in cycles:
//! - per PE: each task run (a [`SpanKind::Task`] span), and inside it each
//!   compute, send and receive operation, and inside those each wait for a slot
//!   in a full queue or for a wavelet ([`SpanKind::Blocked`]);
//! - per directed link: its busy intervals (consecutive busy cycles merged, the
//!   colour kept when the run is of one colour) and, for every link, the
//!   wavelets it carried (one wavelet occupies a link for one cycle, so these
//!   are also its busy cycles);
//! - per router buffer and PE queue: its peak occupancy.
//!
//! Sampling. The per-PE and per-link tracks are kept for the PEs at `(x, y)`
//! with `x % k == 0 && y % k == 0` and their outgoing links, `k` the stride.
//! The stride starts at 1 and doubles while the tracks kept would exceed the
//! event budget, dropping the tracks it no longer samples: since a run is
//! deterministic, `k` is the smallest power of two whose tracks fit. The link
//! and queue aggregates (the heat map) always cover every link and queue.

pub mod chrome;
#[cfg(test)]
mod tests;

use super::engine::{run_recorded, Colour, Combine, Dir, FabricProgram, FabricRun, Op, RunOptions};
use super::FabricError;
use std::collections::HashMap;
use thiserror::Error;
use wafer_core::WaferSpec;

/// Default trace-event budget: at 100 to 120 bytes per event in the Chrome
/// JSON (measured on 16 x 16 and 720 x 720 regions; longer ids cost a few
/// bytes more), 2,000,000 events keep a file under 250 MB.
pub const DEFAULT_TRACE_EVENTS: u64 = 2_000_000;
/// The largest budget accepted: 6,000,000 events stay well under 1 GB of JSON.
pub const MAX_TRACE_EVENTS: u64 = 6_000_000;

/// Why a run could not be traced.
#[derive(Debug, Error, PartialEq)]
pub enum TraceError {
    #[error("a trace budget of {0} events: the budget must be 1 to {MAX_TRACE_EVENTS}")]
    BadBudget(u64),
    /// Even PE (0, 0)'s track alone (its spans, its links' intervals and the
    /// metadata naming them) exceeds the budget.
    #[error("a trace budget of {budget} events cannot hold even PE (0,0)'s track (at most {MAX_TRACE_EVENTS} events may be asked for)")]
    Budget { budget: u64 },
    #[error(transparent)]
    Run(#[from] FabricError),
}

/// The engine's message when it stops a run whose trace overflowed.
pub(crate) const BUDGET_EXCEEDED: &str = "the trace budget cannot hold even PE (0,0)'s track";

/// How a run is traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceOptions {
    /// The most trace events (spans, link intervals and the metadata naming
    /// the tracks) the trace may hold; at least 1, at most [`MAX_TRACE_EVENTS`].
    pub max_events: u64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            max_events: DEFAULT_TRACE_EVENTS,
        }
    }
}

/// What a PE waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A free slot in the output queue of this colour (back-pressure).
    Slot(Colour),
    /// A wavelet in the input queue of this colour.
    Wavelet(Colour),
}

/// What a span of a PE's track is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// One run of a task, from the picker choosing it to its last operation.
    Task,
    Compute,
    /// A task ended by activating its successor: the picker's switch.
    TaskSwitch,
    Send {
        colour: Colour,
        wavelets: u32,
    },
    Recv {
        colour: Colour,
        wavelets: u32,
        combine: Combine,
        forward: Option<Colour>,
    },
    /// Inside an operation: the PE waited.
    Blocked(Wait),
}

impl SpanKind {
    /// Nesting depth: a task holds operations, an operation holds waits.
    pub fn depth(self) -> u8 {
        match self {
            SpanKind::Task => 0,
            SpanKind::Blocked(_) => 2,
            _ => 1,
        }
    }
}

/// One span of a PE's track, in cycles `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeSpan {
    /// The task (index into the PE's tasks) the span belongs to.
    pub task: u16,
    pub kind: SpanKind,
    pub start: u64,
    pub end: u64,
}

/// A sampled PE's track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeTrack {
    pub x: u32,
    pub y: u32,
    /// The PE's task names, by task index.
    pub tasks: Vec<&'static str>,
    /// Sorted by start, the enclosing span first.
    pub spans: Vec<PeSpan>,
}

/// Consecutive busy cycles `[start, end)` of one link: `end - start` wavelets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInterval {
    pub start: u64,
    pub end: u64,
    /// The colour, when every wavelet of the interval had the same one.
    pub colour: Option<Colour>,
}

impl LinkInterval {
    pub fn wavelets(&self) -> u64 {
        self.end - self.start
    }
}

/// A sampled link's track: the link leaving PE `(x, y)` toward `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTrack {
    pub x: u32,
    pub y: u32,
    pub dir: Dir,
    pub intervals: Vec<LinkInterval>,
}

/// What a buffer or queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// A router's per-colour buffer on the link port it receives from.
    Buffer(Dir),
    /// The PE's output queue (the router's buffer on the ramp).
    Output,
    /// The PE's input queue.
    Input,
}

/// A buffer or queue and what the engine knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    /// Row-major PE index.
    pub pe: u32,
    pub colour: Colour,
    pub role: QueueRole,
    pub capacity: u32,
}

/// A buffer or queue's peak occupancy over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePeak {
    pub x: u32,
    pub y: u32,
    pub colour: Colour,
    pub role: QueueRole,
    pub capacity: u32,
    /// The most wavelets it held at once.
    pub peak: u32,
}

/// A traced run.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub width: u32,
    pub height: u32,
    /// Sampling stride `k`: PE tracks kept for `x % k == 0 && y % k == 0`.
    pub stride: u32,
    /// The event budget the trace was recorded under.
    pub max_events: u64,
    /// Trace events the Chrome file holds (spans, intervals, metadata).
    pub events: u64,
    /// The run's first start to last end, in cycles.
    pub span: u64,
    /// Sampled PEs' tracks, row-major.
    pub pes: Vec<PeTrack>,
    /// Sampled links that carried wavelets, by PE (row-major) then port.
    pub links: Vec<LinkTrack>,
    /// Wavelets (= busy cycles) of every directed link, index `pe * 4 + dir`
    /// with `dir` North, South, East, West = 0..3.
    pub link_wavelets: Vec<u64>,
    /// Every buffer and queue.
    pub queues: Vec<QueuePeak>,
}

/// The heat map's data, one value per PE (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Heat {
    pub width: u32,
    pub height: u32,
    /// Busy cycles over the run's span of the busiest of the PE's four
    /// outgoing links (0 to 1).
    pub link_utilisation: Vec<f64>,
    /// The most wavelets any of the PE's buffers and queues held at once.
    pub queue_peak: Vec<u32>,
    pub span: u64,
}

/// The busiest directed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusiestLink {
    pub x: u32,
    pub y: u32,
    pub dir: Dir,
    pub wavelets: u64,
}

impl Trace {
    /// Wavelets the link leaving `(x, y)` toward `dir` carried.
    pub fn link_busy(&self, x: u32, y: u32, dir: Dir) -> u64 {
        match dir {
            Dir::Ramp => 0,
            d => {
                self.link_wavelets[(y as usize * self.width as usize + x as usize) * 4 + d as usize]
            }
        }
    }

    /// The link that carried the most wavelets (the first in row-major order
    /// on a tie), if any carried one.
    pub fn busiest_link(&self) -> Option<BusiestLink> {
        let (i, &wavelets) = self
            .link_wavelets
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, w)| **w)?;
        (wavelets > 0).then(|| BusiestLink {
            x: (i / 4) as u32 % self.width,
            y: (i / 4) as u32 / self.width,
            dir: Dir::ALL[i % 4],
            wavelets,
        })
    }

    /// The buffer or queue with the highest peak (the first on a tie).
    pub fn peak_queue(&self) -> Option<&QueuePeak> {
        self.queues.iter().rev().max_by_key(|q| q.peak)
    }

    /// Per-PE link utilisation (the busiest outgoing link's busy cycles over
    /// the run's span) and peak queue occupancy, over every PE.
    pub fn heat(&self) -> Heat {
        let n = self.width as usize * self.height as usize;
        let span = self.span.max(1) as f64;
        let link_utilisation = (0..n)
            .map(|pe| {
                let most = self.link_wavelets[pe * 4..pe * 4 + 4]
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or(0);
                most as f64 / span
            })
            .collect();
        let mut queue_peak = vec![0u32; n];
        for q in &self.queues {
            let pe = q.y as usize * self.width as usize + q.x as usize;
            queue_peak[pe] = queue_peak[pe].max(q.peak);
        }
        Heat {
            width: self.width,
            height: self.height,
            link_utilisation,
            queue_peak,
            span: self.span,
        }
    }
}

/// A traced run's place in a [`merge`]: its region's origin on the grid and
/// how many times the run happens (a program several layers share is traced
/// once and counted for each).
#[derive(Debug, Clone, Copy)]
pub struct MergePart<'a> {
    pub trace: &'a Trace,
    pub x0: u32,
    pub y0: u32,
    pub copies: u64,
}

/// Why traces cannot be merged.
#[derive(Debug, Error, PartialEq)]
pub enum MergeError {
    #[error("a {w}x{h} region at ({x0},{y0}) does not fit the {width}x{height} grid")]
    OutOfGrid {
        w: u32,
        h: u32,
        x0: u32,
        y0: u32,
        width: u32,
        height: u32,
    },
    #[error(
        "a {width}x{height} grid is larger than the {MAX_MERGE_PES} PEs a merged trace may cover"
    )]
    TooLarge { width: u32, height: u32 },
}

/// The most PEs a merged trace covers: 8 Mi, eight wafers of WSE-3 (its link
/// counts are 32 bytes a PE: 256 MiB at most).
pub const MAX_MERGE_PES: u64 = 8 * 1024 * 1024;

/// The aggregates of runs that happen one after another on regions of a
/// `width x height` grid (the layers of a token on the wafer), as one trace
/// with no tracks: every link's wavelets summed over the runs (each
/// `copies` times), each PE's highest queue peak over the runs, and `span`
/// the runs' total. Its [`Trace::heat`] is then the utilisation of each link
/// over the whole of `span`; its stride is the coarsest of the parts'.
pub fn merge(width: u32, height: u32, span: u64, parts: &[MergePart]) -> Result<Trace, MergeError> {
    let n = width as u64 * height as u64;
    if n == 0 || n > MAX_MERGE_PES {
        return Err(MergeError::TooLarge { width, height });
    }
    let mut link_wavelets = vec![0u64; n as usize * 4];
    let mut best: HashMap<u32, QueuePeak> = HashMap::new();
    let mut max_events = 0;
    for p in parts {
        let t = p.trace;
        if p.x0 as u64 + t.width as u64 > width as u64
            || p.y0 as u64 + t.height as u64 > height as u64
        {
            return Err(MergeError::OutOfGrid {
                w: t.width,
                h: t.height,
                x0: p.x0,
                y0: p.y0,
                width,
                height,
            });
        }
        max_events += t.max_events;
        for y in 0..t.height {
            for x in 0..t.width {
                let from = (y as usize * t.width as usize + x as usize) * 4;
                let to = ((p.y0 + y) as usize * width as usize + (p.x0 + x) as usize) * 4;
                for d in 0..4 {
                    link_wavelets[to + d] += t.link_wavelets[from + d] * p.copies;
                }
            }
        }
        for q in &t.queues {
            let (x, y) = (p.x0 + q.x, p.y0 + q.y);
            let pe = y * width + x;
            let moved = QueuePeak { x, y, ..*q };
            match best.get(&pe) {
                Some(b) if b.peak >= q.peak => {}
                _ => {
                    best.insert(pe, moved);
                }
            }
        }
    }
    let mut queues: Vec<QueuePeak> = best.into_values().collect();
    queues.sort_by_key(|q| (q.y, q.x));
    Ok(Trace {
        width,
        height,
        stride: parts.iter().map(|p| p.trace.stride).max().unwrap_or(1),
        max_events,
        events: 0,
        span,
        pes: Vec::new(),
        links: Vec::new(),
        link_wavelets,
        queues,
    })
}

/// Runs `prog` like [`super::run`] (the same run: tracing changes no
/// timing) and records its trace. Any fabric program traces: a kernel's step,
/// or whatever other generator builds one.
pub fn run_traced(
    spec: &WaferSpec,
    prog: &FabricProgram,
    opts: &RunOptions,
    topts: &TraceOptions,
) -> Result<(FabricRun, Trace), TraceError> {
    if !(1..=MAX_TRACE_EVENTS).contains(&topts.max_events) {
        return Err(TraceError::BadBudget(topts.max_events));
    }
    let n = prog.width as usize * prog.height as usize;
    if prog.pes.len() != n || prog.routes.len() != n {
        return Err(FabricError::InvalidProgram(format!(
            "a {}x{} program needs one route list and one PE program per PE",
            prog.width, prog.height
        ))
        .into());
    }
    let rec = Box::new(Recorder::new(prog, topts.max_events));
    if rec.overflowed() {
        return Err(TraceError::Budget {
            budget: topts.max_events,
        });
    }
    let (run, rec) = match run_recorded(spec, prog, opts, Some(rec)) {
        Err(FabricError::TooLarge(m)) if m == BUDGET_EXCEEDED => {
            return Err(TraceError::Budget {
                budget: topts.max_events,
            })
        }
        r => r?,
    };
    let rec = rec.expect("the engine hands the recorder back");
    let trace = rec.finish(prog, run.span)?;
    Ok((run, trace))
}

/// The open spans of a sampled PE and its finished spans.
#[derive(Default)]
struct PeRec {
    task: Option<(u16, u64)>,
    op: Option<(u32, SpanKind, u64)>,
    block: Option<(Wait, u64)>,
    spans: Vec<PeSpan>,
}

/// The recorder the engine fills (see the module doc).
pub(crate) struct Recorder {
    width: u32,
    height: u32,
    budget: u64,
    stride: u32,
    /// Even PE (0, 0) alone did not fit the budget.
    overflow: bool,
    /// Tasks per PE, for the metadata events naming its tracks.
    tasks: Vec<u16>,
    pes: HashMap<u32, PeRec>,
    links: HashMap<u32, Vec<LinkInterval>>,
    link_wavelets: Vec<u64>,
    queues: Vec<QueueInfo>,
    queue_peak: Vec<u32>,
    /// Finished PE spans plus link intervals kept.
    kept: u64,
    /// Metadata events of the sampled PEs.
    pe_meta: u64,
}

/// Metadata events per PE track: process name, sort index and labels, plus
/// one thread name per task.
const PE_META: u64 = 3;
/// Metadata events per link track: thread name and sort index.
const LINK_META: u64 = 2;
/// The "links" process: name and sort index.
const LINKS_META: u64 = 2;

impl Recorder {
    fn new(prog: &FabricProgram, budget: u64) -> Recorder {
        let n = prog.width as usize * prog.height as usize;
        let mut r = Recorder {
            width: prog.width,
            height: prog.height,
            budget,
            stride: 1,
            overflow: false,
            tasks: prog.pes.iter().map(|p| p.tasks.len() as u16).collect(),
            pes: HashMap::new(),
            links: HashMap::new(),
            link_wavelets: vec![0; n * 4],
            queues: Vec::new(),
            queue_peak: Vec::new(),
            kept: 0,
            pe_meta: 0,
        };
        r.pe_meta = r.meta_of_sampled_pes();
        r.fit();
        r
    }

    /// Even PE (0, 0)'s track alone exceeds the budget.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }

    pub(crate) fn bind_queues(&mut self, queues: Vec<QueueInfo>) {
        self.queue_peak = vec![0; queues.len()];
        self.queues = queues;
    }

    fn sampled(&self, pe: u32) -> bool {
        let (x, y) = (pe % self.width, pe / self.width);
        !self.overflow && x.is_multiple_of(self.stride) && y.is_multiple_of(self.stride)
    }

    fn meta_of_sampled_pes(&self) -> u64 {
        let k = self.stride as usize;
        let mut m = 0;
        for y in (0..self.height as usize).step_by(k) {
            for x in (0..self.width as usize).step_by(k) {
                let t = self.tasks[y * self.width as usize + x] as u64;
                if t > 0 {
                    m += PE_META + t;
                }
            }
        }
        m
    }

    fn total(&self) -> u64 {
        self.kept + self.pe_meta + LINK_META * self.links.len() as u64 + LINKS_META
    }

    /// Doubles the stride until what is kept fits the budget.
    fn fit(&mut self) {
        while !self.overflow && self.total() > self.budget {
            if self.stride >= self.width.max(self.height) {
                self.overflow = true;
                self.pes.clear();
                self.links.clear();
                self.kept = 0;
                return;
            }
            self.stride *= 2;
            let (w, k) = (self.width, self.stride);
            let keep = |pe: u32| (pe % w).is_multiple_of(k) && (pe / w).is_multiple_of(k);
            self.pes.retain(|pe, _| keep(*pe));
            self.links.retain(|l, _| keep(*l / 4));
            self.kept = self.pes.values().map(|p| p.spans.len() as u64).sum::<u64>()
                + self.links.values().map(|l| l.len() as u64).sum::<u64>();
            self.pe_meta = self.meta_of_sampled_pes();
        }
    }

    fn push_span(&mut self, pe: u32, span: PeSpan) {
        if let Some(p) = self.pes.get_mut(&pe) {
            p.spans.push(span);
            self.kept += 1;
            self.fit();
        }
    }

    fn pe(&mut self, pe: u32) -> Option<&mut PeRec> {
        if self.sampled(pe) {
            Some(self.pes.entry(pe).or_default())
        } else {
            None
        }
    }

    pub(crate) fn task_begin(&mut self, pe: u32, t: u64, task: u16) {
        if let Some(p) = self.pe(pe) {
            p.task = Some((task, t));
        }
    }

    /// Closes the open operation (and any wait in it) at `t`.
    fn close_op(&mut self, pe: u32, t: u64) {
        let Some(p) = self.pe(pe) else { return };
        let task = p.task.map_or(0, |(i, _)| i);
        let block = p.block.take();
        let op = p.op.take();
        if let Some((why, start)) = block {
            if t > start {
                self.push_span(pe, span(task, SpanKind::Blocked(why), start, t));
            }
        }
        if let Some((_, kind, start)) = op {
            self.push_span(pe, span(task, kind, start, t));
        }
    }

    pub(crate) fn task_end(&mut self, pe: u32, t: u64) {
        self.close_op(pe, t);
        let Some(p) = self.pe(pe) else { return };
        if let Some((task, start)) = p.task.take() {
            self.push_span(pe, span(task, SpanKind::Task, start, t));
        }
    }

    /// The compute engine is at operation `index` of its task at `t`: either
    /// a new operation begins (closing the last one) or a blocked one retries.
    pub(crate) fn op(&mut self, pe: u32, t: u64, index: u32, op: &Op) {
        let Some(p) = self.pe(pe) else { return };
        if p.op.is_some_and(|(i, _, _)| i == index) {
            // A retry: a wait ends here (a wait that resumes at once is
            // joined back up by `blocked`).
            if let Some((why, start)) = p.block.take() {
                let task = p.task.map_or(0, |(i, _)| i);
                if t > start {
                    self.push_span(pe, span(task, SpanKind::Blocked(why), start, t));
                }
            }
            return;
        }
        self.close_op(pe, t);
        let kind = match *op {
            Op::Compute { .. } => SpanKind::Compute,
            Op::NextTask => SpanKind::TaskSwitch,
            Op::Send {
                colour, wavelets, ..
            } => SpanKind::Send { colour, wavelets },
            Op::Recv {
                colour,
                wavelets,
                combine,
                forward,
                ..
            } => SpanKind::Recv {
                colour,
                wavelets,
                combine,
                forward,
            },
            Op::Activate(_) => return,
        };
        if let Some(p) = self.pe(pe) {
            p.op = Some((index, kind, t));
        }
    }

    /// The PE's operation waits from `t`. A wait that ended at `t` on the same
    /// cause (the PE woke and found it still blocked) goes on.
    pub(crate) fn blocked(&mut self, pe: u32, t: u64, why: Wait) {
        let Some(p) = self.pe(pe) else { return };
        if p.block.is_some() {
            return;
        }
        let resumed = match p.spans.last() {
            Some(s) if s.end == t && s.kind == SpanKind::Blocked(why) => Some(s.start),
            _ => None,
        };
        match resumed {
            Some(start) => {
                p.spans.pop();
                p.block = Some((why, start));
                self.kept -= 1;
            }
            None => p.block = Some((why, t)),
        }
    }

    /// The link leaving `pe` toward `dir` carries a wavelet of `colour` in cycle `t`.
    pub(crate) fn link(&mut self, pe: u32, dir: Dir, t: u64, colour: Colour) {
        let id = pe * 4 + dir as u32;
        self.link_wavelets[id as usize] += 1;
        if !self.sampled(pe) {
            return;
        }
        let track = self.links.entry(id).or_default();
        match track.last_mut() {
            Some(last) if last.end == t => {
                last.end = t + 1;
                if last.colour != Some(colour) {
                    last.colour = None;
                }
            }
            _ => {
                track.push(LinkInterval {
                    start: t,
                    end: t + 1,
                    colour: Some(colour),
                });
                self.kept += 1;
                self.fit();
            }
        }
    }

    /// Queue `q` holds `held` wavelets.
    pub(crate) fn occupancy(&mut self, q: u32, held: u32) {
        if let Some(p) = self.queue_peak.get_mut(q as usize) {
            *p = (*p).max(held);
        }
    }

    fn finish(self, prog: &FabricProgram, span: u64) -> Result<Trace, TraceError> {
        if self.overflow {
            return Err(TraceError::Budget {
                budget: self.budget,
            });
        }
        let w = self.width;
        let events = self.total();
        // Every sampled PE with tasks has a track (the metadata counted for
        // it), even one whose tasks never ran.
        let mut recs = self.pes;
        let k = self.stride as usize;
        let mut pes = Vec::new();
        for y in (0..self.height).step_by(k) {
            for x in (0..w).step_by(k) {
                let pe = y * w + x;
                let tasks: Vec<&'static str> =
                    prog.pes[pe as usize].tasks.iter().map(|t| t.name).collect();
                if tasks.is_empty() {
                    continue;
                }
                let mut spans = recs.remove(&pe).map(|p| p.spans).unwrap_or_default();
                spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end), s.kind.depth()));
                pes.push(PeTrack { x, y, tasks, spans });
            }
        }
        let mut links: Vec<LinkTrack> = self
            .links
            .into_iter()
            .map(|(id, intervals)| LinkTrack {
                x: (id / 4) % w,
                y: (id / 4) / w,
                dir: Dir::ALL[id as usize % 4],
                intervals,
            })
            .collect();
        links.sort_by_key(|l| (l.y, l.x, l.dir as u8));
        let queues = self
            .queues
            .iter()
            .zip(&self.queue_peak)
            .map(|(q, &peak)| QueuePeak {
                x: q.pe % w,
                y: q.pe / w,
                colour: q.colour,
                role: q.role,
                capacity: q.capacity,
                peak,
            })
            .collect();
        Ok(Trace {
            width: self.width,
            height: self.height,
            stride: self.stride,
            max_events: self.budget,
            events,
            span,
            pes,
            links,
            link_wavelets: self.link_wavelets,
            queues,
        })
    }
}

fn span(task: u16, kind: SpanKind, start: u64, end: u64) -> PeSpan {
    PeSpan {
        task,
        kind,
        start,
        end,
    }
}
