//! Little-endian encoding helpers shared by the wire codec and the on-disk formats.

use std::fmt;

/// Why bytes could not be decoded. Bytes come from disks and networks: this is an error for the
/// world, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }
    /// Length-prefixed bytes.
    pub(crate) fn blob(&mut self, value: &[u8]) {
        self.u32(u32::try_from(value.len()).expect("blob fits u32"));
        self.bytes.extend_from_slice(value);
    }
}

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad bool")),
        }
    }
    /// Length-prefixed bytes, refusing lengths above `bytes_max`.
    pub(crate) fn blob(&mut self, bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        if len > bytes_max {
            return Err(DecodeError("blob too long"));
        }
        Ok(self.take(len)?.to_vec())
    }
    /// Exactly `len` raw bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.take(len)?.to_vec())
    }
    /// A count of items, refusing counts above `count_max`.
    pub(crate) fn count(&mut self, count_max: u64) -> Result<usize, DecodeError> {
        let count = self.u32()? as u64;
        if count > count_max {
            return Err(DecodeError("too many items"));
        }
        Ok(count as usize)
    }
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}
