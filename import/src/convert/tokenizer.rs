//! Rebuilding a Hugging Face `tokenizer.json` (and `tokenizer_config.json`) from
//! the tokenizer a GGUF file carries in its metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is handled. The
//! pre-tokenizer is chosen from `tokenizer.ggml.pre` with the regexes llama.cpp
//! uses for that name (`llama-vocab.cpp`, `llama_vocab::impl::load`); for
//! example `smollm` splits every digit on its own (`\p{N}`) and then applies
//! the GPT-2 regex. Control tokens (type 3) and user-defined tokens (type 4)
//! become added tokens, so `<|im_start|>` is one id, as in llama.cpp with
//! `special = true`.

use crate::gguf::{GgufFile, Metadata};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The GPT-2 regex is what `ByteLevel { use_regex: true }` applies; these are
/// the splits llama.cpp runs before it, per `tokenizer.ggml.pre`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow::anyhow!("cannot compile the pre-tokenizer regex {re:?}: {e}"))?
        .into())
    };
    let gpt2 = || -> PreTokenizerWrapper { ByteLevel::new(false, true, true).into() };
    let bytes_only = || -> PreTokenizerWrapper { ByteLevel::new(false, true, false).into() };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            Sequence::new(vec![split(r"\p{N}")?, gpt2()]).into()
        }
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" => gpt2(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            Sequence::new(vec![split(LLAMA3_REGEX)?, bytes_only()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => {
            Sequence::new(vec![split(QWEN2_REGEX)?, bytes_only()]).into()
        }
        other => bail!(
            "`tokenizer.ggml.pre` is `{other}`, a pre-tokenizer wafer does not know \
             (known: smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, gpt-2, \
             mpt, olmo, jais, llama-bpe, llama3, falcon3, pixtral, qwen2, deepseek-r1-qwen)"
        ),
    })
}

/// The special-token settings shared by `tokenizer.json` and `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub unk: Option<String>,
    pub pad: Option<String>,
    pub add_bos: bool,
    pub add_eos: bool,
}

/// Builds the tokenizer from GGUF metadata.
pub fn build_tokenizer(g: &GgufFile) -> Result<(Tokenizer, SpecialTokens)> {
    let m: &Metadata = &g.metadata;
    let e = |k| g.error(k);
    let ctx = |what: String| format!("GGUF file {}: {what}", g.path().display());
    let model = m.require_str("tokenizer.ggml.model").map_err(e)?;
    if model != "gpt2" {
        bail!(ctx(format!(
            "`tokenizer.ggml.model` is `{model}`; only byte-level BPE (`gpt2`) tokenizers can be converted"
        )));
    }
    let pre = m.str("tokenizer.ggml.pre").map_err(e)?.unwrap_or("default");
    let pre = if pre == "default" { "gpt-2" } else { pre };
    let tokens = m
        .str_array("tokenizer.ggml.tokens")
        .map_err(e)?
        .with_context(|| ctx("`tokenizer.ggml.tokens` is missing".into()))?;
    let merges_raw = m
        .str_array("tokenizer.ggml.merges")
        .map_err(e)?
        .with_context(|| ctx("`tokenizer.ggml.merges` is missing".into()))?;
    let types = m
        .i64_array("tokenizer.ggml.token_type")
        .map_err(e)?
        .unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        bail!(ctx(format!(
            "`tokenizer.ggml.token_type` has {} entries, expected one per token ({})",
            types.len(),
            tokens.len()
        )));
    }

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect();
    if vocab.len() != tokens.len() {
        bail!(ctx(format!(
            "`tokenizer.ggml.tokens` holds duplicate tokens ({} distinct of {})",
            vocab.len(),
            tokens.len()
        )));
    }
    let merges = merges_raw
        .iter()
        .enumerate()
        .map(|(i, line)| {
            line.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| {
                    ctx(format!(
                        "merge #{i} {line:?} is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|err| {
            anyhow::anyhow!(ctx(format!("the BPE vocabulary is inconsistent: {err}")))
        })?;

    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(
        pre_tokenizer(pre).with_context(|| ctx("cannot build the pre-tokenizer".into()))?,
    ));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    let added: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, &ty)| {
            AddedToken::from(tokens[id].to_string(), ty == TOKEN_TYPE_CONTROL).normalized(false)
        })
        .collect();
    tok.add_special_tokens(&added);

    let token_at = |key: &str| -> Result<Option<String>> {
        match m.u64(key).map_err(e)? {
            None => Ok(None),
            Some(id) => tokens
                .get(id as usize)
                .map(|t| Some(t.to_string()))
                .with_context(|| {
                    ctx(format!(
                        "`{key}` is {id}, but there are only {} tokens",
                        tokens.len()
                    ))
                }),
        }
    };
    let special = SpecialTokens {
        bos: token_at("tokenizer.ggml.bos_token_id")?,
        eos: token_at("tokenizer.ggml.eos_token_id")?,
        unk: token_at("tokenizer.ggml.unknown_token_id")?,
        pad: token_at("tokenizer.ggml.padding_token_id")?,
        // llama.cpp adds BOS by default for BPE vocabularies only if the file says so.
        add_bos: m
            .bool("tokenizer.ggml.add_bos_token")
            .map_err(e)?
            .unwrap_or(false),
        add_eos: m
            .bool("tokenizer.ggml.add_eos_token")
            .map_err(e)?
            .unwrap_or(false),
    };
    tok.with_post_processor(Some(post_processor(&special, &tokens)?));
    Ok((tok, special))
}

/// Adds BOS/EOS around a sequence when the file asks for it; otherwise only
/// byte-level offset handling.
fn post_processor(s: &SpecialTokens, tokens: &[&str]) -> Result<tokenizers::PostProcessorWrapper> {
    let bos = s.bos.as_deref().filter(|_| s.add_bos);
    let eos = s.eos.as_deref().filter(|_| s.add_eos);
    if bos.is_none() && eos.is_none() {
        return Ok(ByteLevel::new(false, false, true).into());
    }
    let id = |t: &str| tokens.iter().position(|x| *x == t).unwrap_or(0) as u32;
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if let Some(b) = bos {
        single.push(b.to_string());
        pair.push(b.to_string());
        specials.push((b.to_string(), id(b)));
    }
    single.push("$A".into());
    pair.push("$A".into());
    if let Some(x) = eos {
        single.push(x.to_string());
        pair.push(x.to_string());
        specials.push((x.to_string(), id(x)));
    }
    pair.push("$B:1".into());
    specials.dedup();
    let template = TemplateProcessing::builder()
        .try_single(single.join(" "))
        .map_err(|e| anyhow::anyhow!("bad BOS/EOS template: {e}"))?
        .try_pair(pair.join(" "))
        .map_err(|e| anyhow::anyhow!("bad BOS/EOS template: {e}"))?
        .special_tokens(specials)
        .build()
        .map_err(|e| anyhow::anyhow!("bad BOS/EOS template: {e}"))?;
    Ok(template.into())
}

/// `tokenizer_config.json`: special tokens, whether BOS/EOS are added, and the chat template.
pub fn tokenizer_config_json(
    g: &GgufFile,
    s: &SpecialTokens,
    model_max_length: usize,
) -> Result<Value> {
    let chat_template = g
        .metadata
        .str("tokenizer.chat_template")
        .map_err(|k| g.error(k))?;
    Ok(json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": s.add_bos,
        "add_eos_token": s.add_eos,
        "bos_token": s.bos,
        "eos_token": s.eos,
        "unk_token": s.unk,
        "pad_token": s.pad,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": false,
        "chat_template": chat_template,
    }))
}
