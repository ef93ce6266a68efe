//! Several sequences over one model (`generate --batch-prompts`): one set of
//! weights, one cache per sequence. An engine that can swap its per-sequence
//! state out ([`SequenceSwap`]) is wrapped in a [`Batch`], which keeps every
//! other sequence's state aside and swaps the chosen one in before it runs, so
//! B sequences cost B caches, not B copies of the weights. The generation loop
//! over a batch is [`crate::generate::generate_batch`].

use crate::config::ModelConfig;
use crate::engine::{Engine, StepReport};
use anyhow::{bail, Result};

/// The most sequences a batch runs.
pub const MAX_BATCH: usize = 256;

/// The most host memory the batch's KV caches may take together (f32 keys and
/// values of every layer at every position a sequence can reach).
pub const MAX_BATCH_KV_BYTES: u64 = 8 << 30;

/// An engine whose per-sequence state (its caches and position, and whatever
/// per-sequence accounting it keeps) can be exchanged with a saved one.
pub trait SequenceSwap: Engine {
    type Saved;

    /// The state of a sequence that has not started.
    fn empty_sequence(&self) -> Self::Saved;

    /// Exchanges the engine's current sequence state with `saved`.
    fn swap_sequence(&mut self, saved: &mut Self::Saved);

    /// Figures for the batch as a whole (e.g. the pipelined tokens/s of
    /// `sequences` users at a mean KV length of `kv_len`), if the engine has any.
    fn batch_report(&mut self, sequences: usize, kv_len: usize) -> Option<StepReport> {
        let _ = (sequences, kv_len);
        None
    }
}

/// What the batch generation loop runs on: `sequences()` sequences, one at a
/// time, each with its own state.
pub trait BatchEngine {
    fn sequences(&self) -> usize;

    /// Makes `seq` the engine's current sequence and returns the engine.
    fn select(&mut self, seq: usize) -> Result<&mut dyn Engine>;

    /// See [`SequenceSwap::batch_report`].
    fn batch_report(&mut self, kv_len: usize) -> Option<StepReport>;
}

/// `sequences` sequences over one engine: the current one's state lives in the
/// engine, every other one's in `saved`.
pub struct Batch<E: SequenceSwap> {
    engine: E,
    saved: Vec<Option<E::Saved>>,
    current: usize,
}

impl<E: SequenceSwap> Batch<E> {
    /// Refuses 0 sequences and more than [`MAX_BATCH`].
    pub fn new(engine: E, sequences: usize) -> Result<Batch<E>> {
        check_sequences(sequences)?;
        let saved = (0..sequences)
            .map(|i| (i != 0).then(|| engine.empty_sequence()))
            .collect();
        Ok(Batch {
            engine,
            saved,
            current: 0,
        })
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }
}

impl<E: SequenceSwap> BatchEngine for Batch<E> {
    fn sequences(&self) -> usize {
        self.saved.len()
    }

    fn select(&mut self, seq: usize) -> Result<&mut dyn Engine> {
        if seq >= self.saved.len() {
            bail!("sequence {seq} is not in the batch of {}", self.saved.len());
        }
        if seq != self.current {
            let mut state = self.saved[seq]
                .take()
                .expect("every sequence but the current one is saved");
            self.engine.swap_sequence(&mut state);
            self.saved[self.current] = Some(state);
            self.current = seq;
        }
        Ok(&mut self.engine)
    }

    fn batch_report(&mut self, kv_len: usize) -> Option<StepReport> {
        let n = self.saved.len();
        self.engine.batch_report(n, kv_len)
    }
}

fn check_sequences(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        bail!("a batch holds 1 to {MAX_BATCH} sequences, found {n}");
    }
    Ok(())
}

/// Host bytes of one sequence's f32 KV cache per position: keys and values of
/// every layer.
pub fn kv_bytes_per_position(config: &ModelConfig) -> u64 {
    2 * config.num_hidden_layers as u64 * config.kv_dim() as u64 * 4
}

/// Refuses a batch whose caches would take more than [`MAX_BATCH_KV_BYTES`] of
/// host memory when every sequence reaches `positions[i]` positions.
pub fn check_host_memory(config: &ModelConfig, positions: &[usize]) -> Result<()> {
    check_sequences(positions.len())?;
    let per = kv_bytes_per_position(config);
    let total: u64 = positions
        .iter()
        .map(|&p| (p as u64).saturating_mul(per))
        .fold(0u64, u64::saturating_add);
    if total > MAX_BATCH_KV_BYTES {
        bail!(
            "{} sequences would hold {:.2} GiB of KV cache ({per} bytes per position, {} positions in all), more than the {} GiB a batch may take; use fewer prompts or a smaller --max-tokens",
            positions.len(),
            total as f64 / (1u64 << 30) as f64,
            positions.iter().sum::<usize>(),
            MAX_BATCH_KV_BYTES >> 30
        );
    }
    Ok(())
}
