//! Record codec: round trips of every kind and edge value, bounds, and the HMAC.

use sha2::{Digest, Sha256};

use crate::codec::{self, Cipher, FrameError, Hmac};
use crate::error::LogError;
use crate::keys::DataKey;
use crate::types::{GENESIS_HASH, Hash, NewRecord, RecordKind, RecordMeta};
use crate::{
    EVENT_TYPE_BYTES_MAX, PAYLOAD_BYTES_MAX, PRINCIPAL_BYTES_MAX, REASON_BYTES_MAX,
    RECORD_BYTES_MAX, RECORD_BYTES_MIN, STREAM_BYTES_MAX,
};

fn meta(kind: RecordKind) -> RecordMeta {
    RecordMeta {
        kind,
        event_type: "RowInserted".into(),
        op: 17,
        timestamp_ns: 1_700_000_000_000_000_000,
        client_id: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        request: 99,
        stream: "patients".into(),
        principal: "token:admin".into(),
        reason: "admission".into(),
    }
}

/// Encodes `record` at `position`, then decodes it every way a reader does and checks that
/// everything comes back: header fields, payload, hash, length, and the chain link.
fn check(position: u64, prev_hash: Hash, record: &NewRecord) {
    let key = DataKey::new(5, [3; 32]);
    let cipher = Cipher::new(&key);
    let mut bytes = vec![0xee; 3]; // encoding appends: start mid-buffer
    let hash = codec::encode(&mut bytes, position, &prev_hash, record, &cipher);
    let bytes = &bytes[3..];

    assert_eq!(bytes.len(), codec::record_bytes(record));
    assert!((RECORD_BYTES_MIN..=RECORD_BYTES_MAX).contains(&bytes.len()));
    assert_eq!(codec::check_frame(bytes), Ok(bytes.len()));
    assert!(codec::hash_matches(bytes));
    let expected_hash: Hash = Sha256::digest(&bytes[..bytes.len() - 40]).into();
    assert_eq!(hash, expected_hash, "hash = SHA-256(header ‖ ciphertext)");

    let header = codec::parse_header(bytes).expect("header parses");
    assert_eq!(header.position, position);
    assert_eq!(header.meta, record.meta);
    assert_eq!(header.key_id, 5);
    assert_eq!(header.flags, 0);
    assert_eq!(header.prev_hash, prev_hash);
    assert_eq!(header.hash, hash);
    assert_eq!(header.ciphertext_len as usize, record.payload.len() + 16);

    let keys = crate::keys::KeyRing::new(key);
    let payload = codec::decrypt(bytes, &header, &keys, &mut Vec::new()).expect("decrypts");
    assert_eq!(payload, record.payload);

    // Every byte counts: a flip anywhere fails the frame check.
    for index in [
        0,
        5,
        12,
        40,
        bytes.len() / 2,
        bytes.len() - 9,
        bytes.len() - 1,
    ] {
        let mut damaged = bytes.to_vec();
        damaged[index] ^= 0x10;
        assert!(
            codec::check_frame(&damaged).is_err(),
            "flip at byte {index} went unnoticed"
        );
    }
    // A prefix is incomplete, never valid.
    assert_eq!(
        codec::check_frame(&bytes[..bytes.len() - 1]),
        Err(FrameError::Incomplete)
    );
}

#[test]
fn round_trips_every_kind() {
    for (index, kind) in RecordKind::ALL.into_iter().enumerate() {
        let record = NewRecord {
            key_id: 5,
            meta: meta(kind),
            payload: format!("payload of a {kind} record").into_bytes(),
        };
        check(index as u64, [index as u8; 32], &record);
    }
}

#[test]
fn round_trips_edge_values() {
    let empty = NewRecord {
        key_id: 5,
        meta: RecordMeta {
            kind: RecordKind::Event,
            event_type: String::new(),
            op: 0,
            timestamp_ns: 0,
            client_id: 0,
            request: 0,
            stream: String::new(),
            principal: String::new(),
            reason: String::new(),
        },
        payload: Vec::new(),
    };
    let extremes = NewRecord {
        key_id: 5,
        meta: RecordMeta {
            kind: RecordKind::Catalog,
            event_type: "e".repeat(EVENT_TYPE_BYTES_MAX),
            op: u64::MAX,
            timestamp_ns: u64::MAX,
            client_id: u128::MAX,
            request: u64::MAX,
            stream: "s".repeat(STREAM_BYTES_MAX),
            principal: "p".repeat(PRINCIPAL_BYTES_MAX),
            // Multi-byte UTF-8 up to the byte bound.
            reason: "é".repeat(REASON_BYTES_MAX / 2),
        },
        payload: vec![0xab; PAYLOAD_BYTES_MAX],
    };
    let cases: [(u64, Hash, &NewRecord); 4] = [
        (0, GENESIS_HASH, &empty),
        (u64::MAX, [0xff; 32], &empty),
        (1, [1; 32], &extremes),
        (u64::MAX - 1, GENESIS_HASH, &extremes),
    ];
    for (position, prev_hash, record) in cases {
        check(position, prev_hash, record);
    }
    let mut bytes = Vec::new();
    codec::encode(
        &mut bytes,
        0,
        &GENESIS_HASH,
        &empty,
        &Cipher::new(&DataKey::new(1, [0; 32])),
    );
    assert_eq!(bytes.len(), RECORD_BYTES_MIN);
    bytes.clear();
    codec::encode(
        &mut bytes,
        0,
        &GENESIS_HASH,
        &extremes,
        &Cipher::new(&DataKey::new(1, [0; 32])),
    );
    assert_eq!(bytes.len(), RECORD_BYTES_MAX);
}

#[test]
fn rejects_every_field_over_its_bound() {
    type Grow = fn(&mut NewRecord);
    let cases: [(&str, usize, Grow); 5] = [
        ("event_type", EVENT_TYPE_BYTES_MAX, |r| {
            r.meta.event_type = "x".repeat(EVENT_TYPE_BYTES_MAX + 1)
        }),
        ("stream", STREAM_BYTES_MAX, |r| {
            r.meta.stream = "x".repeat(STREAM_BYTES_MAX + 1)
        }),
        ("principal", PRINCIPAL_BYTES_MAX, |r| {
            r.meta.principal = "x".repeat(PRINCIPAL_BYTES_MAX + 1)
        }),
        ("reason", REASON_BYTES_MAX, |r| {
            r.meta.reason = "x".repeat(REASON_BYTES_MAX + 1)
        }),
        ("payload", PAYLOAD_BYTES_MAX, |r| {
            r.payload = vec![0; PAYLOAD_BYTES_MAX + 1]
        }),
    ];
    for (field, bytes_max, grow) in cases {
        let mut record = NewRecord {
            key_id: 5,
            meta: meta(RecordKind::Event),
            payload: Vec::new(),
        };
        assert!(codec::check_bounds(3, &record).is_ok());
        grow(&mut record);
        let error = codec::check_bounds(3, &record).expect_err(field);
        assert!(
            matches!(
                &error,
                LogError::RecordTooLarge { index: 3, field: f, bytes, bytes_max: max }
                    if *f == field && *bytes == bytes_max as u64 + 1 && *max == bytes_max as u64
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(field) && message.contains(&bytes_max.to_string()),
            "{message}"
        );
    }
}

#[test]
fn rejects_bytes_that_are_not_a_record() {
    let mut bytes = Vec::new();
    let record = NewRecord {
        key_id: 5,
        meta: meta(RecordKind::Event),
        payload: vec![1, 2, 3],
    };
    codec::encode(
        &mut bytes,
        7,
        &GENESIS_HASH,
        &record,
        &Cipher::new(&DataKey::new(1, [0; 32])),
    );
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 4] = [
        ("start magic", |b| b[0] = b'X', "bad start magic"),
        ("version", |b| b[4] = 2, "unknown record format version 2"),
        (
            "length too small",
            |b| b[8..12].copy_from_slice(&10u32.to_le_bytes()),
            "record length 10 outside",
        ),
        (
            "length too large",
            |b| b[8..12].copy_from_slice(&u32::MAX.to_le_bytes()),
            "outside",
        ),
    ];
    for (name, damage, reason) in cases {
        let mut damaged = bytes.clone();
        damage(&mut damaged);
        match codec::check_frame(&damaged) {
            Err(FrameError::Invalid(message)) => {
                assert!(message.contains(reason), "{name}: {message}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn hmac_matches_rfc_4231_test_case_1() {
    let mac = Hmac::new(&[0x0b; 20]).mac(&[b"Hi ", b"There"]);
    assert_eq!(
        hex::encode(mac),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
}

#[test]
fn same_header_different_payload_gets_different_ciphertext_stream() {
    // The case a (key id, position) nonce gets wrong: a torn record rewritten at the same
    // position with equal metadata and an equal-length but different payload.
    let cipher = Cipher::new(&DataKey::new(1, [4; 32]));
    let encode = |payload: &[u8]| {
        let mut bytes = Vec::new();
        let record = NewRecord {
            key_id: 5,
            meta: meta(RecordKind::Event),
            payload: payload.to_vec(),
        };
        codec::encode(&mut bytes, 9, &GENESIS_HASH, &record, &cipher);
        let header_bytes = bytes.len() - 40 - 16 - payload.len();
        bytes[header_bytes..header_bytes + payload.len()].to_vec()
    };
    let (first, second) = (encode(&[0; 64]), encode(&[1; 64]));
    // With a repeated nonce, ciphertext XOR would equal plaintext XOR (all ones).
    let xor: Vec<u8> = first.iter().zip(&second).map(|(a, b)| a ^ b).collect();
    assert_ne!(xor, vec![1; 64]);
    // Deterministic: the same record always encodes to the same bytes.
    assert_eq!(encode(&[0; 64]), first);
}
