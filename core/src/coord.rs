//! Coordinates on the PE mesh and rectangular regions of PEs.
//!
//! `x` grows eastward (columns), `y` grows southward (rows), as in the Cerebras SDK.
//! A `Region` is always non-empty; construct it with [`Region::new`].

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One processing element's position on the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeCoord {
    pub x: u32,
    pub y: u32,
}

impl PeCoord {
    pub fn new(x: u32, y: u32) -> Self {
        PeCoord { x, y }
    }

    /// Manhattan distance: the hop count of a dimension-ordered route.
    pub fn hops_to(self, other: PeCoord) -> u64 {
        (self.x.abs_diff(other.x) + self.y.abs_diff(other.y)) as u64
    }
}

impl fmt::Display for PeCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

/// The size of a rectangle of PEs, written `WIDTHxHEIGHT` (columns x rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionShape {
    pub width: u32,
    pub height: u32,
}

impl RegionShape {
    pub fn new(width: u32, height: u32) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(CoreError::InvalidRegion(format!(
                "{width}x{height} has a zero side; both sides must be at least 1 PE"
            )));
        }
        Ok(RegionShape { width, height })
    }

    pub fn square(side: u32) -> Result<Self> {
        RegionShape::new(side, side)
    }

    pub fn pes(self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

impl fmt::Display for RegionShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for RegionShape {
    type Err = CoreError;

    /// Parses `PxQ` (width x height), or a single `P` for a square.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            CoreError::InvalidRegion(format!(
                "`{s}` is not a region size; expected WIDTHxHEIGHT such as 420x420"
            ))
        };
        let (w, h) = match s.trim().split_once(['x', 'X']) {
            Some((w, h)) => (w.trim(), h.trim()),
            None => (s.trim(), s.trim()),
        };
        let w: u32 = w.parse().map_err(|_| bad())?;
        let h: u32 = h.parse().map_err(|_| bad())?;
        RegionShape::new(w, h)
    }
}

/// A non-empty rectangle of PEs: `origin` is its north-west corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Region {
    pub origin: PeCoord,
    pub shape: RegionShape,
}

impl Region {
    pub fn new(origin: PeCoord, shape: RegionShape) -> Self {
        Region { origin, shape }
    }

    pub fn width(&self) -> u32 {
        self.shape.width
    }

    pub fn height(&self) -> u32 {
        self.shape.height
    }

    pub fn pes(&self) -> u64 {
        self.shape.pes()
    }

    /// The PE at column `dx`, row `dy` counted from the origin.
    pub fn pe(&self, dx: u32, dy: u32) -> PeCoord {
        debug_assert!(dx < self.shape.width && dy < self.shape.height);
        PeCoord::new(self.origin.x + dx, self.origin.y + dy)
    }

    pub fn contains(&self, pe: PeCoord) -> bool {
        pe.x >= self.origin.x
            && pe.y >= self.origin.y
            && pe.x < self.origin.x + self.shape.width
            && pe.y < self.origin.y + self.shape.height
    }

    /// Checks the region lies inside a `fabric_width x fabric_height` fabric.
    pub fn check_inside(&self, fabric_width: u32, fabric_height: u32) -> Result<()> {
        let right = self.origin.x as u64 + self.shape.width as u64;
        let bottom = self.origin.y as u64 + self.shape.height as u64;
        if right > fabric_width as u64 || bottom > fabric_height as u64 {
            return Err(CoreError::InvalidRegion(format!(
                "region {} at {} reaches column {right} and row {bottom}, outside the {fabric_width}x{fabric_height} fabric",
                self.shape, self.origin
            )));
        }
        Ok(())
    }

    pub fn overlaps(&self, other: &Region) -> bool {
        let ax1 = self.origin.x + self.shape.width;
        let ay1 = self.origin.y + self.shape.height;
        let bx1 = other.origin.x + other.shape.width;
        let by1 = other.origin.y + other.shape.height;
        self.origin.x < bx1 && other.origin.x < ax1 && self.origin.y < by1 && other.origin.y < ay1
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.shape, self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_region_shapes() {
        let s: RegionShape = "420x360".parse().unwrap();
        assert_eq!((s.width, s.height), (420, 360));
        let s: RegionShape = "64".parse().unwrap();
        assert_eq!((s.width, s.height), (64, 64));
        assert!("0x5".parse::<RegionShape>().is_err());
        assert!("ax5".parse::<RegionShape>().is_err());
        assert!("-3x5".parse::<RegionShape>().is_err());
    }

    #[test]
    fn region_geometry() {
        let r = Region::new(PeCoord::new(2, 3), RegionShape::new(4, 5).unwrap());
        assert_eq!(r.pes(), 20);
        assert!(r.contains(PeCoord::new(5, 7)));
        assert!(!r.contains(PeCoord::new(6, 7)));
        assert!(r.check_inside(6, 8).is_ok());
        assert!(r.check_inside(5, 8).is_err());
        let s = Region::new(PeCoord::new(5, 7), RegionShape::new(1, 1).unwrap());
        assert!(r.overlaps(&s));
        let t = Region::new(PeCoord::new(6, 0), RegionShape::new(1, 1).unwrap());
        assert!(!r.overlaps(&t));
        assert_eq!(PeCoord::new(0, 0).hops_to(PeCoord::new(3, 4)), 7);
    }
}
