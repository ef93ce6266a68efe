//! A team of threads that works through one decode step together.
//!
//! A decode token is some 150 small matrix-vector products, each a few hundred
//! microseconds or less. Handing each to a thread pool wakes its threads for
//! every product, and on a virtual machine a wake-up costs tens of
//! microseconds. The team instead starts its threads once per step and lays
//! the step out as a list of operations, each cut into chunks (rows of a
//! product, heads of attention). Threads claim chunks in order from one
//! counter; a chunk of operation k starts once every chunk of the operations
//! before it is done (a count of finished chunks, spun on). A thread the
//! operating system takes away holds up the others only while it holds a
//! claimed chunk: the rest of the work goes to whoever is running, so a loaded
//! machine degrades to one thread's speed rather than to a barrier's.
//!
//! Invariants: a chunk writes only its own part of a [`Shared`] buffer (or its
//! thread's own scratch) and reads only what the operations before it wrote.
//! Each value is computed by exactly the code the single-threaded path runs,
//! so the result does not depend on the number of threads or who ran what.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Spins before a waiting thread starts yielding its core (a loaded machine).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// Runs every chunk of every operation (`chunks[k]` chunks for operation k),
/// operation by operation, on `n` threads (the caller is thread 0):
/// `f(tid, k, c)` runs chunk c of operation k on thread `tid`. Returns when all
/// are done, with the time the caller spent waiting for other threads' chunks.
pub fn run_ops(n: usize, chunks: &[usize], f: impl Fn(usize, usize, usize) + Sync) -> Duration {
    let total: usize = chunks.iter().sum();
    let (claimed, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let work = |tid: usize| {
        // This thread's operation k, whose chunks start at index `start`.
        let (mut k, mut start) = (0, 0);
        let mut waited = Duration::ZERO;
        loop {
            let i = claimed.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return waited;
            }
            while start + chunks[k] <= i {
                start += chunks[k];
                k += 1;
            }
            // Every chunk before operation k's first is done (none of k's
            // can finish before that, so the count is exactly theirs).
            if done.load(Ordering::Acquire) < start {
                let t0 = Instant::now();
                let mut spins = 0u32;
                while done.load(Ordering::Acquire) < start {
                    if spins < SPINS_BEFORE_YIELD {
                        spins += 1;
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                waited += t0.elapsed();
            }
            f(tid, k, i - start);
            done.fetch_add(1, Ordering::Release);
        }
    };
    if n <= 1 {
        return work(0);
    }
    std::thread::scope(|s| {
        for tid in 1..n {
            let work = &work;
            s.spawn(move || work(tid));
        }
        work(0)
    })
}

/// A buffer the team's threads share: each writes a disjoint part of it
/// within an operation (the module's invariant; the `unsafe` accessors' contract).
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the pointer is only dereferenced under the module's invariant:
// disjoint writes within an operation, reads of nothing being written.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub fn new(buf: &mut [f32]) -> Shared {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// The whole buffer, read-only.
    ///
    /// # Safety
    /// No thread writes any of it while the slice lives, and the buffer outlives it.
    pub unsafe fn all(&self) -> &[f32] {
        std::slice::from_raw_parts(self.ptr, self.len)
    }

    /// Elements `r`, read-only.
    ///
    /// # Safety
    /// No thread writes any of `r` while the slice lives, and the buffer outlives it.
    pub unsafe fn get(&self, r: Range<usize>) -> &[f32] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "get {r:?} of {}",
            self.len
        );
        std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start)
    }

    /// Elements `r`, to write.
    ///
    /// # Safety
    /// No other thread reads or writes any of `r` while the slice lives, and
    /// the buffer outlives it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, r: Range<usize>) -> &mut [f32] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "part {r:?} of {}",
            self.len
        );
        std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start)
    }
}

/// Part `c` of `parts` near-equal contiguous parts of `total` items (the
/// first `total % parts` parts one item longer).
pub fn share(total: usize, c: usize, parts: usize) -> Range<usize> {
    let (base, extra) = (total / parts, total % parts);
    let start = c * base + c.min(extra);
    start..start + base + usize::from(c < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for total in 0..40 {
            for parts in 1..9 {
                let r: Vec<Range<usize>> = (0..parts).map(|c| share(total, c, parts)).collect();
                let items: Vec<usize> = r.iter().cloned().flatten().collect();
                assert_eq!(items, (0..total).collect::<Vec<_>>(), "{total} in {parts}");
                assert!(r
                    .iter()
                    .all(|p| p.len() == total / parts || p.len() == total / parts + 1));
            }
        }
    }

    /// Each operation's chunks read every chunk of the operation before
    /// (a running sum along a buffer): run on 1 to 4 threads, the result is
    /// the sequential one, and every chunk ran exactly once.
    #[test]
    fn operations_run_in_order_and_every_chunk_once() {
        let ops = [3usize, 1, 7, 2, 5, 4];
        let width = 7;
        let want = {
            let mut rows = vec![vec![0.0f32; width]; ops.len() + 1];
            rows[0] = (0..width).map(|i| i as f32 + 1.0).collect();
            for k in 0..ops.len() {
                let prev: f32 = rows[k].iter().sum();
                for (c, v) in rows[k + 1][..ops[k]].iter_mut().enumerate() {
                    *v = prev + c as f32;
                }
            }
            rows
        };
        for n in 1..=4 {
            let mut buf = vec![0.0f32; (ops.len() + 1) * width];
            buf[..width].copy_from_slice(&want[0]);
            let shared = Shared::new(&mut buf);
            let runs = std::sync::Mutex::new(Vec::new());
            run_ops(n, &ops, |_, k, c| {
                // SAFETY: chunk c of operation k writes only its own element of
                // row k + 1 and reads row k, finished before it started.
                let prev: f32 = unsafe { shared.get(k * width..(k + 1) * width).iter().sum() };
                unsafe {
                    shared.part((k + 1) * width + c..(k + 1) * width + c + 1)[0] = prev + c as f32
                };
                runs.lock().unwrap().push((k, c));
            });
            let got: Vec<Vec<f32>> = buf.chunks(width).map(<[f32]>::to_vec).collect();
            assert_eq!(got, want, "{n} threads");
            let mut runs = runs.into_inner().unwrap();
            runs.sort();
            let every: Vec<(usize, usize)> = (0..ops.len())
                .flat_map(|k| (0..ops[k]).map(move |c| (k, c)))
                .collect();
            assert_eq!(runs, every, "{n} threads");
        }
    }
}
