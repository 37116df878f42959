//! `twinhub query "SELECT ..."`: every row of every page.

use clap::Args;
use serde_json::Value;

use super::options::Output;
use super::render::{Table, cell, print, print_json};
use super::{CliError, HubOptions};

#[derive(Args, Debug)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    hub: HubOptions,
    /// The query, e.g. "SELECT deviceId, properties.reported.firmware FROM devices WHERE tags.site = 'north'"
    query: String,
}

pub(crate) async fn run(args: QueryArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let rows = client.query_all(&args.query).await?;
    match args.hub.output {
        Output::Json => print_json(&rows),
        Output::Table if rows.is_empty() => Ok(()),
        Output::Table => print(&rows_table(&rows).render()),
    }
}

/// One column per top-level member seen in any row (in order of first appearance); a row that
/// is not an object (e.g. `SELECT VALUE`) fills a single `value` column.
fn rows_table(rows: &[Value]) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        match row {
            Value::Object(map) => {
                for key in map.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            _ if !columns.iter().any(|c| c == "value") => columns.push("value".to_owned()),
            _ => {}
        }
    }
    let mut table = Table::new(&columns);
    for row in rows {
        table.row(
            columns
                .iter()
                .map(|column| match row {
                    Value::Object(map) => map.get(column).map(cell).unwrap_or_default(),
                    scalar if column == "value" => cell(scalar),
                    _ => String::new(),
                })
                .collect(),
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_are_the_union_of_members() {
        let rows = [
            json!({"deviceId": "d1", "n": 1}),
            json!({"deviceId": "d2", "site": {"a": 1}}),
        ];
        assert_eq!(
            rows_table(&rows).render(),
            "DEVICEID  N  SITE\nd1        1\nd2           {\"a\":1}\n"
        );
    }

    #[test]
    fn scalar_rows_fill_a_value_column() {
        let rows = [json!(3), json!("x")];
        assert_eq!(rows_table(&rows).render(), "VALUE\n3\nx\n");
    }
}
