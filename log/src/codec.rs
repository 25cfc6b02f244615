//! The record codec: one record's bytes on disk, and the cryptography that makes them.
//!
//! Layout (little-endian, format version 1):
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | start magic `KIMR` |
//! | 4 | 1 | format version (1) |
//! | 5 | 1 | record kind ([`RecordKind`]) |
//! | 6 | 1 | flags (none defined in version 1: must be 0; reserved for key rotation and erasure) |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 4 | record bytes: total length of this record, magic to magic |
//! | 12 | 8 | position |
//! | 20 | 8 | VSR op |
//! | 28 | 8 | timestamp ns |
//! | 36 | 16 | client id |
//! | 52 | 8 | request number |
//! | 60 | 4 | data key id |
//! | 64 | 2+2+2+2 | bytes of event type, stream, principal, reason |
//! | 72 | 4 | ciphertext bytes (payload + 16-byte AES-GCM tag) |
//! | 76 | 16 | payload MAC (see [`payload_mac`]) |
//! | 92 | 32 | prev_hash: the `hash` of the previous record, zeros for position 0 |
//! | 124 | … | event type, stream, principal, reason (UTF-8, in clear) |
//! | … | … | ciphertext (AES-256-GCM, tag last) |
//! | … | 32 | hash = SHA-256(every byte above) = SHA-256(header ‖ ciphertext) |
//! | … | 4 | CRC32 of every byte above |
//! | … | 4 | end magic `RMIK` |
//!
//! "Header bytes" below means offsets 0 up to the ciphertext: the fixed fields and the strings.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::LogError;
use crate::keys::{DataKey, KeyRing};
use crate::types::{Hash, NewRecord, Position, RecordHeader, RecordKind, RecordMeta};

pub const RECORD_FORMAT_VERSION: u8 = 1;
pub(crate) const START_MAGIC: [u8; 4] = *b"KIMR";
pub(crate) const END_MAGIC: [u8; 4] = *b"RMIK";

/// Bounds on what one record may carry. Checked at append; a stored record that exceeds them
/// is corrupt.
pub const EVENT_TYPE_BYTES_MAX: usize = 256;
pub const STREAM_BYTES_MAX: usize = 256;
pub const PRINCIPAL_BYTES_MAX: usize = 1024;
pub const REASON_BYTES_MAX: usize = 4096;
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

pub(crate) const TAG_BYTES: usize = 16;
pub(crate) const PAYLOAD_MAC_BYTES: usize = 16;
pub(crate) const HEADER_FIXED_BYTES: usize = 124;
/// hash + CRC + end magic.
pub(crate) const TRAILER_BYTES: usize = 32 + 4 + 4;
/// Enough of a record to learn its length: magic, version, kind, flags, reserved, record bytes.
pub(crate) const PREFIX_BYTES: usize = 12;

/// The smallest possible record: empty strings and an empty payload.
pub const RECORD_BYTES_MIN: usize = HEADER_FIXED_BYTES + TAG_BYTES + TRAILER_BYTES;
/// The largest possible record: every string and the payload at their maximum.
pub const RECORD_BYTES_MAX: usize = RECORD_BYTES_MIN
    + EVENT_TYPE_BYTES_MAX
    + STREAM_BYTES_MAX
    + PRINCIPAL_BYTES_MAX
    + REASON_BYTES_MAX
    + PAYLOAD_BYTES_MAX;

const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(PREFIX_BYTES <= RECORD_BYTES_MIN);

const OFFSET_RECORD_BYTES: usize = 8;
const OFFSET_TIMESTAMP: usize = 28;

/// Domain tags keep the hashes of one purpose from ever equalling those of another.
const NONCE_DOMAIN: &[u8] = b"kimberlite/log/nonce/v1\0";
const MAC_KEY_DOMAIN: &[u8] = b"kimberlite/log/payload-mac-key/v1\0";

/// Exact encoded size of `record`, computable before encoding (segment rolls need it).
pub(crate) fn record_bytes(record: &NewRecord) -> usize {
    let meta = &record.meta;
    RECORD_BYTES_MIN
        + meta.event_type.len()
        + meta.stream.len()
        + meta.principal.len()
        + meta.reason.len()
        + record.payload.len()
}

/// Rejects a record whose fields exceed their bounds, naming the field.
pub(crate) fn check_bounds(index: usize, record: &NewRecord) -> Result<(), LogError> {
    let meta = &record.meta;
    let fields: [(&'static str, usize, usize); 5] = [
        ("event_type", meta.event_type.len(), EVENT_TYPE_BYTES_MAX),
        ("stream", meta.stream.len(), STREAM_BYTES_MAX),
        ("principal", meta.principal.len(), PRINCIPAL_BYTES_MAX),
        ("reason", meta.reason.len(), REASON_BYTES_MAX),
        ("payload", record.payload.len(), PAYLOAD_BYTES_MAX),
    ];
    for (field, bytes, bytes_max) in fields {
        if bytes > bytes_max {
            return Err(LogError::RecordTooLarge {
                index,
                field,
                bytes: bytes as u64,
                bytes_max: bytes_max as u64,
            });
        }
    }
    Ok(())
}

/// HMAC-SHA-256 (RFC 2104) with its padded key states computed once, so each use costs the
/// message plus two compressions. Written out here rather than pulled in as a crate: it is
/// eight lines over `sha2`, pinned by the RFC 4231 test vector in the tests.
#[derive(Clone)]
pub(crate) struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    pub(crate) fn new(key: &[u8]) -> Hmac {
        assert!(
            key.len() <= 64,
            "HMAC keys longer than the block are not used here"
        );
        let mut inner_pad = [0x36u8; 64];
        let mut outer_pad = [0x5cu8; 64];
        for (i, byte) in key.iter().enumerate() {
            inner_pad[i] ^= byte;
            outer_pad[i] ^= byte;
        }
        let hmac = Hmac {
            inner: Sha256::new_with_prefix(inner_pad),
            outer: Sha256::new_with_prefix(outer_pad),
        };
        inner_pad.zeroize();
        outer_pad.zeroize();
        hmac
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for part in parts {
            inner.update(part);
        }
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// Everything needed to encrypt or decrypt under one data key.
pub(crate) struct Cipher {
    key_id: u32,
    aead: Aes256Gcm,
    payload_mac: Hmac,
}

impl Cipher {
    pub(crate) fn new(key: &DataKey) -> Cipher {
        // The MAC key is derived, not the data key itself: one key, one purpose.
        let mut mac_key: [u8; 32] = Sha256::new_with_prefix(MAC_KEY_DOMAIN)
            .chain_update(key.bytes())
            .finalize()
            .into();
        let cipher = Cipher {
            key_id: key.id(),
            aead: Aes256Gcm::new(key.bytes().into()),
            payload_mac: Hmac::new(&mac_key),
        };
        mac_key.zeroize();
        cipher
    }
}

/// A keyed digest of the plaintext, stored in the header so that the nonce (derived from
/// the header) changes whenever the payload does. See [`nonce`].
fn payload_mac(cipher: &Cipher, position: Position, payload: &[u8]) -> [u8; PAYLOAD_MAC_BYTES] {
    let mac = cipher.payload_mac.mac(&[&position.to_le_bytes(), payload]);
    mac[..PAYLOAD_MAC_BYTES].try_into().expect("16 of 32 bytes")
}

/// The AES-GCM nonce of a record: the first 12 bytes of
/// SHA-256(domain tag ‖ key id ‖ position ‖ header bytes).
///
/// Why this shape:
/// - Deterministic, so every replica that appends the same record writes identical bytes
///   (no random nonce, no per-node counter).
/// - Never repeated for different contents under one key. A nonce of (key id, position)
///   alone would repeat: a torn, unacknowledged record is truncated on recovery and its
///   position rewritten with a different payload, and two plaintexts under one GCM nonce
///   leak their XOR and the authentication key. The header bytes hash in every metadata
///   field, the lengths, prev_hash and the payload MAC; the MAC (keyed, so it reveals
///   nothing about the plaintext without the key, and including the position, so equal
///   payloads at different positions do not look equal) makes the nonce differ whenever
///   the payload differs, even if all metadata is equal (synthetic-IV style).
/// - The same header bytes are the AES-GCM associated data, which binds the ciphertext to
///   its position and metadata: moving a ciphertext to another record fails to decrypt.
fn nonce(key_id: u32, position: Position, header: &[u8]) -> [u8; 12] {
    let digest = Sha256::new_with_prefix(NONCE_DOMAIN)
        .chain_update(key_id.to_le_bytes())
        .chain_update(position.to_le_bytes())
        .chain_update(header)
        .finalize();
    digest[..12].try_into().expect("12 of 32 bytes")
}

/// Appends the encoding of `record` at `position` to `out` and returns its hash.
/// The caller has checked bounds ([`check_bounds`]) already.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    position: Position,
    prev_hash: &Hash,
    record: &NewRecord,
    cipher: &Cipher,
) -> Hash {
    let meta = &record.meta;
    let start = out.len();
    let total = record_bytes(record);
    let strings = [
        &meta.event_type,
        &meta.stream,
        &meta.principal,
        &meta.reason,
    ];

    out.extend_from_slice(&START_MAGIC);
    out.push(RECORD_FORMAT_VERSION);
    out.push(meta.kind as u8);
    out.push(0); // flags
    out.push(0); // reserved
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&meta.op.to_le_bytes());
    out.extend_from_slice(&meta.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&meta.client_id.to_le_bytes());
    out.extend_from_slice(&meta.request.to_le_bytes());
    out.extend_from_slice(&cipher.key_id.to_le_bytes());
    for string in strings {
        out.extend_from_slice(&(string.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&((record.payload.len() + TAG_BYTES) as u32).to_le_bytes());
    out.extend_from_slice(&payload_mac(cipher, position, &record.payload));
    out.extend_from_slice(prev_hash);
    assert_eq!(out.len() - start, HEADER_FIXED_BYTES);
    for string in strings {
        out.extend_from_slice(string.as_bytes());
    }
    let header_end = out.len();

    out.extend_from_slice(&record.payload);
    let (header, payload) = out[start..].split_at_mut(header_end - start);
    let nonce = nonce(cipher.key_id, position, header);
    let tag = cipher
        .aead
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), header, payload)
        .expect("AES-GCM encrypts any payload under 64 GiB");
    out.extend_from_slice(&tag);

    let hash: Hash = Sha256::digest(&out[start..]).into();
    out.extend_from_slice(&hash);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&END_MAGIC);
    assert_eq!(
        out.len() - start,
        total,
        "record_bytes() and encode() disagree"
    );
    hash
}

/// Why bytes are not a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The bytes end before the record does (a torn write, if at the end of the log).
    Incomplete,
    /// The bytes are not a valid record.
    Invalid(String),
}

/// Reads the record length from the first [`PREFIX_BYTES`] of a record.
pub(crate) fn frame_bytes(prefix: &[u8]) -> Result<usize, FrameError> {
    if prefix.len() < PREFIX_BYTES {
        return Err(FrameError::Incomplete);
    }
    if prefix[0..4] != START_MAGIC {
        return Err(FrameError::Invalid(format!(
            "bad start magic {:02x?}",
            &prefix[0..4]
        )));
    }
    if prefix[4] != RECORD_FORMAT_VERSION {
        return Err(FrameError::Invalid(format!(
            "unknown record format version {}",
            prefix[4]
        )));
    }
    let total = read_u32(prefix, OFFSET_RECORD_BYTES) as usize;
    if !(RECORD_BYTES_MIN..=RECORD_BYTES_MAX).contains(&total) {
        return Err(FrameError::Invalid(format!(
            "record length {total} outside {RECORD_BYTES_MIN}..={RECORD_BYTES_MAX}"
        )));
    }
    Ok(total)
}

/// Checks that `bytes` starts with one whole record whose end magic and CRC hold, and returns
/// its length. Cheap: no SHA-256. A record that passes this and then fails [`parse_header`]
/// was written that way (CRC matches), so it is corruption, never a torn write.
pub(crate) fn check_frame(bytes: &[u8]) -> Result<usize, FrameError> {
    let total = frame_bytes(bytes)?;
    if bytes.len() < total {
        return Err(FrameError::Incomplete);
    }
    let record = &bytes[..total];
    if record[total - 4..] != END_MAGIC {
        return Err(FrameError::Invalid("bad end magic".into()));
    }
    let stored = read_u32(record, total - 8);
    let computed = crc32fast::hash(&record[..total - 8]);
    if stored != computed {
        return Err(FrameError::Invalid(format!(
            "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    Ok(total)
}

/// The position field of a framed record.
pub(crate) fn position_of(record: &[u8]) -> Position {
    read_u64(record, 12)
}

pub(crate) fn timestamp_of(record: &[u8]) -> u64 {
    read_u64(record, OFFSET_TIMESTAMP)
}

pub(crate) fn prev_hash_of(record: &[u8]) -> Hash {
    record[92..124].try_into().expect("32 bytes")
}

pub(crate) fn stored_hash_of(record: &[u8]) -> Hash {
    let end = record.len() - 8;
    record[end - 32..end].try_into().expect("32 bytes")
}

/// Recomputes SHA-256(header ‖ ciphertext) and compares it with the stored hash.
pub(crate) fn hash_matches(record: &[u8]) -> bool {
    let end = record.len() - TRAILER_BYTES;
    let computed: Hash = Sha256::digest(&record[..end]).into();
    computed == stored_hash_of(record)
}

/// The string lengths of a framed record: event type, stream, principal, reason.
fn string_lengths(record: &[u8]) -> [usize; 4] {
    [64, 66, 68, 70].map(|offset| read_u16(record, offset) as usize)
}

/// Checks the fields of a framed record ([`check_frame`] passed) without allocating: kind,
/// flags, string and payload bounds, UTF-8, and that the lengths add up to the record length.
pub(crate) fn check_header(record: &[u8]) -> Result<(), String> {
    let total = record.len();
    if RecordKind::from_u8(record[5]).is_none() {
        return Err(format!("unknown record kind {}", record[5]));
    }
    if record[6] != 0 {
        return Err(format!(
            "flags {:#04x} set; format version 1 defines none",
            record[6]
        ));
    }
    if record[7] != 0 {
        return Err("reserved byte is not zero".into());
    }
    let lengths = string_lengths(record);
    let bounds = [
        EVENT_TYPE_BYTES_MAX,
        STREAM_BYTES_MAX,
        PRINCIPAL_BYTES_MAX,
        REASON_BYTES_MAX,
    ];
    if lengths
        .iter()
        .zip(bounds)
        .any(|(length, max)| *length > max)
    {
        return Err(format!("a string length in {lengths:?} exceeds its bound"));
    }
    let ciphertext_len = read_u32(record, 72) as usize;
    if ciphertext_len > PAYLOAD_BYTES_MAX + TAG_BYTES {
        return Err(format!(
            "ciphertext of {ciphertext_len} bytes exceeds the payload bound of \
             {PAYLOAD_BYTES_MAX} bytes plus the tag"
        ));
    }
    let expected =
        HEADER_FIXED_BYTES + lengths.iter().sum::<usize>() + ciphertext_len + TRAILER_BYTES;
    if ciphertext_len < TAG_BYTES || expected != total {
        return Err(format!(
            "field lengths add up to {expected} bytes but the record is {total} bytes"
        ));
    }
    let mut offset = HEADER_FIXED_BYTES;
    for length in lengths {
        if std::str::from_utf8(&record[offset..offset + length]).is_err() {
            return Err(format!("the string at byte {offset} is not valid UTF-8"));
        }
        offset += length;
    }
    Ok(())
}

/// Decodes the header of a framed record ([`check_frame`] passed).
pub(crate) fn parse_header(record: &[u8]) -> Result<RecordHeader, String> {
    check_header(record)?;
    let mut offset = HEADER_FIXED_BYTES;
    let [event_type, stream, principal, reason] = string_lengths(record).map(|length| {
        let string = std::str::from_utf8(&record[offset..offset + length]).expect("checked UTF-8");
        offset += length;
        string.to_owned()
    });
    let meta = RecordMeta {
        kind: RecordKind::from_u8(record[5]).expect("checked kind"),
        event_type,
        op: read_u64(record, 20),
        timestamp_ns: read_u64(record, OFFSET_TIMESTAMP),
        client_id: u128::from_le_bytes(record[36..52].try_into().expect("16 bytes")),
        request: read_u64(record, 52),
        stream,
        principal,
        reason,
    };
    Ok(RecordHeader {
        position: position_of(record),
        meta,
        key_id: read_u32(record, 60),
        flags: record[6],
        prev_hash: prev_hash_of(record),
        hash: stored_hash_of(record),
        ciphertext_len: read_u32(record, 72),
    })
}

/// Decrypts the payload of a framed, parsed record with the key named in its header.
pub(crate) fn decrypt(
    record: &[u8],
    header: &RecordHeader,
    keys: &KeyRing,
    ciphers: &mut Vec<Cipher>,
) -> Result<Vec<u8>, LogError> {
    let position = header.position;
    let key_id = header.key_id;
    let index = match ciphers.iter().position(|cipher| cipher.key_id == key_id) {
        Some(index) => index,
        None => {
            let key = keys
                .get(key_id)
                .ok_or(LogError::KeyUnavailable { position, key_id })?;
            ciphers.push(Cipher::new(&key));
            ciphers.len() - 1
        }
    };
    let cipher = &ciphers[index];
    let header_end = record.len() - TRAILER_BYTES - header.ciphertext_len as usize;
    let (header_bytes, rest) = record.split_at(header_end);
    let (ciphertext, tag) =
        rest[..header.ciphertext_len as usize].split_at(header.ciphertext_len as usize - TAG_BYTES);
    let nonce = nonce(key_id, position, header_bytes);
    let mut payload = ciphertext.to_vec();
    cipher
        .aead
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            header_bytes,
            &mut payload,
            Tag::from_slice(tag),
        )
        .map_err(|_| LogError::Decrypt { position, key_id })?;
    // The MAC is authenticated by the tag (it is in the associated data), so only a writer
    // holding the key can get this wrong; refuse the record rather than trust either half.
    if payload_mac(cipher, position, &payload)[..] != record[76..92] {
        return Err(LogError::Decrypt { position, key_id });
    }
    Ok(payload)
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("2 bytes"))
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}
