//! `--engine mesh`: the mesh program behind the generation loop's `Engine`
//! trait, with every step's cycles taken from the cost plan; `--engine fabric`:
//! the same program and values, every step's cycles from the fabric simulator
//! (each layer's program and the LM head run timing-only,
//! [`wafer_lower::fabric`]), the plan's figure kept beside them.
//!
//! Several sequences over one program (`generate --batch-prompts`): the
//! engine swaps a sequence's KV caches and its cycle accounting in and out
//! ([`SequenceSwap`]), the tiles are shared; the batch's figures are the
//! pipelined ones of the cost plan ([`Pipeline`]).

use crate::engine::SequenceKv;
use crate::report;
use crate::{model_source, MeshProgram};
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Instant;
use wafer_core::{Cycles, WaferSpec};
use wafer_lower::cost::{decode_plan_with, token_prefill, PlanOptions, PrefillScheme};
use wafer_lower::estimate::Pipeline;
use wafer_lower::fabric::{fabric_decode, FabricMemo};
use wafer_lower::layout::Layout;
use wafer_models::batch::SequenceSwap;
use wafer_models::config::ModelConfig;
use wafer_models::engine::{Engine, StepReport};
use wafer_models::weights::LlamaWeights;
use wafer_sim::fabric::RunOptions;

/// `--engine mesh`: the program plus the cycle accounting of every step.
pub struct MeshEngine {
    program: MeshProgram,
    /// The lowering options the program was built with and is priced with.
    options: PlanOptions,
    context: usize,
    prompt_tokens: usize,
    ttft_cycles: f64,
    /// How the cost plan runs the prompt (the functional run is token by token
    /// either way: the numbers are the same).
    prefill_scheme: PrefillScheme,
    decode_cycles: Vec<f64>,
    last_cycles: Option<f64>,
    wall_s: f64,
    /// With `--engine fabric`: where the cycles come from instead.
    fabric: Option<FabricTiming>,
}

/// Cycles from the fabric simulator: one run per distinct layer program
/// (memoised across steps: a program changes only when a region's cached
/// positions per PE do), the plan's figures kept beside them.
#[derive(Debug, Default)]
struct FabricTiming {
    run: RunOptions,
    memo: FabricMemo,
    events: u64,
    wavelet_hops: u64,
    wall_s: f64,
    analytic_ttft: f64,
    analytic_decode: Vec<f64>,
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
        options: PlanOptions,
    ) -> Result<MeshEngine> {
        let inv_freq = wafer_models::reference::rope::inv_freq(&config);
        let program = MeshProgram::new(
            config,
            spec,
            layout,
            &model_source(weights),
            inv_freq,
            context,
            &options,
        )?;
        Ok(MeshEngine::from_program(program, context, options))
    }

    /// An engine around a built program, priced with the `options` it was built with.
    pub fn from_program(program: MeshProgram, context: usize, options: PlanOptions) -> MeshEngine {
        MeshEngine {
            program,
            options,
            context,
            prompt_tokens: 0,
            ttft_cycles: 0.0,
            prefill_scheme: PrefillScheme::TokenByToken,
            decode_cycles: Vec::new(),
            last_cycles: None,
            wall_s: 0.0,
            fabric: None,
        }
    }

    /// Takes every step's cycles from the fabric simulator (`--engine fabric`).
    pub fn with_fabric_timing(mut self) -> MeshEngine {
        self.fabric = Some(FabricTiming::default());
        self
    }

    /// One decode step's cycles at KV length `context` on the fabric.
    fn fabric_cycles(&mut self, context: usize) -> Result<f64> {
        let p = &self.program;
        let f = self.fabric.as_mut().expect("fabric timing");
        let t0 = Instant::now();
        let d = fabric_decode(
            &p.spec,
            &p.config,
            &p.layout,
            context,
            &self.options,
            &f.run,
            Some(&mut f.memo),
        )?;
        f.wall_s += t0.elapsed().as_secs_f64();
        f.events += d.events;
        f.wavelet_hops += d.wavelet_hops;
        Ok(d.cycles.get())
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
        if self.fabric.is_some() {
            "fabric"
        } else {
            "mesh"
        }
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
        // The mesh ran the prompt one token at a time: the price of exactly that.
        let run = token_prefill(
            &p.spec,
            &p.config,
            &p.layout,
            tokens.len(),
            &self.options,
            Cycles(f64::INFINITY),
        );
        self.ttft_cycles = run.cycles.get();
        if let Some(f) = self.fabric.as_mut() {
            f.analytic_ttft = self.ttft_cycles;
            f.analytic_decode.clear();
            // Token by token, as the mesh ran it: one decode step per position.
            let mut ttft = 0.0;
            for t in 1..=tokens.len() {
                ttft += self.fabric_cycles(t)?;
            }
            self.ttft_cycles = ttft;
        }
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
        let context = p.position();
        let mut cycles = decode_plan_with(&p.spec, &p.config, &p.layout, context, &self.options)
            .total()
            .get();
        if self.fabric.is_some() {
            let analytic = cycles;
            cycles = self.fabric_cycles(context)?;
            if let Some(f) = self.fabric.as_mut() {
                f.analytic_decode.push(analytic);
            }
        }
        self.decode_cycles.push(cycles);
        self.last_cycles = Some(cycles);
        Ok(logits)
    }

    fn position(&self) -> usize {
        self.program.position()
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        self.program.truncate(len)
    }

    fn context_len(&self) -> usize {
        self.context
            .min(self.program.config.max_position_embeddings)
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
        // Means over decode steps: none without one (null in JSON, n/a in text).
        let mean = (!self.decode_cycles.is_empty())
            .then(|| self.decode_cycles.iter().sum::<f64>() / self.decode_cycles.len() as f64);
        let tokens_per_s = mean.map(|m| clock / m);
        // The breakdown of the last decode step (or of one at the prompt's end).
        let plan = decode_plan_with(
            &p.spec,
            &p.config,
            &p.layout,
            p.position().max(1),
            &self.options,
        );
        let steps = self.prompt_tokens + self.decode_cycles.len();
        let mut json = serde_json::Map::new();
        json.insert("ttft_cycles".into(), json!(self.ttft_cycles));
        json.insert("ttft_ms".into(), json!(self.ttft_cycles / clock * 1e3));
        json.insert("prefill_scheme".into(), json!(self.prefill_scheme.name()));
        json.insert("decode_cycles_per_token".into(), json!(mean));
        json.insert("simulated_tokens_per_s".into(), json!(tokens_per_s));
        json.insert("hardware".into(), json!(p.spec.name));
        json.insert("simulation_wall_s".into(), json!(self.wall_s));
        json.insert(
            "simulation_tokens_per_wall_s".into(),
            json!(if self.wall_s > 0.0 {
                steps as f64 / self.wall_s
            } else {
                0.0
            }),
        );
        json.insert(
            "breakdown".into(),
            report::breakdown(&plan, p.config.num_hidden_layers),
        );
        let mut fabric_text = String::new();
        if let Some(f) = &self.fabric {
            let analytic = (!f.analytic_decode.is_empty())
                .then(|| f.analytic_decode.iter().sum::<f64>() / f.analytic_decode.len() as f64);
            json.insert("analytic_decode_cycles_per_token".into(), json!(analytic));
            json.insert("analytic_ttft_cycles".into(), json!(f.analytic_ttft));
            json.insert("fabric_simulations".into(), json!(f.memo.len()));
            json.insert("fabric_events".into(), json!(f.events));
            json.insert("fabric_wavelet_hops".into(), json!(f.wavelet_hops));
            json.insert("fabric_wall_s".into(), json!(f.wall_s));
            let per_s = |x: u64| {
                if f.wall_s > 0.0 {
                    x as f64 / f.wall_s
                } else {
                    0.0
                }
            };
            json.insert(
                "wavelet_hops_per_wall_s".into(),
                json!(per_s(f.wavelet_hops)),
            );
            json.insert("events_per_wall_s".into(), json!(per_s(f.events)));
            fabric_text = format!(
                "; fabric: {} distinct layer programs simulated, {} events, {} wavelet-hops in {:.2} s (analytic: TTFT {:.0}, decode {})",
                f.memo.len(),
                f.events,
                f.wavelet_hops,
                f.wall_s,
                f.analytic_ttft,
                analytic.map_or("n/a".into(), |a| format!("{a:.0} cycles/token"))
            );
        }
        let decode = match (mean, tokens_per_s) {
            (Some(m), Some(r)) => format!("{m:.0} cycles/token, {r:.1} simulated tokens/s"),
            _ => "n/a (no decode step)".to_string(),
        };
        let text = format!(
            "{} ({}): time to first token {:.0} cycles ({:.3} ms, {} prefill); decode {decode}; simulation ran {} token steps in {:.2} s of wall clock{fabric_text}",
            self.name(),
            p.spec.name,
            self.ttft_cycles,
            self.ttft_cycles / clock * 1e3,
            self.prefill_scheme.name().replace('_', "-"),
            steps,
            self.wall_s
        );
        Some(StepReport {
            json,
            text: Some(text),
        })
    }
}

/// One sequence of a batch on the mesh: its KV caches and its accounting.
pub struct MeshSequence {
    kv: SequenceKv,
    prompt_tokens: usize,
    ttft_cycles: f64,
    decode_cycles: Vec<f64>,
    last_cycles: Option<f64>,
    wall_s: f64,
}

impl SequenceSwap for MeshEngine {
    type Saved = MeshSequence;

    fn empty_sequence(&self) -> MeshSequence {
        MeshSequence {
            kv: self.program.empty_sequence(),
            prompt_tokens: 0,
            ttft_cycles: 0.0,
            decode_cycles: Vec::new(),
            last_cycles: None,
            wall_s: 0.0,
        }
    }

    fn swap_sequence(&mut self, s: &mut MeshSequence) {
        self.program.swap_sequence(&mut s.kv);
        std::mem::swap(&mut self.prompt_tokens, &mut s.prompt_tokens);
        std::mem::swap(&mut self.ttft_cycles, &mut s.ttft_cycles);
        std::mem::swap(&mut self.decode_cycles, &mut s.decode_cycles);
        std::mem::swap(&mut self.last_cycles, &mut s.last_cycles);
        std::mem::swap(&mut self.wall_s, &mut s.wall_s);
    }

    /// The decode step at `kv_len` split into the stages of the layout, and
    /// `sequences` users pipelined over them (as `wafer estimate --users`).
    fn batch_report(&mut self, sequences: usize, kv_len: usize) -> Option<StepReport> {
        let p = &self.program;
        let clock = p.spec.clock_hz;
        let plan = decode_plan_with(&p.spec, &p.config, &p.layout, kv_len.max(1), &self.options);
        let pipe = Pipeline::of(&plan, &p.layout);
        let users = sequences as u64;
        let aggregate = pipe.aggregate_tokens_per_s(users, clock);
        let per_user = aggregate / users as f64;
        let mut json = serde_json::Map::new();
        json.insert("pipeline_kv_len".into(), json!(kv_len.max(1)));
        json.insert("pipeline_stages".into(), json!(pipe.stages.len()));
        json.insert(
            "pipeline_latency_cycles".into(),
            json!(pipe.latency_cycles.get()),
        );
        json.insert(
            "slowest_stage_cycles".into(),
            json!(pipe.slowest_stage_cycles.get()),
        );
        json.insert("per_user_tokens_per_s".into(), json!(per_user));
        json.insert("aggregate_tokens_per_s".into(), json!(aggregate));
        let text = format!(
            "{} ({}): {sequences} users pipelined over {} stages at KV {}: {per_user:.1} simulated tokens/s each, {aggregate:.1} aggregate (latency {:.0} cycles/token, slowest stage {:.0})",
            self.name(),
            p.spec.name,
            pipe.stages.len(),
            kv_len.max(1),
            pipe.latency_cycles.get(),
            pipe.slowest_stage_cycles.get()
        );
        Some(StepReport {
            json,
            text: Some(text),
        })
    }
}

/// How `--engine mesh` places the model: the hardware, an optional fixed region
/// size and wafer count (as for `wafer place`), and the positions to hold.
#[derive(Debug, Clone)]
pub struct MeshSetup {
    pub spec: WaferSpec,
    pub region: Option<wafer_core::RegionShape>,
    pub wafers: Option<u32>,
    /// KV positions every layer must hold (prompt plus generated tokens).
    pub context: usize,
    /// Lowering options (the reduction tree's K), for the run and its cycles.
    pub options: PlanOptions,
}

impl MeshEngine {
    /// Places the model with the placement search (as `wafer place` does) and
    /// tiles the weights onto that layout.
    pub fn place_and_build(
        config: ModelConfig,
        weights: &LlamaWeights,
        setup: &MeshSetup,
    ) -> Result<MeshEngine> {
        MeshEngine::place_and_build_for_users(config, weights, setup, 1)
    }

    /// [`MeshEngine::place_and_build`] on a placement whose regions hold the KV
    /// caches of `users` sequences at `setup.context` each (a batch); more than
    /// fit is refused by the placement, naming the context it holds.
    pub fn place_and_build_for_users(
        config: ModelConfig,
        weights: &LlamaWeights,
        setup: &MeshSetup,
        users: u64,
    ) -> Result<MeshEngine> {
        // The same placement `wafer estimate` costs for these options, so the two
        // report the same cycles.
        let placement = wafer_lower::estimate::placement_for_users(
            &setup.spec,
            &config,
            &wafer_lower::estimate::EstimateOptions {
                wafers: setup.wafers,
                region: setup.region,
                strategy: Default::default(),
                context: setup.context,
                prompt_tokens: 0,
            },
            users,
        )
        .with_context(|| {
            let kv = users
                * setup.context as u64
                * config.num_hidden_layers as u64
                * 2
                * config.kv_dim() as u64
                * setup.spec.precision.kv_dtype.size_bytes();
            format!(
                "the mesh cannot hold {users} sequences' KV caches of {} positions each ({kv} bytes of KV cache in all)",
                setup.context
            )
        })?;
        MeshEngine::new(
            config,
            setup.spec.clone(),
            placement.layout(),
            weights,
            setup.context,
            setup.options,
        )
    }
}
