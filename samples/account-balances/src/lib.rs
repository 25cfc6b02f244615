//! Account events → `balances(account TEXT PRIMARY KEY, balance BIGINT, updated_at TIMESTAMP)`.
//!
//! Events on stream `accounts`: `Deposited {account, amount}`, `Withdrawn {account,
//! amount}`, `Transferred {from, to, amount}`. With the configuration
//! `{"reject_overdraft": true}` a movement that would take a balance below zero faults
//! the projection at that event; without it balances may go negative.

use kimberlite_guest::prelude::*;

#[derive(Deserialize, Default)]
struct Settings {
    #[serde(default)]
    reject_overdraft: bool,
}

#[derive(Deserialize)]
struct Movement {
    account: String,
    amount: i64,
}

#[derive(Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: i64,
}

struct Balances {
    reject_overdraft: bool,
}

impl Projection for Balances {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("balances")
                .column("account", ColumnType::Text)
                .column("balance", ColumnType::Bigint)
                .column("updated_at", ColumnType::Timestamp)
                .primary_key(&["account"]),
        ]
    }

    fn new(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.json()?;
        Ok(Balances {
            reject_overdraft: settings.reject_overdraft,
        })
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.stream != "accounts" {
            return Ok(());
        }
        match event.event_type.as_str() {
            "Deposited" => {
                let Movement { account, amount } = event.json()?;
                self.add(view, event, &account, positive(amount, event)?)
            }
            "Withdrawn" => {
                let Movement { account, amount } = event.json()?;
                self.add(view, event, &account, -positive(amount, event)?)
            }
            "Transferred" => {
                let Transfer { from, to, amount } = event.json()?;
                let amount = positive(amount, event)?;
                self.add(view, event, &from, -amount)?;
                self.add(view, event, &to, amount)
            }
            _ => Ok(()),
        }
    }
}

impl Balances {
    fn add(&self, view: &mut View, event: &Event, account: &str, delta: i64) -> Result<(), String> {
        let key = [Value::from(account)];
        let balance = view
            .get("balances", &key)
            .and_then(|row| row[1].as_integer())
            .unwrap_or(0);
        let balance = balance.checked_add(delta).ok_or_else(|| {
            format!(
                "balance of `{account}` overflows at position {}",
                event.position
            )
        })?;
        if self.reject_overdraft && balance < 0 {
            return Err(format!(
                "overdraft rejected: {} at position {} would take `{account}` to {balance}",
                event.event_type, event.position
            ));
        }
        view.upsert(
            "balances",
            vec![account.into(), balance.into(), event.timestamp()],
        );
        Ok(())
    }
}

fn positive(amount: i64, event: &Event) -> Result<i64, String> {
    if amount <= 0 {
        return Err(format!(
            "{} at position {} has amount {amount}; amounts must be positive",
            event.event_type, event.position
        ));
    }
    Ok(amount)
}

kimberlite_guest::export!(projection: Balances);
