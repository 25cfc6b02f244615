//! What the replica commits into.

/// The deterministic state machine behind the replicated log.
///
/// The node implements it over the Kimberlite kernel (commands are serialized kernel commands);
/// the simulator implements a small key-value model. Every replica calls `commit` with the same
/// arguments in the same order, so implementations must be pure functions of their inputs: no
/// clock (use `timestamp_ns`), no randomness, no I/O whose result can differ between replicas.
pub trait StateMachine {
    /// Apply one committed command and return the reply for the client (at most
    /// [`crate::constants::reply_bytes_max`] bytes). Duplicates never reach `commit`: the
    /// replica's client sessions deliver each (client, request) at most once.
    fn commit(
        &mut self,
        op: u64,
        timestamp_ns: u64,
        client: u128,
        request: u64,
        command: &[u8],
    ) -> Vec<u8>;

    /// The full state after the last commit, as deterministic bytes: replicas compare these at
    /// checkpoints and ship them to replicas too far behind to repair from the journal.
    fn snapshot(&self) -> Vec<u8>;

    /// Replace the state with one produced by `snapshot` (on restart, or after a transfer).
    /// Bytes passed here have been checksummed end to end, so a failure is a bug.
    fn restore(&mut self, snapshot: &[u8]);
}
