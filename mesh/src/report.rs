//! The cycles the mesh engine reports: exactly the cost plan's (`models::cost`),
//! built for the same model, hardware, layout and context that `wafer estimate`
//! uses, so the two always agree. This module only turns plans into the figures
//! and JSON the generation loop prints.

use serde_json::{json, Map, Value};
use wafer_lower::cost::Plan;
use wafer_sim::Category;

/// Per layer, per operation and per category cycles of one plan.
pub fn breakdown(plan: &Plan, layers: usize) -> Value {
    let cat = |c: &wafer_sim::Cost| -> Map<String, Value> {
        let mut m = Map::new();
        for k in Category::ALL {
            m.insert(k.name().into(), json!(c.get(k).get()));
        }
        m.insert("total".into(), json!(c.total().get()));
        m
    };
    let per_operation: Vec<Value> = plan
        .by_kind()
        .iter()
        .map(|(kind, cost)| {
            let mut m = cat(cost);
            m.insert("operation".into(), json!(kind.name()));
            Value::Object(m)
        })
        .collect();
    let per_layer: Vec<f64> = plan.by_layer(layers).iter().map(|c| c.get()).collect();
    json!({
        "per_layer": per_layer,
        "per_operation": per_operation,
        "per_category": Value::Object(cat(&plan.cost())),
    })
}
