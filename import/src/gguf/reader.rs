//! Parsing the GGUF header (magic, version, metadata, tensor infos) out of the
//! file's bytes, following the GGUF specification (ggml `docs/gguf.md`).
//!
//! Every count and length read from the file is checked against the bytes that
//! remain and against the limits below *before* anything is allocated, so a
//! corrupt or hostile file costs at most its own size in memory.

use super::{GgmlType, GgufErrorKind, Metadata, TensorInfo, Value};
use std::collections::HashSet;

/// Little-endian "GGUF".
const MAGIC: [u8; 4] = *b"GGUF";
/// ggml's default when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Generous caps far above any real model (Llama 3.1 405B has ~1,100 tensors and
/// a 128k vocabulary); they bound allocations even before the file-size check.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_STRING_BYTES: u64 = 64 << 20;
const MAX_ARRAY_LEN: u64 = 1 << 28;
const MAX_ARRAY_DEPTH: u32 = 8;
const MAX_ELEMENTS: u64 = 1 << 40;

/// The parsed header.
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset where tensor data starts.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufErrorKind> {
        if n > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.buf.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufErrorKind> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufErrorKind> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks a count read from the file: `count * min_item_bytes` must fit in what
    /// is left, and `count` must be under `max`.
    fn check_count(
        &self,
        count: u64,
        min_item_bytes: u64,
        max: u64,
        what: &dyn Fn() -> String,
    ) -> Result<usize, GgufErrorKind> {
        if count > max {
            return Err(GgufErrorKind::TooLarge {
                what: what(),
                found: count,
                max,
            });
        }
        let needed = count.saturating_mul(min_item_bytes);
        if needed > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed,
                file_len: self.buf.len() as u64,
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufErrorKind> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > MAX_STRING_BYTES {
            return Err(GgufErrorKind::TooLarge {
                what: format!("the length of {}", what()),
                found: len,
                max: MAX_STRING_BYTES,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufErrorKind::BadUtf8 { what: what() })
    }

    fn value(
        &mut self,
        ty: u32,
        depth: u32,
        what: &dyn Fn() -> String,
    ) -> Result<Value, GgufErrorKind> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                found => {
                    return Err(GgufErrorKind::BadBool {
                        what: what(),
                        found,
                    })
                }
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufErrorKind::TooLarge {
                        what: format!("the nesting depth of arrays in {}", what()),
                        found: u64::from(depth) + 1,
                        max: MAX_ARRAY_DEPTH.into(),
                    });
                }
                let elem_ty = self.u32(&|| format!("the element type of {}", what()))?;
                let min_bytes =
                    min_value_bytes(elem_ty).ok_or_else(|| GgufErrorKind::BadValueType {
                        what: format!("the elements of {}", what()),
                        found: elem_ty,
                    })?;
                let count = self.u64(&|| format!("the length of {}", what()))?;
                let n = self.check_count(count, min_bytes, MAX_ARRAY_LEN, &|| {
                    format!("the length of {}", what())
                })?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(elem_ty, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            found => {
                return Err(GgufErrorKind::BadValueType {
                    what: what(),
                    found,
                })
            }
        })
    }
}

/// The fewest bytes a value of this type can occupy; `None` for unknown types.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,  // the length prefix of an empty string
        9 => 12, // element type + length of an empty array
        10..=12 => 8,
        _ => return None,
    })
}

/// Parses the header and checks every tensor's extent against the file.
pub fn parse_header(buf: &[u8]) -> Result<Header, GgufErrorKind> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "the magic bytes".into())?;
    if magic != MAGIC {
        return Err(GgufErrorKind::BadMagic {
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = c.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        let hint = if version == 1 {
            " (version 1 predates 64-bit counts; re-convert the model with a current llama.cpp)"
        } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (this looks like a big-endian file; only little-endian files are supported)"
        } else {
            ""
        };
        return Err(GgufErrorKind::UnsupportedVersion {
            found: version,
            hint,
        });
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata key/value count".into())?;
    // Key length + value type + 1 byte of value.
    let n_kv = c.check_count(n_kv, 13, MAX_KV, &|| "the metadata key/value count".into())?;

    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let ty = c.u32(&|| format!("the value type of metadata key `{key}`"))?;
        let value = c.value(ty, 0, &|| format!("metadata key `{key}`"))?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.u64("general.alignment")? {
        None => DEFAULT_ALIGNMENT,
        Some(a) if a != 0 && a.is_power_of_two() => a,
        Some(found) => return Err(GgufErrorKind::BadAlignment { found }),
    };

    // Name length + n_dims + type + offset.
    let n_tensors = c.check_count(n_tensors, 24, MAX_TENSORS, &|| "the tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut seen = HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"))?;
        let info = tensor_info(&mut c, name)?;
        if !seen.insert(info.name.clone()) {
            return Err(GgufErrorKind::DuplicateTensor { tensor: info.name });
        }
        tensors.push(info);
    }

    let file_len = buf.len() as u64;
    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufErrorKind::Misaligned {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            (start, end) => {
                return Err(GgufErrorKind::DataPastEof {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn tensor_info(c: &mut Cursor<'_>, name: String) -> Result<TensorInfo, GgufErrorKind> {
    let n_dims = c.u32(&|| format!("the dimension count of tensor `{name}`"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufErrorKind::BadShape {
            tensor: name,
            reason: format!("{n_dims} dimensions, expected 1 to {MAX_DIMS}"),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(c.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
    }
    let type_id = c.u32(&|| format!("the type of tensor `{name}`"))?;
    let offset = c.u64(&|| format!("the data offset of tensor `{name}`"))?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufErrorKind::UnknownTensorType {
        tensor: name.clone(),
        found: type_id,
    })?;

    let mut n_elements: u64 = 1;
    for &d in &dims {
        n_elements = match n_elements.checked_mul(d) {
            Some(n) if d > 0 && n <= MAX_ELEMENTS => n,
            _ => {
                return Err(GgufErrorKind::BadShape {
                    tensor: name,
                    reason: format!(
                        "dimensions {dims:?} give no elements or more than {MAX_ELEMENTS}"
                    ),
                })
            }
        };
    }
    if dims[0] % ty.block_len() != 0 {
        return Err(GgufErrorKind::BadShape {
            tensor: name,
            reason: format!(
                "the first dimension {} is not a multiple of the {ty} block of {} elements",
                dims[0],
                ty.block_len()
            ),
        });
    }
    let n_bytes = n_elements / ty.block_len() * ty.block_bytes();
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_elements,
        n_bytes,
    })
}
