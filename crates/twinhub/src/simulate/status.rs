//! The fleet as the hub sees it (one GROUP BY query), the live status line, and the parsers of
//! the simulator's option values.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;
use twinhub_client::{ClientError, ServiceClient};
use twinhub_dm::FirmwareStatus;

/// Firmware statuses in the order a rollout goes through them.
const STATUS_ORDER: [FirmwareStatus; 7] = [
    FirmwareStatus::Current,
    FirmwareStatus::Downloading,
    FirmwareStatus::Verifying,
    FirmwareStatus::Applying,
    FirmwareStatus::Rebooting,
    FirmwareStatus::Error,
    FirmwareStatus::RolledBack,
];
/// How a device without a reported `fwUpdateStatus` is counted: it never had an update (devices
/// report no status before their first), or has not reported yet.
const IDLE: &str = "idle";

/// Connection and firmware status counts of a fleet's devices, from the hub's twins.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FleetStatus {
    /// Devices with a twin.
    pub(crate) devices: u64,
    /// Devices the hub has connected.
    pub(crate) connected: u64,
    /// Devices per `firmware.fwUpdateStatus` ([`IDLE`] when absent).
    pub(crate) firmware: BTreeMap<String, u64>,
}

impl FleetStatus {
    /// Asks the hub about the devices whose ids start with `prefix` (letters, digits and
    /// `-._:@` only, which [`super::valid_prefix`] ensures).
    pub(crate) async fn query(
        client: &ServiceClient,
        prefix: &str,
    ) -> Result<FleetStatus, ClientError> {
        let query = format!(
            "SELECT connectionState AS connection, properties.reported.firmware.fwUpdateStatus AS status, \
             COUNT() AS devices FROM devices WHERE STARTSWITH(deviceId, '{prefix}') \
             GROUP BY connectionState, properties.reported.firmware.fwUpdateStatus"
        );
        Ok(FleetStatus::from_rows(&client.query_all(&query).await?))
    }

    /// Folds the GROUP BY rows `{connection, status, devices}`.
    fn from_rows(rows: &[Value]) -> FleetStatus {
        let mut status = FleetStatus::default();
        for row in rows {
            let count = row.get("devices").and_then(Value::as_u64).unwrap_or(0);
            status.devices += count;
            if row.get("connection").and_then(Value::as_str) == Some("Connected") {
                status.connected += count;
            }
            let firmware = row.get("status").and_then(Value::as_str).unwrap_or(IDLE);
            *status.firmware.entry(firmware.to_owned()).or_default() += count;
        }
        status
    }

    /// `idle 20 · current 9500 · downloading 12 · …`: the known statuses in rollout order, then
    /// any other.
    pub(crate) fn firmware_counts(&self) -> String {
        let known: Vec<&str> = std::iter::once(IDLE)
            .chain(STATUS_ORDER.iter().map(|s| s.as_str()))
            .collect();
        let mut parts: Vec<String> = known
            .iter()
            .filter_map(|name| self.firmware.get(*name).map(|n| format!("{name} {n}")))
            .collect();
        parts.extend(
            self.firmware
                .iter()
                .filter(|(name, _)| !known.contains(&name.as_str()))
                .map(|(name, n)| format!("{name} {n}")),
        );
        if parts.is_empty() {
            "no firmware reported".to_owned()
        } else {
            parts.join(" · ")
        }
    }

    /// The live line: `1234/10000 connected | current 1200 · downloading 34`.
    pub(crate) fn line(&self, fleet_size: usize, failed: usize) -> String {
        let mut line = format!(
            "{}/{fleet_size} connected | {}",
            self.connected,
            self.firmware_counts()
        );
        if failed > 0 {
            line.push_str(&format!(" | {failed} gave up"));
        }
        line
    }
}

/// A line redrawn in place on a terminal; elsewhere (a log, a pipe) printed only when it
/// changed, so logs stay short. Written to stderr, which leaves stdout to the summary.
pub(crate) struct StatusLine {
    terminal: bool,
    previous: Option<String>,
}

impl StatusLine {
    /// A line on stderr.
    pub(crate) fn new() -> StatusLine {
        use std::io::IsTerminal as _;
        StatusLine {
            terminal: std::io::stderr().is_terminal(),
            previous: None,
        }
    }

    /// Shows `line` instead of the previous one.
    pub(crate) fn draw(&mut self, line: String) {
        if self.previous.as_ref() == Some(&line) {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        // A failed write to stderr leaves nothing better to report it to.
        let _ = if self.terminal {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
        self.previous = Some(line);
    }

    /// Ends the line so that what follows starts on a fresh one.
    pub(crate) fn finish(&mut self) {
        if self.terminal && self.previous.take().is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `500ms`, `2s`, `1.5s`, `3m`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 2s, 500ms or 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s or m")),
    };
    // Rounded to whole nanoseconds, so that `1ms` is exactly a millisecond.
    let nanos = (seconds * 1e9).round();
    if !(0.0..u64::MAX as f64).contains(&nanos) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// `key=value`: a tag set on the simulated devices' twins (the value is a string).
pub(crate) fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// A probability from 0.0 to 1.0.
pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be between 0.0 and 1.0".to_owned())
    }
}

/// `12.3 s`, or `2m05s` from a minute up.
pub(crate) fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_fold_into_connected_and_firmware_counts() {
        let rows = [
            json!({"connection": "Connected", "status": "current", "devices": 7}),
            json!({"connection": "Disconnected", "status": "current", "devices": 2}),
            json!({"connection": "Connected", "status": "rolledback", "devices": 1}),
            json!({"connection": "Connected", "devices": 3}),
            json!({"connection": "Connected", "status": "downloading", "devices": 4}),
            json!({"connection": "Connected", "status": "odd", "devices": 1}),
        ];
        let status = FleetStatus::from_rows(&rows);
        assert_eq!(status.devices, 18);
        assert_eq!(status.connected, 16);
        assert_eq!(status.firmware["current"], 9);
        assert_eq!(status.firmware[IDLE], 3);
        assert_eq!(
            status.line(20, 0),
            "16/20 connected | idle 3 · current 9 · downloading 4 · rolledback 1 · odd 1"
        );
        assert_eq!(
            FleetStatus::default().line(5, 2),
            "0/5 connected | no firmware reported | 2 gave up"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("4"), Ok(Duration::from_secs(4)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e999s").is_err());
    }

    #[test]
    fn tags_and_rates_parse() {
        assert_eq!(
            parse_tag("ring=canary"),
            Ok(("ring".to_owned(), "canary".to_owned()))
        );
        assert_eq!(parse_tag("a=b=c"), Ok(("a".to_owned(), "b=c".to_owned())));
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("novalue").is_err());
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn durations_format_for_people() {
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    proptest! {
        #[test]
        fn duration_parsing_never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn whole_milliseconds_round_trip(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }
}
