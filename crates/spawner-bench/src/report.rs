//! What a phase reports: figures for the table and the JSON summary, and the targets of
//! issue 3 checked against them.

use serde_json::{json, Value};

/// One target of the issue and whether this run met it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
    pub unit: &'static str,
}

impl Check {
    /// A figure that must not exceed `limit`.
    pub fn at_most(name: &str, value: f64, limit: f64, unit: &'static str, target: String) -> Self {
        Check {
            name: name.into(),
            value,
            met: value.is_finite() && value <= limit,
            target,
            unit,
        }
    }

    /// A figure that must reach `floor`.
    pub fn at_least(
        name: &str,
        value: f64,
        floor: f64,
        unit: &'static str,
        target: String,
    ) -> Self {
        Check {
            name: name.into(),
            value,
            met: value.is_finite() && value >= floor,
            target,
            unit,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "value": crate::util::round3(self.value),
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
        })
    }
}

/// The outcome of one phase.
#[derive(Debug, Default)]
pub struct Phase {
    pub name: &'static str,
    /// Table rows: what, figure.
    pub rows: Vec<(String, String)>,
    pub checks: Vec<Check>,
    pub json: Value,
}

impl Phase {
    pub fn new(name: &'static str) -> Self {
        Phase {
            name,
            json: json!({}),
            ..Phase::default()
        }
    }

    pub fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        self.rows.push((what.into(), figure.into()));
    }
}

/// A figure for the table: three significant decimals at most.
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The whole report as Markdown.
pub fn markdown(phases: &[Phase]) -> String {
    let mut out = String::new();
    for p in phases {
        out.push_str(&format!(
            "\n### {}\n\n| measurement | result |\n| --- | --- |\n",
            p.name
        ));
        for (what, figure) in &p.rows {
            out.push_str(&format!("| {what} | {figure} |\n"));
        }
    }
    out.push_str(
        "\n### Targets\n\n| target | measured | goal | met |\n| --- | --- | --- | --- |\n",
    );
    for c in phases.iter().flat_map(|p| &p.checks) {
        out.push_str(&format!(
            "| {} | {} {} | {} | {} |\n",
            c.name,
            fmt(c.value),
            c.unit,
            c.target,
            if c.met { "yes" } else { "**no**" }
        ));
    }
    out
}
