//! A weight matrix held as per-PE tiles over a rectangular region, as the
//! functional executor stores it on the host.
//!
//! The geometry — which axis runs along the rows, the padded chunk of each axis
//! — is the placed program's [`MatrixTiling`] (`wafer_sim::tiling`); this module
//! only lays the values out. Every tile has the same padded size, so a PE's tile
//! sits at a fixed offset and tiles never straddle PEs; padding is zero, and
//! lines made only of padding are not stored on the host (they multiply zeros).
//!
//! Storage is data-oriented: all tiles of one matrix live in one contiguous
//! `Vec<f16>`. Consecutive output lines are grouped into *blocks* of about
//! [`BLOCK_OUTPUTS`] output rows; inside a block the order is
//! `[in line][tile col][output row of the block]`, so one PE's tile column is
//! a run of `to` values beside the same column of its neighbours along the
//! output axis. The GEMV then computes every PE's partial sums for a whole
//! block as contiguous multiply-adds, and each transfer of the reduction along
//! the input axis adds one contiguous vector (all the block's rows at once)
//! instead of one scalar per row: the same additions in the same order, laid
//! out so the host CPU can vectorise them. With tiles of a few elements
//! (SmolLM2 on a full wafer: 3 x 3) a per-PE dot product would be all overhead.

use half::f16;
pub use wafer_sim::tiling::{MatrixTiling, Orientation, Split};

/// Output rows per storage block (rounded to whole output lines): the GEMV's
/// partial sums for one block (`in lines x rows` f32) stay in the host's L1/L2.
pub const BLOCK_OUTPUTS: usize = 64;

/// Output lines per block for tiles of `to` rows: about [`BLOCK_OUTPUTS`]
/// rows, a multiple of 8 rows where that stays near the target (the host's
/// 8-lane vectors then have no scalar tail).
pub fn block_lines_for(to: usize) -> usize {
    if to >= BLOCK_OUTPUTS {
        return 1;
    }
    let step = 8 / gcd(to, 8);
    (BLOCK_OUTPUTS as f64 / (to * step) as f64).round().max(1.0) as usize * step
}

/// The output lines of block `b` when `used` lines are grouped `block_lines` at a time.
fn block_range(used: usize, block_lines: usize, b: usize) -> std::ops::Range<usize> {
    (b * block_lines).min(used)..((b + 1) * block_lines).min(used)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A matrix held as per-PE 16-bit tiles on a `width x height` region.
#[derive(Debug, Clone)]
pub struct TiledMatrix {
    pub out_split: Split,
    pub in_split: Split,
    pub orientation: Orientation,
    /// Output lines per storage block.
    pub block_lines: usize,
    /// Tiles ordered `[block][in line][tile col][row of the block]`; only the
    /// lines that hold real elements are stored (padding lines hold nothing).
    pub data: Vec<f16>,
}

impl TiledMatrix {
    /// Tiles a row-major `out_dim x in_dim` matrix given as f16 over a region
    /// of `width x height` PEs.
    pub fn from_rows(
        out_dim: usize,
        in_dim: usize,
        rows: impl Fn(usize, &mut [f16]) + Sync,
        width: usize,
        height: usize,
        orientation: Orientation,
    ) -> TiledMatrix {
        let (out_lines, in_lines) = match orientation {
            Orientation::OutAlongRows => (height, width),
            Orientation::OutAlongColumns => (width, height),
        };
        TiledMatrix::new(
            Split::new(out_dim, out_lines),
            Split::new(in_dim, in_lines),
            orientation,
            rows,
        )
    }

    /// Tiles a matrix laid out as `tiling` says; `rows` writes row `o`.
    pub fn from_tiling(
        tiling: &MatrixTiling,
        rows: impl Fn(usize, &mut [f16]) + Sync,
    ) -> TiledMatrix {
        TiledMatrix::new(tiling.out, tiling.inp, tiling.orientation, rows)
    }

    /// Tiles a matrix whose row `o` (`in_split.len` values) `rows` writes.
    pub fn new(
        out_split: Split,
        in_split: Split,
        orientation: Orientation,
        rows: impl Fn(usize, &mut [f16]) + Sync,
    ) -> TiledMatrix {
        let in_dim = in_split.len;
        let (to, ti) = (out_split.chunk, in_split.chunk);
        let nin = in_split.used();
        let block_lines = block_lines_for(to);
        let used = out_split.used();
        let mut data = vec![f16::ZERO; used * nin * to * ti];
        use rayon::prelude::*;
        data.par_chunks_mut(block_lines * nin * to * ti)
            .enumerate()
            .for_each(|(b, block)| {
                let lines = block_range(used, block_lines, b);
                let bo = lines.len() * to;
                let mut row = vec![f16::ZERO; in_dim];
                for (j, ob) in lines.enumerate() {
                    for (r, o) in out_split.range(ob).enumerate() {
                        rows(o, &mut row);
                        for (i, &v) in row.iter().enumerate() {
                            let (ib, c) = (i / ti, i % ti);
                            block[(ib * ti + c) * bo + j * to + r] = v;
                        }
                    }
                }
            });
        TiledMatrix {
            out_split,
            in_split,
            orientation,
            block_lines,
            data,
        }
    }

    /// The output lines of block `b`.
    pub fn block_range(&self, b: usize) -> std::ops::Range<usize> {
        block_range(self.out_split.used(), self.block_lines, b)
    }

    /// Output rows (padded tile rows) of block `b`.
    pub fn block_rows(&self, b: usize) -> usize {
        self.block_range(b).len() * self.out_split.chunk
    }

    pub fn out_dim(&self) -> usize {
        self.out_split.len
    }

    /// Elements of one PE's (padded) tile.
    pub fn tile_len(&self) -> usize {
        self.out_split.chunk * self.in_split.chunk
    }

    /// Bytes every PE of the region holds for this matrix: its padded 16-bit
    /// tile (zeros on padding lines, which the host does not store).
    pub fn bytes_per_pe(&self) -> u64 {
        (self.tile_len() * std::mem::size_of::<f16>()) as u64
    }

    /// Element (`r`, `c`) of the tile on PE (`out_line`, `in_line`).
    pub fn tile_element(&self, out_line: usize, in_line: usize, r: usize, c: usize) -> f16 {
        let (to, ti) = (self.out_split.chunk, self.in_split.chunk);
        let nin = self.in_split.used();
        let b = out_line / self.block_lines;
        let base = b * self.block_lines * nin * to * ti;
        let bo = self.block_rows(b);
        let j = out_line - b * self.block_lines;
        self.data[base + (in_line * ti + c) * bo + j * to + r]
    }

    /// The element at (`o`, `i`) of the original matrix, read back from its tile.
    pub fn get(&self, o: usize, i: usize) -> f16 {
        let (ob, ib) = (o / self.out_split.chunk, i / self.in_split.chunk);
        let (r, c) = (o % self.out_split.chunk, i % self.in_split.chunk);
        self.tile_element(ob, ib, r, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_whole_vectors_near_the_target() {
        for (to, lines) in [
            (3, 24),
            (7, 8),
            (8, 8),
            (1, 64),
            (2, 32),
            (6, 12),
            (64, 1),
            (194, 1),
        ] {
            assert_eq!(block_lines_for(to), lines, "tiles of {to} rows");
        }
    }

    #[test]
    fn every_element_is_placed_exactly_once() {
        for (out_dim, in_dim, w, h) in [(7, 5, 3, 2), (16, 16, 4, 4), (5, 9, 9, 1), (1, 1, 3, 3)] {
            for orientation in [Orientation::OutAlongRows, Orientation::OutAlongColumns] {
                let value = |o: usize, i: usize| f16::from_f32((o * 100 + i) as f32);
                let m = TiledMatrix::from_rows(
                    out_dim,
                    in_dim,
                    |o, row| {
                        row.iter_mut()
                            .enumerate()
                            .for_each(|(i, v)| *v = value(o, i))
                    },
                    w,
                    h,
                    orientation,
                );
                for o in 0..out_dim {
                    for i in 0..in_dim {
                        assert_eq!(m.get(o, i), value(o, i));
                    }
                }
                // Real elements plus zero padding fill the stored tiles exactly.
                let nonzero = m.data.iter().filter(|v| v.to_f32() != 0.0).count();
                assert_eq!(
                    nonzero,
                    out_dim * in_dim - 1,
                    "{out_dim}x{in_dim} on {w}x{h}"
                );
                assert_eq!(
                    m.data.len(),
                    m.out_split.used() * m.in_split.used() * m.tile_len()
                );
            }
        }
    }
}
