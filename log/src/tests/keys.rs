//! Key safety: wrong or missing keys, rotation, no plaintext on disk, no key bytes printed.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::{PARTITION, node_key, record, small_config};
use crate::error::LogError;
use crate::keys::{DataKey, KeyRing, NodeKey};
use crate::partition::PartitionLog;
use crate::{LogConfig, verify_partition};

fn write_records(dir: &std::path::Path, keys: KeyRing, count: u64) {
    let (mut log, _) =
        PartitionLog::open(dir, PARTITION, keys, node_key(), small_config()).unwrap();
    let records: Vec<_> = (0..count).map(|i| record(i, 40, i)).collect();
    log.append(&records).unwrap();
    log.close().unwrap();
}

#[test]
fn a_record_cannot_be_read_with_the_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), KeyRing::new(DataKey::new(1, [1; 32])), 3);

    let wrong = KeyRing::new(DataKey::new(1, [2; 32]));
    let (log, _) =
        PartitionLog::open(dir.path(), PARTITION, wrong, node_key(), small_config()).unwrap();
    let error = log.reader().read(0, 10).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::Decrypt {
                position: 0,
                key_id: 1
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("did not authenticate under data key 1"),
        "{error}"
    );
    // Headers need no key.
    assert_eq!(log.reader().read_headers(0, 10).unwrap().len(), 3);
}

#[test]
fn a_record_under_a_key_missing_from_the_ring_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), KeyRing::new(DataKey::new(1, [1; 32])), 2);
    let other = KeyRing::new(DataKey::new(2, [1; 32]));
    let (log, _) =
        PartitionLog::open(dir.path(), PARTITION, other, node_key(), small_config()).unwrap();
    let error = log.reader().read(1, 1).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::KeyUnavailable {
                position: 1,
                key_id: 1
            }
        ),
        "{error:?}"
    );
}

#[test]
fn rotation_writes_under_the_new_key_and_reads_with_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = KeyRing::new(DataKey::new(1, [1; 32]));
    let (mut log, _) = PartitionLog::open(
        dir.path(),
        PARTITION,
        keys.clone(),
        node_key(),
        small_config(),
    )
    .unwrap();
    log.append(&[record(0, 10, 1)]).unwrap();
    keys.add(DataKey::new(2, [2; 32]));
    log.set_keys(keys.clone());
    let mut second = record(1, 10, 2);
    second.key_id = 2;
    log.append(&[second]).unwrap();
    log.sync().unwrap();
    let records = log.reader().read(0, 10).unwrap();
    assert_eq!(
        records.iter().map(|r| r.header.key_id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(records[1].payload, record(1, 10, 2).payload);
    // Without the old key, only the new record is readable.
    log.set_keys(KeyRing::new(DataKey::new(2, [2; 32])));
    assert!(matches!(
        log.reader().read(0, 1),
        Err(LogError::KeyUnavailable { key_id: 1, .. })
    ));
    assert_eq!(
        log.reader().read(1, 1).unwrap()[0].payload,
        record(1, 10, 2).payload
    );
}

#[test]
fn an_append_naming_a_key_the_ring_lacks_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = KeyRing::new(DataKey::new(1, [1; 32]));
    let (mut log, _) = PartitionLog::open(
        dir.path(),
        PARTITION,
        keys.clone(),
        node_key(),
        small_config(),
    )
    .unwrap();
    let mut unknown = record(1, 10, 1);
    unknown.key_id = 9;
    let error = log.append(&[record(0, 10, 1), unknown]).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::KeyUnavailable {
                position: 1,
                key_id: 9
            }
        ),
        "{error:?}"
    );
    assert_eq!(log.next_position(), 0, "a refused batch leaves no trace");
    // A shredded key stops encrypting at once, even though appends had used it.
    log.append(&[record(0, 10, 1)]).unwrap();
    keys.remove(1);
    keys.add(DataKey::new(2, [2; 32]));
    log.set_keys(keys);
    assert!(matches!(
        log.append(&[record(1, 10, 2)]),
        Err(LogError::KeyUnavailable { key_id: 1, .. })
    ));
}

#[test]
fn payload_plaintext_is_not_on_disk_but_metadata_is() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(
        dir.path(),
        PARTITION,
        super::keys(),
        node_key(),
        LogConfig::default(),
    )
    .unwrap();
    let mut secret = record(1, 0, 1);
    secret.payload = b"diagnosis: confidential-marker-31337 ".repeat(20);
    secret.meta.stream = "patients-stream".into();
    log.append(&[secret.clone()]).unwrap();
    log.close().unwrap();
    let mut all = Vec::new();
    for entry in fs::read_dir(dir.path()).unwrap() {
        all.extend(fs::read(entry.unwrap().path()).unwrap());
    }
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|window| window == needle);
    assert!(!contains(b"confidential-marker"));
    assert!(
        contains(b"patients-stream"),
        "metadata is clear text for auditors"
    );
}

#[test]
fn key_bytes_are_never_printed() {
    let key = DataKey::new(3, [0xab; 32]);
    let printed = format!("{key:?} {:?}", KeyRing::new(key.clone()));
    assert!(
        printed.contains("redacted") && printed.contains('3'),
        "{printed}"
    );
    assert!(
        !printed.contains("171") && !printed.to_lowercase().contains("abab"),
        "{printed}"
    );
    let node = NodeKey::from_secret([0xcd; 32]);
    let printed = format!("{node:?}");
    assert!(
        !printed.contains("205") && !printed.contains("cdcd"),
        "{printed}"
    );
}

#[test]
fn node_key_is_created_once_with_private_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeKey::load_or_create(dir.path()).unwrap();
    let key_file = dir.path().join("node.key");
    assert_eq!(fs::read(&key_file).unwrap().len(), 32);
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public_text = fs::read_to_string(dir.path().join("node.pub")).unwrap();
    assert_eq!(
        public_text,
        format!("{}\n", hex::encode(node.public_key().as_bytes()))
    );
    assert_eq!(
        NodeKey::load_public_key(dir.path()).unwrap(),
        node.public_key()
    );

    // Loading again is the same identity; a lost node.pub is rewritten.
    fs::remove_file(dir.path().join("node.pub")).unwrap();
    let again = NodeKey::load_or_create(dir.path()).unwrap();
    assert_eq!(again.public_key(), node.public_key());
    assert_eq!(
        NodeKey::load_public_key(dir.path()).unwrap(),
        node.public_key()
    );
}

#[test]
fn node_key_files_of_the_wrong_shape_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("node.key"), [1u8; 31]).unwrap();
    let error = NodeKey::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(&error, LogError::NodeKey { .. }));
    assert!(
        error
            .to_string()
            .contains("is 31 bytes, expected a raw 32-byte"),
        "{error}"
    );

    fs::write(dir.path().join("node.pub"), "not hex\n").unwrap();
    let error = NodeKey::load_public_key(dir.path()).unwrap_err();
    assert!(error.to_string().contains("is not hex"), "{error}");
    let error = NodeKey::load_public_key(&dir.path().join("missing")).unwrap_err();
    assert!(error.to_string().contains("cannot be read"), "{error}");
}

#[test]
fn checkpoints_verify_only_against_their_node_key() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), super::keys(), 5);
    let right = node_key().public_key();
    let report = verify_partition(dir.path(), PARTITION, &right, &mut |_, _| {}).unwrap();
    assert_eq!((report.records, report.checkpoints), (5, 1));
    let other = NodeKey::from_secret([1; 32]).public_key();
    let failure = verify_partition(dir.path(), PARTITION, &other, &mut |_, _| {}).unwrap_err();
    assert_eq!(failure.position, Some(5));
    assert!(
        failure.reason.contains("signature does not verify"),
        "{failure}"
    );
}
