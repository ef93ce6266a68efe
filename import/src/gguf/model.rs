//! Running a GGUF file directly, without converting it: the configuration and
//! tokenizer come from its metadata through the converter's own reading
//! ([`crate::convert::read_parts`], one mapping of GGUF keys and tensor names),
//! and the weights stay in their stored type — quantized matrices (Q8_0, Q4_0,
//! Q4_1, Q4_K, Q6_K) are borrowed from the memory-mapped file, F16/BF16 kept as
//! 16-bit words, F32 as f32.
//!
//! llama.cpp stores the rows of each Q and K head in interleaved RoPE order; the
//! converter un-permutes them when it writes f32 values, and this loader moves
//! the same rows (as whole rows of blocks, the same permutation) once at load,
//! so every weight decodes to exactly the value the converted model holds.

use super::{GgmlType, GgufFile};
use crate::convert::weights::{hf_values, plan, unpermute_rows, PlannedTensor};
use crate::convert::{read_parts, LlamaParams};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wafer_core::DType;
use wafer_models::family::TensorSpec;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::llama::first_non_finite;
use wafer_models::weights::matrix::{round_to, MatrixData};
use wafer_models::weights::{LlamaWeights, Matrix, QuantData, QuantType, SharedBytes};
use wafer_models::ModelConfig;

/// An open GGUF model: its configuration and tokenizer; weights on request.
pub struct GgufModel {
    file: Arc<GgufFile>,
    params: LlamaParams,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
}

impl GgufModel {
    /// Opens and validates `path`: header, metadata, tensor plan and tokenizer.
    /// No weights are read yet.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let file = Arc::new(GgufFile::open(path)?);
        let parts = read_parts(&file)?;
        let chat_template = parts
            .tokenizer_config
            .get("chat_template")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let tokenizer = Tokenizer::from_parts(
            parts.tokenizer,
            path,
            chat_template,
            parts.special.bos.clone(),
            parts.special.eos.clone(),
        );
        Ok(GgufModel {
            params: parts.params,
            config: parts.config,
            tokenizer,
            file: file.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The token ids that end generation (the file's end-of-sequence token).
    pub fn stop_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids.clone()
    }

    /// The weights: in their stored types (`precision` `None`), or dequantized
    /// and rounded to `precision` (as the converted model loaded at that
    /// precision would hold them).
    pub fn weights(&self, precision: Option<DType>) -> Result<LlamaWeights> {
        let g: &GgufFile = &self.file;
        let file = g.path().display().to_string();
        let planned = plan(g, &self.params)?;
        let by_name: HashMap<&str, &PlannedTensor<'_>> =
            planned.iter().map(|t| (t.hf_name.as_str(), t)).collect();
        let get = |spec: &TensorSpec, layer: usize| -> Result<&PlannedTensor<'_>> {
            let name = spec.hf_name(layer);
            by_name.get(name.as_str()).copied().with_context(|| {
                format!(
                    "GGUF file {file}: tensor `{}` (for {name}) is missing",
                    spec.gguf_name(layer)
                )
            })
        };
        let present =
            |spec: &TensorSpec, layer: usize| by_name.contains_key(spec.hf_name(layer).as_str());
        let dtype = precision.unwrap_or(DType::F32);
        let not_finite = |t: &PlannedTensor<'_>, at: String| {
            anyhow!(
                "GGUF file {file}: tensor `{}` (for {}): element {at} is not finite \
                 (expected every weight finite{})",
                t.source.name,
                t.hf_name,
                match precision {
                    Some(p) => format!(" at the load precision {p:?}"),
                    None => String::new(),
                }
            )
        };
        let vector = |spec: &TensorSpec, layer: usize| -> Result<Vec<f32>> {
            let t = get(spec, layer)?;
            let mut v = hf_values(g, t)?;
            round_to(&mut v, dtype);
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(not_finite(t, format!("[{i}]")));
            }
            Ok(v)
        };
        let matrix = |spec: &TensorSpec, layer: usize| -> Result<Matrix> {
            let t = get(spec, layer)?;
            let [rows, cols] = t.shape[..] else {
                bail!(
                    "GGUF file {file}: tensor `{}` has shape {:?}, expected a matrix",
                    t.source.name,
                    t.shape
                );
            };
            let m = match precision {
                Some(p) => Matrix::from_f32(rows, cols, hf_values(g, t)?, p),
                None => self.stored_matrix(t, rows, cols)?,
            };
            if let Some(i) = first_non_finite(&m) {
                return Err(not_finite(t, format!("[{}, {}]", i / cols, i % cols)));
            }
            Ok(m)
        };
        LlamaWeights::assemble(&self.config, dtype, present, matrix, vector)
    }

    /// One matrix in the type the file stores it in, rows in Hugging Face order.
    fn stored_matrix(&self, t: &PlannedTensor<'_>, rows: usize, cols: usize) -> Result<Matrix> {
        let g: &GgufFile = &self.file;
        let what = || {
            format!(
                "GGUF file {}: tensor `{}` (for {})",
                g.path().display(),
                t.source.name,
                t.hf_name
            )
        };
        let unpermute = |bytes: &[u8], row_bytes: usize| -> Result<Option<Vec<u8>>> {
            t.unpermute_heads
                .map(|heads| unpermute_rows(bytes, heads, row_bytes))
                .transpose()
                .with_context(what)
        };
        let bytes = g.tensor_bytes(t.source);
        let words = |b: &[u8]| -> Vec<u16> {
            b.chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]]))
                .collect()
        };
        let data = match t.source.ty {
            GgmlType::F32 => MatrixData::F32(hf_values(g, t)?),
            GgmlType::F16 | GgmlType::BF16 => {
                let v = match unpermute(bytes, cols * 2)? {
                    Some(moved) => words(&moved),
                    None => words(bytes),
                };
                if t.source.ty == GgmlType::F16 {
                    MatrixData::F16(v)
                } else {
                    MatrixData::BF16(v)
                }
            }
            ty => {
                let q = QuantType::from_name(ty.name()).with_context(|| {
                    format!(
                        "{}: type {ty} cannot be computed from directly (supported: F32, F16, BF16, {})",
                        what(),
                        QuantType::ALL.map(|q| q.name()).join(", ")
                    )
                })?;
                if !cols.is_multiple_of(q.block_len()) {
                    bail!(
                        "{}: rows of {cols} elements are not whole {q} blocks of {}",
                        what(),
                        q.block_len()
                    );
                }
                let row_bytes = cols / q.block_len() * q.block_bytes();
                let shared = match unpermute(bytes, row_bytes)? {
                    Some(moved) => SharedBytes::owned(moved),
                    None => {
                        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.file.clone();
                        SharedBytes::mapped(owner, g.tensor_range(t.source))
                            .with_context(|| format!("{}: data outside the file", what()))?
                    }
                };
                MatrixData::Quant(
                    QuantData::new(q, rows, cols, shared)
                        .map_err(|e| anyhow!("{}: {e}", what()))?,
                )
            }
        };
        Ok(Matrix { rows, cols, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize;
    use rand::{Rng, SeedableRng};

    fn ggml(q: QuantType) -> GgmlType {
        crate::gguf::GgmlType::DEQUANTIZABLE
            .into_iter()
            .find(|t| t.name() == q.name())
            .expect("every quantized type the engine runs is dequantizable")
    }

    /// The GGUF reader's block table (`GgmlType`) and the engine's (`QuantType`)
    /// agree on every type the engine runs. (The converter decodes blocks with
    /// the engine's decoder, which `import/tests/gguf.rs` checks against the
    /// `gguf` package and `reference::qdot` checks its kernels against.)
    #[test]
    fn the_readers_and_the_engines_block_tables_agree() {
        for q in QuantType::ALL {
            assert_eq!(ggml(q).block_len() as usize, q.block_len(), "{q}");
            assert_eq!(ggml(q).block_bytes() as usize, q.block_bytes(), "{q}");
        }
    }

    #[test]
    fn quantized_rows_unpermute_like_the_converters_values() {
        // 2 heads of 4 rows, 64 columns of Q8_0: moving rows of blocks then
        // decoding equals decoding then moving rows of values.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let q = QuantType::Q8_0;
        let (rows, cols) = (8, 64);
        // Random Q8_0 blocks, each with a finite scale: `{ f16 d; i8 qs[32] }`.
        let mut bytes = vec![0u8; rows * cols / 32 * q.block_bytes()];
        rng.fill(&mut bytes[..]);
        for b in bytes.chunks_exact_mut(q.block_bytes()) {
            let d = half::f16::from_f32(rng.gen_range(-0.1f32..0.1));
            b[..2].copy_from_slice(&d.to_le_bytes());
        }
        let row_bytes = cols / 32 * q.block_bytes();
        let moved = unpermute_rows(&bytes, 2, row_bytes).unwrap();
        let mut a = vec![0f32; rows * cols];
        q.decode(&moved, &mut a);
        let values = dequantize("t", ggml(q), &bytes, rows * cols).unwrap();
        let b = unpermute_rows(&values, 2, cols).unwrap();
        assert_eq!(a, b);
    }

    /// The real model: `WAFER_TEST_GGUF` and `WAFER_TEST_MODEL_DIR` (its
    /// conversion), both set by scripts/test.sh.
    fn real_model() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let (g, d) = (
            std::env::var_os("WAFER_TEST_GGUF"),
            std::env::var_os("WAFER_TEST_MODEL_DIR"),
        );
        match (g, d) {
            (Some(g), Some(d)) => Some((g.into(), d.into())),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the real-model tests: scripts/test.sh sets WAFER_TEST_GGUF and WAFER_TEST_MODEL_DIR"
                );
                eprintln!(
                    "skipped: set WAFER_TEST_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf and \
                     WAFER_TEST_MODEL_DIR to its converted directory (`wafer fetch --gguf`, `wafer fetch`)"
                );
                None
            }
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn argmax(v: &[f32]) -> u32 {
        let mut best = 0;
        for (i, x) in v.iter().enumerate() {
            if *x > v[best] {
                best = i;
            }
        }
        best as u32
    }

    /// The GGUF run as stored gives the converted f32 directory's logits to
    /// 1e-5 and the same greedy tokens; its tokenizer and config are the same.
    #[test]
    fn the_gguf_as_stored_runs_like_its_converted_directory() {
        use wafer_models::engine::Engine;
        use wafer_models::reference::ReferenceModel;
        let Some((gguf, dir)) = real_model() else {
            return;
        };
        let m = GgufModel::open(&gguf).unwrap();
        let config = ModelConfig::from_dir(&dir).unwrap();
        assert_eq!(m.config, config);
        let tok_dir = Tokenizer::from_dir(&dir).unwrap();
        let text = "The capital of France is";
        let ids = m.tokenizer.encode(text, true).unwrap();
        assert_eq!(ids, tok_dir.encode(text, true).unwrap());
        assert_eq!(m.tokenizer.chat_template, tok_dir.chat_template);
        assert_eq!(
            m.stop_ids(),
            wafer_models::generate::stop_ids(&dir, &config).unwrap()
        );

        let wq = m.weights(None).unwrap();
        let wd = LlamaWeights::load_dir(&dir, &config, None).unwrap();
        // Stored types are kept, and every weight decodes to the converted value
        // (layer 0's permuted Q/K and the embedding checked whole).
        let l0 = &wq.layers[0];
        assert!(
            matches!(l0.q_proj.data, MatrixData::Quant(_)),
            "{}",
            l0.q_proj.stored_type()
        );
        for (a, b) in [
            (&l0.q_proj, &wd.layers[0].q_proj),
            (&l0.k_proj, &wd.layers[0].k_proj),
            (&l0.down_proj, &wd.layers[0].down_proj),
            (&wq.embed_tokens, &wd.embed_tokens),
        ] {
            let (mut x, mut y) = (vec![0f32; a.rows * a.cols], vec![0f32; b.rows * b.cols]);
            a.rows_to_f32(0, a.rows, &mut x);
            b.rows_to_f32(0, b.rows, &mut y);
            assert!(
                x == y,
                "{} weights differ from the converted ones",
                a.stored_type()
            );
        }
        let mut q = ReferenceModel::new(config.clone(), wq);
        let mut d = ReferenceModel::new(config, wd);
        let (mut lq, mut ld) = (q.prefill(&ids).unwrap(), d.prefill(&ids).unwrap());
        let mut tokens = Vec::new();
        for step in 0..8 {
            let diff = max_diff(&lq, &ld);
            assert!(diff <= 1e-5, "step {step}: logits differ by {diff}");
            let (tq, td) = (argmax(&lq), argmax(&ld));
            assert_eq!(tq, td, "step {step}");
            tokens.push(tq);
            lq = q.decode(tq).unwrap();
            ld = d.decode(td).unwrap();
        }
        eprintln!("greedy tokens {tokens:?}");
    }

    /// A truncated copy of the real file is refused naming the file and the
    /// tensor whose data runs past its end, never a panic.
    #[test]
    fn a_truncated_gguf_names_the_file_and_tensor() {
        let Some((gguf, _)) = real_model() else {
            return;
        };
        let bytes = std::fs::read(&gguf).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cut = tmp.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
        let err = format!("{:#}", GgufModel::open(&cut).err().expect("refused"));
        assert!(
            err.contains("cut.gguf") && err.contains("tensor `"),
            "{err}"
        );
        let bad = tmp.path().join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x03\x00\x00\x00").unwrap();
        let err = format!("{:#}", GgufModel::open(&bad).err().expect("refused"));
        assert!(err.contains("bad.gguf"), "{err}");
    }
}
