//! Client sessions: exactly-once execution and the reply cache.
//!
//! A client registers (request 0; its session is the op of that register), then numbers its
//! requests 1, 2, … with at most one in flight. The table is part of the committed state: every
//! replica updates it in `commit`, it is included in checkpoints, and a restarted replica rebuilds
//! it by replaying the journal. When full, registering evicts the session that committed least
//! recently (smallest last op — unique, so eviction is deterministic).

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::reply_bytes_max;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Op of the register that opened the session.
    pub session: u64,
    /// Last request number committed.
    pub request: u64,
    /// Op at which `request` committed.
    pub op: u64,
    /// Reply to `request`, resent verbatim on retry.
    pub reply: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSessions {
    clients_max: usize,
    entries: BTreeMap<u128, Session>,
}

impl ClientSessions {
    pub fn new(clients_max: usize) -> ClientSessions {
        assert!(clients_max > 0);
        ClientSessions {
            clients_max,
            entries: BTreeMap::new(),
        }
    }

    pub fn get(&self, client: u128) -> Option<&Session> {
        self.entries.get(&client)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Open a session for `client` at `op`; returns the client evicted to make room.
    pub fn register(&mut self, client: u128, op: u64) -> Option<u128> {
        assert!(!self.entries.contains_key(&client));
        let mut evicted = None;
        if self.entries.len() == self.clients_max {
            let (&oldest, _) = self
                .entries
                .iter()
                .min_by_key(|(_, session)| session.op)
                .expect("table is full");
            self.entries.remove(&oldest);
            evicted = Some(oldest);
        }
        self.entries.insert(
            client,
            Session {
                session: op,
                request: 0,
                op,
                reply: Vec::new(),
            },
        );
        assert!(self.entries.len() <= self.clients_max);
        evicted
    }

    /// Record the reply to the next request of `client`.
    pub fn record(&mut self, client: u128, request: u64, op: u64, reply: Vec<u8>) {
        let session = self.entries.get_mut(&client).expect("session exists");
        assert_eq!(session.request + 1, request);
        assert!(session.op < op);
        assert!(reply.len() <= reply_bytes_max);
        session.request = request;
        session.op = op;
        session.reply = reply;
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        writer.u32(self.entries.len() as u32);
        for (client, session) in &self.entries {
            writer.u128(*client);
            writer.u64(session.session);
            writer.u64(session.request);
            writer.u64(session.op);
            writer.blob(&session.reply);
        }
    }

    pub(crate) fn decode(
        reader: &mut Reader<'_>,
        clients_max: usize,
    ) -> Result<ClientSessions, DecodeError> {
        let count = reader.count(clients_max as u64)?;
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let client = reader.u128()?;
            let session = Session {
                session: reader.u64()?,
                request: reader.u64()?,
                op: reader.u64()?,
                reply: reader.blob(reply_bytes_max)?,
            };
            entries.insert(client, session);
        }
        Ok(ClientSessions {
            clients_max,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_is_least_recently_committed() {
        let mut sessions = ClientSessions::new(2);
        assert_eq!(sessions.register(10, 1), None);
        assert_eq!(sessions.register(20, 2), None);
        sessions.record(10, 1, 3, b"a".to_vec());
        // Client 20 committed last at op 2, client 10 at op 3: 20 goes.
        assert_eq!(sessions.register(30, 4), Some(20));
        assert!(sessions.get(20).is_none());
        assert_eq!(sessions.get(10).map(|s| s.request), Some(1));
        let mut writer = Writer::default();
        sessions.encode(&mut writer);
        let decoded = ClientSessions::decode(&mut Reader::new(&writer.bytes), 2).unwrap();
        assert_eq!(decoded, sessions);
    }
}
