//! The simulator's state machine: per-key append-only registers, and its command codec.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::checksum::checksum;
use crate::state_machine::StateMachine;

/// Commands the simulated clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Append { key: u64, value: u64 },
    Get { key: u64 },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(17);
        match self {
            Command::Append { key, value } => {
                bytes.push(1);
                bytes.extend_from_slice(&key.to_le_bytes());
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            Command::Get { key } => {
                bytes.push(2);
                bytes.extend_from_slice(&key.to_le_bytes());
                bytes.extend_from_slice(&0u64.to_le_bytes());
            }
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Command {
        assert_eq!(bytes.len(), 17, "simulator commands are 17 bytes");
        let key = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
        match bytes[0] {
            1 => Command::Append { key, value },
            2 => Command::Get { key },
            other => panic!("unknown simulator command {other}"),
        }
    }
}

/// One command the model executed (drained by the simulator's checkers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub op: u64,
    pub client: u128,
    pub request: u64,
    pub reply: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    registers: BTreeMap<u64, Vec<u64>>,
    pub executed: Vec<Executed>,
    /// Shared with the replica's simulated storage: set once the process has died mid-step.
    pub crash_flag: Rc<Cell<bool>>,
}

impl Model {
    pub fn new(crash_flag: Rc<Cell<bool>>) -> Model {
        Model {
            registers: BTreeMap::new(),
            executed: Vec::new(),
            crash_flag,
        }
    }
}

impl Model {
    /// Apply a command to plain registers: the reference the checkers replay.
    pub fn apply(registers: &mut BTreeMap<u64, Vec<u64>>, command: Command) -> Vec<u8> {
        let key = match command {
            Command::Append { key, value } => {
                registers.entry(key).or_default().push(value);
                key
            }
            Command::Get { key } => key,
        };
        let values = registers.get(&key).cloned().unwrap_or_default();
        let mut bytes = Vec::with_capacity(values.len() * 8);
        for value in &values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let mut reply = (values.len() as u64).to_le_bytes().to_vec();
        reply.extend_from_slice(&checksum(&bytes).to_le_bytes());
        reply
    }
}

impl StateMachine for Model {
    fn commit(
        &mut self,
        op: u64,
        _timestamp_ns: u64,
        client: u128,
        request: u64,
        command: &[u8],
    ) -> Vec<u8> {
        let reply = Model::apply(&mut self.registers, Command::decode(command));
        if !self.crash_flag.get() {
            self.executed.push(Executed {
                op,
                client,
                request,
                reply: reply.clone(),
            });
        }
        reply
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(self.registers.len() as u64).to_le_bytes());
        for (key, values) in &self.registers {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for value in values {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let mut words = snapshot
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        assert_eq!(snapshot.len() % 8, 0);
        let mut registers = BTreeMap::new();
        let count = words.next().expect("count");
        for _ in 0..count {
            let key = words.next().expect("key");
            let len = words.next().expect("len");
            let values: Vec<u64> = (0..len).map(|_| words.next().expect("value")).collect();
            registers.insert(key, values);
        }
        assert!(words.next().is_none());
        self.registers = registers;
    }
}
