//! Units as newtypes: `Cycles` for time on the wafer and `Bytes` for memory, so a
//! byte count can never be added to a cycle count by accident.
//!
//! `Cycles` is an `f64` because the quantities the project estimates are means over
//! PEs (the calibration figures are fractional) and some collective costs divide.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// A duration in clock cycles of the wafer.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cycles(pub f64);

impl Cycles {
    pub const ZERO: Cycles = Cycles(0.0);

    pub fn new(cycles: f64) -> Self {
        Cycles(cycles)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Seconds at the given clock frequency.
    pub fn seconds_at(self, clock_hz: f64) -> f64 {
        self.0 / clock_hz
    }

    pub fn max(self, other: Cycles) -> Cycles {
        Cycles(self.0.max(other.0))
    }
}

impl Add for Cycles {
    type Output = Cycles;
    fn add(self, rhs: Cycles) -> Cycles {
        Cycles(self.0 + rhs.0)
    }
}

impl AddAssign for Cycles {
    fn add_assign(&mut self, rhs: Cycles) {
        self.0 += rhs.0;
    }
}

impl Sub for Cycles {
    type Output = Cycles;
    fn sub(self, rhs: Cycles) -> Cycles {
        Cycles(self.0 - rhs.0)
    }
}

impl Mul<f64> for Cycles {
    type Output = Cycles;
    fn mul(self, rhs: f64) -> Cycles {
        Cycles(self.0 * rhs)
    }
}

impl Div<f64> for Cycles {
    type Output = Cycles;
    fn div(self, rhs: f64) -> Cycles {
        Cycles(self.0 / rhs)
    }
}

impl Sum for Cycles {
    fn sum<I: Iterator<Item = Cycles>>(iter: I) -> Cycles {
        Cycles(iter.map(|c| c.0).sum())
    }
}

impl fmt::Display for Cycles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} cycles", self.0)
    }
}

/// A size in bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const ZERO: Bytes = Bytes(0);

    pub fn new(bytes: u64) -> Self {
        Bytes(bytes)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn kib(kib: u64) -> Self {
        Bytes(kib * 1024)
    }

    pub fn checked_add(self, rhs: Bytes) -> Option<Bytes> {
        self.0.checked_add(rhs.0).map(Bytes)
    }

    pub fn saturating_sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(rhs.0))
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 + rhs.0)
    }
}

impl AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        self.0 += rhs.0;
    }
}

impl Sub for Bytes {
    type Output = Bytes;
    fn sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 - rhs.0)
    }
}

impl Mul<u64> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: u64) -> Bytes {
        Bytes(self.0 * rhs)
    }
}

impl Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        Bytes(iter.map(|b| b.0).sum())
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1e12 {
            write!(f, "{:.2} TB", b / 1e12)
        } else if b >= 1e9 {
            write!(f, "{:.2} GB", b / 1e9)
        } else if b >= 1e6 {
            write!(f, "{:.2} MB", b / 1e6)
        } else if b >= 1e3 {
            write!(f, "{:.2} KB", b / 1e3)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_arithmetic_and_time() {
        let c = Cycles(1100.0) + Cycles(1100.0);
        assert_eq!(c, Cycles(2200.0));
        assert!((c.seconds_at(1.1e9) - 2.0e-6).abs() < 1e-15);
        let total: Cycles = [Cycles(1.5), Cycles(2.5)].into_iter().sum();
        assert_eq!(total, Cycles(4.0));
    }

    #[test]
    fn bytes_display_and_sum() {
        assert_eq!(Bytes::kib(48), Bytes(49_152));
        assert_eq!(Bytes(999).to_string(), "999 B");
        assert_eq!(Bytes(44_000_000_000).to_string(), "44.00 GB");
        let total: Bytes = [Bytes(1), Bytes(2)].into_iter().sum();
        assert_eq!(total, Bytes(3));
        assert_eq!(Bytes(1).checked_add(Bytes(u64::MAX)), None);
    }
}
