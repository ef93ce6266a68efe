//! The interface between the generation loop and whatever runs the model: the
//! dense CPU reference and the simulated mesh. An engine turns
//! tokens into next-token logits and may report what each step cost it (for the
//! mesh: simulated cycles and their breakdown), which the loop passes through to
//! the stderr summary and the `--json` lines untouched.

use crate::config::ModelConfig;
use anyhow::Result;

/// Extra figures an engine attaches to one step or to the whole run.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// Merged into the step's `--json` token line (or into the `summary` object).
    pub json: serde_json::Map<String, serde_json::Value>,
    /// A human-readable line for stderr, if the engine has one.
    pub text: Option<String>,
}

pub trait Engine {
    /// The `--engine` name.
    fn name(&self) -> &str;

    fn config(&self) -> &ModelConfig;

    /// Starts a new sequence: forgets any cached state, runs the whole prompt
    /// and returns the logits for the position after it.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;

    /// Appends one token and returns the logits for the next position.
    fn decode(&mut self, token: u32) -> Result<Vec<f32>>;

    /// Positions held in the cache.
    fn position(&self) -> usize;

    /// Runs `tokens` at the next positions and returns the next-token logits
    /// after each of them (speculative decoding's verification step). By
    /// default one `decode` per token: the same arithmetic as decoding them one
    /// by one, so greedy choices are exactly decode's.
    fn verify(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        tokens.iter().map(|&t| self.decode(t)).collect()
    }

    /// Drops every cached position from `len` on (rejected draft tokens), so the
    /// next token runs at position `len`. `len` above `position()` is an error.
    fn truncate(&mut self, len: usize) -> Result<()> {
        anyhow::bail!(
            "the {} engine cannot roll back its cache (to {len} of {} positions)",
            self.name(),
            self.position()
        )
    }

    /// The longest sequence the engine can hold.
    fn context_len(&self) -> usize {
        self.config().max_position_embeddings
    }

    /// What the last `prefill` or `decode` cost, if the engine models cost.
    fn step_report(&mut self) -> Option<StepReport> {
        None
    }

    /// Run-level figures for the summary, if any.
    fn summary_report(&mut self) -> Option<StepReport> {
        None
    }
}
