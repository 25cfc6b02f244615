//! What the query executor needs from a tenant's log: its end, timestamp → position,
//! and record headers (never payloads: `kimberlite.log` shows who, when, what and why,
//! not the encrypted content). The one exception is `kimberlite.access`, whose records'
//! payloads are the access trail itself (tables and policy versions, no data).

use kimberlite_kernel::Position;
use kimberlite_log::{LogReader, RecordHeader};

pub trait LogSource {
    /// The exclusive end of the durable log: the last position is `end() - 1`.
    fn end(&self) -> Position;
    /// The last position whose timestamp is `<= timestamp_ns`; `None` when the log is
    /// empty or starts later.
    fn position_at_timestamp(&self, timestamp_ns: u64) -> Option<Position>;
    /// Up to `limit` headers from `from` on, in position order (fewer at the end; at
    /// least one if any exists at `from`).
    fn headers(&self, from: Position, limit: usize) -> Result<Vec<RecordHeader>, String>;
    /// The decrypted payload of the record at `position` (used for access records only).
    fn payload(&self, position: Position) -> Result<Vec<u8>, String> {
        Err(format!(
            "this log holds no payloads (asked for position {position})"
        ))
    }
}

impl LogSource for LogReader {
    fn end(&self) -> Position {
        LogReader::end(self)
    }

    fn position_at_timestamp(&self, timestamp_ns: u64) -> Option<Position> {
        LogReader::position_at_timestamp(self, timestamp_ns)
    }

    fn headers(&self, from: Position, limit: usize) -> Result<Vec<RecordHeader>, String> {
        self.read_headers(from, limit)
            .map_err(|error| error.to_string())
    }

    fn payload(&self, position: Position) -> Result<Vec<u8>, String> {
        let mut records = self.read(position, 1).map_err(|error| error.to_string())?;
        match records.pop() {
            Some(record) if record.header.position == position => Ok(record.payload),
            _ => Err(format!("no record at position {position}")),
        }
    }
}

/// A log held in memory: the model in tests, and a log-less context (an empty one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryLog {
    headers: Vec<RecordHeader>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Appends a header; positions must be dense from 0 and timestamps non-decreasing,
    /// as in a real partition.
    pub fn push(&mut self, header: RecordHeader) {
        assert_eq!(
            header.position,
            self.headers.len() as u64,
            "positions are dense"
        );
        assert!(
            self.headers
                .last()
                .is_none_or(|last| last.meta.timestamp_ns <= header.meta.timestamp_ns),
            "timestamps never decrease"
        );
        self.headers.push(header);
    }
}

impl LogSource for MemoryLog {
    fn end(&self) -> Position {
        self.headers.len() as u64
    }

    fn position_at_timestamp(&self, timestamp_ns: u64) -> Option<Position> {
        let after = self
            .headers
            .partition_point(|header| header.meta.timestamp_ns <= timestamp_ns);
        after.checked_sub(1).map(|index| index as u64)
    }

    fn headers(&self, from: Position, limit: usize) -> Result<Vec<RecordHeader>, String> {
        let start = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(self.headers.len());
        let stop = start.saturating_add(limit).min(self.headers.len());
        Ok(self.headers[start..stop].to_vec())
    }
}
