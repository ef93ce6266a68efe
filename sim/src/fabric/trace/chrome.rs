//! A [`Trace`] as Chrome trace-event JSON, the format ui.perfetto.dev and
//! chrome://tracing open: `{"traceEvents": [...], "displayTimeUnit": "ms",
//! "otherData": {...}}`, written event by event (never one string in memory).
//!
//! - one process per sampled PE, named `PE (x,y)`, with one thread track per
//!   task; its `X` (complete) events are the task runs, the operations inside
//!   them and the waits inside those (they nest by time on the track);
//! - one process `links` with one thread track per sampled directed link
//!   that carried wavelets, named `(x,y) -> E (n wavelets)` with the link's
//!   total; its `X` events are the link's busy intervals, named by colour;
//! - `M` (metadata) events name the processes and threads and order them.
//!
//! `ts` and `dur` are cycles. The viewers read them as microseconds, so one
//! microsecond on their time axis is one cycle (`otherData.time_unit` says so).

use super::{LinkTrack, PeSpan, PeTrack, QueueRole, SpanKind, Trace, Wait};
use crate::fabric::engine::{Combine, Dir};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::io::{self, Write};

/// One trace event; `args` is whatever the event carries.
#[derive(Serialize)]
struct Event<'a, A: Serialize> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cat: &'static str,
    ph: &'static str,
    pid: u64,
    tid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<u64>,
    args: A,
}

/// The arguments of a PE span or a link interval.
#[derive(Serialize)]
struct SpanArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    colour: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wavelets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_colour: Option<u8>,
}

/// Short port names for track names.
pub fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::North => "N",
        Dir::South => "S",
        Dir::East => "E",
        Dir::West => "W",
        Dir::Ramp => "ramp",
    }
}

/// What a queue is, in words.
pub fn role_name(r: QueueRole) -> String {
    match r {
        QueueRole::Buffer(d) => format!("router buffer from {}", dir_name(d)),
        QueueRole::Output => "output queue".into(),
        QueueRole::Input => "input queue".into(),
    }
}

struct Writer<W: Write> {
    out: W,
    first: bool,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// Closes the event list, writes `otherData` and flushes; returns the
    /// number of trace events written.
    fn finish(mut self, other: &Value) -> io::Result<u64> {
        self.out
            .write_all(b"\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":")?;
        serde_json::to_writer(&mut self.out, other)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()?;
        Ok(self.written)
    }

    fn event<A: Serialize>(&mut self, e: &Event<A>) -> io::Result<()> {
        self.out
            .write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, e)?;
        self.written += 1;
        Ok(())
    }

    fn meta(&mut self, name: &str, pid: u64, tid: u64, args: Value) -> io::Result<()> {
        self.event(&Event {
            name,
            cat: "",
            ph: "M",
            pid,
            tid,
            ts: None,
            dur: None,
            args,
        })
    }
}

/// Writes `trace` to `out` (buffer it: it is written in many small pieces);
/// `other` adds to `otherData` (the program, its options, its figures).
/// Returns the number of trace events written, which is `trace.events`.
pub fn write_chrome<W: Write>(trace: &Trace, other: Map<String, Value>, out: W) -> io::Result<u64> {
    let mut w = Writer {
        out,
        first: true,
        written: 0,
    };
    w.out.write_all(b"{\"traceEvents\":[")?;
    let n = trace.width as u64 * trace.height as u64;
    let links_pid = n + 1;
    let part = Placed {
        trace,
        label: "",
        x0: 0,
        y0: 0,
        t0: 0,
        part: 0,
    };
    write_parts(&mut w, &[part], trace.width, n, links_pid)?;
    w.finish(&other_data(trace, other))
}

/// Every part's PE tracks, the `links` process, then every part's link
/// tracks, on a grid `width` PEs wide with `n` PEs in all.
fn write_parts<W: Write>(
    w: &mut Writer<W>,
    parts: &[Placed],
    width: u32,
    n: u64,
    links_pid: u64,
) -> io::Result<()> {
    let mut name = String::new();
    for part in parts {
        let peaks = part.trace.heat().queue_peak;
        for pe in &part.trace.pes {
            write_pe(
                w,
                part,
                width,
                pe,
                peaks[pe_index(part.trace.width, pe.x, pe.y)],
                &mut name,
            )?;
        }
    }
    w.meta("process_name", links_pid, 0, json!({ "name": "links" }))?;
    w.meta(
        "process_sort_index",
        links_pid,
        0,
        json!({ "sort_index": n }),
    )?;
    for part in parts {
        for link in &part.trace.links {
            write_link(w, part, width, link, links_pid)?;
        }
    }
    Ok(())
}

/// A traced run placed on a larger grid and timeline (a region of a wafer,
/// one program of a token): its PE `(x, y)` is drawn as `(x0 + x, y0 + y)`
/// and its cycle `t` at `t0 + t`.
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    pub trace: &'a Trace,
    /// Prefixes its thread names (which run of the token the task is of).
    pub label: &'a str,
    pub x0: u32,
    pub y0: u32,
    pub t0: u64,
    /// The part's number: tasks of different parts on one PE get their own
    /// thread tracks.
    pub part: u16,
}

/// A named slice of the overview track (a layer of a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub start: u64,
    pub dur: u64,
}

/// Trace events [`write_placed`] adds for `phases`: a slice each and three
/// metadata events (the track's process name and order, its thread's name).
pub fn phase_events(phases: &[Phase]) -> u64 {
    phases.len() as u64 + 3
}

/// Writes several traced runs on one `width x height` grid (each run's PE
/// and link tracks moved by its [`Placed`] offsets), then an overview track
/// `token` with one slice per phase, then `{"otherData": other}` (the caller
/// says what the runs are; [`merged_other`] gives the grid's figures).
/// Returns the number of trace events written: the parts' `events` (their
/// `links` process metadata written once) plus [`phase_events`].
pub fn write_placed<W: Write>(
    parts: &[Placed],
    width: u32,
    height: u32,
    phases: &[Phase],
    other: Map<String, Value>,
    out: W,
) -> io::Result<u64> {
    let mut w = Writer {
        out,
        first: true,
        written: 0,
    };
    w.out.write_all(b"{\"traceEvents\":[")?;
    let n = width as u64 * height as u64;
    let (links_pid, token_pid) = (n + 1, n + 2);
    w.meta("process_name", token_pid, 0, json!({ "name": "token" }))?;
    w.meta(
        "process_sort_index",
        token_pid,
        0,
        json!({ "sort_index": -1 }),
    )?;
    w.meta(
        "thread_name",
        token_pid,
        1,
        json!({ "name": "layers and LM head, one after another" }),
    )?;
    for p in phases {
        w.event(&Event {
            name: &p.name,
            cat: "phase",
            ph: "X",
            pid: token_pid,
            tid: 1,
            ts: Some(p.start),
            dur: Some(p.dur),
            args: SpanArgs {
                colour: None,
                wavelets: None,
                forward_colour: None,
            },
        })?;
    }
    write_parts(&mut w, parts, width, n, links_pid)?;
    w.finish(&Value::Object(other))
}

/// `otherData`'s units and figures for a merged trace ([`super::merge`]):
/// like a single run's, over the whole grid.
pub fn merged_other(merged: &Trace) -> Map<String, Value> {
    match other_data(merged, Map::new()) {
        Value::Object(mut o) => {
            o.insert(
                "sampling".into(),
                json!("each program's tracks are sampled on their own (see programs[].sample_stride); link and queue aggregates cover every PE"),
            );
            o.remove("events");
            o
        }
        _ => Map::new(),
    }
}

fn pe_index(width: u32, x: u32, y: u32) -> usize {
    y as usize * width as usize + x as usize
}

fn write_pe<W: Write>(
    w: &mut Writer<W>,
    part: &Placed,
    width: u32,
    pe: &PeTrack,
    peak: u32,
    name: &mut String,
) -> io::Result<()> {
    let (x, y) = (part.x0 + pe.x, part.y0 + pe.y);
    let index = pe_index(width, x, y) as u64;
    let pid = index + 1;
    let label = format!("PE ({x},{y})");
    w.meta("process_name", pid, 0, json!({ "name": label }))?;
    w.meta("process_sort_index", pid, 0, json!({ "sort_index": index }))?;
    w.meta(
        "process_labels",
        pid,
        0,
        json!({ "labels": format!("peak queue {peak} wavelets") }),
    )?;
    let tid = |task: u64| ((part.part as u64) << 16) + task + 1;
    for (i, task) in pe.tasks.iter().enumerate() {
        let name = match part.label {
            "" => format!("task {i}: {task}"),
            l => format!("{l}, task {i}: {task}"),
        };
        w.meta("thread_name", pid, tid(i as u64), json!({ "name": name }))?;
    }
    for s in &pe.spans {
        let (cat, args) = span_name(s, &pe.tasks, name);
        w.event(&Event {
            name,
            cat,
            ph: "X",
            pid,
            tid: tid(s.task as u64),
            ts: Some(part.t0 + s.start),
            dur: Some(s.end - s.start),
            args,
        })?;
    }
    Ok(())
}

/// Fills `name` with the span's name; returns its category and arguments.
fn span_name(s: &PeSpan, tasks: &[&str], name: &mut String) -> (&'static str, SpanArgs) {
    name.clear();
    let mut args = SpanArgs {
        colour: None,
        wavelets: None,
        forward_colour: None,
    };
    let cat = match s.kind {
        SpanKind::Task => {
            name.push_str(tasks.get(s.task as usize).copied().unwrap_or("task"));
            "task"
        }
        SpanKind::Compute => {
            name.push_str("compute");
            "compute"
        }
        SpanKind::TaskSwitch => {
            name.push_str("task switch");
            "task"
        }
        SpanKind::Send { colour, wavelets } => {
            *name = format!("send {wavelets} on c{}", colour.0);
            args.colour = Some(colour.0);
            args.wavelets = Some(wavelets as u64);
            "send"
        }
        SpanKind::Recv {
            colour,
            wavelets,
            combine,
            forward,
        } => {
            let how = match combine {
                Combine::Add => "add",
                Combine::Store => "store",
            };
            *name = format!("recv+{how} {wavelets} on c{}", colour.0);
            if let Some(f) = forward {
                name.push_str(&format!(", forward on c{}", f.0));
            }
            args.colour = Some(colour.0);
            args.wavelets = Some(wavelets as u64);
            args.forward_colour = forward.map(|f| f.0);
            "recv"
        }
        SpanKind::Blocked(why) => {
            let c = match why {
                Wait::Slot(c) => {
                    *name = format!("wait: queue slot on c{}", c.0);
                    c
                }
                Wait::Wavelet(c) => {
                    *name = format!("wait: wavelet on c{}", c.0);
                    c
                }
            };
            args.colour = Some(c.0);
            "wait"
        }
    };
    (cat, args)
}

fn write_link<W: Write>(
    w: &mut Writer<W>,
    part: &Placed,
    width: u32,
    link: &LinkTrack,
    pid: u64,
) -> io::Result<()> {
    let (x, y) = (part.x0 + link.x, part.y0 + link.y);
    let tid = ((part.part as u64) << 40) + pe_index(width, x, y) as u64 * 4 + link.dir as u64 + 1;
    let busy = part.trace.link_busy(link.x, link.y, link.dir);
    let label = match part.label {
        "" => format!("({x},{y}) -> {} ({busy} wavelets)", dir_name(link.dir)),
        l => format!("({x},{y}) -> {} ({busy} wavelets, {l})", dir_name(link.dir)),
    };
    w.meta("thread_name", pid, tid, json!({ "name": label }))?;
    w.meta("thread_sort_index", pid, tid, json!({ "sort_index": tid }))?;
    for i in &link.intervals {
        let name = match i.colour {
            Some(c) => format!("c{}", c.0),
            None => "mixed colours".to_string(),
        };
        w.event(&Event {
            name: &name,
            cat: "link",
            ph: "X",
            pid,
            tid,
            ts: Some(part.t0 + i.start),
            dur: Some(i.wavelets()),
            args: SpanArgs {
                colour: i.colour.map(|c| c.0),
                wavelets: Some(i.wavelets()),
                forward_colour: None,
            },
        })?;
    }
    Ok(())
}

/// `otherData`: the units, the sampling and the run's aggregates, then `other`.
fn other_data(trace: &Trace, other: Map<String, Value>) -> Value {
    let busiest = trace
        .busiest_link()
        .map(|b| json!({ "x": b.x, "y": b.y, "dir": dir_name(b.dir), "wavelets": b.wavelets }));
    let peak = trace.peak_queue().map(|q| {
        json!({ "x": q.x, "y": q.y, "colour": q.colour.0, "queue": role_name(q.role),
                "capacity": q.capacity, "peak": q.peak })
    });
    let mut o = Map::new();
    o.insert("time_unit".into(), json!("cycle"));
    o.insert(
        "time_note".into(),
        json!("ts and dur are cycles; viewers read them as microseconds, so 1 us on the time axis = 1 cycle"),
    );
    o.insert("width".into(), json!(trace.width));
    o.insert("height".into(), json!(trace.height));
    o.insert("sample_stride".into(), json!(trace.stride));
    o.insert(
        "sampling".into(),
        json!(format!(
            "tracks of the PEs at (x, y) with x % {k} == 0 and y % {k} == 0 and of their outgoing links; the stride is the smallest power of two that fits the budget; link and queue aggregates cover every PE",
            k = trace.stride
        )),
    );
    o.insert("max_events".into(), json!(trace.max_events));
    o.insert("events".into(), json!(trace.events));
    o.insert("span_cycles".into(), json!(trace.span));
    o.insert(
        "wavelet_hops".into(),
        json!(trace.link_wavelets.iter().sum::<u64>()),
    );
    o.insert("busiest_link".into(), busiest.unwrap_or(Value::Null));
    o.insert("peak_queue".into(), peak.unwrap_or(Value::Null));
    o.extend(other);
    Value::Object(o)
}
