//! The mesh engine: executes a Llama-family model as a dataflow program on the
//! simulated wafer. Each layer's weights are cut into 16-bit per-PE tiles on the
//! layer's region (from the placement's `Layout`), the KV cache is spread over the
//! region's PEs along the sequence, every PE computes on its own tiles, and
//! partial sums travel along region rows and columns with checked reduction
//! schedules in the order the cost model charges for.

pub mod attention;
pub mod collective;
pub mod engine;
pub mod gemv;
pub mod heads;
pub mod tiling;
pub mod weights;
pub mod report;

pub use engine::MeshProgram;
pub use weights::{DenseF16, LayerSource, ModelSource, RowSource};

use crate::config::ModelConfig;
use crate::cost::{decode_plan, prefill_plan};
use crate::engine::{Engine, StepReport};
use crate::layout::Layout;
use crate::weights::{LlamaWeights, Matrix, MatrixData};
use anyhow::Result;
use half::f16;
use serde_json::json;
use std::time::Instant;
use wafer_core::WaferSpec;

impl RowSource for Matrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn row_f16(&self, r: usize, out: &mut [f16]) {
        let (a, b) = (r * self.cols, (r + 1) * self.cols);
        match &self.data {
            MatrixData::F16(v) => out.copy_from_slice(bytemuck::cast_slice(&v[a..b])),
            MatrixData::F32(v) => out.iter_mut().zip(&v[a..b]).for_each(|(o, x)| *o = f16::from_f32(*x)),
            MatrixData::BF16(v) => out
                .iter_mut()
                .zip(&v[a..b])
                .for_each(|(o, x)| *o = f16::from_f32(half::bf16::from_bits(*x).to_f32())),
        }
    }
}

/// Borrows a loaded checkpoint as the mesh engine's weight source.
pub fn model_source(w: &LlamaWeights) -> ModelSource<'_> {
    ModelSource {
        embed_tokens: &w.embed_tokens,
        layers: w
            .layers
            .iter()
            .map(|l| LayerSource {
                input_layernorm: &l.input_layernorm,
                q_proj: &l.q_proj,
                k_proj: &l.k_proj,
                v_proj: &l.v_proj,
                o_proj: &l.o_proj,
                q_bias: l.q_bias.as_deref(),
                k_bias: l.k_bias.as_deref(),
                v_bias: l.v_bias.as_deref(),
                post_attention_layernorm: &l.post_attention_layernorm,
                gate_proj: &l.gate_proj,
                up_proj: &l.up_proj,
                down_proj: &l.down_proj,
            })
            .collect(),
        norm: &w.norm,
        lm_head: w.lm_head(),
    }
}

/// `--engine mesh`: the program plus the cycle accounting of every step.
pub struct MeshEngine {
    program: MeshProgram,
    context: usize,
    prompt_tokens: usize,
    ttft_cycles: f64,
    decode_cycles: Vec<f64>,
    last_cycles: Option<f64>,
    wall_s: f64,
}

impl MeshEngine {
    /// Tiles `weights` (any precision; held as 16-bit tiles) onto `layout`, with
    /// KV room for `context` positions.
    pub fn new(
        config: ModelConfig,
        spec: WaferSpec,
        layout: Layout,
        weights: &LlamaWeights,
        context: usize,
    ) -> Result<MeshEngine> {
        let inv_freq = crate::reference::rope::inv_freq(&config);
        let program = MeshProgram::new(config, spec, layout, &model_source(weights), inv_freq, context)?;
        Ok(MeshEngine::from_program(program, context))
    }

    pub fn from_program(program: MeshProgram, context: usize) -> MeshEngine {
        MeshEngine {
            program,
            context,
            prompt_tokens: 0,
            ttft_cycles: 0.0,
            decode_cycles: Vec::new(),
            last_cycles: None,
            wall_s: 0.0,
        }
    }

    pub fn program(&self) -> &MeshProgram {
        &self.program
    }

    /// Cycles of the last prefill or decode step, as the cost plan gives them.
    pub fn last_cycles(&self) -> Option<f64> {
        self.last_cycles
    }

    fn clock_hz(&self) -> f64 {
        self.program.spec.clock_hz
    }
}

impl Engine for MeshEngine {
    fn name(&self) -> &str {
        "mesh"
    }

    fn config(&self) -> &ModelConfig {
        &self.program.config
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        anyhow::ensure!(!tokens.is_empty(), "prefill: no tokens to run");
        let t0 = Instant::now();
        self.program.reset();
        let mut logits = Vec::new();
        for &t in tokens {
            logits = self.program.step(t)?;
        }
        self.wall_s += t0.elapsed().as_secs_f64();
        let p = &self.program;
        self.prompt_tokens = tokens.len();
        self.ttft_cycles = prefill_plan(&p.spec, &p.config, &p.layout, tokens.len()).total().get();
        self.decode_cycles.clear();
        self.last_cycles = Some(self.ttft_cycles);
        Ok(logits)
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let logits = self.program.step(token)?;
        self.wall_s += t0.elapsed().as_secs_f64();
        let p = &self.program;
        // The step attends over every cached position, the new one included.
        let cycles = decode_plan(&p.spec, &p.config, &p.layout, p.position()).total().get();
        self.decode_cycles.push(cycles);
        self.last_cycles = Some(cycles);
        Ok(logits)
    }

    fn position(&self) -> usize {
        self.program.position()
    }

    fn context_len(&self) -> usize {
        self.context.min(self.program.config.max_position_embeddings)
    }

    fn step_report(&mut self) -> Option<StepReport> {
        let cycles = self.last_cycles.take()?;
        let us = cycles / self.clock_hz() * 1e6;
        let mut json = serde_json::Map::new();
        json.insert("cycles".into(), json!(cycles));
        Some(StepReport {
            json,
            text: Some(format!("{cycles:.0} cycles ({us:.3} us simulated)")),
        })
    }

    fn summary_report(&mut self) -> Option<StepReport> {
        let p = &self.program;
        let clock = self.clock_hz();
        let mean = if self.decode_cycles.is_empty() {
            0.0
        } else {
            self.decode_cycles.iter().sum::<f64>() / self.decode_cycles.len() as f64
        };
        let tokens_per_s = if mean > 0.0 { clock / mean } else { 0.0 };
        // The breakdown of the last decode step (or of one at the prompt's end).
        let plan = decode_plan(&p.spec, &p.config, &p.layout, p.position().max(1));
        let steps = self.prompt_tokens + self.decode_cycles.len();
        let mut json = serde_json::Map::new();
        json.insert("ttft_cycles".into(), json!(self.ttft_cycles));
        json.insert("ttft_ms".into(), json!(self.ttft_cycles / clock * 1e3));
        json.insert("decode_cycles_per_token".into(), json!(mean));
        json.insert("simulated_tokens_per_s".into(), json!(tokens_per_s));
        json.insert("hardware".into(), json!(p.spec.name));
        json.insert("simulation_wall_s".into(), json!(self.wall_s));
        json.insert(
            "simulation_tokens_per_wall_s".into(),
            json!(if self.wall_s > 0.0 { steps as f64 / self.wall_s } else { 0.0 }),
        );
        json.insert("breakdown".into(), report::breakdown(&plan, p.config.num_hidden_layers));
        let text = format!(
            "mesh ({}): time to first token {:.0} cycles ({:.3} ms); decode {:.0} cycles/token, {:.1} simulated tokens/s; simulation ran {} token steps in {:.2} s of wall clock",
            p.spec.name,
            self.ttft_cycles,
            self.ttft_cycles / clock * 1e3,
            mean,
            tokens_per_s,
            steps,
            self.wall_s
        );
        Some(StepReport { json, text: Some(text) })
    }
}
