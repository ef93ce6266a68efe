//! Speculative decoding's host-side logic: where draft tokens come from and which
//! of them the target model accepts.
//!
//! A *drafter* proposes up to K tokens that follow the sequence so far; the
//! target model then runs the last accepted token and the K drafts as one
//! verification step (`Engine::verify`), and [`accept_greedy`] keeps the longest
//! prefix of drafts equal to the target's own greedy choices. The target's
//! choice after that prefix is the step's extra token, so every step yields
//! between 1 and K + 1 tokens, exactly the tokens greedy decoding would give.
//!
//! Two drafters:
//! - [`PromptLookup`] (prompt lookup decoding): match the last `n` tokens of the
//!   sequence (prompt and generated text) against an earlier occurrence, the most
//!   recent one, trying `n = MAX_NGRAM` down to 1, and copy the up to K tokens
//!   that followed it. No match: no drafts (the step is a plain decode step).
//! - [`DraftModel`]: a smaller model with the same tokenizer drafts K tokens
//!   greedily, its own KV cache rolled back to what the target accepted.

use crate::engine::Engine;
use crate::sampling::argmax;
use anyhow::{bail, Result};

/// The longest n-gram [`PromptLookup`] matches.
pub const MAX_NGRAM: usize = 3;

/// The most draft tokens per step `--speculate` accepts: a verification step
/// runs K + 1 tokens at once, and beyond a few dozen nothing is gained.
pub const MAX_DRAFT_TOKENS: usize = 64;

/// Proposes draft tokens that follow a sequence.
pub trait Drafter {
    /// Up to `k` tokens to follow `seq` (prompt and generated tokens so far, at
    /// least one). Fewer (or none) when it has nothing to propose.
    fn draft(&mut self, seq: &[u32], k: usize) -> Result<Vec<u32>>;
}

/// Prompt lookup decoding: drafts copied from earlier in the sequence.
#[derive(Debug, Clone, Copy, Default)]
pub struct PromptLookup;

/// The up to `k` tokens that followed the most recent earlier occurrence of
/// the last `n` tokens of `seq`, for the largest `n` in `MAX_NGRAM..=1` that
/// occurs earlier; empty when none does.
pub fn lookup_draft(seq: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    for n in (1..=MAX_NGRAM.min(seq.len().saturating_sub(1))).rev() {
        let tail = &seq[seq.len() - n..];
        // Occurrences that end before the last token, most recent first.
        let found = (0..seq.len() - n).rev().find(|&s| &seq[s..s + n] == tail);
        if let Some(s) = found {
            let from = s + n;
            return seq[from..(from + k).min(seq.len())].to_vec();
        }
    }
    Vec::new()
}

impl Drafter for PromptLookup {
    fn draft(&mut self, seq: &[u32], k: usize) -> Result<Vec<u32>> {
        Ok(lookup_draft(seq, k))
    }
}

/// How many drafts the target accepts: the longest prefix of `drafts` equal to
/// `targets`, the target's greedy choice at each position (`targets[i]` is its
/// choice after the last accepted token and `drafts[..i]`). `targets` has one
/// more entry than `drafts`; `targets[m]` is the token the step adds after the
/// `m` accepted drafts.
pub fn accept_greedy(drafts: &[u32], targets: &[u32]) -> usize {
    drafts
        .iter()
        .zip(targets)
        .take_while(|(d, t)| d == t)
        .count()
}

/// A smaller model drafting greedily: its KV cache holds the tokens in
/// `cached`, rolled back to the common prefix with the sequence at each step.
pub struct DraftModel {
    engine: Box<dyn Engine>,
    cached: Vec<u32>,
}

impl DraftModel {
    pub fn new(engine: Box<dyn Engine>) -> DraftModel {
        DraftModel {
            engine,
            cached: Vec::new(),
        }
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }
}

impl Drafter for DraftModel {
    fn draft(&mut self, seq: &[u32], k: usize) -> Result<Vec<u32>> {
        if seq.is_empty() {
            bail!("draft model: nothing to draft from (empty sequence)");
        }
        // The draft's cache ends where its context does: draft fewer then, and
        // nothing once the sequence is past it.
        let context = self.engine.context_len();
        if seq.len() > context {
            return Ok(Vec::new());
        }
        let k = k.min(context - seq.len() + 1);
        if k == 0 {
            return Ok(Vec::new());
        }
        // Keep the cached prefix the sequence still starts with, but always
        // re-run at least the last token: its logits are the first draft's.
        let common = self
            .cached
            .iter()
            .zip(seq)
            .take_while(|(a, b)| a == b)
            .count()
            .min(seq.len() - 1);
        let mut logits = if common == 0 {
            self.cached = seq.to_vec();
            self.engine.prefill(seq)?
        } else {
            self.engine.truncate(common)?;
            self.cached.truncate(common);
            let mut logits = Vec::new();
            for &t in &seq[common..] {
                logits = self.engine.decode(t)?;
                self.cached.push(t);
            }
            logits
        };
        let mut drafts = Vec::with_capacity(k);
        for i in 0..k {
            let d = argmax(&logits);
            drafts.push(d);
            if i + 1 < k {
                logits = self.engine.decode(d)?;
                self.cached.push(d);
            }
        }
        Ok(drafts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_copies_what_followed_the_most_recent_match_of_the_longest_ngram() {
        // Last 3 tokens [7, 8, 9] occur at 1..4 (followed by 4, 5) and at 6..9
        // (followed by 1, 2, 3): the most recent one wins.
        let seq = [0, 7, 8, 9, 4, 5, 7, 8, 9, 1, 2, 3, 7, 8, 9];
        assert_eq!(lookup_draft(&seq, 2), vec![1, 2]);
        assert_eq!(lookup_draft(&seq, 4), vec![1, 2, 3, 7]);
        // A trigram match beats a more recent bigram match: [5, 6] recurs at
        // 5..7, but [4, 5, 6] only at 0..3, followed by 10, 11.
        let seq = [4, 5, 6, 10, 11, 5, 6, 12, 4, 5, 6];
        assert_eq!(lookup_draft(&seq, 2), vec![10, 11]);
    }

    #[test]
    fn lookup_falls_back_to_shorter_ngrams_and_stops_at_the_sequence_end() {
        // No earlier [3, 9] or [2, 3, 9]; the unigram [9] occurs at 1, followed by 2, 3.
        assert_eq!(lookup_draft(&[1, 9, 2, 3, 9], 8), vec![2, 3, 9]);
        // "a b a b a b a": the last 3 tokens [a, b, a] last occurred at 2..5,
        // followed by b, a (the sequence ends there).
        let (a, b) = (10, 20);
        assert_eq!(lookup_draft(&[a, b, a, b, a, b, a], 4), vec![b, a]);
        // Nothing recurs: no draft. One token: nothing earlier. k = 0: nothing.
        assert!(lookup_draft(&[1, 2, 3, 4], 4).is_empty());
        assert!(lookup_draft(&[5], 4).is_empty());
        assert!(lookup_draft(&[1, 1, 1], 0).is_empty());
    }

    #[test]
    fn acceptance_is_the_longest_prefix_equal_to_the_targets_choices() {
        // targets[i]: the target's choice after the first i drafts.
        assert_eq!(accept_greedy(&[5, 6, 7], &[5, 6, 7, 8]), 3);
        assert_eq!(accept_greedy(&[5, 6, 7], &[5, 9, 7, 8]), 1);
        // A later match after a mismatch does not count.
        assert_eq!(accept_greedy(&[5, 6, 7], &[4, 6, 7, 8]), 0);
        assert_eq!(accept_greedy(&[], &[3]), 0);
    }

    /// An engine whose next-token choice is a fixed function of the last token
    /// (logits one-hot at `table[last]`), to check the draft model's cache
    /// bookkeeping by hand.
    struct Table {
        config: crate::ModelConfig,
        table: Vec<u32>,
        cache: Vec<u32>,
        runs: usize,
    }

    impl Table {
        fn logits(&self) -> Vec<f32> {
            let mut l = vec![0.0; self.table.len()];
            l[self.table[*self.cache.last().unwrap() as usize] as usize] = 1.0;
            l
        }
    }

    impl Engine for Table {
        fn name(&self) -> &str {
            "table"
        }
        fn config(&self) -> &crate::ModelConfig {
            &self.config
        }
        fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
            self.runs += tokens.len();
            self.cache = tokens.to_vec();
            Ok(self.logits())
        }
        fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
            self.runs += 1;
            self.cache.push(token);
            Ok(self.logits())
        }
        fn position(&self) -> usize {
            self.cache.len()
        }
        fn truncate(&mut self, len: usize) -> Result<()> {
            self.cache.truncate(len);
            Ok(())
        }
    }

    #[test]
    fn draft_model_drafts_greedily_and_reruns_only_what_changed() {
        let config = crate::ModelConfig::from_json_str(
            &serde_json::json!({
                "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                "vocab_size": 6, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
            })
            .to_string(),
        )
        .unwrap();
        // next(t) = (t + 1) mod 6
        let table = Table {
            config,
            table: vec![1, 2, 3, 4, 5, 0],
            cache: Vec::new(),
            runs: 0,
        };
        let mut d = DraftModel::new(Box::new(table));
        assert_eq!(d.draft(&[0, 1], 3).unwrap(), vec![2, 3, 4]);
        // Prefill of 2, then 2 decodes for drafts 2 and 3 (4 is never fed).
        assert_eq!(d.cached, vec![0, 1, 2, 3]);
        // The target accepted 2 and then chose 5: the cache keeps [0, 1, 2]
        // and runs only the new token 5.
        assert_eq!(d.draft(&[0, 1, 2, 5], 2).unwrap(), vec![0, 1]);
        assert_eq!(d.cached, vec![0, 1, 2, 5, 0]);
        // Its context is 64 positions: from 63 tokens, two drafts (the first
        // needs no position of its own); past 64, none.
        let long: Vec<u32> = (0..63).map(|i| i % 6).collect();
        assert_eq!(d.draft(&long, 5).unwrap(), vec![3, 4]);
        assert_eq!(d.cached.len(), 64);
        assert!(d.draft(&[0; 65], 5).unwrap().is_empty());
    }
}
