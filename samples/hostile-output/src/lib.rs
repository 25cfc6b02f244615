//! Hostile: on a `Flood` event, emits 12,000 changes — past the engine's bound on
//! changes per event (every other event is counted in `seen`). The engine must fault it
//! at the `Flood` event instead of writing the flood into the view.

use kimberlite_guest::prelude::*;

struct Flooder;

const FLOOD_CHANGES: i64 = 12_000;

impl Projection for Flooder {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("seen")
                .column("position", ColumnType::Bigint)
                .column("event_type", ColumnType::Text)
                .primary_key(&["position"]),
        ]
    }

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Flooder)
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.event_type == "Flood" {
            for n in 0..FLOOD_CHANGES {
                view.upsert("seen", vec![n.into(), "flood".into()]);
            }
            return Ok(());
        }
        view.upsert(
            "seen",
            vec![
                (event.position as i64).into(),
                event.event_type.as_str().into(),
            ],
        );
        Ok(())
    }
}

kimberlite_guest::export!(projection: Flooder);
