//! The import names of a core Wasm module, read before anything else looks at it, so a
//! module that imports WASI (or anything not Kimberlite's) is refused with the name of
//! the import rather than with an encoder error.
//!
//! Reads only the section headers and the import section; full validation is left to
//! the component encoder and to wasmtime.

/// Sections the reader walks past; a module with more is malformed for our purposes.
const SECTIONS_MAX: usize = 10_000;

/// `(module, name)` of every import, in order.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut reader = Reader { bytes, at: 8 };
    let mut imports = Vec::new();
    for _ in 0..SECTIONS_MAX {
        if reader.at == bytes.len() {
            return Ok(imports);
        }
        let id = reader.byte()?;
        let size = reader.u32()? as usize;
        let end = reader
            .at
            .checked_add(size)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| format!("section {id} of {size} bytes runs past the end"))?;
        if id == 2 {
            let count = reader.u32()?;
            for _ in 0..count {
                let module = reader.name()?;
                let name = reader.name()?;
                reader.skip_import_type()?;
                imports.push((module, name));
            }
        }
        reader.at = end;
    }
    Err(format!("more than {SECTIONS_MAX} sections"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("unexpected end at byte {}", self.at))?;
        self.at += 1;
        Ok(byte)
    }

    /// Unsigned LEB128 of at most 64 bits (also used to skip signed ones: only the
    /// length matters then).
    fn leb(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("LEB128 number too long at byte {}", self.at))
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.leb()?).map_err(|_| format!("number past u32 at byte {}", self.at))
    }

    fn name(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or_else(|| format!("name runs past the end at byte {}", self.at))?;
        self.at += len;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("import name is not UTF-8 at byte {}", self.at))
    }

    fn skip_import_type(&mut self) -> Result<(), String> {
        match self.byte()? {
            // function: type index
            0x00 => self.leb().map(drop),
            // table: reference type, limits
            0x01 => {
                self.skip_ref_type()?;
                self.skip_limits()
            }
            // memory: limits
            0x02 => self.skip_limits(),
            // global: value type, mutability
            0x03 => {
                self.skip_value_type()?;
                self.byte().map(drop)
            }
            // tag: attribute, type index
            0x04 => {
                self.byte()?;
                self.leb().map(drop)
            }
            other => Err(format!("unknown import kind {other:#04x}")),
        }
    }

    fn skip_value_type(&mut self) -> Result<(), String> {
        match self.byte()? {
            // (ref null ht) / (ref ht): a heap type follows
            0x63 | 0x64 => self.leb().map(drop),
            _ => Ok(()),
        }
    }

    fn skip_ref_type(&mut self) -> Result<(), String> {
        self.skip_value_type()
    }

    fn skip_limits(&mut self) -> Result<(), String> {
        let flags = self.byte()?;
        self.leb()?;
        if flags & 0x01 != 0 {
            self.leb()?;
        }
        if flags & 0x08 != 0 {
            // custom page size: log2 of the page size
            self.leb()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_import_names_of_a_hand_assembled_module() {
        let module = super::super::tests::wasi_importing_module();
        assert_eq!(
            parse(&module).unwrap(),
            vec![("wasi_snapshot_preview1".to_owned(), "fd_write".to_owned())]
        );
        assert!(parse(&module[..module.len() - 3]).is_err());
    }
}
