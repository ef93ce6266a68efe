//! Mutation fuzzing of every parser of outside input, on stable Rust.
//!
//! libFuzzer (cargo-fuzz) needs a nightly compiler, so this crate carries its own
//! small engine: a seeded (reproducible) loop that takes an input from a corpus of
//! valid files, applies a stack of random mutations (bit flips, byte and integer
//! overwrites with boundary values, insertions, deletions, copies, splices with
//! another corpus entry, dictionary tokens, and decimal numbers in text replaced
//! by huge/zero/negative/non-finite ones), and runs the target under
//! `catch_unwind`. An input the target accepts may join the corpus, so later
//! mutations start from deeper valid states.
//!
//! Three failure kinds are caught:
//! - a panic (including an arithmetic overflow: fuzz runs use the `fuzz` profile,
//!   which turns overflow checks on) is recorded with its message and input;
//! - an allocation larger than [`ALLOC_CAP`] (the global allocator here checks
//!   every request) means a size came from an unchecked number in the input: the
//!   input is saved and the process aborts;
//! - one execution running longer than the session's timeout: a watchdog thread
//!   saves the input and aborts.
//!
//! Crashing inputs are written to `fuzz/crashes/`; the targets are in [`targets`].

pub mod mutate;
pub mod seeds;
pub mod targets;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The largest single allocation a target may make while fuzzing. Inputs are at
/// most a few hundred KB, so anything near this size was sized by a number read
/// from the input rather than by the input's length.
pub const ALLOC_CAP: usize = 256 << 20;

/// The global allocator of every binary and test linking this crate: the system
/// allocator, but a request above [`ALLOC_CAP`] during an execution saves the
/// input and aborts.
pub struct CappedAlloc;

static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static TARGET_NAME: Mutex<&'static str> = Mutex::new("");
static DYING: AtomicBool = AtomicBool::new(false);
/// Start of the running execution in ms since [`EPOCH`] plus one; 0 when idle.
static EXEC_START_MS: AtomicU64 = AtomicU64::new(0);
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(u64::MAX);
static EPOCH: Mutex<Option<Instant>> = Mutex::new(None);

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

// SAFETY: every call is forwarded to `System` unchanged; the only addition is a
// size check that may abort the process.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[inline]
fn check_size(size: usize) {
    if size > CAP.load(Ordering::Relaxed) {
        die(
            &format!("allocation of {size} bytes (cap {ALLOC_CAP})"),
            "alloc",
        );
    }
}

/// Saves the running input and aborts (used by the allocator and the watchdog,
/// where unwinding is impossible or would not stop the execution).
fn die(what: &str, kind: &str) {
    if DYING.swap(true, Ordering::SeqCst) {
        return;
    }
    CAP.store(usize::MAX, Ordering::SeqCst);
    let ptr = INPUT_PTR.load(Ordering::SeqCst);
    let len = INPUT_LEN.load(Ordering::SeqCst);
    let name = *TARGET_NAME.lock().unwrap_or_else(|e| e.into_inner());
    if !ptr.is_null() {
        // SAFETY: the pointer and length describe the input of the running
        // execution, which stays alive until the execution returns.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        let path = save_crash(name, kind, input);
        eprintln!(
            "wafer-fuzz: {name}: {what}; input saved to {}\n{}",
            path.display(),
            std::backtrace::Backtrace::force_capture()
        );
    } else {
        eprintln!("wafer-fuzz: {name}: {what}");
    }
    std::process::abort();
}

fn now_ms() -> u64 {
    let mut epoch = EPOCH.lock().unwrap_or_else(|e| e.into_inner());
    epoch.get_or_insert_with(Instant::now).elapsed().as_millis() as u64
}

/// Where crashing inputs go: `fuzz/crashes/`.
pub fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes")
}

fn save_crash(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = crash_dir();
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{target}-{kind}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// One parser under test.
pub struct Target {
    pub name: &'static str,
    /// Mutated inputs are cut to this many bytes.
    pub max_len: usize,
    /// Tokens the mutator may insert (field names, keywords).
    pub dict: &'static [&'static str],
    /// Whether inputs are text (then decimal numbers in them are mutated too).
    pub text: bool,
    /// Runs the parser (and whatever consumes its result) on one input, with a
    /// private scratch directory for targets that read files. Returns whether
    /// the input was accepted; errors are fine, a panic is a crash.
    pub run: fn(&Path, &[u8]) -> bool,
}

/// How a session ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub executions: u64,
    /// Inputs the target accepted.
    pub accepted: u64,
    pub corpus_start: usize,
    pub corpus_end: usize,
    pub wall: Duration,
    /// The slowest single execution.
    pub slowest: Duration,
    pub crashes: Vec<Crash>,
}

/// A panic, with the message and where the input was saved.
#[derive(Debug, Clone)]
pub struct Crash {
    pub message: String,
    pub input: PathBuf,
}

/// What one session does.
#[derive(Debug, Clone)]
pub struct Session {
    pub iterations: u64,
    pub seed: u64,
    /// Stop early after this long (the execution count is reported).
    pub max_time: Option<Duration>,
    /// One execution longer than this aborts the process.
    pub exec_timeout: Duration,
    /// Print progress to stderr every this many executions (0: never).
    pub progress_every: u64,
}

static PANIC_MSG: Mutex<String> = Mutex::new(String::new());
static HOOK: Once = Once::new();

fn install_hooks() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            // A panic outside an execution is the harness's own: print it.
            if EXEC_START_MS.load(Ordering::SeqCst) == 0 {
                eprintln!("wafer-fuzz: {info}");
            }
            let mut m = PANIC_MSG.lock().unwrap_or_else(|e| e.into_inner());
            *m = info.to_string();
        }));
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(200));
            let start = EXEC_START_MS.load(Ordering::SeqCst);
            if start != 0 {
                let ran = now_ms().saturating_sub(start - 1);
                if ran > TIMEOUT_MS.load(Ordering::SeqCst) {
                    die(&format!("one execution ran for over {ran} ms"), "timeout");
                }
            }
        });
    });
}

/// The seed corpus of `target`: the files in `fuzz/corpus/<name>/`.
pub fn load_corpus(target: &Target) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Fuzzes `target` from `corpus` for one session. Panics are caught and
/// reported; an oversized allocation or a hung execution aborts the process.
/// Sessions must not run concurrently in one process.
pub fn fuzz(target: &Target, corpus: Vec<Vec<u8>>, session: &Session) -> Report {
    assert!(!corpus.is_empty(), "{}: empty seed corpus", target.name);
    install_hooks();
    *TARGET_NAME.lock().unwrap_or_else(|e| e.into_inner()) = target.name;
    TIMEOUT_MS.store(session.exec_timeout.as_millis() as u64, Ordering::SeqCst);
    // Targets that read files rewrite one file per execution: keep it in memory
    // (tmpfs) where there is one, or the disk's write-back dominates the run.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a scratch directory");
    let mut rng = ChaCha8Rng::seed_from_u64(session.seed);
    let n_seeds = corpus.len();
    let mut corpus = corpus;
    const MAX_CORPUS: usize = 512;
    let started = Instant::now();
    let mut report = Report {
        target: target.name,
        executions: 0,
        accepted: 0,
        corpus_start: n_seeds,
        corpus_end: n_seeds,
        wall: Duration::ZERO,
        slowest: Duration::ZERO,
        crashes: Vec::new(),
    };
    let mut seen_messages = std::collections::HashSet::new();
    let mut input = Vec::with_capacity(target.max_len);
    for i in 0..session.iterations {
        if let Some(limit) = session.max_time {
            if i % 256 == 0 && started.elapsed() > limit {
                break;
            }
        }
        // The first pass runs every corpus entry unchanged.
        input.clear();
        if (i as usize) < n_seeds {
            input.extend_from_slice(&corpus[i as usize]);
        } else {
            let pick = rng.gen_range(0..corpus.len());
            input.extend_from_slice(&corpus[pick]);
            mutate::mutate(&mut rng, &mut input, &corpus, target);
        }

        INPUT_PTR.store(input.as_ptr() as *mut u8, Ordering::SeqCst);
        INPUT_LEN.store(input.len(), Ordering::SeqCst);
        EXEC_START_MS.store(now_ms() + 1, Ordering::SeqCst);
        CAP.store(ALLOC_CAP, Ordering::SeqCst);
        let t0 = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(scratch.path(), &input)));
        let took = t0.elapsed();
        CAP.store(usize::MAX, Ordering::SeqCst);
        EXEC_START_MS.store(0, Ordering::SeqCst);
        INPUT_PTR.store(std::ptr::null_mut(), Ordering::SeqCst);
        report.executions += 1;
        report.slowest = report.slowest.max(took);
        match result {
            Ok(true) => {
                report.accepted += 1;
                if i as usize >= n_seeds && rng.gen_ratio(1, 8) {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input.clone());
                    } else {
                        let slot = rng.gen_range(n_seeds..MAX_CORPUS);
                        corpus[slot] = input.clone();
                    }
                }
            }
            Ok(false) => {}
            Err(_) => {
                let message =
                    std::mem::take(&mut *PANIC_MSG.lock().unwrap_or_else(|e| e.into_inner()));
                let path = save_crash(target.name, "panic", &input);
                if seen_messages.insert(message.clone()) {
                    eprintln!(
                        "wafer-fuzz: {}: crash after {} executions: {message}\n  input: {}",
                        target.name,
                        report.executions,
                        path.display()
                    );
                    report.crashes.push(Crash {
                        message,
                        input: path,
                    });
                }
            }
        }
        if session.progress_every > 0 && report.executions.is_multiple_of(session.progress_every) {
            eprintln!(
                "wafer-fuzz: {}: {} executions, {} accepted, corpus {}, {:.0?}",
                target.name,
                report.executions,
                report.accepted,
                corpus.len(),
                started.elapsed()
            );
        }
    }
    report.wall = started.elapsed();
    report.corpus_end = corpus.len();
    report
}
