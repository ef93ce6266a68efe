//! GGUF metadata: the key/value section of the header, with typed getters.
//!
//! Value type ids are those of the GGUF specification (ggml `docs/gguf.md`):
//! 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
//! 10 u64, 11 i64, 12 f64. Arrays may nest.

use super::GgufErrorKind;
use std::collections::HashMap;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// A short description for error messages ("u32 7", "array of 3", ...).
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
            Value::String(s) => format!("the string {s:?}"),
            Value::Array(items) => format!("an array of {} values", items.len()),
            Value::Bool(b) => format!("the boolean {b}"),
            other => format!("the number {}", other.as_f64().unwrap_or(f64::NAN)),
        }
    }

    /// Any integer type, if it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The metadata section, in file order, with lookup by key.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

type Get<T> = Result<Option<T>, GgufErrorKind>;

impl Metadata {
    /// Adds an entry; a key may appear only once.
    pub(crate) fn insert(&mut self, key: String, value: Value) -> Result<(), GgufErrorKind> {
        if self.index.contains_key(&key) {
            return Err(GgufErrorKind::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Get<T> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| GgufErrorKind::WrongType {
                key: key.to_string(),
                expected,
                found: v.describe(),
            }),
        }
    }

    pub fn u64(&self, key: &str) -> Get<u64> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub fn f64(&self, key: &str) -> Get<f64> {
        self.typed(key, "a number", Value::as_f64)
    }

    pub fn str(&self, key: &str) -> Get<&str> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn bool(&self, key: &str) -> Get<bool> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// An array whose every element is a string.
    pub fn str_array(&self, key: &str) -> Get<Vec<&str>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }

    /// An array whose every element is an integer.
    pub fn i64_array(&self, key: &str) -> Get<Vec<i64>> {
        self.typed(key, "an array of integers", |v| {
            v.as_array()?.iter().map(Value::as_i64).collect()
        })
    }

    /// Like [`Metadata::u64`] but the key must be present.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufErrorKind> {
        self.u64(key)?.ok_or_else(|| GgufErrorKind::MissingKey {
            key: key.to_string(),
        })
    }

    /// Like [`Metadata::str`] but the key must be present.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufErrorKind> {
        self.str(key)?.ok_or_else(|| GgufErrorKind::MissingKey {
            key: key.to_string(),
        })
    }
}
