//! What a scenario reports: its figures, its baseline's, the ratio between them, the parameters it
//! ran with and each target checked; written to `bench-results.json` and printed as a table.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It ran and its figures are real measurements.
    Measured,
    /// It started but could not finish; `error` says why and there may be partial figures.
    Failed,
}

/// The baseline a scenario compares against, run in the same invocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineReport {
    pub name: String,
    /// False when the baseline could not be started; `missing` says why.
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    pub figures: Map<String, Value>,
}

impl BaselineReport {
    /// A baseline that ran.
    pub fn measured(name: impl Into<String>, figures: Map<String, Value>) -> Self {
        Self {
            name: name.into(),
            available: true,
            missing: None,
            figures,
        }
    }

    /// A baseline that could not run, and why.
    pub fn missing(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            available: false,
            missing: Some(why.into()),
            figures: Map::new(),
        }
    }
}

/// One target from BENCHMARKS.md, checked against a measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: Value,
    pub met: bool,
}

/// Everything one scenario reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The key of the report in the JSON document, not repeated inside it.
    #[serde(skip)]
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub figures: Map<String, Value>,
    pub baseline: Option<BaselineReport>,
    /// twinhub against its baseline, in the direction `ratio_meaning` states.
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_meaning: Option<String>,
    pub parameters: Map<String, Value>,
    pub targets: Vec<TargetCheck>,
    /// True only when the scenario was measured and every target was met.
    pub target_met: bool,
    pub notes: Vec<String>,
    pub elapsed_secs: f64,
}

impl ScenarioReport {
    /// An empty report for a scenario that ran with `parameters`.
    pub fn new(name: &str, parameters: Map<String, Value>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Measured,
            error: None,
            figures: Map::new(),
            baseline: None,
            ratio: None,
            ratio_meaning: None,
            parameters,
            targets: Vec::new(),
            target_met: false,
            notes: Vec::new(),
            elapsed_secs: 0.0,
        }
    }

    /// Marks the scenario failed with `error`, keeping whatever was measured before.
    pub fn fail(&mut self, error: &anyhow::Error) {
        self.status = Status::Failed;
        self.error = Some(format!("{error:#}"));
    }

    /// Adds one figure.
    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_owned(), value.into());
    }

    /// Records whether `target` was met by `measured`.
    pub fn check(&mut self, target: &str, measured: impl Into<Value>, met: bool) {
        self.targets.push(TargetCheck {
            target: target.to_owned(),
            measured: measured.into(),
            met,
        });
    }

    /// Sets the headline ratio against the baseline, if both sides measured something.
    pub fn set_ratio(&mut self, ratio: Option<f64>, meaning: &str) {
        self.ratio = ratio.filter(|r| r.is_finite());
        self.ratio_meaning = Some(meaning.to_owned());
    }

    /// Computes `target_met` from the checks; call once the scenario is done.
    pub fn finish(&mut self, elapsed_secs: f64) {
        self.elapsed_secs = round(elapsed_secs, 2);
        self.target_met = self.status == Status::Measured
            && !self.targets.is_empty()
            && self.targets.iter().all(|t| t.met);
    }
}

/// `value` rounded to `digits` decimals, for readable JSON.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `numerator / denominator`, or `None` when either side has nothing to divide.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (numerator > 0.0 && denominator > 0.0).then(|| round(numerator / denominator, 3))
}

/// The JSON document of a run, keyed by scenario name.
pub fn to_json(reports: &[ScenarioReport]) -> Value {
    let mut document = Map::new();
    for report in reports {
        document.insert(
            report.name.clone(),
            serde_json::to_value(report).unwrap_or(Value::Null),
        );
    }
    Value::Object(document)
}

/// Reads the reports of a JSON document written by [`write_json`].
pub fn from_json(document: &Value) -> Vec<ScenarioReport> {
    let Value::Object(entries) = document else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(name, entry)| {
            let mut report: ScenarioReport = serde_json::from_value(entry.clone()).ok()?;
            report.name.clone_from(name);
            Some(report)
        })
        .collect()
}

/// Writes the JSON document to `path`.
pub fn write_json(path: &Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut text =
        serde_json::to_string_pretty(&to_json(reports)).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// The human-readable table: one block per scenario.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<16} {:<7} {:<8} figures",
        "scenario", "status", "target", "ratio"
    );
    for report in reports {
        let status = match report.status {
            Status::Measured => "measured",
            Status::Failed => "FAILED",
        };
        let ratio = report
            .ratio
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<7} {:<8} {}",
            report.name,
            status,
            if report.target_met { "met" } else { "NOT met" },
            ratio,
            figures_line(&report.figures)
        );
        let indent = " ".repeat(46);
        if let Some(baseline) = &report.baseline {
            let line = if baseline.available {
                figures_line(&baseline.figures)
            } else {
                format!(
                    "MISSING: {}",
                    baseline.missing.as_deref().unwrap_or("unknown")
                )
            };
            let _ = writeln!(out, "{indent}baseline {}: {line}", baseline.name);
        }
        if let Some(meaning) = report
            .ratio_meaning
            .as_deref()
            .filter(|_| report.ratio.is_some())
        {
            let _ = writeln!(out, "{indent}ratio = {meaning}");
        }
        for check in &report.targets {
            let mark = if check.met { "ok " } else { "NO " };
            let _ = writeln!(
                out,
                "{indent}{mark} {} (measured {})",
                check.target,
                value_text(&check.measured)
            );
        }
        if let Some(error) = &report.error {
            let _ = writeln!(out, "{indent}error: {error}");
        }
        for note in &report.notes {
            let _ = writeln!(out, "{indent}note: {note}");
        }
    }
    out
}

fn figures_line(figures: &Map<String, Value>) -> String {
    figures
        .iter()
        .map(|(name, value)| format!("{name}={}", value_text(value)))
        .collect::<Vec<_>>()
        .join("  ")
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.abs() >= 100.0 => format!("{f:.0}"),
            (None, Some(f)) => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured_report() -> ScenarioReport {
        let mut parameters = Map::new();
        parameters.insert("devices".into(), Value::from(100));
        let mut report = ScenarioReport::new("methods", parameters);
        report.figure("calls_per_sec", 1234.5);
        report.baseline = Some(BaselineReport::missing(
            "mosquitto-tls",
            "mosquitto not found",
        ));
        report.check("calls/s >= 20000", 1234.5, false);
        report.check("p99 <= 5 ms", 1.2, true);
        report.finish(1.23456);
        report
    }

    #[test]
    fn target_met_needs_every_check() {
        let report = measured_report();
        assert!(!report.target_met);
        let mut all_met = ScenarioReport::new("x", Map::new());
        all_met.check("a", 1, true);
        all_met.finish(1.0);
        assert!(all_met.target_met);
    }

    #[test]
    fn a_scenario_without_checks_or_that_failed_never_meets_its_target() {
        let mut unchecked = ScenarioReport::new("x", Map::new());
        unchecked.finish(1.0);
        assert!(!unchecked.target_met);
        let mut failed = ScenarioReport::new("fanout", Map::new());
        failed.check("a", 1, true);
        failed.fail(&anyhow::anyhow!("the hub did not start"));
        failed.finish(0.0);
        assert!(!failed.target_met);
        let json = to_json(&[failed]);
        assert_eq!(json["fanout"]["status"], "failed");
        assert_eq!(json["fanout"]["error"], "the hub did not start");
    }

    #[test]
    fn json_is_keyed_by_scenario_with_figures_baseline_ratio_parameters_and_target() {
        let json = to_json(&[measured_report()]);
        let entry = &json["methods"];
        assert_eq!(entry["figures"]["calls_per_sec"], 1234.5);
        assert_eq!(entry["baseline"]["available"], false);
        assert_eq!(entry["baseline"]["missing"], "mosquitto not found");
        assert_eq!(entry["ratio"], Value::Null);
        assert_eq!(entry["parameters"]["devices"], 100);
        assert_eq!(entry["target_met"], false);
        assert_eq!(entry["elapsed_secs"], 1.23);
    }

    #[test]
    fn reports_read_back_from_their_json() {
        let written = measured_report();
        let read = from_json(&to_json(std::slice::from_ref(&written)));
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].name, "methods");
        assert_eq!(read[0].targets.len(), written.targets.len());
        assert_eq!(read[0].figures, written.figures);
    }

    #[test]
    fn the_table_names_a_missing_baseline_and_failed_targets() {
        let text = table(&[measured_report()]);
        assert!(text.contains("MISSING: mosquitto not found"), "{text}");
        assert!(
            text.contains("NO  calls/s >= 20000 (measured 123"),
            "{text}"
        );
        assert!(text.contains("ok  p99 <= 5 ms (measured 1.20)"), "{text}");
        assert!(text.contains("NOT met"), "{text}");
    }

    #[test]
    fn ratio_needs_two_positive_sides() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(0.0, 2.0), None);
    }
}
