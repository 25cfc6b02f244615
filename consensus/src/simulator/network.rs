//! Simulated network: seeded delay (hence reordering), loss, duplication, corruption, and
//! symmetric or one-way partitions between replicas.

use std::collections::BTreeMap;

use crate::simulator::prng::Prng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Replica(u8),
    Client(u32),
}

#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub delay_min_ticks: u64,
    pub delay_max_ticks: u64,
    pub loss_ppm: u64,
    pub duplicate_ppm: u64,
    pub corrupt_ppm: u64,
}

#[derive(Debug)]
pub struct Packet {
    pub from: Node,
    pub to: Node,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
pub struct Network {
    pub options: NetworkOptions,
    queue: BTreeMap<(u64, u64), Packet>,
    sequence: u64,
    /// `blocked[a][b]`: packets from replica a to replica b are dropped.
    pub blocked: [[bool; 6]; 6],
    prng: Prng,
    pub packets_sent: u64,
}

impl Network {
    pub fn new(options: NetworkOptions, prng: Prng) -> Network {
        assert!(options.delay_min_ticks >= 1 && options.delay_min_ticks <= options.delay_max_ticks);
        Network {
            options,
            queue: BTreeMap::new(),
            sequence: 0,
            blocked: [[false; 6]; 6],
            prng,
            packets_sent: 0,
        }
    }

    pub fn send(&mut self, from: Node, to: Node, mut bytes: Vec<u8>, now_tick: u64) {
        self.packets_sent += 1;
        if let (Node::Replica(a), Node::Replica(b)) = (from, to)
            && self.blocked[a as usize][b as usize]
        {
            return;
        }
        if self.prng.chance(self.options.loss_ppm) {
            return;
        }
        if self.prng.chance(self.options.corrupt_ppm) && !bytes.is_empty() {
            let index = self.prng.below(bytes.len() as u64) as usize;
            bytes[index] ^= 1 << self.prng.below(8);
        }
        let copies = if self.prng.chance(self.options.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay();
            self.sequence += 1;
            self.queue.insert(
                (now_tick + delay, self.sequence),
                Packet {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn delay(&mut self) -> u64 {
        // Mostly short, sometimes long: squaring a uniform draw skews towards the minimum.
        let span = self.options.delay_max_ticks - self.options.delay_min_ticks;
        let draw = self.prng.below(span + 1);
        self.options.delay_min_ticks + draw * draw / (span.max(1))
    }

    /// Packets due at `tick`, in a deterministic order.
    pub fn deliver(&mut self, tick: u64) -> Vec<Packet> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > tick {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    pub fn heal(&mut self) {
        self.blocked = [[false; 6]; 6];
    }
}
