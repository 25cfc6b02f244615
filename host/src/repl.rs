//! `kimberlite repl`: interactive SQL against one tenant.

use crate::cli::{Connection, render_outcome};
use crate::render::Format;
use kimberlite_client::{AsOf, Client};
use rustyline::error::ReadlineError;

/// Lines kept in the history file.
const HISTORY_LINES_MAX: usize = 1_000;

const HELP: &str = "\
Statements end with `;` and may span lines. Dot commands:
  .tables               list the tables
  .schema TABLE         show a table's columns and primary key
  .log [N]              the last N records of the audit trail (default 10)
  .reason TEXT          the reason recorded with your next writes (.reason off to clear)
  .as-of POSITION|off   read every query as of a log position
  .format table|json|csv
  .help                 this text
  .quit                 leave (Ctrl-D works too)";

struct Session {
    client: Client,
    tenant: String,
    reason: String,
    as_of: Option<u64>,
    format: Format,
}

pub async fn run(connection: Connection, tenant: String) -> anyhow::Result<()> {
    let client = connection.connect().await?;
    let mut session = Session {
        client,
        tenant,
        reason: String::new(),
        as_of: None,
        format: Format::Table,
    };
    let mut editor = rustyline::DefaultEditor::with_config(
        rustyline::Config::builder()
            .max_history_size(HISTORY_LINES_MAX)?
            .build(),
    )?;
    let history = std::env::var_os("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".kimberlite_history"));
    if let Some(history) = &history {
        let _ = editor.load_history(history);
    }
    println!(
        "Kimberlite SQL on tenant `{}`. `.help` for help, `.quit` to leave.",
        session.tenant
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            format!("{}> ", session.tenant)
        } else {
            format!("{}.. ", " ".repeat(session.tenant.len()))
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('.') {
            let _ = editor.add_history_entry(trimmed);
            if !session.dot_command(trimmed).await {
                break;
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        if !statement.is_empty() {
            statement.push('\n');
        }
        statement.push_str(&line);
        if trimmed.ends_with(';') {
            let _ = editor.add_history_entry(statement.as_str());
            let text = statement.trim().trim_end_matches(';').to_string();
            statement.clear();
            session.execute(&text).await;
        }
    }
    if let Some(history) = &history {
        let _ = editor.save_history(history);
    }
    Ok(())
}

impl Session {
    async fn execute(&self, sql: &str) {
        let result = match self.as_of {
            Some(position) => self
                .client
                .sql_as_of(&self.tenant, sql, &[], AsOf::Position(position))
                .await
                .map(kimberlite_client::SqlOutcome::Rows),
            None => self.client.sql(&self.tenant, sql, &[], &self.reason).await,
        };
        match result {
            Ok(outcome) => print!("{}", render_outcome(outcome, self.format)),
            Err(error) => println!("error: {error}"),
        }
    }

    /// Runs a dot command; false to leave.
    async fn dot_command(&mut self, line: &str) -> bool {
        let (command, argument) = match line.split_once(char::is_whitespace) {
            Some((command, argument)) => (command, argument.trim()),
            None => (line, ""),
        };
        match command {
            ".quit" | ".exit" => return false,
            ".help" => println!("{HELP}"),
            ".tables" => {
                self.execute("SELECT name, columns, primary_key, created_at FROM kimberlite.tables WHERE dropped_at IS NULL ORDER BY name")
                    .await
            }
            ".schema" if !argument.is_empty() => {
                let sql = format!(
                    "SELECT name, columns, primary_key, created_at FROM kimberlite.tables WHERE name = '{}' AND dropped_at IS NULL",
                    argument.replace('\'', "''")
                );
                self.execute(&sql).await
            }
            ".log" => {
                let count: u64 = argument.parse().unwrap_or(10);
                match self.client.read_log(&self.tenant, 0, 0).await {
                    Ok((_, end)) => {
                        let from = end.saturating_sub(count);
                        match self.client.read_log(&self.tenant, from, count as u32).await {
                            Ok((records, _)) => {
                                for record in &records {
                                    println!("{}", crate::cli::describe_record(record, false));
                                }
                            }
                            Err(error) => println!("error: {error}"),
                        }
                    }
                    Err(error) => println!("error: {error}"),
                }
            }
            ".reason" => {
                self.reason = if argument == "off" { String::new() } else { argument.to_string() };
                println!("reason for writes: {}", if self.reason.is_empty() { "(none)" } else { &self.reason });
            }
            ".as-of" => match argument {
                "off" | "" => {
                    self.as_of = None;
                    println!("reading the present");
                }
                position => match position.parse() {
                    Ok(position) => {
                        self.as_of = Some(position);
                        println!("reading as of position {position}");
                    }
                    Err(_) => println!("error: .as-of takes a log position or `off`"),
                },
            },
            ".format" => match argument {
                "table" => self.format = Format::Table,
                "json" => self.format = Format::Json,
                "csv" => self.format = Format::Csv,
                _ => println!("error: .format takes table, json or csv"),
            },
            _ => println!("unknown command `{line}`; `.help` lists them"),
        }
        true
    }
}
