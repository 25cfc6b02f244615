//! A sans-IO client session: register, number requests, one in flight, retry until answered.
//!
//! The client sends to the replica it believes is primary; when a request times out it resends
//! to every replica (only the primary answers; a retried request that already committed is
//! answered from the reply cache, so it executes exactly once). Replies update its view.

use crate::message::{Message, Operation};

/// Ticks before the first resend; doubled per attempt up to `client_request_timeout_ticks_max`.
pub const client_request_timeout_ticks_min: u64 = 40;
pub const client_request_timeout_ticks_max: u64 = 640;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Registered {
        session: u64,
    },
    Reply {
        request: u64,
        op: u64,
        body: Vec<u8>,
    },
    /// The cluster dropped this session; the outcome of the request in flight is unknown. Use a
    /// new client id to continue.
    Evicted,
}

#[derive(Debug, Clone)]
struct Inflight {
    request: u64,
    operation: Operation,
    body: Vec<u8>,
    deadline_tick: u64,
    timeout_ticks: u64,
}

#[derive(Debug, Clone)]
pub struct Client {
    id: u128,
    replica_count: u8,
    view: u64,
    request_next: u64,
    registered: bool,
    evicted: bool,
    inflight: Option<Inflight>,
    ticks: u64,
}

impl Client {
    pub fn new(id: u128, replica_count: u8) -> Client {
        assert!(id != 0);
        assert!(replica_count > 0);
        Client {
            id,
            replica_count,
            view: 0,
            request_next: 0,
            registered: false,
            evicted: false,
            inflight: None,
            ticks: 0,
        }
    }

    pub fn id(&self) -> u128 {
        self.id
    }
    pub fn registered(&self) -> bool {
        self.registered
    }
    pub fn evicted(&self) -> bool {
        self.evicted
    }
    /// The request in flight: (request number, operation).
    pub fn inflight(&self) -> Option<(u64, Operation)> {
        self.inflight
            .as_ref()
            .map(|inflight| (inflight.request, inflight.operation))
    }
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Open the session (request 0). Returns the messages to send.
    pub fn register(&mut self) -> Vec<(u8, Message)> {
        assert!(!self.registered && self.inflight.is_none() && !self.evicted);
        self.start(Operation::Register, Vec::new())
    }

    /// Submit a command; returns its request number and the messages to send.
    pub fn request(&mut self, body: Vec<u8>) -> (u64, Vec<(u8, Message)>) {
        assert!(self.registered && self.inflight.is_none() && !self.evicted);
        let sends = self.start(Operation::Command, body);
        (self.request_next - 1, sends)
    }

    fn start(&mut self, operation: Operation, body: Vec<u8>) -> Vec<(u8, Message)> {
        let request = self.request_next;
        self.request_next += 1;
        let inflight = Inflight {
            request,
            operation,
            body,
            deadline_tick: self.ticks + client_request_timeout_ticks_min,
            timeout_ticks: client_request_timeout_ticks_min,
        };
        let primary = (self.view % self.replica_count as u64) as u8;
        let message = Message::Request {
            client: self.id,
            request,
            operation,
            body: inflight.body.clone(),
        };
        self.inflight = Some(inflight);
        vec![(primary, message)]
    }

    pub fn on_tick(&mut self) -> Vec<(u8, Message)> {
        self.ticks += 1;
        let Some(inflight) = self.inflight.as_mut() else {
            return Vec::new();
        };
        if self.ticks < inflight.deadline_tick {
            return Vec::new();
        }
        inflight.timeout_ticks = (inflight.timeout_ticks * 2).min(client_request_timeout_ticks_max);
        inflight.deadline_tick = self.ticks + inflight.timeout_ticks;
        let message = Message::Request {
            client: self.id,
            request: inflight.request,
            operation: inflight.operation,
            body: inflight.body.clone(),
        };
        (0..self.replica_count)
            .map(|replica| (replica, message.clone()))
            .collect()
    }

    pub fn on_message(&mut self, message: Message) -> Option<ClientEvent> {
        match message {
            Message::Reply {
                client,
                request,
                op,
                view,
                body,
                ..
            } if client == self.id => {
                let inflight = self.inflight.as_ref()?;
                if inflight.request != request {
                    return None;
                }
                self.view = self.view.max(view);
                let operation = inflight.operation;
                self.inflight = None;
                match operation {
                    Operation::Register => {
                        self.registered = true;
                        Some(ClientEvent::Registered { session: op })
                    }
                    _ => Some(ClientEvent::Reply { request, op, body }),
                }
            }
            Message::Eviction { client, view, .. } if client == self.id => {
                self.inflight.as_ref()?;
                self.view = self.view.max(view);
                self.inflight = None;
                self.evicted = true;
                Some(ClientEvent::Evicted)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_retries_to_all_and_accepts_only_its_reply() {
        let mut client = Client::new(7, 3);
        let sends = client.register();
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].0, 0, "first guess: primary of view 0");
        // Nothing for a while, then a resend to every replica.
        let mut resent = Vec::new();
        for _ in 0..client_request_timeout_ticks_min {
            resent = client.on_tick();
        }
        assert_eq!(
            resent
                .iter()
                .map(|(replica, _)| *replica)
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let other = Message::Reply {
            client: 8,
            request: 0,
            op: 1,
            view: 4,
            replica: 1,
            body: vec![],
        };
        assert_eq!(client.on_message(other), None);
        let reply = Message::Reply {
            client: 7,
            request: 0,
            op: 1,
            view: 4,
            replica: 1,
            body: vec![],
        };
        assert_eq!(
            client.on_message(reply.clone()),
            Some(ClientEvent::Registered { session: 1 })
        );
        assert_eq!(
            client.on_message(reply),
            None,
            "a duplicate reply is ignored"
        );
        let (request, sends) = client.request(vec![9]);
        assert_eq!(request, 1);
        assert_eq!(
            sends[0].0, 1,
            "the view learned from the reply names the primary"
        );
        let eviction = Message::Eviction {
            client: 7,
            view: 4,
            replica: 1,
        };
        assert_eq!(client.on_message(eviction), Some(ClientEvent::Evicted));
        assert!(client.evicted() && !client.busy());
    }
}
