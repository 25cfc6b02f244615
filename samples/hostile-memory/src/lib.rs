//! Hostile: on a `Hoard` event, allocates 16 MiB blocks until memory runs out (every
//! other event is counted in `seen`). The engine's memory cap must stop it at the `Hoard`
//! event, every time, and the next instance must start clean.

use kimberlite_guest::prelude::*;

struct Hoarder;

const BLOCK_BYTES: usize = 16 << 20;

impl Projection for Hoarder {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("seen")
                .column("position", ColumnType::Bigint)
                .column("event_type", ColumnType::Text)
                .primary_key(&["position"]),
        ]
    }

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Hoarder)
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.event_type == "Hoard" {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserve without filling: the point is growing memory, not burning fuel.
                let mut block = Vec::<u8>::with_capacity(BLOCK_BYTES);
                block.push(0xA5);
                hoard.push(std::hint::black_box(block));
            }
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

kimberlite_guest::export!(projection: Hoarder);
