//! The wafer spec: every hardware number the simulator uses, in one serialisable
//! struct, with the `wse3` and `wse2` presets.
//!
//! Where each preset value comes from (or that it is an assumption) is recorded in
//! `docs/hardware.md`. A TOML file may name a preset as `base` and override any
//! field of it; unknown fields are rejected so a typo never passes silently.

use crate::dtype::DType;
use crate::error::{CoreError, Result};
use crate::units::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaferSpec {
    pub name: String,
    /// Core clock; converts cycles to seconds.
    pub clock_hz: f64,
    pub fabric: FabricSpec,
    pub pe: PeSpec,
    pub simd: SimdSpec,
    pub router: RouterSpec,
    pub precision: PrecisionSpec,
    pub cost: CostSpec,
    pub system: SystemSpec,
}

/// The rectangle of PEs a program can use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricSpec {
    pub width_pes: u32,
    pub height_pes: u32,
}

/// One processing element: its private memory and memory ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeSpec {
    pub sram_bytes: u64,
    /// SRAM kept back for code, task state and runtime buffers (not for data).
    pub reserve_bytes: u64,
    pub mem_reads_per_cycle: u32,
    pub mem_port_bits: u32,
    /// Cycles the compute engine spends issuing one fabric operation (loading
    /// its data-structure descriptors and the instruction) before it moves a
    /// wavelet: the fabric simulator's per-operation setup.
    pub fabric_op_setup_cycles: f64,
    /// Cycles from the task picker choosing a task to the task's first
    /// operation (saving and restoring state, the task's entry code). Used by the
    /// fabric simulator only; not published, fitted to C5, where every step of
    /// the shift is a task.
    pub task_switch_cycles: f64,
}

/// SIMD throughput of one PE's compute engine, in element operations per cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimdSpec {
    /// fp16 x fp16 + fp16 fused multiply-accumulate (`@fmach`).
    pub fp16_fmac: u32,
    /// fp16 x fp16 accumulated into fp32 (`@fmachs`).
    pub fp16_fmac_fp32_acc: u32,
    pub fp16_add: u32,
    pub fp16_mul: u32,
    pub fp32_add: u32,
    pub fp32_mul: u32,
    pub fp32_fmac: u32,
    pub fp16_max: u32,
    pub fp32_max: u32,
}

/// The router beside each PE and the links between routers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// N, S, E, W and the ramp to the PE's own compute engine.
    pub ports: u32,
    pub colors: u32,
    pub wavelet_bits: u32,
    /// Latency for a wavelet to cross one link in hardware: the fabric
    /// simulator's hop. (The analytic model charges its own fitted
    /// `cost.hop_cycles`.)
    pub hop_latency_cycles: f64,
    /// Latency between a PE's compute engine and its own router (each way).
    pub ramp_latency_cycles: f64,
    pub input_queue_depths: Vec<u32>,
    pub output_queue_depths: Vec<u32>,
}

/// Number formats the wafer computes in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionSpec {
    pub weight_dtype: DType,
    pub activation_dtype: DType,
    pub accumulate_dtype: DType,
    /// Keys and values held in the KV cache.
    pub kv_dtype: DType,
}

/// Parameters of the cost model that are not read off a datasheet: fitted to
/// `shared/calibration.md` or labeled assumptions. What each one means, its fitted
/// value per preset and whether that value is physically plausible:
/// `docs/cost-model.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    /// Cycles the analytic model charges per hop of a flow (an effective
    /// figure fitted with the others; the fabric simulator uses the router's
    /// `hop_latency_cycles` instead).
    pub hop_cycles: f64,
    /// A software relay stage: a PE receives a message, and a task re-sends it
    /// (one synchronous neighbour exchange of a shift; fitted to C5, C7).
    pub relay_stage_cycles: f64,
    /// Extra cycles per 32-bit wavelet of a relayed message beyond the first
    /// (receive into memory, then send again; fitted to C5, C7).
    pub relay_cycles_per_wavelet: f64,
    /// One dependent receive -> reduce -> send level of a reduction tree (C6).
    pub reduce_level_cycles: f64,
    /// Launching and synchronising one communication phase (a reduce, a
    /// broadcast or a shift sequence; C5, C6).
    pub phase_overhead_cycles: f64,
    /// Synchronisation between the dependent communication phases of a layer
    /// program (barrier, task and route switching), which an isolated kernel
    /// does not pay (C4's unattributed per-layer overhead; C1).
    pub layer_phase_sync_cycles: f64,
    /// The fabric simulator's residual: cycles every PE spends before each
    /// collective (a reduce and its broadcast: two phases) of a layer's or the
    /// LM head's placed program that no simulated mechanism accounts for.
    /// Fitted to C4 (wse3) or C1 (wse2); isolated kernels do not pay it.
    pub fabric_collective_residual_cycles: f64,
    /// Starting one compute task on a PE (C7: one per arriving row of a GEMM tile).
    pub task_overhead_cycles: f64,
    /// Loop and address overhead per element of a vector instruction's inner loop.
    pub loop_overhead_cycles_per_element: f64,
    /// exp, sigmoid or reciprocal square root of one element in software (no SIMD
    /// instruction exists). Assumption: not in the calibration set.
    pub transcendental_cycles_per_element: f64,
}

/// Links between wafers in a multi-system pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    pub offwafer_bandwidth_bytes_per_s: f64,
    pub offwafer_latency_s: f64,
}

impl WaferSpec {
    /// The names `preset` accepts.
    pub const PRESETS: [&'static str; 2] = ["wse3", "wse2"];

    pub fn preset(name: &str) -> Result<WaferSpec> {
        match name.to_ascii_lowercase().as_str() {
            "wse3" | "wse-3" | "cs3" | "cs-3" => Ok(wse3()),
            "wse2" | "wse-2" | "cs2" | "cs-2" => Ok(wse2()),
            _ => Err(CoreError::UnknownPreset(name.to_string())),
        }
    }

    /// Parses a TOML spec. The file may set `base = "wse3"` (or `"wse2"`) and then
    /// override any subset of fields; without `base` it must give every field.
    /// `source_name` names the file in error messages.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<WaferSpec> {
        let parse_err = |message: String| CoreError::SpecParse {
            source_name: source_name.to_string(),
            message,
        };
        let mut table: toml::Table = text.parse().map_err(|e| parse_err(format!("{e}")))?;
        let has_base = table.contains_key("base");
        let merged = match table.remove("base") {
            Some(toml::Value::String(base)) => {
                let base_spec = WaferSpec::preset(&base)?;
                let mut base_table = toml::Table::try_from(&base_spec)
                    .map_err(|e| parse_err(format!("cannot serialise preset: {e}")))?;
                merge_tables(&mut base_table, table, "")
                    .map_err(|m| parse_err(format!("override of {m}")))?;
                base_table
            }
            Some(other) => {
                return Err(parse_err(format!(
                    "field `base`: expected a preset name string, found {}",
                    other.type_str()
                )))
            }
            None => table,
        };
        // Deserialise from text, not from the table, so a type error carries a span
        // from which the offending field's dotted path can be named.
        let merged_text = toml::to_string(&merged)
            .map_err(|e| parse_err(format!("cannot re-serialise the merged spec: {e}")))?;
        let spec: WaferSpec = toml::from_str(&merged_text).map_err(|e| {
            let mut message = describe_de_error(&e, &merged_text);
            if !has_base && e.message().starts_with("missing field") {
                message.push_str(
                    "; a spec without `base` must give every field: start it with \
                     base = \"wse3\" (or \"wse2\") to override only some",
                );
            }
            parse_err(message)
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a WaferSpec always serialises to TOML")
    }

    pub fn sram_per_pe(&self) -> Bytes {
        Bytes(self.pe.sram_bytes)
    }

    pub fn pes(&self) -> u64 {
        self.fabric.width_pes as u64 * self.fabric.height_pes as u64
    }

    pub fn wafer_sram(&self) -> Bytes {
        Bytes(self.pe.sram_bytes * self.pes())
    }

    /// The largest fabric side [`Self::validate`] accepts (WSE-3: 762 x 1172 PEs).
    pub const MAX_FABRIC_SIDE_PES: u32 = 1 << 14;
    /// The largest PE SRAM [`Self::validate`] accepts (WSE-3: 48 KiB). With
    /// [`Self::MAX_FABRIC_SIDE_PES`] a wafer holds at most 2^48 bytes, so the
    /// byte counts of pipelines of thousands of wafers fit in a `u64`.
    pub const MAX_PE_SRAM_BYTES: u64 = 1 << 20;

    /// Rejects values no machine could have (zero sizes, sizes so large that
    /// the wafer's byte counts overflow, negative latencies, ...).
    pub fn validate(&self) -> Result<()> {
        fn positive(field: &str, v: f64) -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(CoreError::InvalidSpec {
                    field: field.into(),
                    problem: format!("expected a positive finite number, found {v}"),
                })
            }
        }
        fn non_negative(field: &str, v: f64) -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(CoreError::InvalidSpec {
                    field: field.into(),
                    problem: format!("expected a non-negative finite number, found {v}"),
                })
            }
        }
        fn nonzero(field: &str, v: u64) -> Result<()> {
            if v > 0 {
                Ok(())
            } else {
                Err(CoreError::InvalidSpec {
                    field: field.into(),
                    problem: "expected at least 1, found 0".into(),
                })
            }
        }
        fn at_most(field: &str, v: u64, max: u64) -> Result<()> {
            if v <= max {
                Ok(())
            } else {
                Err(CoreError::InvalidSpec {
                    field: field.into(),
                    problem: format!("expected at most {max}, found {v}"),
                })
            }
        }
        positive("clock_hz", self.clock_hz)?;
        nonzero("fabric.width_pes", self.fabric.width_pes as u64)?;
        nonzero("fabric.height_pes", self.fabric.height_pes as u64)?;
        nonzero("pe.sram_bytes", self.pe.sram_bytes)?;
        let side = Self::MAX_FABRIC_SIDE_PES as u64;
        at_most("fabric.width_pes", self.fabric.width_pes as u64, side)?;
        at_most("fabric.height_pes", self.fabric.height_pes as u64, side)?;
        at_most("pe.sram_bytes", self.pe.sram_bytes, Self::MAX_PE_SRAM_BYTES)?;
        if self.pe.reserve_bytes >= self.pe.sram_bytes {
            return Err(CoreError::InvalidSpec {
                field: "pe.reserve_bytes".into(),
                problem: format!(
                    "reserve of {} bytes leaves no data memory in a {}-byte PE",
                    self.pe.reserve_bytes, self.pe.sram_bytes
                ),
            });
        }
        nonzero("pe.mem_reads_per_cycle", self.pe.mem_reads_per_cycle as u64)?;
        nonzero("pe.mem_port_bits", self.pe.mem_port_bits as u64)?;
        non_negative("pe.fabric_op_setup_cycles", self.pe.fabric_op_setup_cycles)?;
        non_negative("pe.task_switch_cycles", self.pe.task_switch_cycles)?;
        let s = &self.simd;
        for (field, v) in [
            ("simd.fp16_fmac", s.fp16_fmac),
            ("simd.fp16_fmac_fp32_acc", s.fp16_fmac_fp32_acc),
            ("simd.fp16_add", s.fp16_add),
            ("simd.fp16_mul", s.fp16_mul),
            ("simd.fp32_add", s.fp32_add),
            ("simd.fp32_mul", s.fp32_mul),
            ("simd.fp32_fmac", s.fp32_fmac),
            ("simd.fp16_max", s.fp16_max),
            ("simd.fp32_max", s.fp32_max),
        ] {
            nonzero(field, v as u64)?;
        }
        nonzero("router.ports", self.router.ports as u64)?;
        nonzero("router.colors", self.router.colors as u64)?;
        if self.router.wavelet_bits != 32 && self.router.wavelet_bits != 64 {
            return Err(CoreError::InvalidSpec {
                field: "router.wavelet_bits".into(),
                problem: format!("expected 32 or 64, found {}", self.router.wavelet_bits),
            });
        }
        for (field, depths) in [
            ("router.input_queue_depths", &self.router.input_queue_depths),
            (
                "router.output_queue_depths",
                &self.router.output_queue_depths,
            ),
        ] {
            if depths.is_empty() || depths.contains(&0) {
                return Err(CoreError::InvalidSpec {
                    field: field.into(),
                    problem: format!(
                        "expected a non-empty list of queue depths of at least 1 word, found {depths:?}"
                    ),
                });
            }
        }
        non_negative("router.hop_latency_cycles", self.router.hop_latency_cycles)?;
        non_negative(
            "router.ramp_latency_cycles",
            self.router.ramp_latency_cycles,
        )?;
        let c = &self.cost;
        non_negative("cost.relay_stage_cycles", c.relay_stage_cycles)?;
        non_negative("cost.relay_cycles_per_wavelet", c.relay_cycles_per_wavelet)?;
        non_negative("cost.layer_phase_sync_cycles", c.layer_phase_sync_cycles)?;
        non_negative("cost.hop_cycles", c.hop_cycles)?;
        non_negative(
            "cost.fabric_collective_residual_cycles",
            c.fabric_collective_residual_cycles,
        )?;
        non_negative(
            "cost.transcendental_cycles_per_element",
            c.transcendental_cycles_per_element,
        )?;
        non_negative("cost.reduce_level_cycles", c.reduce_level_cycles)?;
        non_negative("cost.phase_overhead_cycles", c.phase_overhead_cycles)?;
        non_negative("cost.task_overhead_cycles", c.task_overhead_cycles)?;
        non_negative(
            "cost.loop_overhead_cycles_per_element",
            c.loop_overhead_cycles_per_element,
        )?;
        positive(
            "system.offwafer_bandwidth_bytes_per_s",
            self.system.offwafer_bandwidth_bytes_per_s,
        )?;
        non_negative("system.offwafer_latency_s", self.system.offwafer_latency_s)?;
        Ok(())
    }
}

/// An error message naming the field (`section.key`) at the error's span, when it has one.
fn describe_de_error(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(|s| s.trim_matches(['[', ']']).to_string());
    let field = match (section, key.is_empty()) {
        (Some(sec), false) => format!("{sec}.{key}"),
        (None, false) => key.to_string(),
        (Some(sec), true) => sec,
        (None, true) => return e.message().to_string(),
    };
    format!("field `{field}`: {}", e.message())
}

/// Deep-merges `over` into `base`; a key that `base` lacks is an error naming its path.
fn merge_tables(base: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in over {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o, &path)?,
            (Some(slot), v) => *slot = v,
            (None, _) => return Err(format!("unknown field `{path}`")),
        }
    }
    Ok(())
}

/// Cerebras WSE-3 (CS-3). Sources and assumptions: `docs/hardware.md`; where
/// sources disagree the choice is noted here and the alternative is one TOML
/// override away (`docs/hardware.md`, "Disagreements").
pub fn wse3() -> WaferSpec {
    WaferSpec {
        name: "wse3".into(),
        // Not published for WSE-3; 1.1 GHz as WaferLLM converts (0.85 GHz is the
        // SDK-benchmark alternative).
        clock_hz: 1.1e9,
        // The fabric the SDK exposes; the memcpy-usable rectangle (755 x 1171) is
        // the alternative.
        fabric: FabricSpec {
            width_pes: 762,
            height_pes: 1172,
        },
        pe: PeSpec {
            sram_bytes: 48 * 1024,
            // Code and runtime: a minimal memcpy program leaves 44,976 of the 49,152
            // bytes (measured on a CS-3, docs/hardware.md); an inference program's own
            // code is not measured, so this is a lower bound (8,192 was assumed before).
            reserve_bytes: 49_152 - 44_976,
            // SDK appendix: two 32-bit reads (+ one write, not modelled) per cycle
            // (Hot Chips 34 says 64-bit).
            mem_reads_per_cycle: 2,
            mem_port_bits: 32,
            // DSD operation setup measured on CS-3 silicon: 15-17 cycles (the
            // constant of a + b * N fits; docs/hardware.md).
            fabric_op_setup_cycles: 16.0,
            // Fitted to C5's steps (docs/fabric.md, "Fitted parameters").
            task_switch_cycles: 36.0,
        },
        simd: SimdSpec {
            fp16_fmac: 8,
            fp16_fmac_fp32_acc: 4,
            fp16_add: 8,
            fp16_mul: 8,
            fp32_add: 4,
            // Assumption: fp32 multiply as fp32 add; fp32 FMAC absent from the table.
            fp32_mul: 4,
            fp32_fmac: 1,
            fp16_max: 8,
            // Assumption: fp32 max as fp32 add.
            fp32_max: 4,
        },
        router: RouterSpec {
            ports: 5,
            // WSE-3 fabric switches are restricted to 16 of the 24 colors.
            colors: 16,
            wavelet_bits: 32,
            // FABRICA's CS-3 silicon (and SDK simulator) measurement; Hot Chips
            // 34's "single cycle" is WSE-2's (the wse2 preset below).
            hop_latency_cycles: 2.0,
            ramp_latency_cycles: 2.0,
            input_queue_depths: vec![8, 8, 4, 4, 4, 4, 4, 4],
            output_queue_depths: vec![8; 8],
        },
        precision: PrecisionSpec {
            weight_dtype: DType::F16,
            activation_dtype: DType::F16,
            accumulate_dtype: DType::F32,
            kv_dtype: DType::F16,
        },
        cost: wse3_cost(),
        // 12 x 100 GbE = 1.2 Tb/s = 150 GB/s per system; the latency is an assumption.
        system: SystemSpec {
            offwafer_bandwidth_bytes_per_s: 150e9,
            offwafer_latency_s: 1e-6,
        },
    }
}

/// The fitted cost block of `wse3` (C5-C7 of `shared/calibration.md`; the fit and
/// each value's plausibility are in `docs/cost-model.md`).
pub fn wse3_cost() -> CostSpec {
    CostSpec {
        // What the rest was fitted with (the spec's hop was 1 cycle then).
        hop_cycles: 1.0,
        relay_stage_cycles: 77.0,
        relay_cycles_per_wavelet: 1.8,
        reduce_level_cycles: 8.5,
        phase_overhead_cycles: 21.6,
        layer_phase_sync_cycles: 681.0,
        // Fitted to C4 through the fabric simulator (docs/fabric.md).
        fabric_collective_residual_cycles: 1134.0,
        task_overhead_cycles: 39.8,
        loop_overhead_cycles_per_element: 0.0,
        transcendental_cycles_per_element: 8.0,
    }
}

/// The fitted cost block of `wse2` (C1-C2 of `shared/calibration.md`; see
/// `docs/cost-model.md`).
pub fn wse2_cost() -> CostSpec {
    CostSpec {
        hop_cycles: 1.0,
        // Not fitted (C1/C2 cannot separate them): the wse3 values of C5/C7.
        relay_stage_cycles: 77.0,
        relay_cycles_per_wavelet: 1.8,
        // Not fitted: Luczynski et al. measured 2 * T_R + 1 = 5 cycles on WSE-2.
        reduce_level_cycles: 5.0,
        // Not fitted: the wse3 value of C5/C6 (C1/C2 cannot separate it from
        // the layer-program sync below).
        phase_overhead_cycles: 21.6,
        layer_phase_sync_cycles: 202.1,
        // Fitted to C1 (420 x 420) through the fabric simulator (docs/fabric.md).
        fabric_collective_residual_cycles: 244.0,
        task_overhead_cycles: 71.9,
        loop_overhead_cycles_per_element: 0.107,
        transcendental_cycles_per_element: 8.0,
    }
}

/// Cerebras WSE-2 (CS-2). Sources and assumptions: `docs/hardware.md`. Fields
/// not set here (SRAM, reserve, memory ports, clock, links) are as for WSE-3:
/// the sources give the same values (the 1.1 GHz clock is Hot Chips 34's WSE-2 figure;
/// the reserve is measured on WSE-3 only and taken for WSE-2 too).
pub fn wse2() -> WaferSpec {
    let mut spec = wse3();
    spec.name = "wse2".into();
    spec.fabric = FabricSpec {
        width_pes: 757,
        height_pes: 996,
    };
    spec.simd = SimdSpec {
        fp16_fmac: 4,
        fp16_fmac_fp32_acc: 2,
        fp16_add: 4,
        fp16_mul: 4,
        fp32_add: 2,
        fp32_mul: 2,
        fp32_fmac: 1,
        fp16_max: 1,
        fp32_max: 2,
    };
    spec.cost = wse2_cost();
    spec.router.colors = 24;
    // Hot Chips 34: "single cycle latency between cores" (HPDC's WSE-2 model
    // takes 1 cycle too).
    spec.router.hop_latency_cycles = 1.0;
    spec.router.input_queue_depths = vec![6, 6, 4, 4, 2, 2, 2, 2];
    spec.router.output_queue_depths = vec![2, 2, 6, 6, 2, 2];
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() {
        for name in WaferSpec::PRESETS {
            let spec = WaferSpec::preset(name).unwrap();
            spec.validate().unwrap();
            let text = spec.to_toml_string();
            let back = WaferSpec::from_toml_str(&text, "round-trip").unwrap();
            assert_eq!(spec, back);
        }
        assert_eq!(wse3().pes(), 762 * 1172);
    }

    #[test]
    fn toml_overrides_a_preset() {
        let spec = WaferSpec::from_toml_str(
            "base = \"wse3\"\nclock_hz = 0.85e9\n[router]\nhop_latency_cycles = 2.0\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(spec.clock_hz, 0.85e9);
        assert_eq!(spec.router.hop_latency_cycles, 2.0);
        assert_eq!(spec.pe.sram_bytes, 49_152);
    }

    #[test]
    fn bad_toml_is_rejected_with_the_field_named() {
        let err = WaferSpec::from_toml_str("base = \"wse3\"\n[router]\nhops = 2\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("router.hops"), "{err}");
        let err = WaferSpec::from_toml_str("base = \"wse3\"\n[fabric]\nwidth_pes = 0\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fabric.width_pes"), "{err}");
        let err = WaferSpec::from_toml_str("base = \"wse9\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wse9"), "{err}");
        let err = WaferSpec::from_toml_str("clock_hz = 1.0\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml") && err.contains("missing field"),
            "{err}"
        );
        // Without `base`, the message says how to override only some fields.
        assert!(err.contains("base = \"wse3\""), "{err}");
    }

    #[test]
    fn sizes_whose_byte_counts_overflow_are_rejected() {
        // Found by fuzzing: an SRAM of 2^53 bytes per PE overflowed the bytes
        // of a wafer (PEs x SRAM) in the placement search.
        let err = WaferSpec::from_toml_str(
            "base = \"wse2\"\n[pe]\nsram_bytes = 9007199254740993\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pe.sram_bytes"), "{err}");
        let err = WaferSpec::from_toml_str(
            "base = \"wse3\"\n[fabric]\nwidth_pes = 4294967295\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("fabric.width_pes"), "{err}");
        // The largest spec accepted has byte counts that fit.
        let mut big = wse3();
        big.fabric.width_pes = WaferSpec::MAX_FABRIC_SIDE_PES;
        big.fabric.height_pes = WaferSpec::MAX_FABRIC_SIDE_PES;
        big.pe.sram_bytes = WaferSpec::MAX_PE_SRAM_BYTES;
        big.validate().unwrap();
        assert_eq!(big.wafer_sram().0, 1 << 48);
    }

    #[test]
    fn hw_show_output_can_be_copied_edited_and_loaded() {
        // What `wafer hw show wse3` prints, with one line edited by hand.
        let text = wse3().to_toml_string();
        assert!(text.contains("sram_bytes = 49152"), "{text}");
        let edited = text.replace("sram_bytes = 49152", "sram_bytes = 65536");
        assert_ne!(edited, text);
        let spec = WaferSpec::from_toml_str(&edited, "edited.toml").unwrap();
        let mut expected = wse3();
        expected.pe.sram_bytes = 65_536;
        assert_eq!(spec, expected);
    }

    #[test]
    fn the_alternatives_where_sources_disagree_are_one_override_away() {
        let spec = WaferSpec::from_toml_str(
            "base = \"wse3\"\nclock_hz = 0.85e9\n[fabric]\nwidth_pes = 755\nheight_pes = 1171\n\
             [pe]\nmem_port_bits = 64\n[router]\ncolors = 24\n",
            "alt.toml",
        )
        .unwrap();
        assert_eq!(spec.clock_hz, 0.85e9);
        assert_eq!(spec.pes(), 755 * 1171);
        assert_eq!(spec.pe.mem_port_bits, 64);
        assert_eq!(spec.router.colors, 24);
        assert_eq!(spec.precision.kv_dtype, DType::F16);
    }

    #[test]
    fn impossible_values_are_rejected() {
        let check = |toml: &str, field: &str| {
            let err = WaferSpec::from_toml_str(toml, "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        check("base = \"wse2\"\n[pe]\nsram_bytes = 0\n", "pe.sram_bytes");
        check(
            "base = \"wse2\"\n[pe]\nreserve_bytes = 49152\n",
            "pe.reserve_bytes",
        );
        check("base = \"wse3\"\nclock_hz = -1.0\n", "clock_hz");
        check("base = \"wse3\"\n[pe]\nsram_bytes = -5\n", "sram_bytes");
        check(
            "base = \"wse3\"\n[router]\ninput_queue_depths = []\n",
            "router.input_queue_depths",
        );
        check(
            "base = \"wse3\"\n[system]\noffwafer_bandwidth_bytes_per_s = 0.0\n",
            "system.offwafer_bandwidth_bytes_per_s",
        );
        check(
            "base = \"wse3\"\n[precision]\nkv_dtype = \"q4\"\n",
            "kv_dtype",
        );
    }
}
