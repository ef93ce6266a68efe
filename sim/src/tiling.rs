//! How a matrix or a vector lies on a rectangular region of PEs: the tile
//! geometry the placed program records, the SRAM accounting charges and the
//! executors store.
//!
//! A `out x in` matrix puts one axis along the region's rows and the other along
//! its columns ([`Orientation`]), each cut into equal padded chunks ([`Split`]).
//! Every PE of the region holds a tile of `out.chunk x in.chunk` elements: a PE
//! runs the same code with the same array sizes as its neighbours, so a PE whose
//! lines fall in the padding holds a tile of zeros, not nothing. A vector (a norm
//! gain, a bias, the residual) is split along one axis and replicated along the
//! other, so every PE holds the chunk of its line.
//!
//! Bytes per PE are therefore uniform over a region for everything but the KV
//! cache (which `sim` leaves to the program: it grows with the sequence).

use serde::Serialize;
use wafer_core::DType;

/// A split of `len` elements into `parts` lines of `chunk` (the last ones may be
/// short or empty: padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Split {
    pub len: usize,
    /// PE lines available along this axis.
    pub parts: usize,
    /// Elements per line (padded), `ceil(len / parts)`.
    pub chunk: usize,
}

impl Split {
    /// `len` over `parts` lines; both at least 1 (regions and model sizes are
    /// validated before they are tiled).
    pub fn new(len: usize, parts: usize) -> Split {
        assert!(len > 0 && parts > 0, "split of {len} over {parts} lines");
        Split {
            len,
            parts,
            chunk: len.div_ceil(parts),
        }
    }

    /// A split with a given chunk (for vectors that must follow another split,
    /// such as the query dims that sit beside their KV head's dims).
    pub fn with_chunk(len: usize, parts: usize, chunk: usize) -> Split {
        assert!(
            chunk.checked_mul(parts).is_some_and(|c| c >= len) && chunk > 0,
            "{parts} lines of {chunk} cannot hold {len}"
        );
        Split { len, parts, chunk }
    }

    /// Lines that hold at least one real element.
    pub fn used(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// The real elements of line `i` (empty for padding lines).
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let a = (i * self.chunk).min(self.len);
        let b = ((i + 1) * self.chunk).min(self.len);
        a..b
    }
}

/// Which region axis the matrix's output dimension runs along. The input
/// dimension runs along the other, and the GEMV's partial sums are reduced
/// along the input axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    /// Output blocks on region rows (y), input blocks on columns (x): the
    /// reduction runs along each row.
    OutAlongRows,
    /// Output blocks on columns, input blocks on rows: reduction along columns.
    OutAlongColumns,
}

/// One axis of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Along a row: `width` PEs, indexed by x.
    Row,
    /// Along a column: `height` PEs, indexed by y.
    Column,
}

/// A matrix tiled over a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatrixTiling {
    pub out: Split,
    pub inp: Split,
    pub orientation: Orientation,
    pub dtype: DType,
}

impl MatrixTiling {
    /// A `out_dim x in_dim` matrix on a `width x height` region.
    pub fn new(
        out_dim: usize,
        in_dim: usize,
        width: usize,
        height: usize,
        orientation: Orientation,
        dtype: DType,
    ) -> MatrixTiling {
        let (out_lines, in_lines) = match orientation {
            Orientation::OutAlongRows => (height, width),
            Orientation::OutAlongColumns => (width, height),
        };
        MatrixTiling {
            out: Split::new(out_dim, out_lines),
            inp: Split::new(in_dim, in_lines),
            orientation,
            dtype,
        }
    }

    /// The axis the GEMV's partial sums are reduced along (the input's).
    pub fn reduce_axis(&self) -> Axis {
        match self.orientation {
            Orientation::OutAlongRows => Axis::Row,
            Orientation::OutAlongColumns => Axis::Column,
        }
    }

    /// Elements of every PE's (padded) tile: also the MACs of its GEMV.
    pub fn tile_elements(&self) -> u64 {
        self.out.chunk as u64 * self.inp.chunk as u64
    }

    pub fn bytes_per_pe(&self) -> u64 {
        self.tile_elements() * self.dtype.size_bytes()
    }
}

/// A vector split along one axis of a region and replicated along the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VectorTiling {
    pub split: Split,
    /// The axis the chunks run along (a vector over rows is split by y).
    pub along: Axis,
    pub dtype: DType,
}

impl VectorTiling {
    pub fn bytes_per_pe(&self) -> u64 {
        self.split.chunk as u64 * self.dtype.size_bytes()
    }
}

/// A named tensor of a region's program and how it lies there.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tile {
    Matrix {
        name: String,
        #[serde(flatten)]
        tiling: MatrixTiling,
    },
    Vector {
        name: String,
        #[serde(flatten)]
        tiling: VectorTiling,
    },
}

impl Tile {
    pub fn name(&self) -> &str {
        match self {
            Tile::Matrix { name, .. } | Tile::Vector { name, .. } => name,
        }
    }

    /// Bytes every PE of the region holds for this tensor.
    pub fn bytes_per_pe(&self) -> u64 {
        match self {
            Tile::Matrix { tiling, .. } => tiling.bytes_per_pe(),
            Tile::Vector { tiling, .. } => tiling.bytes_per_pe(),
        }
    }

    /// Real (unpadded) elements of the tensor.
    pub fn elements(&self) -> u64 {
        match self {
            Tile::Matrix { tiling, .. } => tiling.out.len as u64 * tiling.inp.len as u64,
            Tile::Vector { tiling, .. } => tiling.split.len as u64,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Tile::Matrix { tiling, .. } => tiling.dtype,
            Tile::Vector { tiling, .. } => tiling.dtype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pad_the_tail() {
        let s = Split::new(10, 4);
        assert_eq!((s.chunk, s.used()), (3, 4));
        assert_eq!(s.range(3), 9..10);
        let s = Split::new(576, 167);
        assert_eq!((s.chunk, s.used()), (4, 144));
        assert_eq!(s.range(150), 576..576);
        let s = Split::new(3, 8);
        assert_eq!((s.chunk, s.used()), (1, 3));
    }

    #[test]
    fn a_matrix_tile_follows_its_orientation() {
        // 4096 x 1024 on 190 x 130: out over columns (190), in over rows (130).
        let t = MatrixTiling::new(
            1024,
            4096,
            190,
            130,
            Orientation::OutAlongColumns,
            DType::F16,
        );
        assert_eq!((t.out.chunk, t.inp.chunk), (6, 32));
        assert_eq!(t.bytes_per_pe(), 6 * 32 * 2);
        assert_eq!(t.reduce_axis(), Axis::Column);
        let t = MatrixTiling::new(4096, 1024, 190, 130, Orientation::OutAlongRows, DType::F32);
        assert_eq!((t.out.chunk, t.inp.chunk), (32, 6));
        assert_eq!(t.bytes_per_pe(), 32 * 6 * 4);
    }
}
