//! The `patients` table's row events → `census(region TEXT PRIMARY KEY, patients BIGINT)`.
//!
//! `RowInserted`/`RowUpdated` carry the full row (`{"id":1,"name":"Ada Lovelace",
//! "region":"north"}`), `RowDeleted` only the key (`{"id":1}`). To move or drop a patient
//! the census must know where they were counted, so it keeps its own table
//! `census_patients(id BIGINT PRIMARY KEY, region TEXT)`. Patients without a region are
//! not counted in any region; a region whose count drops to zero disappears.

use kimberlite_guest::prelude::*;

#[derive(Deserialize)]
struct Patient {
    id: i64,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
struct PatientKey {
    id: i64,
}

struct Census;

impl Projection for Census {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("census")
                .column("region", ColumnType::Text)
                .column("patients", ColumnType::Bigint)
                .primary_key(&["region"]),
            Table::new("census_patients")
                .column("id", ColumnType::Bigint)
                .nullable_column("region", ColumnType::Text)
                .primary_key(&["id"]),
        ]
    }

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Census)
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.stream != "patients" {
            return Ok(());
        }
        match event.event_type.as_str() {
            "RowInserted" | "RowUpdated" => {
                let Patient { id, region } = event.json()?;
                let before = counted_region(view, id);
                if before != region {
                    count(view, before.as_deref(), -1);
                    count(view, region.as_deref(), 1);
                }
                view.upsert("census_patients", vec![id.into(), region.into()]);
            }
            "RowDeleted" => {
                let PatientKey { id } = event.json()?;
                count(view, counted_region(view, id).as_deref(), -1);
                view.remove("census_patients", vec![id.into()]);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Where patient `id` is counted now (None: nowhere).
fn counted_region(view: &View, id: i64) -> Option<String> {
    let row = view.get("census_patients", &[Value::from(id)])?;
    row[1].as_text().map(str::to_owned)
}

fn count(view: &mut View, region: Option<&str>, delta: i64) {
    let Some(region) = region else { return };
    let key = [Value::from(region)];
    let patients = view
        .get("census", &key)
        .and_then(|row| row[1].as_integer())
        .unwrap_or(0)
        + delta;
    if patients > 0 {
        view.upsert("census", vec![region.into(), patients.into()]);
    } else {
        view.remove("census", vec![region.into()]);
    }
}

kimberlite_guest::export!(projection: Census);
