//! Printing: aligned tables and key/value blocks for people, JSON for scripts, progress bars.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::CliError;

/// Longest cell shown in a table; longer values (nested JSON) are cut with `…`.
const MAX_CELL_CHARS: usize = 60;
/// Width of a progress bar's track, in characters.
const BAR_WIDTH: usize = 30;

/// Columns separated by two spaces, widths fitted to the content, headers in capitals.
pub(super) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub(super) fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells print empty).
    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each line ending in a newline.
    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut text = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, width)| {
                    let cell = line.get(i).map_or("", String::as_str);
                    format!("{cell:<width$}")
                })
                .collect();
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
        text
    }
}

/// `key: value` lines with the values aligned; empty values are left out.
pub(super) fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        text.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    text
}

/// A JSON value as a table cell: strings bare, `null` empty, anything nested as compact JSON
/// cut to [`MAX_CELL_CHARS`].
pub(super) fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The member `key` of a JSON object as a cell (empty when absent).
pub(super) fn member(object: &Value, key: &str) -> String {
    object.get(key).map(cell).unwrap_or_default()
}

/// An optional string as a cell.
pub(super) fn opt(value: Option<&str>) -> String {
    value.unwrap_or_default().to_owned()
}

/// A timestamp as a cell; Azure's "never" (`0001-01-01T00:00:00Z`) prints empty.
pub(super) fn time(value: Option<&str>) -> String {
    value
        .filter(|t| !t.starts_with("0001-01-01"))
        .unwrap_or_default()
        .to_owned()
}

/// Writes text to stdout as is.
pub(super) fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Writes `value` to stdout as pretty JSON.
pub(super) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot render JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// One progress line: `label [#####-----] count/total`.
pub(super) fn progress_bar(label: &str, label_width: usize, count: u64, total: u64) -> String {
    let filled = if total == 0 {
        0
    } else {
        let ratio = count.min(total) as f64 / total as f64;
        (ratio * BAR_WIDTH as f64).round() as usize
    };
    format!(
        "{label:<label_width$} [{}{}] {count:>width$}/{total}",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
        width = total.to_string().len(),
    )
}

/// Redraws a block of lines in place on a terminal (moving the cursor up over the previous
/// block); elsewhere prints a block only when it changed, so logs stay readable.
pub(super) struct LiveBlock {
    terminal: bool,
    previous: Option<Vec<String>>,
}

impl LiveBlock {
    /// A block drawn on stdout.
    pub(super) fn new() -> LiveBlock {
        use std::io::IsTerminal;
        LiveBlock {
            terminal: std::io::stdout().is_terminal(),
            previous: None,
        }
    }

    /// Shows `lines` in place of the previous block.
    pub(super) fn draw(&mut self, lines: Vec<String>) -> Result<(), CliError> {
        if self.previous.as_ref() == Some(&lines) {
            return Ok(());
        }
        let mut text = String::new();
        if self.terminal
            && let Some(previous) = &self.previous
        {
            // Cursor up over the old block, then clear each line as it is rewritten.
            text.push_str(&format!("\x1b[{}A", previous.len()));
        }
        for line in &lines {
            if self.terminal {
                text.push_str("\x1b[2K");
            }
            text.push_str(line);
            text.push('\n');
        }
        if !self.terminal {
            text.push('\n');
        }
        self.previous = Some(lines);
        print(&text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut table = Table::new(&["id", "status"]);
        table.row(vec!["device-long".to_owned(), "enabled".to_owned()]);
        table.row(vec!["d2".to_owned()]);
        assert_eq!(
            table.render(),
            "ID           STATUS\ndevice-long  enabled\nd2\n"
        );
    }

    #[test]
    fn cells_render_json_compactly_and_cut_long_values() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
        let long = cell(&json!("y".repeat(100)));
        assert_eq!(long.chars().count(), MAX_CELL_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn never_prints_empty() {
        assert_eq!(time(Some("0001-01-01T00:00:00Z")), "");
        assert_eq!(time(Some("2024-05-01T10:00:00Z")), "2024-05-01T10:00:00Z");
        assert_eq!(time(None), "");
    }

    #[test]
    fn key_values_skip_empty_values() {
        assert_eq!(
            key_values(&[
                ("id", "d1".to_owned()),
                ("etag", String::new()),
                ("status", "enabled".to_owned())
            ]),
            "id:     d1\nstatus: enabled\n"
        );
    }

    #[test]
    fn progress_bars_fill_proportionally() {
        assert_eq!(
            progress_bar("current", 8, 5, 10),
            format!("current  [{}{}]  5/10", "#".repeat(15), "-".repeat(15))
        );
        assert_eq!(
            progress_bar("error", 5, 0, 0),
            format!("error [{}] 0/0", "-".repeat(30))
        );
        assert_eq!(
            progress_bar("x", 1, 7, 3),
            format!("x [{}] 7/3", "#".repeat(30))
        );
    }
}
