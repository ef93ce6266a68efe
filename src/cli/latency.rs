//! The client-side latency flags shared by `wafer estimate` and `wafer plan`
//! (`--rtt-ms`, `--per-token-overhead-us`, `--answer-tokens`) and their report:
//! time to first token at the client, a whole answer's time and the streaming
//! rate the user sees (`wafer_lower::plan::latency` has the formulas). RTT and
//! overhead are assumptions the user supplies, not simulated.

use anyhow::Result;
use serde_json::json;
use wafer_lower::plan::latency::{ClientAssumptions, ClientLatency, MAX_ANSWER_TOKENS};

/// Default `--answer-tokens` when only the RTT or the overhead is given.
pub const DEFAULT_ANSWER_TOKENS: u64 = 200;

#[derive(clap::Args, Clone, Default)]
pub struct ClientArgs {
    /// Assumed network round trip in milliseconds, added once to the time to
    /// first token the client sees (with this, the output has client figures).
    #[arg(long)]
    pub rtt_ms: Option<f64>,
    /// Assumed fixed cost per generated token outside the wafer (serving
    /// stack, framing), microseconds; paid by every token in series with decode.
    #[arg(long)]
    pub per_token_overhead_us: Option<f64>,
    /// Tokens of the answer whose whole time is reported (default 200).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_ANSWER_TOKENS))]
    pub answer_tokens: Option<u64>,
}

impl ClientArgs {
    /// The checked assumptions, or `None` when no client flag was given.
    pub fn assumptions(&self) -> Result<Option<ClientAssumptions>> {
        if self.rtt_ms.is_none()
            && self.per_token_overhead_us.is_none()
            && self.answer_tokens.is_none()
        {
            return Ok(None);
        }
        Ok(Some(ClientAssumptions::new(
            self.rtt_ms.unwrap_or(0.0),
            self.per_token_overhead_us.unwrap_or(0.0),
            self.answer_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS),
        )?))
    }
}

/// The JSON keys of the client figures, added to an object.
pub fn add_json(v: &mut serde_json::Value, a: &ClientAssumptions, l: &ClientLatency) {
    if let Some(m) = v.as_object_mut() {
        m.insert("rtt_ms".into(), json!(a.rtt_ms));
        m.insert(
            "per_token_overhead_us".into(),
            json!(a.per_token_overhead_us),
        );
        m.insert("answer_tokens".into(), json!(l.answer_tokens));
        m.insert("client_ttft_ms".into(), json!(l.client_ttft_ms));
        m.insert("answer_ms".into(), json!(l.answer_ms));
        m.insert("client_tokens_per_s".into(), json!(l.client_tokens_per_s));
    }
}

/// One line for the text report.
pub fn describe(a: &ClientAssumptions, l: &ClientLatency) -> String {
    format!(
        "at the client (assumed RTT {} ms, {} us per token): first token after {:.2} ms, {:.1} tokens/s streamed, a {}-token answer in {:.1} ms",
        a.rtt_ms,
        a.per_token_overhead_us,
        l.client_ttft_ms,
        l.client_tokens_per_s,
        l.answer_tokens,
        l.answer_ms
    )
}
