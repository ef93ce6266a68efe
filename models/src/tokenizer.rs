//! The tokenizer of a model directory: `tokenizer.json` through the
//! `tokenizers` crate, the chat template from `tokenizer_config.json` rendered
//! with minijinja, and incremental decoding that never splits a character.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// ChatML, used only when a model directory has no chat template (a warning says so).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The outcome of [`Tokenizer::encode_bounded`].
#[derive(Debug, Clone, PartialEq)]
pub enum Bounded {
    Fits(Vec<u32>),
    /// More tokens than the limit: `tokens` of them, or at least that many when
    /// not `exact` (the count stopped early).
    TooLong {
        tokens: usize,
        exact: bool,
    },
}

/// Bytes of text tokenized at a time when counting long text.
pub const COUNT_PIECE_BYTES: usize = 64 * 1024;

/// The end of the first piece of `text` of at most about `max` bytes: just after
/// the last whitespace before `max` (or at a character boundary if there is none).
fn piece_end(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind(char::is_whitespace) {
        Some(i) if i > 0 => i,
        _ => end,
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// `chat_template` from tokenizer_config.json, if any.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl Tokenizer {
    /// Loads `DIR/tokenizer.json` and, if present, `DIR/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // The tokenizers crate panics instead of failing on a JSON syntax error
        // inside `decoder`, so the syntax is checked here first.
        let json = serde_json::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("cannot load tokenizer {}: invalid JSON", path.display()))?;
        if let Some(p) = json.get("post_processor") {
            check_post_processor(p)
                .with_context(|| format!("cannot load tokenizer {}", path.display()))?;
        }
        let what = || format!("cannot load tokenizer {}", path.display());
        let inner = guarded(what, || {
            text.parse::<tokenizers::Tokenizer>()
                .map_err(|e| anyhow!("{}: {e}", what()))
        })?;
        let mut tok = Tokenizer {
            inner,
            path,
            chat_template: None,
            bos_token: None,
            eos_token: None,
        };
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("cannot read {}", cfg_path.display()))?;
            let cfg: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
            // Token fields are either a string or an AddedToken object with `content`.
            let token = |key: &str| {
                cfg.get(key).and_then(|v| {
                    v.as_str().map(str::to_string).or_else(|| {
                        v.get("content")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                    })
                })
            };
            tok.bos_token = token("bos_token");
            tok.eos_token = token("eos_token");
            tok.chat_template = match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: take the one called "default".
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => None,
            };
        }
        Ok(tok)
    }

    /// A tokenizer built in memory (from a GGUF file's metadata, say);
    /// `source` names where it came from in error messages.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        source: &Path,
        chat_template: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Tokenizer {
        Tokenizer {
            inner,
            path: source.to_path_buf(),
            chat_template,
            bos_token,
            eos_token,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's own
    /// post-processor runs (it adds a BOS only if tokenizer.json says so).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let what = || format!("tokenizing with {}", self.path.display());
        let enc = guarded(what, || {
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| anyhow!("{}: {e}", what()))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` if there are at most `limit` of them. Long text is
    /// first counted in pieces of [`COUNT_PIECE_BYTES`] cut at whitespace, so text
    /// far beyond the limit (a huge file, `/dev/zero`) is refused after tokenizing
    /// little more than `limit` tokens' worth of it, in bounded memory; text that
    /// passes is then encoded whole, so the ids are exactly those of [`Self::encode`].
    pub fn encode_bounded(
        &self,
        text: &str,
        add_special_tokens: bool,
        limit: usize,
    ) -> Result<Bounded> {
        if text.len() > COUNT_PIECE_BYTES {
            let mut counted = 0usize;
            let mut pieces = 0usize;
            let mut rest = text;
            while !rest.is_empty() {
                let cut = piece_end(rest, COUNT_PIECE_BYTES);
                counted += self.encode(&rest[..cut], false)?.len();
                pieces += 1;
                rest = &rest[cut..];
                // A cut can split what would be one token into two, so each piece
                // may count one more token than the whole text has.
                if counted > limit.saturating_add(pieces) {
                    return Ok(Bounded::TooLong {
                        tokens: counted - pieces,
                        exact: false,
                    });
                }
            }
        }
        let ids = self.encode(text, add_special_tokens)?;
        if ids.len() > limit {
            return Ok(Bounded::TooLong {
                tokens: ids.len(),
                exact: true,
            });
        }
        Ok(Bounded::Fits(ids))
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let what = || format!("decoding with {}", self.path.display());
        guarded(what, || {
            self.inner
                .decode(ids, false)
                .map_err(|e| anyhow!("{}: {e}", what()))
        })
    }

    /// Renders a single user message through the chat template with
    /// `add_generation_prompt`. Returns the text and whether the template came
    /// from the model (false: the ChatML fallback was used).
    pub fn apply_chat_template(&self, user_message: &str) -> Result<(String, bool)> {
        let (template, own) = match &self.chat_template {
            Some(t) => (t.as_str(), true),
            None => (CHATML_TEMPLATE, false),
        };
        render_chat(
            template,
            user_message,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
        .map(|s| (s, own))
    }
}

/// Renders a Hugging Face chat template (Jinja) for one user message.
pub fn render_chat(
    template: &str,
    user: &str,
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // Templates written for Python's Jinja call str methods such as `.strip()`.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => bos.unwrap_or(""),
        eos_token => eos.unwrap_or(""),
    };
    env.render_str(template, ctx)
        .map_err(|e| anyhow!("cannot render the chat template: {e:#}"))
}

/// Turns a growing list of token ids into text pieces that are always whole
/// characters: a piece is released only once the bytes decoded so far no
/// longer end in an incomplete UTF-8 sequence (which decodes to U+FFFD).
///
/// Decoding a short window (`prefix..`) rather than single tokens keeps
/// decoders that depend on neighbours (leading-space rules, byte fallback) right.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> TextStream<'a> {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            let Some(new) = text.get(prefix.len()..) else {
                bail!("decoded text does not extend its prefix at token {id}");
            };
            let new = new.to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is still held back at the end of generation (an incomplete
    /// character is shown as U+FFFD rather than lost).
    pub fn finish(&mut self) -> Result<String> {
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(text.get(prefix.len()..).unwrap_or("").to_string())
    }
}

/// Runs a call into the tokenizers crate, turning a panic into an error. The
/// crate panics on some tokenizer.json files it loads without complaint (e.g. a
/// `Strip` decoder told to strip more characters than a token has); the panic
/// message still reaches stderr through the panic hook, the caller gets an error.
fn guarded<T>(what: impl Fn() -> String, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bail!(
                "{}: the tokenizers crate failed on this tokenizer.json ({message})",
                what()
            )
        }
    }
}

/// Checks what the tokenizers crate assumes of a `TemplateProcessing` post-processor
/// (alone or in a `Sequence`; the crate tells them apart by their fields, whatever
/// `type` says) but does not check when loading one, and panics on while
/// encoding: every special token a template names is defined, and the
/// single-sequence template uses sequence `A` only.
fn check_post_processor(p: &serde_json::Value) -> Result<()> {
    for inner in p
        .get("processors")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        check_post_processor(inner)?;
    }
    let defined = p.get("special_tokens").and_then(|v| v.as_object());
    for key in ["single", "pair"] {
        for piece in p.get(key).and_then(|v| v.as_array()).into_iter().flatten() {
            if let Some(id) = piece.pointer("/SpecialToken/id").and_then(|v| v.as_str()) {
                if !defined.is_some_and(|d| d.contains_key(id)) {
                    bail!("post_processor: the `{key}` template names special token `{id}`, which `special_tokens` does not define");
                }
            }
            let seq = piece.pointer("/Sequence/id").and_then(|v| v.as_str());
            if key == "single" && seq.is_some_and(|s| s != "A") {
                bail!(
                    "post_processor: the `single` template uses sequence `{}`; only `A` exists",
                    seq.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding `json` as its tokenizer.json.
    fn with_tokenizer_json(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        dir
    }

    #[test]
    fn malformed_json_in_the_decoder_is_an_error_not_a_panic() {
        // Found by fuzzing: a syntax error inside `decoder` made the tokenizers
        // crate panic ("Helper") while loading.
        let dir = with_tokenizer_json(
            r#"{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
            "post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space" true},
            "model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"}}"#,
        );
        let err = format!("{:#}", Tokenizer::from_dir(dir.path()).err().unwrap());
        assert!(err.contains("invalid JSON"), "{err}");
    }

    #[test]
    fn a_template_naming_an_undefined_special_token_is_an_error_not_a_panic() {
        // Found by fuzzing: loading succeeded and encoding panicked ("no entry
        // found for key") on a template token `special_tokens` lacks.
        let dir = with_tokenizer_json(
            r#"{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
            "post_processor":{"type":"TemplateProcessing",
              "single":[{"SpecialToken":{"id":"<s<","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
              "pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],
              "special_tokens":{"<s>":{"id":"<s>","ids":[0],"tokens":["<s>"]}}},
            "decoder":null,"model":{"type":"WordLevel","vocab":{"<s>":0,"a":1},"unk_token":"a"}}"#,
        );
        let err = format!("{:#}", Tokenizer::from_dir(dir.path()).err().unwrap());
        assert!(err.contains("`<s<`"), "{err}");
    }

    #[test]
    fn a_panic_in_the_tokenizers_crate_is_an_error() {
        // Found by fuzzing: a `Strip` decoder stripping more characters than a
        // token has underflows (then indexes out of bounds) inside the crate.
        let dir = with_tokenizer_json(
            r#"{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
            "post_processor":null,
            "decoder":{"type":"Strip","content":" ","start":0,"stop":387922494148990},
            "model":{"type":"WordLevel","vocab":{"a":0," ":1},"unk_token":"a"}}"#,
        );
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        let err = format!("{:#}", tok.decode(&[1]).unwrap_err());
        assert!(err.contains("tokenizers crate failed"), "{err}");
    }

    /// A byte-level BPE tokenizer with the 256 byte symbols and the merges given.
    fn byte_tokenizer(merges: &[(&str, &str)]) -> Tokenizer {
        // GPT-2's printable stand-ins for the 256 bytes.
        let mut chars = Vec::new();
        let mut n = 0;
        for b in 0..=255u32 {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            chars.push(if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            });
        }
        let mut vocab = serde_json::Map::new();
        for (i, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), i.into());
        }
        for (i, (a, b)) in merges.iter().enumerate() {
            vocab.insert(format!("{a}{b}"), (256 + i).into());
        }
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "vocab": vocab,
                "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()},
        });
        Tokenizer {
            inner: json.to_string().parse().unwrap(),
            path: PathBuf::from("test/tokenizer.json"),
            chat_template: None,
            bos_token: None,
            eos_token: None,
        }
    }

    #[test]
    fn bounded_encoding_is_exact_below_the_limit_and_stops_early_above_it() {
        let tok = byte_tokenizer(&[("a", "b"), ("Ġ", "ab")]);
        // Longer than one counting piece, so the pieces are counted first.
        let text = "ab ".repeat(COUNT_PIECE_BYTES / 2);
        let ids = tok.encode(&text, true).unwrap();
        assert!(text.len() > COUNT_PIECE_BYTES && ids.len() < text.len() / 2);
        assert_eq!(
            tok.encode_bounded(&text, true, ids.len()).unwrap(),
            Bounded::Fits(ids.clone())
        );
        assert_eq!(
            tok.encode_bounded(&text, true, ids.len() - 1).unwrap(),
            Bounded::TooLong {
                tokens: ids.len(),
                exact: true
            }
        );
        // Far past the limit (64 MiB of NUL bytes): refused after counting a few
        // pieces, with a lower bound on the count that is above the limit.
        let zeros = "\0".repeat(64 << 20);
        let t = std::time::Instant::now();
        match tok.encode_bounded(&zeros, true, 1000).unwrap() {
            Bounded::TooLong {
                tokens,
                exact: false,
            } => assert!((1001..=2 * COUNT_PIECE_BYTES).contains(&tokens), "{tokens}"),
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
    }

    #[test]
    fn pieces_end_after_whitespace_on_a_character_boundary() {
        assert_eq!(piece_end("abc", 10), 3);
        assert_eq!(piece_end("ab cd ef", 7), 5);
        // No whitespace: the last character boundary at or before the limit.
        assert_eq!(piece_end("ééé", 3), 2);
    }
}
