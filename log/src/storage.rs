//! File I/O behind a small trait, so the crash tests can fail any operation and lose what
//! was not synced (STYLE.md item 5). Production uses [`FsStorage`].

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub(crate) type FileRef = Arc<dyn StorageFile>;

pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<FileRef>;
    /// Opens an existing file for reading only (verification of a read-only copy).
    fn open_read(&self, path: &Path) -> io::Result<FileRef>;
    /// Creates a new, empty file; fails if it exists. Not durable until the file and its
    /// directory are synced.
    fn create(&self, path: &Path) -> io::Result<FileRef>;
    /// Makes the directory's entries (created files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file. All methods take `&self`: readers `read_at` concurrently with the writer.
pub(crate) trait StorageFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: written bytes (and the length) become durable.
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct FsStorage;

#[derive(Debug)]
struct FsFile(fs::File);

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // The directories created here must survive a crash with the files later synced in
        // them: fsync the parent of each one created, deepest first.
        let mut missing = Vec::new();
        let mut ancestor = Some(dir);
        while let Some(path) = ancestor
            && !path.as_os_str().is_empty()
            && !path.exists()
        {
            missing.push(path);
            ancestor = path.parent();
        }
        fs::create_dir_all(dir)?;
        for created in missing {
            if let Some(parent) = created
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<FileRef> {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(FsFile(file)))
    }

    fn open_read(&self, path: &Path) -> io::Result<FileRef> {
        Ok(Arc::new(FsFile(fs::File::open(path)?)))
    }

    fn create(&self, path: &Path) -> io::Result<FileRef> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

#[cfg(test)]
pub(crate) mod sim {
    //! An in-memory file system that fails every operation after N of them and can crash,
    //! keeping only what was synced (plus, optionally, a torn prefix of what was not).

    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[derive(Debug, Default, Clone)]
    struct SimFile {
        /// What a read sees now.
        volatile: Vec<u8>,
        /// What survives a crash.
        durable: Vec<u8>,
        /// The directory entry survives a crash (its directory was synced after creation).
        entry_durable: bool,
    }

    #[derive(Debug)]
    struct State {
        files: BTreeMap<PathBuf, SimFile>,
        /// `sync_data` calls that succeeded, by file.
        syncs: BTreeMap<PathBuf, u64>,
        operations: u64,
        /// Operations at and after this count fail.
        fail_at: Option<u64>,
        rng: StdRng,
    }

    #[derive(Debug, Clone)]
    pub(crate) struct SimStorage {
        state: Arc<Mutex<State>>,
    }

    #[derive(Debug)]
    struct SimHandle {
        state: Arc<Mutex<State>>,
        path: PathBuf,
        writable: bool,
    }

    fn injected() -> io::Error {
        io::Error::other("injected fault")
    }

    impl State {
        /// Counts one operation; fails it if the budget is spent.
        fn tick(&mut self) -> io::Result<()> {
            self.operations += 1;
            match self.fail_at {
                Some(fail_at) if self.operations > fail_at => Err(injected()),
                _ => Ok(()),
            }
        }
    }

    impl SimStorage {
        pub(crate) fn new(seed: u64) -> SimStorage {
            SimStorage {
                state: Arc::new(Mutex::new(State {
                    files: BTreeMap::new(),
                    syncs: BTreeMap::new(),
                    operations: 0,
                    fail_at: None,
                    rng: StdRng::seed_from_u64(seed),
                })),
            }
        }

        /// Every operation after the next `operations` fails.
        pub(crate) fn fail_after(&self, operations: u64) {
            let mut state = self.state.lock().unwrap();
            state.fail_at = Some(state.operations + operations);
        }

        pub(crate) fn operations(&self) -> u64 {
            self.state.lock().unwrap().operations
        }

        /// How many `sync_data` calls on `path` succeeded.
        pub(crate) fn syncs(&self, path: &Path) -> u64 {
            self.state
                .lock()
                .unwrap()
                .syncs
                .get(path)
                .copied()
                .unwrap_or(0)
        }

        /// A handle on an existing file, for tests that damage bytes behind the log's back.
        pub(crate) fn open_file(&self, path: &Path) -> FileRef {
            Storage::open(self, path).expect("file exists")
        }

        /// Whether an injected fault has fired.
        pub(crate) fn faulted(&self) -> bool {
            let state = self.state.lock().unwrap();
            state
                .fail_at
                .is_some_and(|fail_at| state.operations > fail_at)
        }

        /// A power loss: returns the file system as it comes back. Files whose entry was never
        /// synced vanish; others keep their synced bytes, plus, if `torn`, a random prefix of
        /// the bytes appended since, whose last few bytes may be garbage.
        pub(crate) fn crash(&self, torn: bool) -> SimStorage {
            let mut state = self.state.lock().unwrap();
            let mut files = BTreeMap::new();
            let snapshot: Vec<(PathBuf, SimFile)> = state
                .files
                .iter()
                .map(|(path, file)| (path.clone(), file.clone()))
                .collect();
            for (path, file) in snapshot {
                if !file.entry_durable {
                    continue;
                }
                let mut bytes = file.durable.clone();
                if torn && file.volatile.starts_with(&file.durable) {
                    let unsynced = &file.volatile[file.durable.len()..];
                    let kept = state.rng.gen_range(0..=unsynced.len());
                    bytes.extend_from_slice(&unsynced[..kept]);
                    if kept > 0 && state.rng.gen_bool(0.3) {
                        let garbage = state.rng.gen_range(1..=kept.min(16));
                        let len = bytes.len();
                        for byte in &mut bytes[len - garbage..] {
                            *byte = state.rng.r#gen();
                        }
                    }
                } else if torn && state.rng.gen_bool(0.5) {
                    // An unsynced truncation may or may not have reached the disk.
                    bytes = file.volatile.clone();
                }
                files.insert(
                    path,
                    SimFile {
                        volatile: bytes.clone(),
                        durable: bytes,
                        entry_durable: true,
                    },
                );
            }
            let seed = state.rng.r#gen();
            SimStorage {
                state: Arc::new(Mutex::new(State {
                    files,
                    syncs: BTreeMap::new(),
                    operations: 0,
                    fail_at: None,
                    rng: StdRng::seed_from_u64(seed),
                })),
            }
        }
    }

    impl Storage for SimStorage {
        fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
            self.state.lock().unwrap().tick()
        }

        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            Ok(state
                .files
                .keys()
                .filter(|path| path.parent() == Some(dir))
                .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
                .collect())
        }

        fn open(&self, path: &Path) -> io::Result<FileRef> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            if !state.files.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            Ok(Arc::new(SimHandle {
                state: self.state.clone(),
                path: path.to_owned(),
                writable: true,
            }))
        }

        fn open_read(&self, path: &Path) -> io::Result<FileRef> {
            let handle = self.open(path)?;
            drop(handle);
            Ok(Arc::new(SimHandle {
                state: self.state.clone(),
                path: path.to_owned(),
                writable: false,
            }))
        }

        fn create(&self, path: &Path) -> io::Result<FileRef> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            if state.files.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            state.files.insert(path.to_owned(), SimFile::default());
            Ok(Arc::new(SimHandle {
                state: self.state.clone(),
                path: path.to_owned(),
                writable: true,
            }))
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            for (path, file) in state.files.iter_mut() {
                if path.parent() == Some(dir) {
                    file.entry_durable = true;
                }
            }
            Ok(())
        }
    }

    impl StorageFile for SimHandle {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            let file = &state.files[&self.path];
            let start = offset as usize;
            if start + buf.len() > file.volatile.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.copy_from_slice(&file.volatile[start..start + buf.len()]);
            Ok(())
        }

        fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
            assert!(self.writable, "write to a file opened read-only");
            let mut state = self.state.lock().unwrap();
            let result = state.tick();
            // A failed write may still have written a prefix.
            let written = match result {
                Ok(()) => bytes.len(),
                Err(_) => state.rng.gen_range(0..=bytes.len()),
            };
            let file = state.files.get_mut(&self.path).unwrap();
            let start = offset as usize;
            if file.volatile.len() < start + written {
                file.volatile.resize(start + written, 0);
            }
            file.volatile[start..start + written].copy_from_slice(&bytes[..written]);
            result
        }

        fn sync_data(&self) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            let file = state.files.get_mut(&self.path).unwrap();
            file.durable = file.volatile.clone();
            *state.syncs.entry(self.path.clone()).or_default() += 1;
            Ok(())
        }

        fn len(&self) -> io::Result<u64> {
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            Ok(state.files[&self.path].volatile.len() as u64)
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            assert!(self.writable, "truncate of a file opened read-only");
            let mut state = self.state.lock().unwrap();
            state.tick()?;
            let file = state.files.get_mut(&self.path).unwrap();
            file.volatile.resize(len as usize, 0);
            Ok(())
        }
    }
}
