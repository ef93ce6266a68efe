//! Where each part of a model sits on the wafer(s): the interface between
//! placement (which decides it) and the cost model and mesh engine (which use it).

use serde::Serialize;
use wafer_core::Region;

/// One placed piece of the model: a rectangle of PEs on one wafer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Index of the wafer in the pipeline, from 0.
    pub wafer: u32,
    pub region: Region,
}

/// The sites of the embedding, every decoder layer (in order) and the LM head.
/// Several layers may share one site: they then run one after another on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub embedding: Site,
    pub layers: Vec<Site>,
    pub lm_head: Site,
}

impl Layout {
    pub fn wafers(&self) -> u32 {
        let last = self.layers.iter().map(|s| s.wafer).max().unwrap_or(0);
        last.max(self.embedding.wafer).max(self.lm_head.wafer) + 1
    }
}
