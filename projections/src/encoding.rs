//! Byte encodings of keys and rows in the view store.
//!
//! ## Keys: memcomparable
//!
//! A primary key is encoded so that comparing the bytes (as redb does for `&[u8]` keys)
//! orders keys exactly as `Value::total_cmp` does, column by column. Each value is a tag
//! byte followed by its body:
//!
//! | value     | tag  | body                                                          |
//! |-----------|------|---------------------------------------------------------------|
//! | NULL      | 0x00 | —                                                             |
//! | BOOLEAN   | 0x01 | 0x00 false, 0x01 true                                         |
//! | BIGINT    | 0x02 | 8 bytes big-endian of the value with its sign bit flipped     |
//! | DOUBLE    | 0x03 | 8 bytes big-endian of the IEEE bits: sign bit flipped for positives, all bits flipped for negatives (`f64::total_cmp` order) |
//! | TEXT      | 0x04 | the UTF-8 bytes with 0x00 escaped as 0x00 0xFF, then 0x00 0x00 |
//! | BYTES     | 0x05 | like TEXT                                                     |
//! | TIMESTAMP | 0x06 | like BIGINT                                                   |
//!
//! Values of different types order by tag, which matches `Value::total_cmp` except that it
//! interleaves BIGINT and DOUBLE numerically; a key column holds one type, so within a
//! table the orders agree. Every encoding is self-delimiting, so no encoded key is a
//! prefix of another and a key followed by more bytes (a version's position) still sorts
//! with its key.
//!
//! ## Rows: compact
//!
//! A row is a LEB128 count of values, then per value a tag and a body: 0 NULL, 1 false,
//! 2 true, 3 BIGINT (zigzag LEB128), 4 DOUBLE (8 bytes little-endian), 5 TEXT (LEB128
//! length, UTF-8), 6 BYTES (LEB128 length, bytes), 7 TIMESTAMP (zigzag LEB128). Decoding
//! checks every length and tag, so a damaged row is reported, never misread.

use kimberlite_kernel::{Row, StoreError, Value};

const KEY_NULL: u8 = 0x00;
const KEY_BOOLEAN: u8 = 0x01;
const KEY_INTEGER: u8 = 0x02;
const KEY_REAL: u8 = 0x03;
const KEY_TEXT: u8 = 0x04;
const KEY_BYTES: u8 = 0x05;
const KEY_TIMESTAMP: u8 = 0x06;

/// Appends the memcomparable encoding of a key.
pub fn encode_key(key: &[Value], out: &mut Vec<u8>) {
    for value in key {
        match value {
            Value::Null => out.push(KEY_NULL),
            Value::Boolean(b) => out.extend_from_slice(&[KEY_BOOLEAN, u8::from(*b)]),
            Value::Integer(n) => {
                out.push(KEY_INTEGER);
                out.extend_from_slice(&((*n as u64) ^ (1 << 63)).to_be_bytes());
            }
            Value::Real(x) => {
                let bits = x.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits | (1 << 63)
                };
                out.push(KEY_REAL);
                out.extend_from_slice(&ordered.to_be_bytes());
            }
            Value::Text(text) => escaped(KEY_TEXT, text.as_bytes(), out),
            Value::Bytes(bytes) => escaped(KEY_BYTES, bytes, out),
            Value::Timestamp(n) => {
                out.push(KEY_TIMESTAMP);
                out.extend_from_slice(&((*n as u64) ^ (1 << 63)).to_be_bytes());
            }
        }
    }
}

fn escaped(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Decodes a whole encoded key (the inverse of `encode_key`).
pub fn decode_key(mut bytes: &[u8]) -> Result<Vec<Value>, StoreError> {
    let mut key = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let fixed = |bytes: &mut &[u8]| -> Result<u64, StoreError> {
            let (head, rest) = bytes
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("truncated key"))?;
            *bytes = rest;
            Ok(u64::from_be_bytes(*head))
        };
        key.push(match tag {
            KEY_NULL => Value::Null,
            KEY_BOOLEAN => {
                let (&b, rest) = bytes
                    .split_first()
                    .ok_or_else(|| corrupt("truncated key"))?;
                bytes = rest;
                Value::Boolean(b != 0)
            }
            KEY_INTEGER => Value::Integer((fixed(&mut bytes)? ^ (1 << 63)) as i64),
            KEY_TIMESTAMP => Value::Timestamp((fixed(&mut bytes)? ^ (1 << 63)) as i64),
            KEY_REAL => {
                let ordered = fixed(&mut bytes)?;
                let bits = if ordered >> 63 == 1 {
                    ordered & !(1 << 63)
                } else {
                    !ordered
                };
                Value::Real(f64::from_bits(bits))
            }
            KEY_TEXT | KEY_BYTES => {
                let mut raw = Vec::new();
                loop {
                    match bytes {
                        [0, 0, rest @ ..] => {
                            bytes = rest;
                            break;
                        }
                        [0, 0xFF, rest @ ..] => {
                            raw.push(0);
                            bytes = rest;
                        }
                        [byte, rest @ ..] if *byte != 0 => {
                            raw.push(*byte);
                            bytes = rest;
                        }
                        _ => return Err(corrupt("bad escape in key")),
                    }
                }
                if tag == KEY_TEXT {
                    Value::Text(
                        String::from_utf8(raw).map_err(|_| corrupt("key text is not UTF-8"))?,
                    )
                } else {
                    Value::Bytes(raw)
                }
            }
            other => return Err(StoreError::Corrupt(format!("unknown key tag {other:#04x}"))),
        });
    }
    Ok(key)
}

const ROW_NULL: u8 = 0;
const ROW_FALSE: u8 = 1;
const ROW_TRUE: u8 = 2;
const ROW_INTEGER: u8 = 3;
const ROW_REAL: u8 = 4;
const ROW_TEXT: u8 = 5;
const ROW_BYTES: u8 = 6;
const ROW_TIMESTAMP: u8 = 7;

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Appends the compact encoding of a row.
pub fn encode_row(row: &[Value], out: &mut Vec<u8>) {
    put_varint(row.len() as u64, out);
    for value in row {
        match value {
            Value::Null => out.push(ROW_NULL),
            Value::Boolean(false) => out.push(ROW_FALSE),
            Value::Boolean(true) => out.push(ROW_TRUE),
            Value::Integer(n) => {
                out.push(ROW_INTEGER);
                put_varint(zigzag(*n), out);
            }
            Value::Real(x) => {
                out.push(ROW_REAL);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Text(text) => {
                out.push(ROW_TEXT);
                put_varint(text.len() as u64, out);
                out.extend_from_slice(text.as_bytes());
            }
            Value::Bytes(bytes) => {
                out.push(ROW_BYTES);
                put_varint(bytes.len() as u64, out);
                out.extend_from_slice(bytes);
            }
            Value::Timestamp(n) => {
                out.push(ROW_TIMESTAMP);
                put_varint(zigzag(*n), out);
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, StoreError> {
        let (&byte, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| corrupt("truncated row"))?;
        self.bytes = rest;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint longer than 64 bits"))
    }

    fn take(&mut self, length: u64) -> Result<&'a [u8], StoreError> {
        let length = usize::try_from(length).map_err(|_| corrupt("length out of range"))?;
        if length > self.bytes.len() {
            return Err(corrupt("truncated row"));
        }
        let (head, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(head)
    }
}

/// Decodes a row written by `encode_row`; the bytes must hold exactly one row.
pub fn decode_row(bytes: &[u8]) -> Result<Row, StoreError> {
    let mut reader = Reader { bytes };
    let count = reader.varint()?;
    // Each value takes at least one byte, which bounds the allocation by the input.
    if count > bytes.len() as u64 {
        return Err(corrupt("row count larger than the row"));
    }
    let mut row = Vec::with_capacity(count as usize);
    for _ in 0..count {
        row.push(match reader.byte()? {
            ROW_NULL => Value::Null,
            ROW_FALSE => Value::Boolean(false),
            ROW_TRUE => Value::Boolean(true),
            ROW_INTEGER => Value::Integer(unzigzag(reader.varint()?)),
            ROW_TIMESTAMP => Value::Timestamp(unzigzag(reader.varint()?)),
            ROW_REAL => {
                let raw = reader.take(8)?;
                Value::Real(f64::from_le_bytes(raw.try_into().expect("took 8 bytes")))
            }
            ROW_TEXT => {
                let length = reader.varint()?;
                let raw = reader.take(length)?;
                Value::Text(
                    std::str::from_utf8(raw)
                        .map_err(|_| corrupt("row text is not UTF-8"))?
                        .to_string(),
                )
            }
            ROW_BYTES => {
                let length = reader.varint()?;
                Value::Bytes(reader.take(length)?.to_vec())
            }
            other => return Err(StoreError::Corrupt(format!("unknown row tag {other}"))),
        });
    }
    if !reader.bytes.is_empty() {
        return Err(corrupt("trailing bytes after row"));
    }
    Ok(row)
}
