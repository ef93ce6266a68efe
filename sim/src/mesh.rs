//! PE memory accounting on a region: every buffer a program places on a PE is
//! charged against that PE's data SRAM (`pe.sram_bytes - pe.reserve_bytes`), and
//! going over is a hard error naming the PE and the buffer.

use crate::error::SimError;
use wafer_core::{Bytes, Region, WaferSpec};

pub struct Mesh {
    region: Region,
    budget: Bytes,
    used: Vec<u64>,
}

impl Mesh {
    pub fn new(spec: &WaferSpec, region: Region) -> Mesh {
        Mesh {
            region,
            budget: Bytes(spec.pe.sram_bytes - spec.pe.reserve_bytes),
            used: vec![0; region.pes() as usize],
        }
    }

    pub fn region(&self) -> Region {
        self.region
    }

    pub fn budget(&self) -> Bytes {
        self.budget
    }

    /// Charges `bytes` for `what` to the PE at column `dx`, row `dy` of the region.
    pub fn alloc(&mut self, dx: u32, dy: u32, bytes: Bytes, what: &str) -> Result<(), SimError> {
        let idx = (dy as usize) * self.region.width() as usize + dx as usize;
        let used = self.used[idx];
        let free = self.budget.0 - used;
        if bytes.0 > free {
            return Err(SimError::SramExceeded {
                pe: self.region.pe(dx, dy),
                what: what.to_string(),
                need: bytes,
                free: Bytes(free),
                budget: self.budget,
            });
        }
        self.used[idx] = used + bytes.0;
        Ok(())
    }

    /// Charges the same buffer to every PE of the region.
    pub fn alloc_all(&mut self, bytes: Bytes, what: &str) -> Result<(), SimError> {
        for dy in 0..self.region.height() {
            for dx in 0..self.region.width() {
                self.alloc(dx, dy, bytes, what)?;
            }
        }
        Ok(())
    }

    pub fn used(&self, dx: u32, dy: u32) -> Bytes {
        Bytes(self.used[(dy as usize) * self.region.width() as usize + dx as usize])
    }

    pub fn max_used(&self) -> Bytes {
        Bytes(self.used.iter().copied().max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::{spec::wse3, PeCoord, RegionShape};

    #[test]
    fn over_budget_is_a_hard_error_naming_the_pe() {
        let spec = wse3();
        let region = Region::new(PeCoord::new(10, 20), RegionShape::new(2, 2).unwrap());
        let mut mesh = Mesh::new(&spec, region);
        // 49,152 bytes less the preset's 4,176-byte reserve.
        assert_eq!(mesh.budget(), Bytes(44_976));
        mesh.alloc_all(Bytes(30 * 1024), "weights").unwrap();
        mesh.alloc(1, 1, Bytes(44_976 - 30 * 1024), "kv").unwrap();
        let err = mesh.alloc(1, 1, Bytes(1), "scratch").unwrap_err();
        assert!(matches!(err, SimError::SramExceeded { pe, .. } if pe == PeCoord::new(11, 21)));
        assert!(err.to_string().contains("scratch"), "{err}");
        assert_eq!(mesh.max_used(), Bytes(44_976));
        assert_eq!(mesh.used(0, 0), Bytes(30 * 1024));
    }
}
