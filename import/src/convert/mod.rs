//! Converting a Llama-architecture GGUF file into a Hugging Face-style model
//! directory: `config.json`, `model.safetensors` (f32, Hugging Face names and
//! row order), `tokenizer.json` and `tokenizer_config.json`.
//!
//! The directory is written into a temporary sibling and renamed into place, so
//! a reader never sees a half-written model.

pub mod config;
pub mod tokenizer;
pub mod weights;

use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub use config::LlamaParams;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub out_dir: PathBuf,
    pub n_tensors: usize,
    pub n_parameters: u64,
    /// GGUF tensor types that were dequantized, e.g. `["Q8_0", "F32", "Q4_1"]`.
    pub source_types: Vec<String>,
}

/// Converts `gguf` into the model directory `out`. `out` must not exist yet, or
/// be an empty directory. The model is written into `.NAME.partial-PID` beside
/// `out` ([`partial_dir`]), which is removed if the conversion fails (or panics);
/// `wafer convert` removes it on Ctrl-C ([`remove_partial_dir`]), and leftovers
/// of conversions that were killed outright are removed by the next one.
pub fn convert_gguf(gguf: &Path, out: &Path) -> Result<ConvertReport> {
    // Read and check the input before touching the output location.
    check_input(gguf)?;
    let g = GgufFile::open(gguf)?;
    check_output(out)?;
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    let (parent, name) = parent_and_name(out);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    remove_stale_partials(&parent, &name);
    let tmp = partial_dir(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let guard = PartialDir(Some(tmp.clone()));
    let mut report = write_model_dir(&g, &tmp)?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    guard.keep();
    report.out_dir = out.to_path_buf();
    Ok(report)
}

/// The directory `out`'s parent (`.` for a bare name) and `out`'s name.
fn parent_and_name(out: &Path) -> (PathBuf, String) {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

/// Where [`convert_gguf`] in this process writes the model for `out` before
/// renaming it into place: `.NAME.partial-PID` beside `out`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let (parent, name) = parent_and_name(out);
    parent.join(format!(".{name}.partial-{}", std::process::id()))
}

/// Removes the partial directory of an interrupted conversion (from a Ctrl-C
/// handler, while the conversion may still be writing into it): files created
/// during a removal make it fail, so it is retried until the directory is gone
/// (a file cannot be created in a removed directory). Returns whether it is gone.
pub fn remove_partial_dir(dir: &Path) -> bool {
    if dir.is_file() {
        // A partial file (a download): one removal.
        return std::fs::remove_file(dir).is_ok() || !dir.exists();
    }
    for _ in 0..100 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    !dir.exists()
}

/// `--gguf` must be a regular file: a directory or a device would otherwise fail
/// deep inside the reader with the system's "No such device".
fn check_input(gguf: &Path) -> Result<()> {
    let meta = match std::fs::metadata(gguf) {
        Ok(m) => m,
        // The reader reports a missing file itself, naming it.
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        bail!(
            "--gguf {}: expected a GGUF file, found a directory",
            gguf.display()
        );
    }
    if !meta.is_file() {
        bail!(
            "--gguf {}: expected a GGUF file, found a device, pipe or socket",
            gguf.display()
        );
    }
    Ok(())
}

/// `--out` must be a new path or an empty directory; a file or a symbolic link
/// is refused, naming what was found.
fn check_output(out: &Path) -> Result<()> {
    let Ok(link) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if link.file_type().is_symlink() && !out.exists() {
        bail!(
            "--out {} is a symbolic link to a path that does not exist; remove it or choose another --out",
            out.display()
        );
    }
    if out.is_dir() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "output directory {} already exists and is not empty; remove it or choose another --out",
                out.display()
            );
        }
        if link.file_type().is_symlink() {
            bail!(
                "--out {} is a symbolic link to a directory; give the directory itself",
                out.display()
            );
        }
        return Ok(());
    }
    bail!(
        "--out {} already exists and is a file, not a directory; remove it or choose another --out",
        out.display()
    )
}

/// Removes the partial directory on drop unless [`PartialDir::keep`] was called.
struct PartialDir(Option<PathBuf>);

impl PartialDir {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes `.NAME.partial-PID` directories in `parent` whose process is gone
/// (a conversion killed by Ctrl-C cannot clean up after itself).
fn remove_stale_partials(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id exists (on Linux, by its /proc entry; elsewhere
/// assumed alive, so nothing is removed).
fn process_alive(pid: u32) -> bool {
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        proc_root.join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Everything a GGUF file says about its model, read once: the converter writes
/// it out as files, the direct loader ([`crate::gguf::model`]) runs it.
pub struct ModelParts<'a> {
    pub params: LlamaParams,
    /// The configuration `config.json` would hold, parsed as `wafer-models` reads it.
    pub config: wafer_models::ModelConfig,
    pub config_json: serde_json::Value,
    /// Every tensor with its Hugging Face name, shape and row order.
    pub planned: Vec<weights::PlannedTensor<'a>>,
    pub tokenizer: tokenizers::Tokenizer,
    pub special: tokenizer::SpecialTokens,
    /// What `tokenizer_config.json` would hold (special tokens, chat template).
    pub tokenizer_config: serde_json::Value,
}

/// Reads the configuration, tensor plan and tokenizer of `g`.
pub fn read_parts(g: &GgufFile) -> Result<ModelParts<'_>> {
    let params = LlamaParams::from_gguf(g)?;
    let planned = weights::plan(g, &params)?;
    let (tok, special) = tokenizer::build_tokenizer(g)?;
    let config_json = params.to_config_json();
    // Refuse a config the rest of wafer would reject.
    let config = wafer_models::config::ModelConfig::from_json_str(&config_json.to_string())
        .context("the configuration derived from the GGUF metadata is invalid")?;
    let tokenizer_config =
        tokenizer::tokenizer_config_json(g, &special, params.max_position_embeddings)?;
    Ok(ModelParts {
        params,
        config,
        config_json,
        planned,
        tokenizer: tok,
        special,
        tokenizer_config,
    })
}

/// Writes the four files into the existing directory `dir`.
pub fn write_model_dir(g: &GgufFile, dir: &Path) -> Result<ConvertReport> {
    let parts = read_parts(g)?;
    write_json(&dir.join("config.json"), &parts.config_json)?;
    let tok_path = dir.join("tokenizer.json");
    parts
        .tokenizer
        .save(&tok_path, true)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tok_path.display()))?;
    write_json(&dir.join("tokenizer_config.json"), &parts.tokenizer_config)?;
    let planned = parts.planned;
    weights::write_safetensors(g, &planned, &dir.join("model.safetensors"))?;

    Ok(ConvertReport {
        out_dir: dir.to_path_buf(),
        n_tensors: planned.len(),
        n_parameters: planned.iter().map(|t| t.source.n_elements).sum(),
        source_types: weights::types_used(&planned)
            .iter()
            .map(|t| t.to_string())
            .collect(),
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(gguf: &Path, out: &Path) -> String {
        format!("{:#}", convert_gguf(gguf, out).unwrap_err())
    }

    #[test]
    fn a_directory_or_device_as_gguf_is_named_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let e = err(tmp.path(), &out);
        assert!(
            e.contains("--gguf") && e.contains("found a directory"),
            "{e}"
        );
        if Path::new("/dev/null").exists() {
            let e = err(Path::new("/dev/null"), &out);
            assert!(e.contains("found a device"), "{e}");
        }
        assert!(!out.exists());
    }

    #[test]
    fn a_file_or_dangling_link_as_out_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("taken");
        std::fs::write(&file, "keep me").unwrap();
        let e = format!("{:#}", check_output(&file).unwrap_err());
        assert!(e.contains("is a file, not a directory"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        #[cfg(unix)]
        {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
            let e = format!("{:#}", check_output(&link).unwrap_err());
            assert!(
                e.contains("symbolic link") && e.contains("does not exist"),
                "{e}"
            );
        }
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("x"), "").unwrap();
        let e = format!("{:#}", check_output(&full).unwrap_err());
        assert!(e.contains("not empty"), "{e}");
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        check_output(&tmp.path().join("empty")).unwrap();
        check_output(&tmp.path().join("new")).unwrap();
    }

    #[test]
    fn partial_directories_are_removed_on_drop_and_when_their_process_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".m.partial-1");
        std::fs::create_dir(&dir).unwrap();
        drop(PartialDir(Some(dir.clone())));
        assert!(!dir.exists());
        let kept = tmp.path().join(".m.partial-2");
        std::fs::create_dir(&kept).unwrap();
        PartialDir(Some(kept.clone())).keep();
        assert!(kept.exists());

        if Path::new("/proc/self").exists() {
            // No process has id u32::MAX - 1 (pid_max is at most 2^22 on Linux).
            let stale = tmp.path().join(format!(".m.partial-{}", u32::MAX - 1));
            let mine = tmp
                .path()
                .join(format!(".m.partial-{}", std::process::id()));
            let other = tmp.path().join(format!(".n.partial-{}", u32::MAX - 1));
            for d in [&stale, &mine, &other] {
                std::fs::create_dir(d).unwrap();
            }
            remove_stale_partials(tmp.path(), "m");
            assert!(!stale.exists() && mine.exists() && other.exists());
        }
    }

    #[test]
    fn a_partial_file_is_removed_and_a_missing_one_counts_as_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("x.gguf.partial-1");
        std::fs::write(&f, [1u8; 64]).unwrap();
        assert!(remove_partial_dir(&f));
        assert!(!f.exists());
        assert!(remove_partial_dir(&f));
    }

    #[test]
    fn the_partial_directory_sits_beside_out_and_is_removed_while_being_written() {
        let pid = std::process::id();
        assert_eq!(
            partial_dir(Path::new("models/m")),
            PathBuf::from(format!("models/.m.partial-{pid}"))
        );
        assert_eq!(
            partial_dir(Path::new("m")),
            PathBuf::from(format!("./.m.partial-{pid}"))
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = partial_dir(&tmp.path().join("m"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        // A conversion still writing, as when Ctrl-C arrives mid-way.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut created = 0;
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    if std::fs::write(dir.join(format!("f{i}")), [0u8; 4096]).is_ok() {
                        created += 1;
                    }
                }
                created
            })
        };
        while std::fs::read_dir(&dir).unwrap().count() < 50 {
            std::thread::yield_now();
        }
        assert!(remove_partial_dir(&dir));
        assert!(!dir.exists());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() >= 49);
        assert!(!dir.exists(), "nothing recreates the directory");
        // Already gone: nothing to do.
        assert!(remove_partial_dir(&dir));
    }
}
