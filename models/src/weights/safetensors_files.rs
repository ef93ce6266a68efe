//! Memory-mapped access to a model's safetensors files: `model.safetensors`, or
//! the shards that `model.safetensors.index.json` lists.
//!
//! Headers are parsed and validated by the `safetensors` crate (which bounds the
//! header length and checks every tensor's byte range against the file size), so
//! nothing here allocates from a length read out of a file.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use wafer_core::DType;

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the mapped file.
    start: usize,
    end: usize,
}

/// Every tensor of a model, across one or several memory-mapped files.
pub struct SafetensorsFiles {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    tensors: HashMap<String, Entry>,
}

/// One tensor's bytes, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
    pub file: &'a Path,
}

impl SafetensorsFiles {
    /// Opens `DIR/model.safetensors.index.json` (sharded) if present, else
    /// `DIR/model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<SafetensorsFiles> {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("cannot read {}", index.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", index.display()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{}: no `weight_map` object", index.display()))?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().with_context(|| {
                    format!("{}: weight_map[{name}] is not a file name", index.display())
                })?;
                // Shards live beside the index; refuse paths that leave the directory.
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    bail!(
                        "{}: shard name `{file}` is not a plain file name",
                        index.display()
                    );
                }
                shards.insert(file.to_string());
            }
            if shards.is_empty() {
                bail!("{}: `weight_map` lists no shards", index.display());
            }
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            let files = SafetensorsFiles::open_files(&paths)?;
            for (name, file) in map {
                match files.tensors.get(name) {
                    Some(e)
                        if files.paths[e.file].file_name().and_then(|f| f.to_str())
                            == file.as_str() => {}
                    _ => bail!(
                        "{}: tensor `{name}` is listed in shard {} but that shard does not hold it",
                        index.display(),
                        file
                    ),
                }
            }
            Ok(files)
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                bail!(
                    "{}: no model.safetensors or model.safetensors.index.json",
                    dir.display()
                );
            }
            SafetensorsFiles::open_files(&[single])
        }
    }

    /// Maps and indexes the given files. A tensor name may appear only once.
    pub fn open_files(paths: &[PathBuf]) -> Result<SafetensorsFiles> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (file_idx, path) in paths.iter().enumerate() {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: the mapping is read-only; like every reader of model files we
            // assume nobody rewrites the file while it is mapped.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot memory-map {}", path.display()))?;
            check_header(&map).with_context(|| {
                format!(
                    "{} is not a valid safetensors file (truncated or corrupt?)",
                    path.display()
                )
            })?;
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid safetensors file (truncated or corrupt?): {e:?}",
                    path.display()
                )
            })?;
            let base = map.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    Dtype::F32 => DType::F32,
                    Dtype::F16 => DType::F16,
                    Dtype::BF16 => DType::BF16,
                    other => bail!(
                        "{}: tensor `{name}` has dtype {other:?}; supported are F32, F16 and BF16",
                        path.display()
                    ),
                };
                let start = view.data().as_ptr() as usize - base;
                let entry = Entry {
                    file: file_idx,
                    dtype,
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                };
                if let Some(prev) = tensors.insert(name.clone(), entry) {
                    bail!(
                        "tensor `{name}` appears in both {} and {}",
                        paths[prev.file].display(),
                        path.display()
                    );
                }
            }
            maps.push(map);
        }
        Ok(SafetensorsFiles {
            paths: paths.to_vec(),
            maps,
            tensors,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// The tensor `name`, or an error naming it and the files searched.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let (key, e) = self.tensors.get_key_value(name).with_context(|| {
            let files: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            format!("missing tensor `{name}` (searched {})", files.join(", "))
        })?;
        Ok(TensorView {
            name: key,
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &self.maps[e.file][e.start..e.end],
            file: &self.paths[e.file],
        })
    }
}

impl TensorView<'_> {
    /// Fails unless the shape is exactly `expected`; `why` says where the
    /// expectation comes from (usually config.json).
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            bail!(
                "tensor `{}` in {}: expected shape {:?} (from config.json), found {:?}",
                self.name,
                self.file.display(),
                expected,
                self.shape
            );
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values widened to f32 (exact for every supported dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// The values as raw 16-bit words if stored in `dtype` (no conversion), else None.
    pub fn raw_u16(&self, dtype: DType) -> Option<Vec<u16>> {
        (self.dtype == dtype && dtype != DType::F32).then(|| {
            self.bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        })
    }
}

/// The largest safetensors header read (the JSON index of the tensors).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Checks a safetensors file's header before the library parses it, so a bad
/// entry is reported with its tensor's name: the header length within the file,
/// every tensor's byte range inside the data and as long as its shape and dtype
/// say.
fn check_header(bytes: &[u8]) -> Result<()> {
    let Some(len) = bytes.get(..8) else {
        bail!(
            "{} bytes: too short for the 8-byte header length",
            bytes.len()
        );
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let data_len = (bytes.len() as u64 - 8).checked_sub(n).with_context(|| {
        format!(
            "the header claims {n} bytes but the file has {}",
            bytes.len() - 8
        )
    })?;
    if n > MAX_HEADER_BYTES {
        bail!("the header claims {n} bytes (at most {MAX_HEADER_BYTES} are read)");
    }
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n as usize])
            .context("the header is not a JSON object")?;
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            entry
                .get(key)
                .with_context(|| format!("tensor `{name}`: no `{key}`"))
        };
        let dtype = field("dtype")?.as_str().unwrap_or("");
        let size: u64 = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            other => bail!("tensor `{name}`: unknown dtype `{other}`"),
        };
        let dims = field("shape")?
            .as_array()
            .with_context(|| format!("tensor `{name}`: `shape` is not a list"))?;
        let mut elements = 1u64;
        for d in dims {
            let d = d
                .as_u64()
                .with_context(|| format!("tensor `{name}`: shape entry {d} is not a size"))?;
            elements = elements
                .checked_mul(d)
                .with_context(|| format!("tensor `{name}`: shape {dims:?} overflows"))?;
        }
        let offsets = field("data_offsets")?
            .as_array()
            .filter(|o| o.len() == 2)
            .with_context(|| format!("tensor `{name}`: `data_offsets` is not [begin, end]"))?;
        let (a, b) = (offsets[0].as_u64(), offsets[1].as_u64());
        let (Some(a), Some(b)) = (a, b) else {
            bail!("tensor `{name}`: `data_offsets` {offsets:?} are not byte offsets");
        };
        if a > b || b > data_len {
            bail!("tensor `{name}`: bytes {a}..{b} lie outside the {data_len} bytes of data");
        }
        let want = elements.checked_mul(size);
        if want != Some(b - a) {
            bail!(
                "tensor `{name}`: shape {dims:?} of {dtype} is {} bytes, but its data_offsets hold {}",
                want.map_or("too many".to_string(), |w| w.to_string()),
                b - a
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn a_bad_header_entry_names_its_tensor() {
        let ok = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        check_header(&file(ok, 24)).unwrap();
        for (header, data, want) in [
            (
                r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                24,
                "tensor `w`: shape",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#,
                10,
                "tensor `w`: bytes 0..24",
            ),
            (
                r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#,
                2,
                "unknown dtype",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
                "overflows",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[1]}}"#,
                4,
                "no `data_offsets`",
            ),
            (r#"[1,2]"#, 0, "not a JSON object"),
        ] {
            let err = format!("{:#}", check_header(&file(header, data)).unwrap_err());
            assert!(err.contains(want), "{header}: {err}");
        }
        let err = format!("{:#}", check_header(&[1, 2, 3]).unwrap_err());
        assert!(err.contains("too short"), "{err}");
        let mut claims_more = file(ok, 24);
        claims_more[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = format!("{:#}", check_header(&claims_more).unwrap_err());
        assert!(err.contains("claims"), "{err}");
    }
}
