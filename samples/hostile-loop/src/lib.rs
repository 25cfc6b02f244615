//! Hostile: never returns. As a projection it spins forever on `Spin` events (and counts
//! every other event in `seen`); as a policy every `mask` spins forever. The engine must
//! stop it — by fuel for the projection (deterministically, at the `Spin` event), by
//! fuel or the wall-clock deadline for the policy — and stay healthy.

use kimberlite_guest::prelude::*;

struct Spinner;

fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        // black_box keeps the optimizer from proving anything about the loop.
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

impl Projection for Spinner {
    fn describe() -> Vec<Table> {
        vec![
            Table::new("seen")
                .column("position", ColumnType::Bigint)
                .column("event_type", ColumnType::Text)
                .primary_key(&["position"]),
        ]
    }

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Spinner)
    }

    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
        if event.event_type == "Spin" {
            spin();
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

impl Policy for Spinner {
    fn covers() -> Vec<String> {
        vec!["patients".to_owned()]
    }

    fn mask(
        _who: &Caller,
        _table: &str,
        _columns: &[String],
        _rows: Vec<Row>,
    ) -> Result<Vec<Row>, String> {
        spin()
    }
}

kimberlite_guest::export!(projection: Spinner);
kimberlite_guest::export!(policy: Spinner);
