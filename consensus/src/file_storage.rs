//! [`FileStorage`]: the node's [`Storage`], files in one directory, `pwrite` + `fdatasync`.
//!
//! # On disk
//!
//! ```text
//! DIR/lock                 held with an exclusive lock (flock) while a process uses DIR
//! DIR/superblock           superblock_copies slots of superblock_slot_bytes
//! DIR/journal_headers      journal_slots slots of journal_header_slot_bytes (one sector each)
//! DIR/journal_prepares     journal_slots slots of journal_prepare_slot_bytes (sparse)
//! DIR/snapshot_0, _1       the two snapshot areas: u64 length ‖ bytes
//! ```
//!
//! A record in a fixed slot is `u32 length (LE) ‖ bytes`, at the slot's start. Every slot starts
//! on a sector boundary and the header slots are one sector each, so a write torn by a power cut
//! damages only the slot being written, never a neighbour (the protocol tolerates one damaged
//! half of a journal slot and one damaged superblock copy, not collateral damage). The length
//! prefix is not checksummed here: every record the replica stores carries its own checksum, so
//! a torn length yields bytes that fail it, which the replica treats as a corrupt record (it
//! repairs it, never mistakes it for an absent one). A slot never written reads as empty.
//!
//! # Durability
//!
//! [`Storage::write`] returns only after `pwrite` and `fdatasync` of that file succeeded, so the
//! durable order of writes is the order of calls; nothing relies on the page cache writing back
//! in order. There is no `O_DIRECT`: it would need sector-aligned buffers for a gain in speed,
//! not in correctness. A failed write or sync aborts the process instead of returning (the
//! trait's contract): after a failed `fsync` Linux may drop the dirty pages and report success
//! on the next one, so retrying would acknowledge data that is not on disk. Restarting recovers
//! from the last durable state, and the cluster repairs the rest.
//!
//! Reads return what is stored, however damaged: a read error or a short file reads as zeros
//! (an empty or corrupt record) for the replica to detect and repair.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::constants::{message_bytes_max, snapshot_bytes_max, superblock_copies};
use crate::storage::{Location, Storage};

/// Unit of atomicity we assume of the device: slots start on it, headers fill one.
pub const sector_bytes: u64 = 4096;
/// One superblock copy. The encoded superblock holds at most `pipeline_prepares_max + 2`
/// headers (about 1.6 KiB); the rest is headroom for format changes.
pub const superblock_slot_bytes: u64 = 2 * sector_bytes;
/// One redundant header record (147 bytes today) with its length prefix.
pub const journal_header_slot_bytes: u64 = sector_bytes;
/// One prepare record (at most one message) with its length prefix, rounded to sectors.
pub const journal_prepare_slot_bytes: u64 =
    (record_prefix_bytes + message_bytes_max as u64).div_ceil(sector_bytes) * sector_bytes;
/// Snapshot files start with the u64 length of the snapshot.
const snapshot_prefix_bytes: u64 = 8;
const record_prefix_bytes: u64 = 4;

const lock_file: &str = "lock";
const superblock_file: &str = "superblock";
const journal_headers_file: &str = "journal_headers";
const journal_prepares_file: &str = "journal_prepares";
const snapshot_files: [&str; 2] = ["snapshot_0", "snapshot_1"];

/// Why a data directory cannot be used. Operating errors: each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FileStorageError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "data directory {0} is in use by another process (its `lock` file is locked): stop that \
         replica first, or use another directory"
    )]
    Locked(PathBuf),
    #[error(
        "data directory {0} already holds replica files: open it instead of creating it, or move \
         it away if its disk is to be treated as lost"
    )]
    AlreadyExists(PathBuf),
    #[error(
        "data directory {0} holds no replica files (missing {1}): create (format) a new replica, \
         or recover one whose disk was lost"
    )]
    Missing(PathBuf, &'static str),
    #[error(
        "{path} is {actual_bytes} bytes, larger than the {expected_bytes} bytes of the layout for \
         journal_slots = {journal_slots}: the directory was written with another configuration"
    )]
    Layout {
        path: PathBuf,
        actual_bytes: u64,
        expected_bytes: u64,
        journal_slots: u64,
    },
}

/// The replica's durable state in files. See the module docs.
#[derive(Debug)]
pub struct FileStorage {
    directory: PathBuf,
    journal_slots: u64,
    superblock: File,
    journal_headers: File,
    journal_prepares: File,
    snapshots: [File; 2],
    /// Held for the lock's lifetime; closing it releases the lock.
    _lock: File,
}

/// Which file a location lives in, where its slot starts and how many bytes it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Superblock,
    JournalHeaders,
    JournalPrepares,
    Snapshot(usize),
}

impl FileStorage {
    /// Create the files of a new replica in `directory` (created if absent). Refuses a
    /// directory that already holds replica files: a replica is formatted once.
    pub fn create(directory: &Path, journal_slots: u64) -> Result<FileStorage, FileStorageError> {
        std::fs::create_dir_all(directory).map_err(|source| FileStorageError::Io {
            action: "create directory",
            path: directory.to_path_buf(),
            source,
        })?;
        let lock = lock_directory(directory)?;
        if FileStorage::exists(directory) {
            return Err(FileStorageError::AlreadyExists(directory.to_path_buf()));
        }
        for (name, bytes) in layout(journal_slots) {
            let path = directory.join(name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|source| io_error("create", &path, source))?;
            // Sparse: only written slots take space. Sizing now makes a layout mismatch visible
            // on open and keeps `fdatasync` of later writes from having to grow the file.
            file.set_len(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|source| io_error("size", &path, source))?;
        }
        // The new directory entries must be durable before anything depends on the files.
        sync_directory(directory)?;
        FileStorage::open_locked(directory, journal_slots, lock)
    }

    /// Open the files of an existing replica. A file shorter than the layout (truncated by a
    /// fault) is accepted: its missing slots read as corrupt records that the replica repairs.
    pub fn open(directory: &Path, journal_slots: u64) -> Result<FileStorage, FileStorageError> {
        let lock = lock_directory(directory)?;
        FileStorage::open_locked(directory, journal_slots, lock)
    }

    /// Whether `directory` holds any replica file.
    pub fn exists(directory: &Path) -> bool {
        layout(1)
            .iter()
            .any(|(name, _)| directory.join(name).exists())
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn open_locked(
        directory: &Path,
        journal_slots: u64,
        lock: File,
    ) -> Result<FileStorage, FileStorageError> {
        assert!(journal_slots > 0 && journal_slots <= u32::MAX as u64);
        let mut files = Vec::new();
        for (name, expected_bytes) in layout(journal_slots) {
            let path = directory.join(name);
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(FileStorageError::Missing(directory.to_path_buf(), name));
                }
                Err(source) => return Err(io_error("open", &path, source)),
            };
            let actual_bytes = file
                .metadata()
                .map_err(|source| io_error("stat", &path, source))?
                .len();
            let snapshot = snapshot_files.contains(&name);
            if !snapshot && actual_bytes > expected_bytes {
                return Err(FileStorageError::Layout {
                    path,
                    actual_bytes,
                    expected_bytes,
                    journal_slots,
                });
            }
            if !snapshot && actual_bytes < expected_bytes {
                tracing::warn!(
                    path = %path.display(),
                    actual_bytes,
                    expected_bytes,
                    "file is shorter than its layout (truncated?): its missing slots read as \
                     corrupt and will be repaired from the cluster"
                );
            }
            files.push(file);
        }
        let mut files = files.into_iter();
        let mut next = || files.next().expect("one file per layout entry");
        Ok(FileStorage {
            directory: directory.to_path_buf(),
            journal_slots,
            superblock: next(),
            journal_headers: next(),
            journal_prepares: next(),
            snapshots: [next(), next()],
            _lock: lock,
        })
    }

    /// (zone, offset of the slot, bytes the record may take without its prefix).
    fn slot(&self, location: Location) -> (Zone, u64, u64) {
        match location {
            Location::Superblock { copy } => {
                assert!((copy as usize) < superblock_copies);
                (
                    Zone::Superblock,
                    copy as u64 * superblock_slot_bytes,
                    superblock_slot_bytes - record_prefix_bytes,
                )
            }
            Location::JournalHeader { slot } => {
                assert!((slot as u64) < self.journal_slots);
                (
                    Zone::JournalHeaders,
                    slot as u64 * journal_header_slot_bytes,
                    journal_header_slot_bytes - record_prefix_bytes,
                )
            }
            Location::JournalPrepare { slot } => {
                assert!((slot as u64) < self.journal_slots);
                (
                    Zone::JournalPrepares,
                    slot as u64 * journal_prepare_slot_bytes,
                    journal_prepare_slot_bytes - record_prefix_bytes,
                )
            }
            Location::Snapshot { area } => {
                assert!(area < 2);
                (Zone::Snapshot(area as usize), 0, snapshot_bytes_max)
            }
        }
    }

    fn file(&self, zone: Zone) -> (&File, &'static str) {
        match zone {
            Zone::Superblock => (&self.superblock, superblock_file),
            Zone::JournalHeaders => (&self.journal_headers, journal_headers_file),
            Zone::JournalPrepares => (&self.journal_prepares, journal_prepares_file),
            Zone::Snapshot(area) => (&self.snapshots[area], snapshot_files[area]),
        }
    }

    /// The bytes `write` puts on disk for a record: the prefix, then the record.
    fn framed(zone: Zone, bytes: &[u8]) -> Vec<u8> {
        let mut framed = Vec::with_capacity(bytes.len() + 8);
        match zone {
            Zone::Snapshot(_) => framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes()),
            _ => framed.extend_from_slice(&(bytes.len() as u32).to_le_bytes()),
        }
        framed.extend_from_slice(bytes);
        framed
    }

    /// Read `count` bytes at `offset`; a read error or the end of the file reads as zeros.
    fn read_at(&self, zone: Zone, offset: u64, count: usize) -> Vec<u8> {
        let (file, name) = self.file(zone);
        let mut buffer = vec![0u8; count];
        let mut done = 0;
        while done < count {
            match file.read_at(&mut buffer[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(read) => done += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // A latent sector error is corruption like any other: the replica repairs
                    // it from its peers. Dying here would turn one bad sector into an outage.
                    tracing::error!(
                        file = %self.directory.join(name).display(),
                        offset,
                        %error,
                        "read failed; the record reads as corrupt"
                    );
                    buffer[done..].fill(0);
                    break;
                }
            }
        }
        buffer
    }

    /// Write bytes and make them durable, or abort the process. `length` truncates the file
    /// (snapshots: the tail of a longer, older snapshot goes) in the same sync.
    fn write_durable(&self, zone: Zone, offset: u64, bytes: &[u8], length: Option<u64>) {
        let (file, name) = self.file(zone);
        if let Err(error) = file.write_all_at(bytes, offset) {
            self.fatal("write", name, &error);
        }
        if let Some(length) = length
            && let Err(error) = file.set_len(length)
        {
            self.fatal("truncate", name, &error);
        }
        if let Err(error) = file.sync_data() {
            self.fatal("fdatasync", name, &error);
        }
    }

    fn fatal(&self, action: &str, name: &str, error: &io::Error) -> ! {
        let path = self.directory.join(name);
        tracing::error!(path = %path.display(), %error, "{action} failed: aborting the replica");
        eprintln!(
            "kimberlite replica: {action} of {} failed: {error}. A replica that cannot persist \
             must not acknowledge anything: aborting. Fix the disk (space, permissions, \
             hardware) and restart; the replica recovers from its last durable state.",
            path.display()
        );
        std::process::abort()
    }

    /// Test support: leave on disk only the first `cut` bytes of what `write` would store, as a
    /// power cut in the middle of the write would, without the sync.
    #[cfg(test)]
    pub(crate) fn write_torn(&self, location: Location, bytes: &[u8], cut: usize) {
        let (zone, offset, _) = self.slot(location);
        let framed = FileStorage::framed(zone, bytes);
        let cut = cut.min(framed.len());
        let (file, _) = self.file(zone);
        file.write_all_at(&framed[..cut], offset)
            .expect("test write");
    }

    /// Test support: the file and byte offset where `location`'s record starts.
    #[cfg(test)]
    pub(crate) fn region(&self, location: Location) -> (PathBuf, u64) {
        let (zone, offset, _) = self.slot(location);
        (self.directory.join(self.file(zone).1), offset)
    }
}

impl Storage for FileStorage {
    fn read(&mut self, location: Location) -> Vec<u8> {
        let (zone, offset, capacity) = self.slot(location);
        if let Zone::Snapshot(_) = zone {
            let prefix = self.read_at(zone, 0, snapshot_prefix_bytes as usize);
            let length = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
            let (file, _) = self.file(zone);
            let stored = file
                .metadata()
                .map(|metadata| metadata.len().saturating_sub(snapshot_prefix_bytes))
                .unwrap_or(0);
            // A torn or rotten length must not make us allocate more than is there.
            let length = length.min(stored).min(snapshot_bytes_max);
            return self.read_at(zone, snapshot_prefix_bytes, length as usize);
        }
        let prefix = self.read_at(zone, offset, record_prefix_bytes as usize);
        let length = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as u64;
        // An impossible length is a torn or rotten prefix: hand back the whole slot, which
        // fails the record's checksum, rather than an empty read that would mean "never
        // written".
        let length = length.min(capacity);
        self.read_at(zone, offset + record_prefix_bytes, length as usize)
    }

    fn write(&mut self, location: Location, bytes: &[u8]) {
        let (zone, offset, capacity) = self.slot(location);
        // The replica bounds every record; a larger one would overwrite the next slot.
        assert!(
            bytes.len() as u64 <= capacity,
            "{location:?}: record of {} bytes exceeds its slot of {capacity} bytes",
            bytes.len()
        );
        let framed = FileStorage::framed(zone, bytes);
        let length = match zone {
            Zone::Snapshot(_) => Some(framed.len() as u64),
            _ => None,
        };
        self.write_durable(zone, offset, &framed, length);
    }
}

/// Every file of the layout with its size (snapshots start empty).
fn layout(journal_slots: u64) -> [(&'static str, u64); 5] {
    [
        (
            superblock_file,
            superblock_copies as u64 * superblock_slot_bytes,
        ),
        (
            journal_headers_file,
            journal_slots * journal_header_slot_bytes,
        ),
        (
            journal_prepares_file,
            journal_slots * journal_prepare_slot_bytes,
        ),
        (snapshot_files[0], 0),
        (snapshot_files[1], 0),
    ]
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> FileStorageError {
    FileStorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn lock_directory(directory: &Path) -> Result<File, FileStorageError> {
    let path = directory.join(lock_file);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| io_error("open", &path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(FileStorageError::Locked(directory.to_path_buf()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(io_error("lock", &path, source)),
    }
}

fn sync_directory(directory: &Path) -> Result<(), FileStorageError> {
    File::open(directory)
        .and_then(|file| file.sync_all())
        .map_err(|source| io_error("sync directory", directory, source))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::Instant;
    use crate::constants::tick_ns;
    use crate::message::{Message, Operation};
    use crate::replica::{Config, OpenError, Replica, Status};
    use crate::simulator::prng::Prng;
    use crate::state_machine::StateMachine;

    /// Committed commands in order: (op, client, request, command). Reply: the op.
    #[derive(Debug, Default)]
    struct History {
        entries: Vec<(u64, u128, u64, Vec<u8>)>,
    }

    impl StateMachine for History {
        fn commit(
            &mut self,
            op: u64,
            _: u64,
            client: u128,
            request: u64,
            command: &[u8],
        ) -> Vec<u8> {
            self.entries.push((op, client, request, command.to_vec()));
            op.to_le_bytes().to_vec()
        }
        fn snapshot(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            for (op, client, request, command) in &self.entries {
                bytes.extend_from_slice(&op.to_le_bytes());
                bytes.extend_from_slice(&client.to_le_bytes());
                bytes.extend_from_slice(&request.to_le_bytes());
                bytes.extend_from_slice(&(command.len() as u32).to_le_bytes());
                bytes.extend_from_slice(command);
            }
            bytes
        }
        fn restore(&mut self, snapshot: &[u8]) {
            self.entries.clear();
            let mut rest = snapshot;
            let mut take = |count: usize| {
                let (head, tail) = rest.split_at(count);
                rest = tail;
                head
            };
            let mut remaining = snapshot.len();
            while remaining > 0 {
                let op = u64::from_le_bytes(take(8).try_into().unwrap());
                let client = u128::from_le_bytes(take(16).try_into().unwrap());
                let request = u64::from_le_bytes(take(8).try_into().unwrap());
                let length = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
                let command = take(length).to_vec();
                remaining -= 36 + length;
                self.entries.push((op, client, request, command));
            }
        }
    }

    /// A [`FileStorage`] that dies during its N-th write: that write lands torn on disk (a
    /// random prefix, without the sync) and later writes of the dying process never reach the
    /// disk, while the dying process still reads them back, as it would from the page cache.
    #[derive(Debug)]
    struct Crashing {
        inner: FileStorage,
        writes_left: u32,
        crashed: bool,
        overlay: BTreeMap<Location, Vec<u8>>,
        prng: Prng,
    }

    impl Storage for Crashing {
        fn read(&mut self, location: Location) -> Vec<u8> {
            match self.overlay.get(&location) {
                Some(bytes) => bytes.clone(),
                None => self.inner.read(location),
            }
        }
        fn write(&mut self, location: Location, bytes: &[u8]) {
            if !self.crashed {
                self.writes_left -= 1;
                if self.writes_left > 0 {
                    return self.inner.write(location, bytes);
                }
                let framed_bytes = bytes.len() as u64 + record_prefix_bytes;
                let cut = self.prng.below(framed_bytes) as usize;
                self.inner.write_torn(location, bytes, cut);
                self.crashed = true;
            }
            self.overlay.insert(location, bytes.to_vec());
        }
    }

    const client_id: u128 = 7;

    fn config() -> Config {
        let mut config = Config::new(0xc0ffee, 1, 0);
        config.journal_slots = 16;
        config.checkpoint_interval_ops = 4;
        config.pipeline_prepares_max = 2;
        config
    }

    fn instant(ticks: u64) -> Instant {
        Instant {
            monotonic_ns: ticks * tick_ns,
            realtime_ns: 1_700_000_000_000_000_000 + ticks * tick_ns,
        }
    }

    /// Tick a single replica until it is primary in normal status (a restart starts a view
    /// change); `false` if its storage died on the way.
    fn until_normal(replica: &mut Replica<Crashing, History>, ticks: &mut u64) -> bool {
        for _ in 0..100 {
            if replica.storage().crashed {
                return false;
            }
            if replica.status() == Status::Normal && replica.is_primary() {
                return true;
            }
            *ticks += 1;
            replica.on_tick(instant(*ticks));
        }
        panic!("a single replica did not become primary in 100 ticks");
    }

    /// Send one request; the reply's op, or `None` if the storage died during the call.
    fn request(
        replica: &mut Replica<Crashing, History>,
        ticks: u64,
        request: u64,
        operation: Operation,
        body: Vec<u8>,
    ) -> Option<u64> {
        let message = Message::Request {
            client: client_id,
            request,
            operation,
            body,
        };
        let actions = replica.on_message(instant(ticks), message);
        if replica.storage().crashed {
            return None;
        }
        let reply = actions.into_iter().find_map(|action| match action {
            crate::Action::SendToClient {
                message: Message::Reply { request: r, op, .. },
                ..
            } if r == request => Some(op),
            _ => None,
        });
        Some(reply.expect("a single healthy replica answers at once"))
    }

    #[test]
    fn records_round_trip_against_a_model_and_survive_reopen() {
        let directory = tempfile::tempdir().unwrap();
        let slots = 4;
        let mut storage = FileStorage::create(directory.path(), slots).unwrap();
        let mut prng = Prng::new(11);
        let mut model: BTreeMap<Location, Vec<u8>> = BTreeMap::new();
        let mut write = |storage: &mut FileStorage, location: Location, bytes: Vec<u8>| {
            storage.write(location, &bytes);
            // Paired check: what was just made durable reads back as written.
            assert_eq!(storage.read(location), bytes, "{location:?}");
            model.insert(location, bytes);
        };
        // The largest record each slot kind accepts, then shorter records over longer ones.
        let full_prepare = (0..journal_prepare_slot_bytes - record_prefix_bytes)
            .map(|index| index as u8)
            .collect();
        write(
            &mut storage,
            Location::JournalPrepare { slot: 3 },
            full_prepare,
        );
        let full_header = vec![0xab; (journal_header_slot_bytes - record_prefix_bytes) as usize];
        write(
            &mut storage,
            Location::JournalHeader { slot: 3 },
            full_header,
        );
        for _ in 0..40 {
            let (location, bytes_max) = match prng.below(4) {
                0 => (
                    Location::Superblock {
                        copy: prng.below(superblock_copies as u64) as u8,
                    },
                    superblock_slot_bytes - record_prefix_bytes,
                ),
                1 => (
                    Location::JournalHeader {
                        slot: prng.below(slots) as u32,
                    },
                    journal_header_slot_bytes - record_prefix_bytes,
                ),
                2 => (
                    Location::JournalPrepare {
                        slot: prng.below(slots) as u32,
                    },
                    100_000,
                ),
                _ => (
                    Location::Snapshot {
                        area: prng.below(2) as u8,
                    },
                    200_000,
                ),
            };
            let length = prng.below(bytes_max + 1) as usize;
            let bytes = (0..length).map(|_| prng.below(256) as u8).collect();
            write(&mut storage, location, bytes);
        }
        drop(storage);
        let mut storage = FileStorage::open(directory.path(), slots).unwrap();
        for copy in 0..superblock_copies as u8 {
            let location = Location::Superblock { copy };
            let expected = model.get(&location).cloned().unwrap_or_default();
            assert_eq!(storage.read(location), expected, "{location:?}");
        }
        for slot in 0..slots as u32 {
            for location in [
                Location::JournalHeader { slot },
                Location::JournalPrepare { slot },
            ] {
                let expected = model.get(&location).cloned().unwrap_or_default();
                assert_eq!(storage.read(location), expected, "{location:?}");
            }
        }
        for area in 0..2 {
            let location = Location::Snapshot { area };
            let expected = model.get(&location).cloned().unwrap_or_default();
            assert_eq!(storage.read(location), expected, "{location:?}");
        }
    }

    #[test]
    fn directories_in_use_existing_missing_or_of_another_layout_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("replica");
        let storage = FileStorage::create(&path, 8).unwrap();
        let error = FileStorage::open(&path, 8).unwrap_err();
        assert!(matches!(error, FileStorageError::Locked(_)), "{error}");
        assert!(error.to_string().contains("stop that replica first"));
        drop(storage);
        let error = FileStorage::create(&path, 8).unwrap_err();
        assert!(
            matches!(error, FileStorageError::AlreadyExists(_)),
            "{error}"
        );
        let error = FileStorage::open(&path, 4).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("journal_headers is 32768 bytes, larger than the 16384 bytes"),
            "{error}"
        );
        let empty = directory.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let error = FileStorage::open(&empty, 8).unwrap_err();
        assert!(matches!(error, FileStorageError::Missing(..)), "{error}");
        assert!(FileStorage::open(&path, 8).is_ok());
    }

    #[test]
    fn a_torn_length_prefix_reads_as_a_corrupt_record_not_an_absent_one() {
        let directory = tempfile::tempdir().unwrap();
        let mut storage = FileStorage::create(directory.path(), 2).unwrap();
        let location = Location::JournalHeader { slot: 1 };
        storage.write(location, &[1; 100]);
        // The high bytes of a new, impossible length land; the record is left as it was.
        storage.write_torn(location, &[2; 100], 0);
        let (path, offset) = storage.region(location);
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0xff; 4], offset).unwrap();
        let read = storage.read(location);
        assert_eq!(
            read.len() as u64,
            journal_header_slot_bytes - record_prefix_bytes,
            "the whole slot comes back, to fail the record's checksum"
        );
        assert_eq!(&read[..100], &[1; 100]);
    }

    /// The crash model of STYLE.md item 5 over the real files: a single replica (which has no
    /// peer to repair from, so the disk alone must be enough) commits requests while its storage
    /// dies in the middle of a write every few writes — prepares, redundant headers, superblock
    /// copies, snapshots, and writes made while recovering from the previous crash. After each
    /// restart every acknowledged request must still be committed at its op, and the request in
    /// flight at the crash, resubmitted with the same number, must execute exactly once.
    #[test]
    fn a_single_replica_survives_torn_writes_at_every_kind_of_write() {
        let directory = tempfile::tempdir().unwrap();
        let config = config();
        let mut storage = FileStorage::create(directory.path(), config.journal_slots).unwrap();
        Replica::<FileStorage, History>::format(&config, &mut storage).unwrap();
        drop(storage);
        let mut prng = Prng::new(5);
        let mut ticks = 0;
        // op → (request, command) of every acknowledged request.
        let mut acknowledged: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
        let mut registered = false;
        let mut request_next = 1;
        let (mut crashes, mut crashes_while_opening) = (0, 0);
        for cycle in 0..30 {
            let storage = Crashing {
                inner: FileStorage::open(directory.path(), config.journal_slots).unwrap(),
                writes_left: prng.range(1, 24) as u32,
                crashed: false,
                overlay: BTreeMap::new(),
                prng: Prng::new(prng.next_u64()),
            };
            ticks += 1;
            let opened = Replica::open(
                config.clone(),
                storage,
                History::default(),
                instant(ticks),
                u128::from(cycle as u32),
            );
            let mut replica = match opened {
                Ok(replica) => replica,
                Err(error) => {
                    panic!("cycle {cycle}: a torn write made the replica unopenable: {error}")
                }
            };
            if !until_normal(&mut replica, &mut ticks) {
                crashes_while_opening += 1;
                continue;
            }
            assert_eq!(replica.commit_min(), replica.op(), "cycle {cycle}");
            let history = &replica.state_machine().entries;
            for (op, (request, command)) in &acknowledged {
                assert!(
                    history.contains(&(*op, client_id, *request, command.clone())),
                    "cycle {cycle}: acknowledged request {request} at op {op} was lost"
                );
            }
            let requests: Vec<u64> = history.iter().map(|entry| entry.2).collect();
            let expected: Vec<u64> = (1..=requests.len() as u64).collect();
            assert_eq!(
                requests, expected,
                "cycle {cycle}: each request exactly once, in order"
            );
            if !registered {
                match request(&mut replica, ticks, 0, Operation::Register, Vec::new()) {
                    Some(_) => registered = true,
                    None => {
                        crashes += 1;
                        continue;
                    }
                }
            }
            loop {
                // Resubmitting the request in flight at the last crash is safe: executed once.
                let command = format!("command {request_next}").into_bytes();
                let reply = request(
                    &mut replica,
                    ticks,
                    request_next,
                    Operation::Command,
                    command.clone(),
                );
                let Some(op) = reply else {
                    crashes += 1;
                    break;
                };
                acknowledged.insert(op, (request_next, command));
                request_next += 1;
            }
        }
        assert!(
            crashes >= 10 && crashes_while_opening >= 5,
            "only {crashes} crashes while serving and {crashes_while_opening} while restarting"
        );
        assert!(
            acknowledged.len() >= 30,
            "only {} requests were acknowledged",
            acknowledged.len()
        );
        // Past several checkpoints: snapshot and superblock writes were torn too.
        assert!(
            *acknowledged.keys().last().unwrap() > 4 * config.checkpoint_interval_ops,
            "the run never wrapped the journal"
        );
    }

    /// Damage a single replica cannot repair (it has no peer) is refused with the slot named,
    /// never silently dropped: bit rot in a committed prepare, and a truncated journal file.
    #[test]
    fn a_single_replica_refuses_rotten_or_truncated_committed_prepares() {
        let directory = tempfile::tempdir().unwrap();
        let config = config();
        let mut storage = FileStorage::create(directory.path(), config.journal_slots).unwrap();
        Replica::<FileStorage, History>::format(&config, &mut storage).unwrap();
        drop(storage);
        let open = |writes_left| {
            let storage = Crashing {
                inner: FileStorage::open(directory.path(), config.journal_slots).unwrap(),
                writes_left,
                crashed: false,
                overlay: BTreeMap::new(),
                prng: Prng::new(1),
            };
            Replica::open(config.clone(), storage, History::default(), instant(1), 1)
        };
        let mut replica = open(u32::MAX).unwrap();
        let mut ticks = 1;
        assert!(until_normal(&mut replica, &mut ticks));
        request(&mut replica, ticks, 0, Operation::Register, Vec::new()).unwrap();
        // Ops 2 and 3: above the (empty) checkpoint at op 0, so a restart replays them.
        for request_number in 1..=2 {
            request(
                &mut replica,
                ticks,
                request_number,
                Operation::Command,
                vec![9; 50],
            )
            .unwrap();
        }
        let (path, offset) = replica
            .storage()
            .inner
            .region(Location::JournalPrepare { slot: 2 });
        drop(replica);

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, offset + 60).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], offset + 60).unwrap();
        let error = open(u32::MAX).unwrap_err();
        assert_eq!(error, OpenError::JournalCorrupt { slot: 2 });
        assert!(error.to_string().contains("journal slot 2 is corrupt"));
        // Put the byte back: the same files open again and still hold both commands.
        file.write_all_at(&byte, offset + 60).unwrap();
        let mut replica = open(u32::MAX).unwrap();
        assert!(until_normal(&mut replica, &mut ticks));
        assert_eq!(replica.state_machine().entries.len(), 2);
        drop(replica);

        file.set_len(0).unwrap();
        let error = open(u32::MAX).unwrap_err();
        assert!(matches!(error, OpenError::JournalCorrupt { .. }), "{error}");
    }
}
