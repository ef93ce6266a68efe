//! A cost split into the categories the breakdowns report: compute on PEs,
//! movement on the fabric, launch/synchronisation overhead, and off-wafer links.

use serde::Serialize;
use std::ops::{Add, AddAssign, Mul};
use wafer_core::Cycles;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Compute,
    Fabric,
    Sync,
    OffWafer,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Compute,
        Category::Fabric,
        Category::Sync,
        Category::OffWafer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Compute => "compute",
            Category::Fabric => "fabric",
            Category::Sync => "sync",
            Category::OffWafer => "off_wafer",
        }
    }
}

/// Cycles per category; the total is their sum (phases run one after another).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    pub compute: Cycles,
    pub fabric: Cycles,
    pub sync: Cycles,
    pub off_wafer: Cycles,
}

impl Cost {
    pub fn compute(c: Cycles) -> Cost {
        Cost {
            compute: c,
            ..Cost::default()
        }
    }
    pub fn fabric(c: Cycles) -> Cost {
        Cost {
            fabric: c,
            ..Cost::default()
        }
    }
    pub fn sync(c: Cycles) -> Cost {
        Cost {
            sync: c,
            ..Cost::default()
        }
    }
    pub fn off_wafer(c: Cycles) -> Cost {
        Cost {
            off_wafer: c,
            ..Cost::default()
        }
    }

    pub fn total(&self) -> Cycles {
        self.compute + self.fabric + self.sync + self.off_wafer
    }

    pub fn get(&self, cat: Category) -> Cycles {
        match cat {
            Category::Compute => self.compute,
            Category::Fabric => self.fabric,
            Category::Sync => self.sync,
            Category::OffWafer => self.off_wafer,
        }
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            compute: self.compute + o.compute,
            fabric: self.fabric + o.fabric,
            sync: self.sync + o.sync,
            off_wafer: self.off_wafer + o.off_wafer,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl Mul<f64> for Cost {
    type Output = Cost;
    fn mul(self, k: f64) -> Cost {
        Cost {
            compute: self.compute * k,
            fabric: self.fabric * k,
            sync: self.sync * k,
            off_wafer: self.off_wafer * k,
        }
    }
}
