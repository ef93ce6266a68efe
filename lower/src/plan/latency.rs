//! The latency a user sees at the client, from the wafer's figures and two
//! assumed inputs: the network round trip (RTT) and a fixed per-token overhead
//! (serving stack, tokenizer, framing), both supplied by the caller.
//!
//! The model of the stream: the request reaches the system half an RTT after it
//! is sent and the first token comes back half an RTT after the wafer produced
//! it, so the RTT is paid once; every token, the first included, also pays the
//! per-token overhead, in series with the wafer's work. Hence
//!
//! - time to first token at the client = TTFT + RTT + overhead;
//! - the streaming rate seen = 1 / (1 / decode rate + overhead);
//! - a whole answer of N tokens = client TTFT + (N - 1) / streaming rate
//!   (the first token comes from the prefill, the other N - 1 from decode steps).

use anyhow::{bail, Result};
use serde::Serialize;

/// The largest RTT accepted, in milliseconds (ten minutes: anything above is a
/// unit mistake).
pub const MAX_RTT_MS: f64 = 600_000.0;
/// The largest per-token overhead accepted, in microseconds (one minute).
pub const MAX_OVERHEAD_US: f64 = 60_000_000.0;
/// The longest answer accepted, in tokens.
pub const MAX_ANSWER_TOKENS: u64 = 1 << 24;

/// The client-side inputs: assumptions, not measured by the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClientAssumptions {
    /// Network round trip, milliseconds.
    pub rtt_ms: f64,
    /// Fixed cost per generated token outside the wafer, microseconds.
    pub per_token_overhead_us: f64,
    /// Tokens in the answer whose whole duration is reported.
    pub answer_tokens: u64,
}

impl ClientAssumptions {
    /// Checked inputs: finite, not negative, bounded; at least one answer token.
    pub fn new(
        rtt_ms: f64,
        per_token_overhead_us: f64,
        answer_tokens: u64,
    ) -> Result<ClientAssumptions> {
        check("--rtt-ms", rtt_ms, MAX_RTT_MS)?;
        check(
            "--per-token-overhead-us",
            per_token_overhead_us,
            MAX_OVERHEAD_US,
        )?;
        if answer_tokens == 0 || answer_tokens > MAX_ANSWER_TOKENS {
            bail!(
                "--answer-tokens must be between 1 and {MAX_ANSWER_TOKENS}, found {answer_tokens}"
            );
        }
        Ok(ClientAssumptions {
            rtt_ms,
            per_token_overhead_us,
            answer_tokens,
        })
    }

    /// What the client sees for a system with time to first token `ttft_ms`
    /// producing `tokens_per_s` tokens a second for this user.
    pub fn latency(&self, ttft_ms: f64, tokens_per_s: f64) -> ClientLatency {
        let overhead_ms = self.per_token_overhead_us / 1e3;
        let per_token_ms = 1e3 / tokens_per_s + overhead_ms;
        let client_ttft_ms = ttft_ms + self.rtt_ms + overhead_ms;
        ClientLatency {
            client_ttft_ms,
            client_tokens_per_s: 1e3 / per_token_ms,
            answer_tokens: self.answer_tokens,
            answer_ms: client_ttft_ms + (self.answer_tokens - 1) as f64 * per_token_ms,
        }
    }
}

fn check(flag: &str, v: f64, max: f64) -> Result<()> {
    if !v.is_finite() || v < 0.0 || v > max {
        bail!("{flag} must be a number between 0 and {max}, found {v}");
    }
    Ok(())
}

/// The figures of [`ClientAssumptions::latency`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClientLatency {
    /// Time from sending the request to the first token on the client.
    pub client_ttft_ms: f64,
    /// The streaming rate the client sees, per-token overhead included.
    pub client_tokens_per_s: f64,
    pub answer_tokens: u64,
    /// Time from sending the request to the last of `answer_tokens` tokens.
    pub answer_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formulas_on_a_hand_worked_case() {
        // 1,000 tokens/s = 1 ms a token; 250 us overhead -> 1.25 ms a token at
        // the client = 800 tokens/s. TTFT 40 ms + RTT 30 ms + 0.25 ms = 70.25 ms.
        // 200 tokens: 70.25 + 199 * 1.25 = 319.0 ms.
        let a = ClientAssumptions::new(30.0, 250.0, 200).unwrap();
        let l = a.latency(40.0, 1000.0);
        assert!((l.client_ttft_ms - 70.25).abs() < 1e-9, "{l:?}");
        assert!((l.client_tokens_per_s - 800.0).abs() < 1e-9, "{l:?}");
        assert!((l.answer_ms - 319.0).abs() < 1e-9, "{l:?}");
        // One token: the answer is the first token.
        let one = ClientAssumptions::new(30.0, 250.0, 1).unwrap();
        assert_eq!(one.latency(40.0, 1000.0).answer_ms, l.client_ttft_ms);
        // No overhead, no RTT: the wafer's own figures.
        let none = ClientAssumptions::new(0.0, 0.0, 3)
            .unwrap()
            .latency(5.0, 500.0);
        assert_eq!(none.client_ttft_ms, 5.0);
        assert!((none.client_tokens_per_s - 500.0).abs() < 1e-9);
        assert!((none.answer_ms - 9.0).abs() < 1e-9); // 5 + 2 * 2 ms
    }

    #[test]
    fn bad_inputs_are_refused_with_the_flag_named() {
        for (rtt, o, n, flag) in [
            (-1.0, 0.0, 1, "--rtt-ms"),
            (f64::NAN, 0.0, 1, "--rtt-ms"),
            (1e9, 0.0, 1, "--rtt-ms"),
            (0.0, -5.0, 1, "--per-token-overhead-us"),
            (0.0, f64::INFINITY, 1, "--per-token-overhead-us"),
            (0.0, 0.0, 0, "--answer-tokens"),
            (0.0, 0.0, MAX_ANSWER_TOKENS + 1, "--answer-tokens"),
        ] {
            let e = ClientAssumptions::new(rtt, o, n).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
