//! How results look in a terminal (`table`), to programs (`json`, one object per
//! line) and to spreadsheets (`csv`).

use kimberlite_client::{ResultSet, WireValue};
use std::fmt::Write;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A timestamp as RFC 3339 UTC — the form `AS OF TIMESTAMP '…'` accepts back.
pub fn timestamp(nanoseconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanoseconds))
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{nanoseconds}ns"))
}

/// A value as text: NULL spelled out, bytes as `\x…` hex.
pub fn value_text(value: &WireValue) -> String {
    match value {
        WireValue::Null => "NULL".to_string(),
        WireValue::Boolean(value) => value.to_string(),
        WireValue::Integer(value) => value.to_string(),
        WireValue::Real(value) => format_real(*value),
        WireValue::Text(value) => value.clone(),
        WireValue::Bytes(value) => format!("\\x{}", hex::encode(value)),
        WireValue::Timestamp(value) => timestamp(*value),
    }
}

fn format_real(value: f64) -> String {
    if value.is_finite() && value == value.trunc() && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        value.to_string()
    }
}

fn value_json(value: &WireValue) -> serde_json::Value {
    match value {
        WireValue::Null => serde_json::Value::Null,
        WireValue::Boolean(value) => (*value).into(),
        WireValue::Integer(value) => (*value).into(),
        WireValue::Real(value) => serde_json::Number::from_f64(*value)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| value.to_string().into()),
        WireValue::Text(value) => value.clone().into(),
        WireValue::Bytes(value) => hex::encode(value).into(),
        WireValue::Timestamp(value) => timestamp(*value).into(),
    }
}

/// Renders a result set in `format`.
pub fn result_set(result: &ResultSet, format: Format) -> String {
    match format {
        Format::Table => table(result),
        Format::Json => json_lines(result),
        Format::Csv => csv(result),
    }
}

fn table(result: &ResultSet) -> String {
    let headers: Vec<&str> = result
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| row.iter().map(value_text).collect())
        .collect();
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|index| {
            result.rows.iter().all(|row| {
                matches!(
                    row.get(index),
                    Some(WireValue::Integer(_) | WireValue::Real(_) | WireValue::Null)
                )
            }) && !result.rows.is_empty()
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String], align_numbers: bool| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                let pad = widths[index] - cell.chars().count();
                if align_numbers && numeric[index] {
                    format!(" {}{} ", " ".repeat(pad), cell)
                } else {
                    format!(" {}{} ", cell, " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("|").trim_end());
    };
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    line(&mut out, &header_cells, false);
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(width + 2)).collect();
    let _ = writeln!(out, "{}", rule.join("+"));
    for row in &cells {
        line(&mut out, row, true);
    }
    let count = result.rows.len();
    let _ = write!(out, "({count} row{})", if count == 1 { "" } else { "s" });
    if let Some(position) = result.as_of {
        let _ = write!(out, " as of position {position}");
    }
    out.push('\n');
    out
}

fn json_lines(result: &ResultSet) -> String {
    let mut out = String::new();
    for row in &result.rows {
        let object: serde_json::Map<String, serde_json::Value> = result
            .columns
            .iter()
            .zip(row)
            .map(|(column, value)| (column.name.clone(), value_json(value)))
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Object(object));
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv(result: &ResultSet) -> String {
    let mut out = String::new();
    let header: Vec<String> = result
        .columns
        .iter()
        .map(|column| csv_field(&column.name))
        .collect();
    let _ = writeln!(out, "{}", header.join(","));
    for row in &result.rows {
        let fields: Vec<String> = row
            .iter()
            .map(|value| match value {
                WireValue::Null => String::new(),
                other => csv_field(&value_text(other)),
            })
            .collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kimberlite_client::WireColumn;

    fn sample() -> ResultSet {
        ResultSet {
            columns: vec![
                WireColumn {
                    name: "id".into(),
                    ty: Some("BIGINT".into()),
                },
                WireColumn {
                    name: "name".into(),
                    ty: Some("TEXT".into()),
                },
                WireColumn {
                    name: "seen".into(),
                    ty: Some("TIMESTAMP".into()),
                },
            ],
            rows: vec![
                vec![
                    WireValue::Integer(1),
                    WireValue::Text("Ada, \"the\" first".into()),
                    WireValue::Timestamp(1_705_314_600_000_000_000),
                ],
                vec![WireValue::Integer(20), WireValue::Null, WireValue::Null],
            ],
            as_of: Some(7),
            masked_by: Vec::new(),
        }
    }

    #[test]
    fn renders_every_format() {
        let expected_table = " id | name             | seen\n\
                              ----+------------------+----------------------\n\
                              \x20 1 | Ada, \"the\" first | 2024-01-15T10:30:00Z\n\
                              \x2020 | NULL             | NULL\n\
                              (2 rows) as of position 7\n";
        assert_eq!(result_set(&sample(), Format::Table), expected_table);
        assert_eq!(
            result_set(&sample(), Format::Json),
            "{\"id\":1,\"name\":\"Ada, \\\"the\\\" first\",\"seen\":\"2024-01-15T10:30:00Z\"}\n\
             {\"id\":20,\"name\":null,\"seen\":null}\n"
        );
        assert_eq!(
            result_set(&sample(), Format::Csv),
            "id,name,seen\n1,\"Ada, \"\"the\"\" first\",2024-01-15T10:30:00Z\n20,,\n"
        );
    }
}
