//! Prepare headers, protocol messages and their wire codec.
//!
//! Every message is framed as `magic ‖ version ‖ cluster ‖ kind ‖ payload ‖ checksum`, where the
//! checksum covers everything before it, so a corrupt or misrouted frame is an error for the
//! world (the driver drops it), never a panic. Prepares additionally carry their own header
//! checksum and body checksum end to end: they are verified before a journal write and after a
//! journal read.

use crate::checksum::{checksum, checksum_parts};
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{
    checkpoint_chunk_bytes_max, command_bytes_max, headers_per_message_max, message_bytes_max,
    pipeline_prepares_max, replicas_max, reply_bytes_max,
};

/// What a prepare asks the replicas to do when it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Op 0 of every log: the cluster's genesis, never executed.
    Root,
    /// Open a client session (request number 0).
    Register,
    /// An opaque command for the state machine.
    Command,
}

impl Operation {
    fn to_u8(self) -> u8 {
        match self {
            Operation::Root => 0,
            Operation::Register => 1,
            Operation::Command => 2,
        }
    }
    fn from_u8(value: u8) -> Result<Operation, DecodeError> {
        match value {
            0 => Ok(Operation::Root),
            1 => Ok(Operation::Register),
            2 => Ok(Operation::Command),
            _ => Err(DecodeError("unknown operation")),
        }
    }
}

/// The header of one entry of the replicated log.
///
/// `checksum` covers every other field, including `body_checksum`, so the header alone names its
/// prepare; `parent` is the checksum of the previous op's header, making the log a hash chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub checksum: u128,
    pub parent: u128,
    pub body_checksum: u128,
    pub cluster: u128,
    /// View in which the primary created this prepare.
    pub view: u64,
    pub op: u64,
    /// The primary's commit number when it prepared this op.
    pub commit: u64,
    /// Primary-assigned, strictly increasing along the log.
    pub timestamp_ns: u64,
    pub client: u128,
    pub request: u64,
    pub operation: Operation,
    /// The primary that created the prepare.
    pub replica: u8,
    pub body_bytes: u32,
}

/// Encoded size of a header.
pub const header_bytes: usize = 16 * 5 + 8 * 5 + 1 + 1 + 4;

impl Header {
    /// The root header of a cluster: op 0, identical on every replica.
    pub fn root(cluster: u128) -> Header {
        let mut header = Header {
            checksum: 0,
            parent: 0,
            body_checksum: checksum(&[]),
            cluster,
            view: 0,
            op: 0,
            commit: 0,
            timestamp_ns: 0,
            client: 0,
            request: 0,
            operation: Operation::Root,
            replica: 0,
            body_bytes: 0,
        };
        header.checksum = header.calculate_checksum();
        header
    }

    fn encode_fields(&self, writer: &mut Writer) {
        writer.u128(self.parent);
        writer.u128(self.body_checksum);
        writer.u128(self.cluster);
        writer.u64(self.view);
        writer.u64(self.op);
        writer.u64(self.commit);
        writer.u64(self.timestamp_ns);
        writer.u128(self.client);
        writer.u64(self.request);
        writer.u8(self.operation.to_u8());
        writer.u8(self.replica);
        writer.u32(self.body_bytes);
    }

    pub fn calculate_checksum(&self) -> u128 {
        let mut writer = Writer::default();
        self.encode_fields(&mut writer);
        checksum(&writer.bytes)
    }

    pub fn valid_checksum(&self) -> bool {
        self.checksum == self.calculate_checksum()
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        writer.u128(self.checksum);
        self.encode_fields(writer);
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Header, DecodeError> {
        let header = Header {
            checksum: reader.u128()?,
            parent: reader.u128()?,
            body_checksum: reader.u128()?,
            cluster: reader.u128()?,
            view: reader.u64()?,
            op: reader.u64()?,
            commit: reader.u64()?,
            timestamp_ns: reader.u64()?,
            client: reader.u128()?,
            request: reader.u64()?,
            operation: Operation::from_u8(reader.u8()?)?,
            replica: reader.u8()?,
            body_bytes: reader.u32()?,
        };
        if !header.valid_checksum() {
            return Err(DecodeError("header checksum"));
        }
        Ok(header)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        self.encode(&mut writer);
        assert_eq!(writer.bytes.len(), header_bytes);
        writer.bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Header, DecodeError> {
        let mut reader = Reader::new(bytes);
        let header = Header::decode(&mut reader)?;
        reader.finish()?;
        Ok(header)
    }
}

/// A log entry: header plus the opaque command bytes it checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub header: Header,
    pub body: Vec<u8>,
}

impl Prepare {
    /// Header checksum, body checksum and body length all agree.
    pub fn valid(&self) -> bool {
        self.header.valid_checksum()
            && self.header.body_bytes as usize == self.body.len()
            && self.header.body_checksum == checksum(&self.body)
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        self.header.encode(writer);
        writer.blob(&self.body);
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
        let header = Header::decode(reader)?;
        let body = reader.blob(command_bytes_max)?;
        let prepare = Prepare { header, body };
        if !prepare.valid() {
            return Err(DecodeError("prepare body checksum"));
        }
        Ok(prepare)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        self.encode(&mut writer);
        writer.bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Prepare, DecodeError> {
        let mut reader = Reader::new(bytes);
        let prepare = Prepare::decode(&mut reader)?;
        reader.finish()?;
        Ok(prepare)
    }
}

/// One op of a `DoViewChange` suffix, as the sender knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewChangeEntry {
    /// The header the sender has for this op, if any.
    pub header: Option<Header>,
    /// The sender holds the matching prepare intact and can serve it.
    pub present: bool,
    /// The sender has certainly never acknowledged any prepare for this op other than `header`
    /// with `present`: it may be counted towards truncating the op. A slot that is corrupt is
    /// never a nack (Protocol-Aware Recovery): it might hold exactly the prepare in question.
    pub nack: bool,
}

/// Every message replicas and clients exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → replica.
    Request {
        client: u128,
        request: u64,
        operation: Operation,
        body: Vec<u8>,
    },
    /// Primary → backups (replication), or any replica → any replica (repair).
    Prepare(Prepare),
    /// Backup → primary of `view`: `op` with `checksum` is durable here.
    PrepareOk {
        view: u64,
        op: u64,
        checksum: u128,
        replica: u8,
    },
    /// Primary → backups heartbeat.
    Commit {
        view: u64,
        commit_max: u64,
        checkpoint_op: u64,
        op: u64,
        replica: u8,
    },
    /// Vote to leave the current view for `view`.
    StartViewChange {
        view: u64,
        replica: u8,
    },
    /// To the primary of `view`: this replica's log suffix from `op` down to `commit_max`.
    DoViewChange {
        view: u64,
        log_view: u64,
        op: u64,
        commit_max: u64,
        checkpoint_op: u64,
        replica: u8,
        /// From `op` down, one entry per op: the sender's suffix down to its commit point (at
        /// most a pipeline and one), `None` headers where its hash chain proves nothing.
        entries: Vec<ViewChangeEntry>,
    },
    /// New primary → backups: the view's log suffix from `op` down to `commit_max`.
    StartView {
        view: u64,
        op: u64,
        commit_max: u64,
        checkpoint_op: u64,
        replica: u8,
        nonce: u128,
        headers: Vec<Header>,
    },
    /// Ask the primary of `view` for a `StartView` tagged with `nonce`.
    RequestStartView {
        view: u64,
        replica: u8,
        nonce: u128,
    },
    /// Ask for headers of ops in `op_min..=op_max`.
    RequestHeaders {
        op_min: u64,
        op_max: u64,
        replica: u8,
    },
    Headers {
        replica: u8,
        headers: Vec<Header>,
    },
    /// Ask for the prepare of `op` whose header checksum is `checksum`.
    RequestPrepare {
        op: u64,
        checksum: u128,
        replica: u8,
    },
    /// Clock sample request; also tells the primary which view (and status) we are in.
    Ping {
        replica: u8,
        view: u64,
        normal: bool,
        ping_monotonic_ns: u64,
    },
    /// Answers a `Ping`; also says which view (and status) we are in, so a primary can
    /// confirm it still leads a quorum before it answers a read.
    Pong {
        replica: u8,
        view: u64,
        normal: bool,
        ping_monotonic_ns: u64,
        pong_realtime_ns: u64,
    },
    /// A replica that lost its disk asks the cluster for its view.
    RecoveryRequest {
        replica: u8,
        nonce: u128,
    },
    RecoveryResponse {
        replica: u8,
        nonce: u128,
        view: u64,
    },
    /// Ask for part of the sender's latest checkpoint snapshot.
    RequestCheckpoint {
        replica: u8,
        offset: u64,
        /// The requester's nonce: a primary follows the last chunk with its `StartView`
        /// carrying it, which a replica recovering a lost disk accepts only with its own nonce.
        nonce: u128,
    },
    CheckpointChunk {
        replica: u8,
        checkpoint_op: u64,
        /// Header of `checkpoint_op`: the anchor of the hash chain above the checkpoint.
        header: Header,
        snapshot_checksum: u128,
        snapshot_bytes: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Primary → client.
    Reply {
        client: u128,
        request: u64,
        op: u64,
        view: u64,
        replica: u8,
        body: Vec<u8>,
    },
    /// Primary → client: the session is gone (evicted or never registered); register anew.
    Eviction {
        client: u128,
        view: u64,
        replica: u8,
    },
}

const frame_magic: u32 = 0x4b56_5352; // "KVSR"
/// 2: `RequestCheckpoint` carries the requester's nonce.
const frame_version: u8 = 2;

impl Message {
    /// A short name for traces and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Prepare(_) => "prepare",
            Message::PrepareOk { .. } => "prepare_ok",
            Message::Commit { .. } => "commit",
            Message::StartViewChange { .. } => "start_view_change",
            Message::DoViewChange { .. } => "do_view_change",
            Message::StartView { .. } => "start_view",
            Message::RequestStartView { .. } => "request_start_view",
            Message::RequestHeaders { .. } => "request_headers",
            Message::Headers { .. } => "headers",
            Message::RequestPrepare { .. } => "request_prepare",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::RecoveryRequest { .. } => "recovery_request",
            Message::RecoveryResponse { .. } => "recovery_response",
            Message::RequestCheckpoint { .. } => "request_checkpoint",
            Message::CheckpointChunk { .. } => "checkpoint_chunk",
            Message::Reply { .. } => "reply",
            Message::Eviction { .. } => "eviction",
        }
    }

    /// Encode as one frame for `cluster`.
    pub fn encode(&self, cluster: u128) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u32(frame_magic);
        writer.u8(frame_version);
        writer.u128(cluster);
        match self {
            Message::Request {
                client,
                request,
                operation,
                body,
            } => {
                writer.u8(0);
                writer.u128(*client);
                writer.u64(*request);
                writer.u8(operation.to_u8());
                writer.blob(body);
            }
            Message::Prepare(prepare) => {
                writer.u8(1);
                prepare.encode(&mut writer);
            }
            Message::PrepareOk {
                view,
                op,
                checksum,
                replica,
            } => {
                writer.u8(2);
                writer.u64(*view);
                writer.u64(*op);
                writer.u128(*checksum);
                writer.u8(*replica);
            }
            Message::Commit {
                view,
                commit_max,
                checkpoint_op,
                op,
                replica,
            } => {
                writer.u8(3);
                writer.u64(*view);
                writer.u64(*commit_max);
                writer.u64(*checkpoint_op);
                writer.u64(*op);
                writer.u8(*replica);
            }
            Message::StartViewChange { view, replica } => {
                writer.u8(4);
                writer.u64(*view);
                writer.u8(*replica);
            }
            Message::DoViewChange {
                view,
                log_view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                entries,
            } => {
                writer.u8(5);
                writer.u64(*view);
                writer.u64(*log_view);
                writer.u64(*op);
                writer.u64(*commit_max);
                writer.u64(*checkpoint_op);
                writer.u8(*replica);
                writer.u32(entries.len() as u32);
                for entry in entries {
                    writer.bool(entry.present);
                    writer.bool(entry.nack);
                    match &entry.header {
                        None => writer.u8(0),
                        Some(header) => {
                            writer.u8(1);
                            header.encode(&mut writer);
                        }
                    }
                }
            }
            Message::StartView {
                view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                nonce,
                headers,
            } => {
                writer.u8(6);
                writer.u64(*view);
                writer.u64(*op);
                writer.u64(*commit_max);
                writer.u64(*checkpoint_op);
                writer.u8(*replica);
                writer.u128(*nonce);
                writer.u32(headers.len() as u32);
                for header in headers {
                    header.encode(&mut writer);
                }
            }
            Message::RequestStartView {
                view,
                replica,
                nonce,
            } => {
                writer.u8(7);
                writer.u64(*view);
                writer.u8(*replica);
                writer.u128(*nonce);
            }
            Message::RequestHeaders {
                op_min,
                op_max,
                replica,
            } => {
                writer.u8(8);
                writer.u64(*op_min);
                writer.u64(*op_max);
                writer.u8(*replica);
            }
            Message::Headers { replica, headers } => {
                writer.u8(9);
                writer.u8(*replica);
                writer.u32(headers.len() as u32);
                for header in headers {
                    header.encode(&mut writer);
                }
            }
            Message::RequestPrepare {
                op,
                checksum,
                replica,
            } => {
                writer.u8(10);
                writer.u64(*op);
                writer.u128(*checksum);
                writer.u8(*replica);
            }
            Message::Ping {
                replica,
                view,
                normal,
                ping_monotonic_ns,
            } => {
                writer.u8(11);
                writer.u8(*replica);
                writer.u64(*view);
                writer.bool(*normal);
                writer.u64(*ping_monotonic_ns);
            }
            Message::Pong {
                replica,
                view,
                normal,
                ping_monotonic_ns,
                pong_realtime_ns,
            } => {
                writer.u8(12);
                writer.u8(*replica);
                writer.u64(*view);
                writer.bool(*normal);
                writer.u64(*ping_monotonic_ns);
                writer.u64(*pong_realtime_ns);
            }
            Message::RecoveryRequest { replica, nonce } => {
                writer.u8(13);
                writer.u8(*replica);
                writer.u128(*nonce);
            }
            Message::RecoveryResponse {
                replica,
                nonce,
                view,
            } => {
                writer.u8(14);
                writer.u8(*replica);
                writer.u128(*nonce);
                writer.u64(*view);
            }
            Message::RequestCheckpoint {
                replica,
                offset,
                nonce,
            } => {
                writer.u8(15);
                writer.u8(*replica);
                writer.u64(*offset);
                writer.u128(*nonce);
            }
            Message::CheckpointChunk {
                replica,
                checkpoint_op,
                header,
                snapshot_checksum,
                snapshot_bytes,
                offset,
                bytes,
            } => {
                writer.u8(16);
                writer.u8(*replica);
                writer.u64(*checkpoint_op);
                header.encode(&mut writer);
                writer.u128(*snapshot_checksum);
                writer.u64(*snapshot_bytes);
                writer.u64(*offset);
                writer.blob(bytes);
            }
            Message::Reply {
                client,
                request,
                op,
                view,
                replica,
                body,
            } => {
                writer.u8(17);
                writer.u128(*client);
                writer.u64(*request);
                writer.u64(*op);
                writer.u64(*view);
                writer.u8(*replica);
                writer.blob(body);
            }
            Message::Eviction {
                client,
                view,
                replica,
            } => {
                writer.u8(18);
                writer.u128(*client);
                writer.u64(*view);
                writer.u8(*replica);
            }
        }
        let frame_checksum = checksum(&writer.bytes);
        writer.u128(frame_checksum);
        assert!(writer.bytes.len() <= message_bytes_max);
        writer.bytes
    }

    /// Decode one frame, refusing frames of another cluster, oversized or corrupt frames.
    pub fn decode(bytes: &[u8], cluster: u128) -> Result<Message, DecodeError> {
        if bytes.len() > message_bytes_max {
            return Err(DecodeError("frame too large"));
        }
        if bytes.len() < 16 {
            return Err(DecodeError("frame too short"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 16);
        if checksum_parts(&[body]) != u128::from_le_bytes(trailer.try_into().expect("16 bytes")) {
            return Err(DecodeError("frame checksum"));
        }
        let mut reader = Reader::new(body);
        if reader.u32()? != frame_magic {
            return Err(DecodeError("frame magic"));
        }
        if reader.u8()? != frame_version {
            return Err(DecodeError("frame version"));
        }
        if reader.u128()? != cluster {
            return Err(DecodeError("frame of another cluster"));
        }
        let headers_max = headers_per_message_max.max(pipeline_prepares_max + 1);
        let message = match reader.u8()? {
            0 => Message::Request {
                client: reader.u128()?,
                request: reader.u64()?,
                operation: Operation::from_u8(reader.u8()?)?,
                body: reader.blob(command_bytes_max)?,
            },
            1 => Message::Prepare(Prepare::decode(&mut reader)?),
            2 => Message::PrepareOk {
                view: reader.u64()?,
                op: reader.u64()?,
                checksum: reader.u128()?,
                replica: replica(&mut reader)?,
            },
            3 => Message::Commit {
                view: reader.u64()?,
                commit_max: reader.u64()?,
                checkpoint_op: reader.u64()?,
                op: reader.u64()?,
                replica: replica(&mut reader)?,
            },
            4 => Message::StartViewChange {
                view: reader.u64()?,
                replica: replica(&mut reader)?,
            },
            5 => {
                let view = reader.u64()?;
                let log_view = reader.u64()?;
                let op = reader.u64()?;
                let commit_max = reader.u64()?;
                let checkpoint_op = reader.u64()?;
                let replica = replica(&mut reader)?;
                let count = reader.count(headers_max)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let present = reader.bool()?;
                    let nack = reader.bool()?;
                    let header = match reader.u8()? {
                        0 => None,
                        1 => Some(Header::decode(&mut reader)?),
                        _ => return Err(DecodeError("bad option")),
                    };
                    entries.push(ViewChangeEntry {
                        header,
                        present,
                        nack,
                    });
                }
                if log_view >= view
                    || entries.is_empty()
                    || entries.len() as u64 > op.saturating_add(1)
                {
                    return Err(DecodeError("inconsistent do_view_change"));
                }
                Message::DoViewChange {
                    view,
                    log_view,
                    op,
                    commit_max,
                    checkpoint_op,
                    replica,
                    entries,
                }
            }
            6 => {
                let view = reader.u64()?;
                let op = reader.u64()?;
                let commit_max = reader.u64()?;
                let checkpoint_op = reader.u64()?;
                let replica = replica(&mut reader)?;
                let nonce = reader.u128()?;
                let count = reader.count(headers_max)?;
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    headers.push(Header::decode(&mut reader)?);
                }
                if headers.is_empty() || headers[0].op != op {
                    return Err(DecodeError("inconsistent start_view"));
                }
                Message::StartView {
                    view,
                    op,
                    commit_max,
                    checkpoint_op,
                    replica,
                    nonce,
                    headers,
                }
            }
            7 => Message::RequestStartView {
                view: reader.u64()?,
                replica: replica(&mut reader)?,
                nonce: reader.u128()?,
            },
            8 => Message::RequestHeaders {
                op_min: reader.u64()?,
                op_max: reader.u64()?,
                replica: replica(&mut reader)?,
            },
            9 => {
                let replica = replica(&mut reader)?;
                let count = reader.count(headers_max)?;
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    headers.push(Header::decode(&mut reader)?);
                }
                Message::Headers { replica, headers }
            }
            10 => Message::RequestPrepare {
                op: reader.u64()?,
                checksum: reader.u128()?,
                replica: replica(&mut reader)?,
            },
            11 => Message::Ping {
                replica: replica(&mut reader)?,
                view: reader.u64()?,
                normal: reader.bool()?,
                ping_monotonic_ns: reader.u64()?,
            },
            12 => Message::Pong {
                replica: replica(&mut reader)?,
                view: reader.u64()?,
                normal: reader.bool()?,
                ping_monotonic_ns: reader.u64()?,
                pong_realtime_ns: reader.u64()?,
            },
            13 => Message::RecoveryRequest {
                replica: replica(&mut reader)?,
                nonce: reader.u128()?,
            },
            14 => Message::RecoveryResponse {
                replica: replica(&mut reader)?,
                nonce: reader.u128()?,
                view: reader.u64()?,
            },
            15 => Message::RequestCheckpoint {
                replica: replica(&mut reader)?,
                offset: reader.u64()?,
                nonce: reader.u128()?,
            },
            16 => Message::CheckpointChunk {
                replica: replica(&mut reader)?,
                checkpoint_op: reader.u64()?,
                header: Header::decode(&mut reader)?,
                snapshot_checksum: reader.u128()?,
                snapshot_bytes: reader.u64()?,
                offset: reader.u64()?,
                bytes: reader.blob(checkpoint_chunk_bytes_max)?,
            },
            17 => Message::Reply {
                client: reader.u128()?,
                request: reader.u64()?,
                op: reader.u64()?,
                view: reader.u64()?,
                replica: replica(&mut reader)?,
                body: reader.blob(reply_bytes_max)?,
            },
            18 => Message::Eviction {
                client: reader.u128()?,
                view: reader.u64()?,
                replica: replica(&mut reader)?,
            },
            _ => return Err(DecodeError("unknown message kind")),
        };
        reader.finish()?;
        Ok(message)
    }
}

fn replica(reader: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let replica = reader.u8()?;
    if replica as usize >= replicas_max {
        return Err(DecodeError("replica index out of range"));
    }
    Ok(replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare() -> Prepare {
        let body = b"command".to_vec();
        let mut header = Header::root(5);
        header.op = 1;
        header.parent = Header::root(5).checksum;
        header.operation = Operation::Command;
        header.body_bytes = body.len() as u32;
        header.body_checksum = checksum(&body);
        header.checksum = header.calculate_checksum();
        Prepare { header, body }
    }

    fn every_message() -> Vec<Message> {
        let prepare = prepare();
        let header = prepare.header;
        vec![
            Message::Request {
                client: 9,
                request: 2,
                operation: Operation::Command,
                body: vec![1, 2],
            },
            Message::Prepare(prepare),
            Message::PrepareOk {
                view: 3,
                op: 1,
                checksum: header.checksum,
                replica: 2,
            },
            Message::Commit {
                view: 3,
                commit_max: 1,
                checkpoint_op: 0,
                op: 1,
                replica: 0,
            },
            Message::StartViewChange {
                view: 4,
                replica: 1,
            },
            Message::DoViewChange {
                view: 4,
                log_view: 3,
                op: 1,
                commit_max: 0,
                checkpoint_op: 0,
                replica: 1,
                entries: vec![
                    ViewChangeEntry {
                        header: Some(header),
                        present: true,
                        nack: false,
                    },
                    ViewChangeEntry {
                        header: None,
                        present: false,
                        nack: true,
                    },
                ],
            },
            Message::StartView {
                view: 4,
                op: 1,
                commit_max: 0,
                checkpoint_op: 0,
                replica: 1,
                nonce: 77,
                headers: vec![header, Header::root(5)],
            },
            Message::RequestStartView {
                view: 4,
                replica: 2,
                nonce: 77,
            },
            Message::RequestHeaders {
                op_min: 1,
                op_max: 3,
                replica: 2,
            },
            Message::Headers {
                replica: 0,
                headers: vec![header],
            },
            Message::RequestPrepare {
                op: 1,
                checksum: header.checksum,
                replica: 2,
            },
            Message::Ping {
                replica: 1,
                view: 3,
                normal: true,
                ping_monotonic_ns: 10,
            },
            Message::Pong {
                replica: 2,
                view: 4,
                normal: true,
                ping_monotonic_ns: 10,
                pong_realtime_ns: 20,
            },
            Message::RecoveryRequest {
                replica: 1,
                nonce: 5,
            },
            Message::RecoveryResponse {
                replica: 2,
                nonce: 5,
                view: 9,
            },
            Message::RequestCheckpoint {
                replica: 1,
                offset: 0,
                nonce: 7,
            },
            Message::CheckpointChunk {
                replica: 0,
                checkpoint_op: 0,
                header: Header::root(5),
                snapshot_checksum: 1,
                snapshot_bytes: 3,
                offset: 0,
                bytes: vec![1, 2, 3],
            },
            Message::Reply {
                client: 9,
                request: 2,
                op: 1,
                view: 3,
                replica: 0,
                body: vec![4],
            },
            Message::Eviction {
                client: 9,
                view: 3,
                replica: 0,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in every_message() {
            let bytes = message.encode(5);
            assert_eq!(
                Message::decode(&bytes, 5),
                Ok(message.clone()),
                "{}",
                message.kind()
            );
        }
    }

    #[test]
    fn corrupt_truncated_and_foreign_frames_are_errors() {
        for message in every_message() {
            let bytes = message.encode(5);
            assert_eq!(
                Message::decode(&bytes, 6),
                Err(DecodeError("frame of another cluster"))
            );
            for index in [0, bytes.len() / 2, bytes.len() - 1] {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 0x40;
                assert!(
                    Message::decode(&corrupt, 5).is_err(),
                    "{} with byte {index} flipped",
                    message.kind()
                );
            }
            assert!(Message::decode(&bytes[..bytes.len() - 1], 5).is_err());
        }
        assert_eq!(Message::decode(&[], 5), Err(DecodeError("frame too short")));
    }

    #[test]
    fn prepare_checksums_cover_header_and_body() {
        let mut prepare = prepare();
        assert!(prepare.valid());
        prepare.body[0] ^= 1;
        assert!(!prepare.valid());
        let mut header = prepare.header;
        header.timestamp_ns += 1;
        assert!(!header.valid_checksum());
        assert_eq!(
            Header::from_bytes(&Header::root(5).to_bytes()),
            Ok(Header::root(5))
        );
    }
}
