//! Hostile: panics (a Wasm trap, since guests abort on panic) on an `Explode` event;
//! every other event is counted in `seen`. The engine must fault it at the `Explode`
//! event and keep the changes of the events before it.

use kimberlite_guest::prelude::*;

struct Exploder;

impl Projection for Exploder {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("seen")
                .column("position", ColumnType::Bigint)
                .column("event_type", ColumnType::Text)
                .primary_key(&["position"]),
        ]
    }

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Exploder)
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.event_type == "Explode" {
            panic!("exploding at position {}", event.position);
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

kimberlite_guest::export!(projection: Exploder);
