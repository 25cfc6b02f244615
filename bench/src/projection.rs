//! `projection`: the sample `account-balances` projection as Wasm (the engine of
//! `kimberlite_projections::wasm`, with its replicated limits: fuel metering, memory cap,
//! a fresh instance per batch) vs the same logic as native Rust, rebuilding the view from
//! position 0 of the same events (`Deposited`, `Withdrawn`, `Transferred` JSON on stream
//! `accounts`).
//!
//! Both sides run the same pipeline: batches of `BATCH_EVENTS_MAX` events, lookups of the
//! current balance through the same `MemoryView` (a `ViewLookup`), the same checked
//! `Change`s applied to it after each batch. Only the code between "event" and "changes"
//! differs, which is what the ratio is about. The two final views must be identical (their
//! state digests are compared), so neither side can win by doing less. The two rebuilds run
//! side by side in segments of `SEGMENT_BATCHES` batches, alternating which goes first.

use crate::{Settings, summary};
use kimberlite_kernel::{Row, Value};
use kimberlite_projections::wasm::{
    BATCH_EVENTS_MAX, Change, Engine, Event, MemoryView, ViewLookup,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Events of the rebuild, full and quick.
const EVENTS_FULL: usize = 1_000_000;
const EVENTS_QUICK: usize = 50_000;
/// Batches per segment: the two rebuilds alternate segment by segment.
const SEGMENT_BATCHES: usize = 16;
/// Accounts the events move money between.
const ACCOUNTS: usize = 10_000;
/// The aim of issue 4: Wasm at least half as fast as native.
const AIM_WASM_OVER_NATIVE: f64 = 0.5;

/// The module `cargo xtask build-guests` builds, relative to the workspace root.
const MODULE_PATH: &str = "target/guests/wasm32-unknown-unknown/release/account_balances.wasm";

/// Where the guest module is: $KIMBERLITE_BENCH_GUESTS (a directory), else the workspace's
/// target/guests.
fn module_path() -> PathBuf {
    match std::env::var_os("KIMBERLITE_BENCH_GUESTS") {
        Some(dir) => PathBuf::from(dir).join("account_balances.wasm"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(MODULE_PATH),
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let path = module_path();
    let Ok(bytes) = std::fs::read(&path) else {
        crate::skip(
            "projection",
            &format!(
                "{} is missing: run `cargo xtask build-guests` first",
                path.display()
            ),
        );
        return Ok(());
    };
    let events = events(settings.pick(EVENTS_FULL, EVENTS_QUICK));
    let engine = Engine::new().map_err(|error| anyhow::anyhow!("{error}"))?;
    let compiled = Instant::now();
    let module = engine
        .load_projection(&bytes, b"")
        .map_err(|error| anyhow::anyhow!("deploying {}: {error}", path.display()))?;
    let compile_ms = compiled.elapsed().as_secs_f64() * 1e3;

    // Both rebuilds advance together, segment by segment (the order alternating), so the
    // noise of this shared machine falls on both alike.
    let wasm_view = MemoryView::new(module.describe());
    let lookup: Arc<dyn ViewLookup> = Arc::new(wasm_view.clone());
    let native_view = MemoryView::new(module.describe());
    let (mut wasm_seconds, mut native_seconds) = (0.0, 0.0);
    for (index, segment) in events
        .chunks(BATCH_EVENTS_MAX * SEGMENT_BATCHES)
        .enumerate()
    {
        let wasm = || -> anyhow::Result<f64> {
            let start = Instant::now();
            for batch in segment.chunks(BATCH_EVENTS_MAX) {
                let changes = module.apply(batch, &lookup).map_err(|error| {
                    anyhow::anyhow!("account-balances failed on the benchmark's events: {error}")
                })?;
                wasm_view.apply_events(&changes);
            }
            Ok(start.elapsed().as_secs_f64())
        };
        let native = || -> anyhow::Result<f64> {
            let start = Instant::now();
            for batch in segment.chunks(BATCH_EVENTS_MAX) {
                let changes = native_apply(batch, &native_view)?;
                native_view.apply(&changes);
            }
            Ok(start.elapsed().as_secs_f64())
        };
        if index % 2 == 0 {
            wasm_seconds += wasm()?;
            native_seconds += native()?;
        } else {
            native_seconds += native()?;
            wasm_seconds += wasm()?;
        }
    }

    assert_eq!(
        wasm_view.state_digest(),
        native_view.state_digest(),
        "the native account-balances disagrees with the Wasm one: the comparison would be unfair"
    );
    let wasm_rate = events.len() as f64 / wasm_seconds;
    let native_rate = events.len() as f64 / native_seconds;
    let ratio = wasm_rate / native_rate;
    println!(
        "\nsuite projection: account-balances rebuilt from position 0 of {} events over {ACCOUNTS} accounts, batches of {BATCH_EVENTS_MAX}",
        events.len()
    );
    println!(
        "  {:<52} {:>12} {:>10}",
        "implementation", "events/s", "seconds"
    );
    println!(
        "  {:<52} {:>12.0} {:>10.2}",
        "Wasm (wasmtime, fuel + memory limits)", wasm_rate, wasm_seconds
    );
    println!(
        "  {:<52} {:>12.0} {:>10.2}",
        "native Rust, same logic and view", native_rate, native_seconds
    );
    println!("  (compiling the module at deploy: {compile_ms:.0} ms, not counted)");
    println!(
        "  aim: Wasm ≥ {AIM_WASM_OVER_NATIVE} of native: {ratio:.2} ({})",
        if ratio >= AIM_WASM_OVER_NATIVE {
            "met"
        } else {
            "NOT met"
        }
    );
    summary(
        "projection",
        serde_json::json!({"wasm_over_native": ratio}),
        serde_json::json!({
            "wasm_events_per_second": wasm_rate,
            "native_events_per_second": native_rate,
            "events": events.len(),
            "accounts": ACCOUNTS,
            "compile_ms": compile_ms,
        }),
    );
    Ok(())
}

/// A deterministic mix: half deposits, a quarter withdrawals, a quarter transfers.
fn events(count: usize) -> Vec<Event> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    (0..count)
        .map(|position| {
            let account = next(ACCOUNTS);
            let amount = 1 + next(1_000);
            let (event_type, payload) = match next(4) {
                0 | 1 => (
                    "Deposited",
                    format!(r#"{{"account":"acct-{account}","amount":{amount}}}"#),
                ),
                2 => (
                    "Withdrawn",
                    format!(r#"{{"account":"acct-{account}","amount":{amount}}}"#),
                ),
                _ => (
                    "Transferred",
                    format!(
                        r#"{{"from":"acct-{account}","to":"acct-{}","amount":{amount}}}"#,
                        next(ACCOUNTS)
                    ),
                ),
            };
            Event {
                position: position as u64,
                timestamp_ns: 1_700_000_000_000_000_000 + position as u64 * 1_000,
                stream: "accounts".into(),
                event_type: event_type.into(),
                payload: payload.into_bytes(),
                principal: "bench".into(),
                reason: None,
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Movement {
    account: String,
    amount: i64,
}

#[derive(serde::Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: i64,
}

/// samples/account-balances/src/lib.rs, natively: the same decoding, the same reads of the
/// view (with the batch's own writes visible first, as the guest SDK does), the same
/// changes.
fn native_apply(events: &[Event], view: &MemoryView) -> anyhow::Result<Vec<Change>> {
    let mut changes: Vec<Change> = Vec::new();
    // Account → index in `changes` of its latest upsert in this batch.
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut add = |account: &str,
                   delta: i64,
                   event: &Event,
                   changes: &mut Vec<Change>|
     -> anyhow::Result<()> {
        let balance = match pending.get(account) {
            Some(&index) => match &changes[index] {
                Change::Upsert { row, .. } => row[1].clone(),
                Change::Remove { .. } => unreachable!("only upserts are pending"),
            },
            None => view
                .get("balances", &[Value::Text(account.to_string())])
                .map_err(|error| anyhow::anyhow!("{error}"))?
                .map(|row: Row| row[1].clone())
                .unwrap_or(Value::Integer(0)),
        };
        let Value::Integer(balance) = balance else {
            anyhow::bail!("balance of {account} is not an integer")
        };
        let balance = balance.checked_add(delta).ok_or_else(|| {
            anyhow::anyhow!(
                "balance of `{account}` overflows at position {}",
                event.position
            )
        })?;
        pending.insert(account.to_string(), changes.len());
        changes.push(Change::Upsert {
            table: "balances".into(),
            row: vec![
                Value::Text(account.to_string()),
                Value::Integer(balance),
                Value::Timestamp(i64::try_from(event.timestamp_ns).unwrap_or(i64::MAX)),
            ],
        });
        Ok(())
    };
    for event in events {
        if event.stream != "accounts" {
            continue;
        }
        match event.event_type.as_str() {
            "Deposited" => {
                let Movement { account, amount } = serde_json::from_slice(&event.payload)?;
                add(&account, positive(amount, event)?, event, &mut changes)?;
            }
            "Withdrawn" => {
                let Movement { account, amount } = serde_json::from_slice(&event.payload)?;
                add(&account, -positive(amount, event)?, event, &mut changes)?;
            }
            "Transferred" => {
                let Transfer { from, to, amount } = serde_json::from_slice(&event.payload)?;
                let amount = positive(amount, event)?;
                add(&from, -amount, event, &mut changes)?;
                add(&to, amount, event, &mut changes)?;
            }
            _ => {}
        }
    }
    Ok(changes)
}

fn positive(amount: i64, event: &Event) -> anyhow::Result<i64> {
    anyhow::ensure!(
        amount > 0,
        "{} at position {} has amount {amount}; amounts must be positive",
        event.event_type,
        event.position
    );
    Ok(amount)
}
