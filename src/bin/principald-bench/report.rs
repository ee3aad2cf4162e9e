//! Results: one row per figure, each with its baseline from the same run, printed as a table and saved as JSON.

use serde_json::{Value, json};

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The same-run baseline, in the same unit, when the figure has one.
    pub baseline: Option<(String, f64)>,
    /// Human-readable target and whether it was met.
    pub target: Option<(String, bool)>,
    pub note: String,
}

impl Row {
    pub fn new(id: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self { id, name: name.into(), value, unit, baseline: None, target: None, note: String::new() }
    }

    pub fn baseline(mut self, name: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((name.into(), value));
        self
    }

    /// Target on the ratio value/baseline.
    pub fn min_ratio(mut self, min: f64) -> Self {
        let ok = self.ratio().is_some_and(|r| r >= min);
        self.target = Some((format!("ratio >= {min}"), ok));
        self
    }

    pub fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some((text.into(), met));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().filter(|(_, b)| *b > 0.0).map(|(_, b)| self.value / b)
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline.as_ref().map(|(n, v)| json!({"name": n, "value": v})),
            "ratio": self.ratio(),
            "target": self.target.as_ref().map(|(t, met)| json!({"target": t, "met": met})),
            "note": self.note,
        })
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Prints the rows as a Markdown table (so BENCHMARKS.md can take it as is).
pub fn print(rows: &[Row]) {
    println!("| id | figure | value | baseline (same run) | ratio | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let baseline = r.baseline.as_ref().map_or("-".into(), |(n, v)| format!("{} {} ({n})", fmt(*v), r.unit));
        let ratio = r.ratio().map_or("-".into(), |x| format!("{x:.2}"));
        let (target, met) =
            r.target.as_ref().map_or(("-".into(), "-"), |(t, m)| (t.clone(), if *m { "yes" } else { "NO" }));
        let note = if r.note.is_empty() { String::new() } else { format!(" ({})", r.note) };
        println!(
            "| {} | {}{note} | {} {} | {baseline} | {ratio} | {target} | {met} |",
            r.id,
            r.name,
            fmt(r.value),
            r.unit
        );
    }
}

pub fn to_json(rows: &[Row], machine: Value) -> Value {
    json!({ "machine": machine, "results": rows.iter().map(Row::json).collect::<Vec<_>>() })
}
