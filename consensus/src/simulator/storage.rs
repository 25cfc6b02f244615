//! Simulated storage with faults, implementing [`Storage`].
//!
//! - Torn writes: `arm_crash(n)` makes the n-th next write land partially and every later write
//!   of the same step vanish on the durable image (the process died mid-step). Later reads in
//!   the dying step still see the writes, as a page cache would.
//! - Corruption at rest and misdirected writes, only on replicas the fault model marks faulty,
//!   and never on both halves (prepare and redundant header) of one journal slot, nor on more
//!   than one superblock copy: faults the protocol must tolerate, not ones nobody could.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::simulator::prng::Prng;
use crate::storage::{Location, Storage};

#[derive(Debug)]
pub struct SimStorage {
    durable: BTreeMap<Location, Vec<u8>>,
    overlay: BTreeMap<Location, Vec<u8>>,
    crash_after_writes: Option<u32>,
    crashed: bool,
    faulty: BTreeSet<Location>,
    /// Per-write chance (ppm) of misdirecting a journal write; 0 on healthy replicas.
    pub misdirect_ppm: u64,
    journal_slots: u64,
    prng: Prng,
    pub writes: u64,
    /// Set at the crash point, shared with the state machine so that work done after the
    /// process "died" (the replica does not know) is not mistaken for real work.
    pub crash_flag: Rc<Cell<bool>>,
}

fn pair(location: Location) -> Option<Location> {
    match location {
        Location::JournalHeader { slot } => Some(Location::JournalPrepare { slot }),
        Location::JournalPrepare { slot } => Some(Location::JournalHeader { slot }),
        _ => None,
    }
}

impl SimStorage {
    pub fn new(journal_slots: u64, prng: Prng) -> SimStorage {
        SimStorage {
            durable: BTreeMap::new(),
            overlay: BTreeMap::new(),
            crash_after_writes: None,
            crashed: false,
            faulty: BTreeSet::new(),
            misdirect_ppm: 0,
            journal_slots,
            prng,
            writes: 0,
            crash_flag: Rc::new(Cell::new(false)),
        }
    }

    /// Die during the `writes`-th next write (1 = the next one).
    pub fn arm_crash(&mut self, writes: u32) {
        assert!(writes >= 1);
        self.crash_after_writes = Some(writes);
    }

    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// After the crash: the page cache is gone, only the durable image remains.
    pub fn reset_after_crash(&mut self) {
        self.overlay.clear();
        self.crashed = false;
        self.crash_flag.set(false);
        self.crash_after_writes = None;
    }

    pub fn disarm(&mut self) {
        self.crash_after_writes = None;
    }

    fn fault_allowed(&self, location: Location) -> bool {
        match location {
            Location::Superblock { .. } => !self
                .faulty
                .iter()
                .any(|l| matches!(l, Location::Superblock { .. })),
            Location::Snapshot { .. } => !self
                .faulty
                .iter()
                .any(|l| matches!(l, Location::Snapshot { .. })),
            _ => {
                !self.faulty.contains(&location)
                    && pair(location).is_none_or(|p| !self.faulty.contains(&p))
            }
        }
    }

    /// Flip a byte of a random journal record or superblock copy (bit rot).
    pub fn corrupt_at_rest(&mut self) -> Option<Location> {
        let location = match self.prng.below(20) {
            19 => Location::Snapshot {
                area: self.prng.below(2) as u8,
            },
            0 | 10 => Location::Superblock {
                copy: self.prng.below(crate::constants::superblock_copies as u64) as u8,
            },
            1..=4 | 11..=14 => Location::JournalHeader {
                slot: self.prng.below(self.journal_slots) as u32,
            },
            _ => Location::JournalPrepare {
                slot: self.prng.below(self.journal_slots) as u32,
            },
        };
        if !self.fault_allowed(location) {
            return None;
        }
        let bytes = self.durable.get_mut(&location)?;
        if bytes.is_empty() {
            return None;
        }
        let index = self.prng.below(bytes.len() as u64) as usize;
        bytes[index] ^= 1 << self.prng.below(8);
        self.faulty.insert(location);
        Some(location)
    }
}

impl Storage for SimStorage {
    fn read(&mut self, location: Location) -> Vec<u8> {
        if let Some(bytes) = self.overlay.get(&location) {
            return bytes.clone();
        }
        self.durable.get(&location).cloned().unwrap_or_default()
    }

    fn write(&mut self, location: Location, bytes: &[u8]) {
        self.writes += 1;
        if self.crashed {
            self.overlay.insert(location, bytes.to_vec());
            return;
        }
        if let Some(remaining) = self.crash_after_writes {
            if remaining <= 1 {
                // Torn: a prefix of the new bytes over the old ones.
                let mut torn = self.durable.get(&location).cloned().unwrap_or_default();
                let cut = self.prng.below(bytes.len().max(1) as u64) as usize;
                if torn.len() < bytes.len() {
                    torn.resize(bytes.len(), 0);
                }
                torn[..cut].copy_from_slice(&bytes[..cut]);
                if cut == 0 && !torn.is_empty() {
                    torn[0] ^= 0xff;
                }
                self.durable.insert(location, torn);
                self.crashed = true;
                self.crash_flag.set(true);
                self.overlay.insert(location, bytes.to_vec());
                return;
            }
            self.crash_after_writes = Some(remaining - 1);
        }
        if self.misdirect_ppm > 0
            && pair(location).is_some()
            && self.prng.chance(self.misdirect_ppm)
        {
            let slot = self.prng.below(self.journal_slots) as u32;
            let target = match location {
                Location::JournalHeader { .. } => Location::JournalHeader { slot },
                _ => Location::JournalPrepare { slot },
            };
            if target != location && self.fault_allowed(location) && self.fault_allowed(target) {
                // The write lands on the wrong slot; the intended one keeps its old bytes.
                self.durable.insert(target, bytes.to_vec());
                self.faulty.insert(target);
                self.faulty.insert(location);
                return;
            }
        }
        self.durable.insert(location, bytes.to_vec());
        self.faulty.remove(&location);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_tears_one_write_and_loses_the_rest_of_the_step() {
        let mut storage = SimStorage::new(8, Prng::new(1));
        let a = Location::JournalPrepare { slot: 1 };
        let b = Location::JournalHeader { slot: 1 };
        storage.write(a, &[1; 64]);
        storage.arm_crash(1);
        storage.write(a, &[2; 64]);
        storage.write(b, &[3; 8]);
        assert!(storage.crashed() && storage.crash_flag.get());
        // The dying process still reads what it wrote (page cache)...
        assert_eq!(storage.read(a), vec![2; 64]);
        storage.reset_after_crash();
        // ...but after the crash the first write is torn and the second never happened.
        let torn = storage.read(a);
        assert_ne!(torn, vec![2; 64]);
        assert_ne!(torn, vec![1; 64]);
        assert!(storage.read(b).is_empty());
    }

    #[test]
    fn never_corrupts_both_halves_of_a_slot() {
        let mut storage = SimStorage::new(2, Prng::new(3));
        for slot in 0..2 {
            storage.write(Location::JournalPrepare { slot }, &[1; 32]);
            storage.write(Location::JournalHeader { slot }, &[2; 32]);
        }
        for _ in 0..1000 {
            storage.corrupt_at_rest();
        }
        for slot in 0..2 {
            let prepare = storage.faulty.contains(&Location::JournalPrepare { slot });
            let header = storage.faulty.contains(&Location::JournalHeader { slot });
            assert!(!(prepare && header), "slot {slot} lost both halves");
        }
    }
}
