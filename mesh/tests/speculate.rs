//! Speculative decoding on the mesh engine with SmolLM2-135M on `wse3` (when
//! `WAFER_TEST_MODEL_DIR` is set): the greedy tokens with prompt-lookup
//! speculation, rejected drafts rolled back from the distributed KV caches, are
//! exactly the mesh's own greedy tokens without it.

mod common;

use common::real_model_dir;

use wafer_core::DType;
use wafer_lower::cost::PlanOptions;
use wafer_mesh::{MeshEngine, MeshSetup};
use wafer_models::engine::Engine;
use wafer_models::generate::{generate, generate_speculative, GenerateOptions};
use wafer_models::sampling::SamplingParams;
use wafer_models::speculate::PromptLookup;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

#[test]
fn smollm2_mesh_speculative_greedy_output_is_the_plain_greedy_output() {
    let Some(dir) = real_model_dir() else { return };
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompt = tok
        .encode(
            "def area(w, h):\n    return w * h\n\n# Rename area to rectangle_area.\ndef",
            true,
        )
        .unwrap();
    let max_tokens = 24;
    let setup = MeshSetup {
        spec: wafer_core::spec::wse3(),
        region: None,
        wafers: None,
        context: prompt.len() + max_tokens,
        options: PlanOptions::default(),
    };
    let mut engine = MeshEngine::place_and_build(config, &weights, &setup).unwrap();
    let opts = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        top_logprobs: 0,
        stop_ids: vec![],
    };
    let mut want = Vec::new();
    generate(&mut engine, &tok, &prompt, &opts, |ev| {
        want.push(ev.token_id);
        Ok(())
    })
    .unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for k in [2, 5] {
        let mut got = Vec::new();
        let s = generate_speculative(
            &mut engine,
            &tok,
            &prompt,
            &opts,
            &mut PromptLookup,
            k,
            |ev| {
                got.push(ev.token_id);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, want, "K = {k}: {:?}", tok.decode(&got));
        let stats = s.speculation.unwrap();
        accepted += stats.accepted();
        rejected += stats.drafted() - stats.accepted();
        assert_eq!(engine.position(), prompt.len() + got.len() - 1);
    }
    eprintln!("accepted {accepted}, rolled back {rejected}");
    assert!(accepted > 0 && rejected > 0, "both paths ran");
}
