//! Block-quantized weight matrices kept in their stored ggml layout (Q8_0,
//! Q4_0, Q4_1, Q4_K, Q6_K), and the scalar decoding of one block to f32.
//!
//! A quantized matrix is `rows` rows of `cols / block_len` blocks each, the
//! bytes exactly as the file stores them, usually borrowed from a memory-mapped
//! file (see [`SharedBytes`]). The decoding here evaluates ggml's reference
//! `dequantize_row_*` in the same f32 operations and order; the GGUF converter
//! (`wafer-import`) decodes with it too, so a converted model holds exactly the
//! weights a GGUF run multiplies. It is checked against the `gguf` Python
//! package's dequantization (`fixtures/gguf`, `import/tests/gguf.rs`). The fast
//! dot products that decode inside their inner loop live in `reference::qdot`
//! and are tested against it.

use half::f16;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The block-quantized ggml types the CPU engine computes from directly.
/// Variants carry ggml's names.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q8_0,
    Q4_0,
    Q4_1,
    Q4_K,
    Q6_K,
}

impl QuantType {
    pub const ALL: [QuantType; 5] = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ];

    /// ggml's name of the type (`Q4_1`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q4_K => "Q4_K",
            QuantType::Q6_K => "Q6_K",
        }
    }

    /// The type of a ggml name, if it is one of these.
    pub fn from_name(name: &str) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q4_1 => 32,
            QuantType::Q4_K | QuantType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 => 34,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q4_K => 144,
            QuantType::Q6_K => 210,
        }
    }

    /// Decodes one block (`block_bytes()` bytes) into `out` (`block_len()` values).
    pub fn decode_block(self, b: &[u8], out: &mut [f32]) {
        match self {
            QuantType::Q8_0 => q8_0(b, out),
            QuantType::Q4_0 => q4_0(b, out),
            QuantType::Q4_1 => q4_1(b, out),
            QuantType::Q4_K => q4_k(b, out),
            QuantType::Q6_K => q6_k(b, out),
        }
    }

    /// Decodes whole blocks: `src` holds `out.len() / block_len()` blocks.
    pub fn decode(self, src: &[u8], out: &mut [f32]) {
        for (b, o) in src
            .chunks_exact(self.block_bytes())
            .zip(out.chunks_exact_mut(self.block_len()))
        {
            self.decode_block(b, o);
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes that live in a shared owner (a memory-mapped file, or a vector), viewed
/// as one range. Cloning shares the owner.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// Bytes owned by this value alone.
    pub fn owned(v: Vec<u8>) -> SharedBytes {
        let range = 0..v.len();
        SharedBytes {
            owner: Arc::new(v),
            range,
        }
    }

    /// `range` of `owner`'s bytes; `None` if the range lies outside them.
    pub fn mapped(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        range: Range<usize>,
    ) -> Option<SharedBytes> {
        let len = (*owner).as_ref().len();
        (range.start <= range.end && range.end <= len).then_some(SharedBytes { owner, range })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}

/// A quantized matrix's storage: its type and its rows of blocks.
#[derive(Debug, Clone)]
pub struct QuantData {
    pub ty: QuantType,
    pub bytes: SharedBytes,
}

impl QuantData {
    /// Checks that `bytes` holds exactly `rows` rows of `cols` elements of `ty`;
    /// the error says what was expected and found.
    pub fn new(
        ty: QuantType,
        rows: usize,
        cols: usize,
        bytes: SharedBytes,
    ) -> Result<QuantData, String> {
        if !cols.is_multiple_of(ty.block_len()) {
            return Err(format!(
                "{cols} columns are not a whole number of {ty} blocks of {} elements",
                ty.block_len()
            ));
        }
        let want = (cols / ty.block_len())
            .checked_mul(ty.block_bytes())
            .and_then(|r| r.checked_mul(rows));
        if want != Some(bytes.len()) {
            return Err(format!(
                "{rows} x {cols} {ty} elements need {} bytes, found {}",
                want.map_or("too many".to_string(), |w| w.to_string()),
                bytes.len()
            ));
        }
        Ok(QuantData { ty, bytes })
    }

    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(&self, cols: usize) -> usize {
        cols / self.ty.block_len() * self.ty.block_bytes()
    }

    /// The index of the first weight that decodes to NaN or infinity, if any.
    /// Only the blocks whose f16 scales are not finite are decoded: with finite
    /// scales every weight is finite (the largest, 65504 * 63 * 63, is far from
    /// f32's limit), and with one that is not, the block's weights are not.
    pub fn first_non_finite(&self) -> Option<usize> {
        let (bl, bb) = (self.ty.block_len(), self.ty.block_bytes());
        let scales: &[usize] = match self.ty {
            QuantType::Q8_0 | QuantType::Q4_0 => &[0],
            QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
            QuantType::Q6_K => &[208],
        };
        let mut w = [0f32; 256];
        self.bytes
            .as_slice()
            .chunks_exact(bb)
            .enumerate()
            .find_map(|(i, b)| {
                let bad = scales
                    .iter()
                    .any(|&at| u16::from_le_bytes([b[at], b[at + 1]]) & 0x7c00 == 0x7c00);
                if !bad {
                    return None;
                }
                self.ty.decode_block(b, &mut w[..bl]);
                w[..bl]
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|p| i * bl + p)
            })
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `{ f16 d; i8 qs[32] }`: x = q * d.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `{ f16 d; u8 qs[16] }`: low nibbles are elements 0..16, high nibbles 16..32; x = (q - 8) * d.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = f32::from((q & 0x0F) as i8 - 8) * d;
        hi[j] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

/// `{ f16 d; f16 m; u8 qs[16] }`: x = q * d + m (two roundings), nibbles as in Q4_0.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = f32::from(q & 0x0F) * d + m;
        hi[j] = f32::from(q >> 4) * d + m;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: x = (d * sc) * q - (dmin * m)
/// per 32-element sub-block; each 32 bytes of `qs` hold two sub-blocks (low
/// nibbles, then high).
fn q4_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for (chunk, y) in out.chunks_exact_mut(64).enumerate() {
        let q = &b[16 + chunk * 32..16 + chunk * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            hi[l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: each 6-bit value is 4 low
/// bits from `ql` and 2 high bits from `qh`, minus 32, times `d * scale` of its
/// 16-element group.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * f32::from(q1);
            y[l + 32] = s(2) * f32::from(q2);
            y[l + 64] = s(4) * f32::from(q3);
            y[l + 96] = s(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_scale_is_found_by_its_first_weight() {
        // Two Q4_1 blocks; the second's minimum is infinite.
        let mut bytes = vec![0u8; 40];
        bytes[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        bytes[20..22].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let q = QuantData::new(QuantType::Q4_1, 1, 64, SharedBytes::owned(bytes.clone())).unwrap();
        assert_eq!(q.first_non_finite(), None);
        bytes[22..24].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
        let q = QuantData::new(QuantType::Q4_1, 1, 64, SharedBytes::owned(bytes)).unwrap();
        assert_eq!(q.first_non_finite(), Some(32));
        let err = QuantData::new(QuantType::Q4_1, 2, 64, q.bytes.clone()).unwrap_err();
        assert!(err.contains("need 80 bytes, found 40"), "{err}");
    }
}
