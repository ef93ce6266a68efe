//! The mesh engine against the dense reference: a small random-weight model on a
//! tiny wafer in the normal test run, SmolLM2-135M on the full `wse3` fabric
//! when `WAFER_TEST_MODEL_DIR` is set, and an ignored 131,072-token run.

mod common;

use common::real_model_dir;

use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use wafer_core::{DType, PeCoord, Region, RegionShape, WaferSpec};
use wafer_lower::cost::PlanOptions;
use wafer_lower::layout::{Layout, Site};
use wafer_lower::placement::{place, PlaceOptions};
use wafer_mesh::{model_source, MeshProgram};
use wafer_models::reference::{rope, ReferenceModel};
use wafer_models::weights::matrix::round_to;
use wafer_models::weights::{LayerWeights, LlamaWeights, Matrix};
use wafer_models::ModelConfig;

/// A Llama-shaped config; `extra` adds JSON fields (e.g. rope scaling).
fn tiny_config(
    vocab: usize,
    d: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    extra: &str,
) -> ModelConfig {
    ModelConfig::from_json_str(&format!(
        r#"{{"vocab_size":{vocab},"hidden_size":{d},"intermediate_size":{ffn},"num_hidden_layers":{layers},
        "num_attention_heads":{heads},"num_key_value_heads":{kv_heads},"max_position_embeddings":200000,
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false{extra}}}"#
    ))
    .unwrap()
}

/// Seeded random weights rounded to f16 (the mesh's weight precision).
fn random_weights(c: &ModelConfig, seed: u64) -> LlamaWeights {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut m = |rows: usize, cols: usize| {
        let s = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.gen_range(-s..s) * 1.7)
            .collect();
        Matrix::from_f32(rows, cols, v, DType::F16)
    };
    let (d, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let layers = (0..c.num_hidden_layers)
        .map(|_| LayerWeights {
            input_layernorm: vec![],
            q_proj: m(q, d),
            k_proj: m(kv, d),
            v_proj: m(kv, d),
            o_proj: m(d, q),
            q_bias: None,
            k_bias: None,
            v_bias: None,
            o_bias: None,
            q_norm: None,
            k_norm: None,
            post_attention_layernorm: vec![],
            gate_proj: m(f, d),
            up_proj: m(f, d),
            down_proj: m(d, f),
        })
        .collect::<Vec<_>>();
    let embed = m(c.vocab_size, d);
    let head = m(c.vocab_size, d);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
    let mut norm = || {
        let mut v: Vec<f32> = (0..d).map(|_| rng.gen_range(0.5..1.5)).collect();
        round_to(&mut v, DType::F16);
        v
    };
    let layers = layers
        .into_iter()
        .map(|mut l| {
            l.input_layernorm = norm();
            l.post_attention_layernorm = norm();
            l
        })
        .collect();
    LlamaWeights {
        embed_tokens: embed,
        layers,
        norm: norm(),
        lm_head: Some(head),
        dtype: DType::F16,
    }
}

/// A small `wse3` with activations and the KV cache at f32 like the reference
/// engine's, so the two compute the same numbers up to the order of additions
/// (the spec's 16-bit formats round them; see
/// `sixteen_bit_numbers_are_honoured_and_stay_close_to_the_reference`).
fn tiny_wafer(width: u32, height: u32) -> WaferSpec {
    tiny_wafer_in(width, height, "f32", "f32", "f32")
}

/// A small `wse3` with the given activation, accumulation and KV formats.
fn tiny_wafer_in(width: u32, height: u32, act: &str, acc: &str, kv: &str) -> WaferSpec {
    WaferSpec::from_toml_str(
        &format!("base = \"wse3\"\n[fabric]\nwidth_pes = {width}\nheight_pes = {height}\n[precision]\nactivation_dtype = \"{act}\"\naccumulate_dtype = \"{acc}\"\nkv_dtype = \"{kv}\"\n"),
        "tiny.toml",
    )
    .unwrap()
}

/// The automatic placement of `config` on `spec` for `context` positions.
fn placed(
    config: &ModelConfig,
    spec: &WaferSpec,
    context: u64,
) -> wafer_lower::placement::Placement {
    place(
        config,
        spec,
        &PlaceOptions {
            context_tokens: context,
            region: None,
            wafers: None,
            strategy: Default::default(),
        },
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// A `w x h` region at (`x`, `y`) of wafer 0.
fn site(x: u32, y: u32, w: u32, h: u32) -> Site {
    Site {
        wafer: 0,
        region: Region::new(PeCoord::new(x, y), RegionShape::new(w, h).unwrap()),
    }
}

/// Runs `prompt` then `steps` greedy tokens on both engines, checking every
/// step's logits (within `tol`), the chosen tokens, and the mesh's own argmax.
fn check_against_reference(
    config: &ModelConfig,
    weights: &LlamaWeights,
    spec: WaferSpec,
    layout: Layout,
    prompt: &[u32],
    steps: usize,
    tol: f32,
) -> Vec<u32> {
    check_against_reference_with(
        config,
        weights,
        spec,
        layout,
        prompt,
        steps,
        tol,
        &PlanOptions::default(),
    )
}

/// [`check_against_reference`] with the mesh on the trees `opts` picks.
#[allow(clippy::too_many_arguments)]
fn check_against_reference_with(
    config: &ModelConfig,
    weights: &LlamaWeights,
    spec: WaferSpec,
    layout: Layout,
    prompt: &[u32],
    steps: usize,
    tol: f32,
    opts: &PlanOptions,
) -> Vec<u32> {
    let context = prompt.len() + steps;
    let mut mesh = MeshProgram::new(
        config.clone(),
        spec,
        layout,
        &model_source(weights),
        rope::inv_freq(config),
        context,
        opts,
    )
    .unwrap();
    let mut reference = ReferenceModel::new(config.clone(), weights.clone());
    let t0 = std::time::Instant::now();
    let mut want = reference.forward(prompt).unwrap();
    if prompt.len() >= 16_384 {
        eprintln!(
            "reference: {}-token prompt in {:.0} s",
            prompt.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    for (i, &t) in prompt.iter().enumerate() {
        got = mesh.step(t).unwrap();
        // Long prompts report their progress (the 131,072-token run takes minutes).
        if prompt.len() >= 16_384 && (i + 1) % 8_192 == 0 {
            eprintln!(
                "mesh: {} of {} prompt tokens, {:.0} s",
                i + 1,
                prompt.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let mut tokens = Vec::new();
    for step in 0..steps {
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff < tol,
            "step {step}: mesh logits differ from the reference by {diff}"
        );
        let next = argmax(&want);
        assert_eq!(argmax(&got), next, "step {step}: greedy tokens differ");
        assert_eq!(
            mesh.last_argmax,
            Some(next),
            "step {step}: the mesh's argmax reduction"
        );
        tokens.push(next);
        want = reference.forward(&[next]).unwrap();
        got = mesh.step(next).unwrap();
    }
    tokens
}

#[test]
fn tiny_random_model_matches_reference_on_placed_tiny_wafer() {
    let config = tiny_config(96, 48, 80, 3, 6, 2, "");
    let weights = random_weights(&config, 42);
    let spec = tiny_wafer(40, 30);
    let placement = placed(&config, &spec, 64);
    assert!(placement.fits());
    let tokens = check_against_reference(
        &config,
        &weights,
        spec,
        placement.layout(),
        &[3, 17, 90, 4, 4, 61],
        20,
        1e-3,
    );
    // A random model still produces varied tokens (the test is not vacuous).
    assert!(
        tokens
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "{tokens:?}"
    );
}

#[test]
fn odd_regions_padding_and_shared_regions_match_reference() {
    // Regions whose sides divide nothing, a layer pair sharing one region, a
    // region taller than the hidden size, and Llama 3 RoPE scaling.
    let config = tiny_config(
        70,
        24,
        40,
        3,
        4,
        1,
        r#","rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}"#,
    );
    let weights = random_weights(&config, 7);
    let spec = tiny_wafer(64, 64);
    let shared = site(0, 0, 5, 3);
    let layout = Layout {
        embedding: site(10, 10, 7, 2),
        layers: vec![shared, shared, site(20, 0, 3, 31)],
        lm_head: site(30, 30, 9, 5),
    };
    check_against_reference(
        &config,
        &weights,
        spec,
        layout,
        &[1, 2, 3, 69, 0, 5, 5, 5, 9],
        30,
        1e-3,
    );
}

/// Qwen2-style Q/K/V biases and an output-projection bias (the reference's
/// `o_bias`), each added where its GEMV's reduction lands.
#[test]
fn projection_biases_match_reference() {
    let config = tiny_config(80, 32, 48, 2, 4, 2, "");
    let mut weights = random_weights(&config, 21);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
    let mut bias = |n: usize| -> Option<Vec<f32>> {
        let mut v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect();
        round_to(&mut v, DType::F16);
        Some(v)
    };
    for l in &mut weights.layers {
        l.q_bias = bias(config.q_dim());
        l.k_bias = bias(config.kv_dim());
        l.v_bias = bias(config.kv_dim());
        l.o_bias = bias(config.hidden_size);
    }
    let spec = tiny_wafer(48, 40);
    let placement = placed(&config, &spec, 64);
    let with_bias = check_against_reference(
        &config,
        &weights,
        spec.clone(),
        placement.layout(),
        &[5, 9, 33, 2],
        12,
        1e-3,
    );
    // The biases matter: without the output bias the tokens change.
    weights.layers.iter_mut().for_each(|l| l.o_bias = None);
    let mut mesh = MeshProgram::new(
        config.clone(),
        spec,
        placement.layout(),
        &model_source(&weights),
        rope::inv_freq(&config),
        64,
        &PlanOptions::default(),
    )
    .unwrap();
    let mut without = Vec::new();
    let mut next = 0;
    for &t in &[5, 9, 33, 2] {
        next = argmax(&mesh.step(t).unwrap());
    }
    for _ in 0..12 {
        without.push(next);
        next = argmax(&mesh.step(next).unwrap());
    }
    assert_ne!(
        with_bias, without,
        "the output-projection bias changed nothing"
    );
}

#[test]
fn a_layout_that_overflows_sram_is_refused() {
    let config = tiny_config(64, 32, 64, 1, 4, 2, "");
    let weights = random_weights(&config, 1);
    let mut spec = tiny_wafer(8, 8);
    spec.pe.sram_bytes = 9 * 1024;
    let one = Site {
        wafer: 0,
        region: Region::new(PeCoord::new(0, 0), RegionShape::new(1, 1).unwrap()),
    };
    let layout = Layout {
        embedding: one,
        layers: vec![one],
        lm_head: one,
    };
    let err = MeshProgram::new(
        config.clone(),
        spec,
        layout,
        &model_source(&weights),
        rope::inv_freq(&config),
        8,
        &PlanOptions::default(),
    )
    .err()
    .expect("one PE cannot hold a layer in 1 KB of data SRAM");
    let text = format!("{err:#}");
    assert!(text.contains("layer 0"), "{text}");
}

/// The mesh engine's cycles are the estimate's for the same placement, context
/// and reduction trees: the K the engine runs reaches its pricing (K = 1 here,
/// a chain, which costs otherwise than the default tree).
#[test]
fn mesh_cycles_equal_the_estimate_for_the_same_layout_and_context() {
    use wafer_lower::cost::{decode_plan_with, prefill, PrefillScheme};
    use wafer_lower::estimate::{placement_for, EstimateOptions};
    use wafer_mesh::{MeshEngine, MeshSetup};
    use wafer_models::engine::Engine;
    let config = tiny_config(96, 48, 80, 4, 6, 2, "");
    let weights = random_weights(&config, 5);
    let spec = tiny_wafer(48, 40);
    let k1 = PlanOptions::with_reduce_k(1).unwrap();
    let setup = MeshSetup {
        spec: spec.clone(),
        region: None,
        wafers: None,
        context: 32,
        options: k1,
    };
    let mut engine = MeshEngine::place_and_build(config.clone(), &weights, &setup).unwrap();
    let prompt = [5u32, 6, 7, 8, 9];
    // The layout the engine was placed on is the one `wafer estimate` places for
    // the same options.
    let layout = placement_for(
        &spec,
        &config,
        &EstimateOptions {
            wafers: None,
            strategy: Default::default(),
            region: None,
            context: 32,
            prompt_tokens: 0,
        },
    )
    .unwrap()
    .layout();
    assert_eq!(engine.program().layout, layout);
    let decode_at = |context: usize, k: &PlanOptions| {
        decode_plan_with(&spec, &config, &layout, context, k).total()
    };
    assert_ne!(
        decode_at(20, &k1),
        decode_at(20, &PlanOptions::default()),
        "K = 1 and K = 2 cost alike here: the test would not see K"
    );
    // The mesh runs the prompt one token at a time: it reports that scheme's price.
    let tbt = k1.with_prefill_scheme(Some(PrefillScheme::TokenByToken));
    let ttft_want = prefill(&spec, &config, &layout, prompt.len(), &tbt)
        .unwrap()
        .plan
        .total();
    let logits = engine.prefill(&prompt).unwrap();
    let report = engine.step_report().unwrap();
    let ttft = report.json["cycles"].as_f64().unwrap();
    assert_eq!(ttft, ttft_want.get());
    assert!(ttft > 0.0);
    let mut token = argmax(&logits);
    let mut decode = Vec::new();
    for _ in 0..6 {
        token = argmax(&engine.decode(token).unwrap());
        let cycles = engine.step_report().unwrap().json["cycles"]
            .as_f64()
            .unwrap();
        // The step just attended over every cached position.
        assert_eq!(cycles, decode_at(engine.position(), &k1).get());
        decode.push(cycles);
    }
    // Attention grows with the KV length: later steps cost at least as much.
    assert!(decode.windows(2).all(|w| w[1] >= w[0]), "{decode:?}");
    let summary = engine.summary_report().unwrap().json;
    assert_eq!(summary["ttft_cycles"].as_f64().unwrap(), ttft);
    let mean = decode.iter().sum::<f64>() / decode.len() as f64;
    assert!((summary["decode_cycles_per_token"].as_f64().unwrap() - mean).abs() < 1e-9 * mean);
    assert!(
        (summary["simulated_tokens_per_s"].as_f64().unwrap() - spec.clock_hz / mean).abs() < 1e-6
    );
    let per_layer = summary["breakdown"]["per_layer"].as_array().unwrap();
    assert_eq!(per_layer.len(), config.num_hidden_layers);
    let cats = &summary["breakdown"]["per_category"];
    let sum: f64 = ["compute", "fabric", "sync", "off_wafer"]
        .iter()
        .map(|k| cats[*k].as_f64().unwrap())
        .sum();
    assert!((sum - cats["total"].as_f64().unwrap()).abs() < 1e-6);
    // The same cycles summed by category instead of by operation (float order only).
    let last = *decode.last().unwrap();
    assert!((cats["total"].as_f64().unwrap() - last).abs() < 1e-9 * last);
}

/// SmolLM2-135M on the full `wse3` fabric (activations and KV held at f32, the
/// reference's precision): 4 prompts x 32 greedy tokens identical to the
/// reference with f16-rounded weights, logits within 1e-3 at every step.
#[test]
fn smollm2_on_wse3_matches_reference() {
    let Some(dir) = real_model_dir() else { return };
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let tokenizer = wafer_models::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let spec = WaferSpec::from_toml_str(
        "base = \"wse3\"\n[precision]\nactivation_dtype = \"f32\"\nkv_dtype = \"f32\"\n",
        "wse3-f32",
    )
    .unwrap();
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
        "The three primary colors are",
    ];
    let steps = 32;
    let max_prompt = 16;
    let placement = placed(&config, &spec, (max_prompt + steps) as u64);
    assert!(placement.fits() && placement.wafers == 1);
    for p in prompts {
        let ids = tokenizer.encode(p, true).unwrap();
        assert!(ids.len() <= max_prompt, "{p}: {} tokens", ids.len());
        let tokens = check_against_reference(
            &config,
            &weights,
            spec.clone(),
            placement.layout(),
            &ids,
            steps,
            1e-3,
        );
        eprintln!("{p:?} -> {:?}", tokenizer.decode(&tokens).unwrap());
    }
}

/// A 131,072-token prompt through a small synthetic Llama (Llama 3 RoPE scaling)
/// on the mesh, against the reference. Takes minutes; run it with
/// `cargo test --release -p wafer-mesh --test mesh -- --ignored long_context --nocapture`.
#[test]
#[ignore]
fn long_context_131072_tokens_matches_reference() {
    let config = tiny_config(
        64,
        32,
        32,
        1,
        2,
        1,
        r#","rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":4096}"#,
    );
    let weights = random_weights(&config, 131);
    let spec = tiny_wafer(64, 64);
    // WAFER_LONG_CONTEXT_TOKENS runs a shorter prompt (to time the scaling).
    let n = std::env::var("WAFER_LONG_CONTEXT_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(131_072);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let prompt: Vec<u32> = (0..n).map(|_| rng.gen_range(0..64)).collect();
    let placement = placed(&config, &spec, n as u64 + 4);
    assert!(
        placement.fits(),
        "the synthetic model must hold 131,076 positions on the tiny wafer"
    );
    let t = std::time::Instant::now();
    let tokens = check_against_reference(
        &config,
        &weights,
        spec,
        placement.layout(),
        &prompt,
        4,
        1e-3,
    );
    eprintln!(
        "{n}-token prompt matched; next tokens {tokens:?}; {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

/// Qwen3's per-head q/k RMSNorm on the mesh: the tiny transformers-checked
/// checkpoint gives the reference's tokens, on a placed layout and on regions
/// 5 columns wide, where each 12-dim head straddles three columns and its sum
/// of squares travels across them.
#[test]
fn qwen3_qk_norm_matches_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference/tiny-qwen3");
    let config = ModelConfig::from_dir(&dir).unwrap();
    assert!(config.qk_norm());
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let spec = tiny_wafer(48, 40);
    let placement = placed(&config, &spec, 64);
    check_against_reference(
        &config,
        &weights,
        spec.clone(),
        placement.layout(),
        &[5, 9, 33, 2, 100],
        12,
        1e-3,
    );
    let narrow = site(0, 0, 5, 4);
    let layout = Layout {
        embedding: narrow,
        layers: vec![narrow, site(5, 0, 5, 7), narrow],
        lm_head: narrow,
    };
    check_against_reference(&config, &weights, spec, layout, &[1, 2, 3], 12, 1e-3);
    // Without the norms the mesh refuses the checkpoint instead of running it.
    let mut bare = weights.clone();
    bare.layers.iter_mut().for_each(|l| l.q_norm = None);
    let err = MeshProgram::new(
        config.clone(),
        tiny_wafer(48, 40),
        placement.layout(),
        &model_source(&bare),
        rope::inv_freq(&config),
        64,
        &PlanOptions::default(),
    )
    .err()
    .expect("a Qwen3 layer without q_norm");
    assert!(format!("{err:#}").contains("q_norm"), "{err:#}");
}

/// The invariants of the one placed program, on random small configs, regions
/// and trees: the bytes placement counts on every PE are the bytes the mesh's
/// tiles hold; the MACs the plan charges each GEMV step are the tiles the mesh
/// multiplies; KV bytes follow `kv_dtype` on both sides; and the mesh builds
/// (it refuses a tree other than the charged one) and gives the reference's
/// tokens.
#[test]
fn the_mesh_stores_and_runs_what_placement_and_the_plan_charge() {
    use wafer_lower::cost::{decode_layer_with, OpKind};
    use wafer_lower::placement::{Footprint, Item, Sizes};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for case in 0..12 {
        let kv_heads = rng.gen_range(1..=3);
        let group = rng.gen_range(1..=3);
        let head_dim = 2 * rng.gen_range(2..=6);
        let heads = kv_heads * group;
        let d = heads * head_dim;
        let bias = if rng.gen_bool(0.3) {
            r#","model_type":"qwen2""#
        } else {
            ""
        };
        let config = tiny_config(
            rng.gen_range(20..90),
            d,
            rng.gen_range(8..70),
            rng.gen_range(1..=3),
            heads,
            kv_heads,
            bias,
        );
        let mut weights = random_weights(&config, case);
        if config.attention_bias {
            for l in &mut weights.layers {
                l.q_bias = Some(vec![0.01; config.q_dim()]);
                l.k_bias = Some(vec![0.02; config.kv_dim()]);
                l.v_bias = Some(vec![0.03; config.kv_dim()]);
            }
        }
        let mut spec = tiny_wafer(rng.gen_range(8..48), rng.gen_range(8..40));
        if rng.gen_bool(0.5) {
            spec.precision.kv_dtype = DType::F16;
        }
        let opts = PlanOptions::with_reduce_k(rng.gen_range(1..=3)).unwrap();
        let placement = placed(&config, &spec, 48);
        let layout = placement.layout();
        let mesh = MeshProgram::new(
            config.clone(),
            spec.clone(),
            layout.clone(),
            &model_source(&weights),
            rope::inv_freq(&config),
            48,
            &opts,
        )
        .unwrap();
        let sizes = Sizes::from_spec(&spec);
        for (l, site) in layout.layers.iter().enumerate() {
            let (w, h) = (site.region.width(), site.region.height());
            let f = Footprint::of(&config, &sizes, Item::Layer(l), w as u64, h as u64);
            assert_eq!(
                mesh.layer_weight_bytes_per_pe(l),
                f.weight_per_pe,
                "case {case} layer {l} on {w}x{h}"
            );
            assert_eq!(mesh.layer_kv_bytes_per_position(l), f.kv_per_token);
            let plan = decode_layer_with(&spec, &config, w, h, 48, &opts);
            for (kind, macs) in mesh.layer_gemv_macs_per_pe(l) {
                let charged: Vec<u64> = plan
                    .ops
                    .iter()
                    .filter(|o| o.kind == kind)
                    .map(|o| o.work_per_pe)
                    .collect();
                assert_eq!(charged, vec![macs], "case {case} layer {l} {kind:?}");
            }
            assert!(plan.ops.iter().any(|o| o.kind == OpKind::QkvProj));
        }
        drop(mesh);
        if spec.precision.kv_dtype == DType::F32 {
            check_against_reference_with(
                &config,
                &weights,
                spec,
                layout,
                &[1, 2, 3],
                4,
                1e-3,
                &opts,
            );
        }
    }
}

/// Runs `prompt` then `steps` tokens (the reference's greedy choices) on the
/// mesh; returns every step's logits.
fn mesh_logits(
    config: &ModelConfig,
    weights: &LlamaWeights,
    spec: WaferSpec,
    layout: Layout,
    prompt: &[u32],
    follow: &[u32],
) -> Vec<Vec<f32>> {
    let mut mesh = MeshProgram::new(
        config.clone(),
        spec,
        layout,
        &model_source(weights),
        rope::inv_freq(config),
        prompt.len() + follow.len() + 1,
        &PlanOptions::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut got = Vec::new();
    for &t in prompt {
        got = mesh.step(t).unwrap();
    }
    for &t in follow {
        out.push(got);
        got = mesh.step(t).unwrap();
    }
    out.push(got);
    out
}

/// The precision block reaches the mesh: with 16-bit activations every logit
/// (the LM head's reduced output) is a value of that type; f16 and bf16 stay
/// within their rounding of the f32 reference; and the accumulation type
/// changes the numbers (it is used, not ignored).
#[test]
fn sixteen_bit_numbers_are_honoured_and_stay_close_to_the_reference() {
    let config = tiny_config(96, 48, 80, 3, 6, 2, "");
    let weights = random_weights(&config, 42);
    let prompt = [3u32, 17, 90, 4, 4, 61];
    let mut reference = ReferenceModel::new(config.clone(), weights.clone());
    let mut want = vec![reference.forward(&prompt).unwrap()];
    let mut follow = Vec::new();
    for _ in 0..8 {
        let next = argmax(want.last().unwrap());
        follow.push(next);
        want.push(reference.forward(&[next]).unwrap());
    }
    let run = |act, acc, kv| {
        let spec = tiny_wafer_in(40, 30, act, acc, kv);
        let placement = placed(&config, &spec, 64);
        mesh_logits(
            &config,
            &weights,
            spec,
            placement.layout(),
            &prompt,
            &follow,
        )
    };
    let worst = |got: &[Vec<f32>]| {
        got.iter()
            .zip(&want)
            .map(|(g, w)| max_abs_diff(g, w))
            .fold(0.0f32, f32::max)
    };
    let f32_run = run("f32", "f32", "f32");
    // Logits of this model are O(1): f16 keeps 11 significant bits, bf16 8.
    for (act, acc, kv, tol) in [
        ("f16", "f32", "f32", 0.02),
        ("f16", "f32", "f16", 0.02),
        ("bf16", "f32", "bf16", 0.15),
        ("f16", "f16", "f16", 0.05),
    ] {
        let got = run(act, acc, kv);
        let dtype = DType::parse(act).unwrap();
        for l in got.iter().flatten() {
            assert_eq!(wafer_kernels::format::round(dtype, *l), *l, "{act}: {l}");
        }
        let err = worst(&got);
        assert!(err < tol, "{act}/{acc}/{kv}: logits off by {err}");
        assert!(err > worst(&f32_run), "{act}/{acc}/{kv} rounds nothing");
    }
    let f16_sums = run("f16", "f16", "f16");
    let f32_sums = run("f16", "f32", "f16");
    assert_ne!(f16_sums, f32_sums, "accumulate_dtype changed nothing");
}

/// SmolLM2-135M on the default `wse3` spec (f16 activations, f32 sums, f16 KV):
/// for 4 prompts x 16 tokens the logits stay within f16's reach of the f32
/// reference (|logit| ~ 20, an f16 step of 1/64 there) and the greedy tokens are
/// the reference's, except where the reference's top two are a near-tie within
/// that difference (then the texts part; at most one prompt may).
#[test]
fn smollm2_at_wse3_precision_keeps_the_reference_tokens() {
    let Some(dir) = real_model_dir() else { return };
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let tokenizer = wafer_models::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let spec = wafer_core::spec::wse3();
    let placement = placed(&config, &spec, 64);
    let mut flips = 0;
    for p in [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
        "The three primary colors are",
    ] {
        let ids = tokenizer.encode(p, true).unwrap();
        let mut reference = ReferenceModel::new(config.clone(), weights.clone());
        let mut want = vec![reference.forward(&ids).unwrap()];
        let mut follow = Vec::new();
        for _ in 0..16 {
            let next = argmax(want.last().unwrap());
            follow.push(next);
            want.push(reference.forward(&[next]).unwrap());
        }
        let got = mesh_logits(
            &config,
            &weights,
            spec.clone(),
            placement.layout(),
            &ids,
            &follow,
        );
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = max_abs_diff(g, w);
            assert!(diff < 0.5, "{p:?} step {step}: logits off by {diff}");
            let (mine, theirs) = (argmax(g) as usize, argmax(w) as usize);
            if mine != theirs {
                // Only a near-tie may flip: the reference's two candidates lie
                // within the two engines' difference of each other.
                let margin = w[theirs] - w[mine];
                assert!(
                    margin <= 2.0 * diff,
                    "{p:?} step {step}: greedy tokens differ by a margin of {margin} (logits off by {diff})"
                );
                flips += 1;
                break;
            }
        }
    }
    assert!(flips <= 1, "{flips} prompts parted from the reference");
}
