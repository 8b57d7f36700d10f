//! The Spindle serial record line format: `@sp1 <json-object> #<crc32>`.
//!
//! A record line (see `docs/serial-protocol.md`) is the prefix [`PREFIX`],
//! one JSON object on one line, a space, `#`, the CRC-32 (IEEE, as in zlib)
//! of exactly the JSON bytes as 8 lower-case hex digits, and `\n`:
//!
//! ```text
//! @sp1 {"t":"hello","version":1,"kernel":"spindle"} #1a2b3c4d
//! ```
//!
//! Every object has a string field `t`, its record type.
//!
//! # Kernel side (`no_std`, no allocation)
//!
//! [`RecordWriter`] streams one record into any [`core::fmt::Write`] sink
//! while computing the CRC, so a record of any size (a histogram record can
//! be tens of KiB) needs no buffer. It emits only ASCII: strings are escaped
//! (`\"`, `\\`, `\u00XX` for control characters and DEL, `\uXXXX` UTF-16
//! units, with surrogate pairs, for non-ASCII characters).
//!
//! ```
//! use spindle_records::RecordWriter;
//!
//! let mut line = String::new();
//! let mut record = RecordWriter::begin(&mut line, "scalar")?;
//! record.str("name", "boot_ms")?.fixed("value", 12_345, 3)?;
//! record.finish()?;
//! assert!(line.starts_with(r#"@sp1 {"t":"scalar","name":"boot_ms","value":12.345} #"#));
//! # Ok::<(), core::fmt::Error>(())
//! ```
//!
//! # Host side (feature `host`)
//!
//! `parse_line` classifies one line as a human log line, a record, or a
//! corrupt record (with the reason); `LineAssembler` cuts a byte stream that
//! arrives in arbitrary chunks into lines. The `host` feature enables `std`
//! and `serde_json`.
#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt::{self, Write};

#[cfg(any(test, feature = "host"))]
mod host;
#[cfg(any(test, feature = "host"))]
pub use host::{parse_line, CorruptReason, Line, LineAssembler, Record};

/// The start of every record line: protocol version 1 and a space.
pub const PREFIX: &str = "@sp1 ";

/// Separator between the JSON object and the checksum.
pub const CHECKSUM_SEPARATOR: &str = " #";

/// Number of hex digits of the checksum.
pub const CHECKSUM_DIGITS: usize = 8;

/// The largest `decimals` that [`RecordWriter::fixed`] accepts (10^19 is
/// the largest power of ten in a `u64`).
pub const MAX_FIXED_DECIMALS: u32 = 19;

/// The reflected CRC-32 (IEEE 802.3) polynomial.
const CRC32_POLYNOMIAL: u32 = 0xEDB8_8320;

/// Initial CRC register value and final XOR.
const CRC32_INVERT: u32 = 0xFFFF_FFFF;

/// Entries in the byte-at-a-time CRC table.
const CRC32_TABLE_SIZE: usize = 256;

/// Bits per byte.
const BITS_PER_BYTE: u32 = 8;

/// The byte-at-a-time CRC-32 table, generated at compile time.
const CRC32_TABLE: [u32; CRC32_TABLE_SIZE] = crc32_table();

/// Builds [`CRC32_TABLE`].
const fn crc32_table() -> [u32; CRC32_TABLE_SIZE] {
    let mut table = [0; CRC32_TABLE_SIZE];
    let mut byte = 0;
    while byte < CRC32_TABLE_SIZE {
        let mut remainder = byte as u32;
        let mut bit = 0;
        while bit < BITS_PER_BYTE {
            remainder = if remainder & 1 == 1 {
                (remainder >> 1) ^ CRC32_POLYNOMIAL
            } else {
                remainder >> 1
            };
            bit += 1;
        }
        table[byte] = remainder;
        byte += 1;
    }
    table
}

/// Incremental CRC-32/IEEE (zlib's `crc32`): reflected polynomial
/// `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crc32 {
    /// The CRC register (before the final XOR).
    register: u32,
}

impl Crc32 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        Self {
            register: CRC32_INVERT,
        }
    }

    /// Adds `bytes` to the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        const LOW_BYTE: u32 = 0xFF;
        for &byte in bytes {
            let table_index = ((self.register ^ u32::from(byte)) & LOW_BYTE) as usize;
            self.register = (self.register >> BITS_PER_BYTE) ^ CRC32_TABLE[table_index];
        }
    }

    /// The checksum of all bytes added so far (the state is kept, so more
    /// bytes may follow).
    pub fn finish(&self) -> u32 {
        self.register ^ CRC32_INVERT
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// The CRC-32/IEEE of `bytes` (`crc32(b"123456789") == 0xCBF43926`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}

/// The JSON part of a record line: forwards text to the sink and adds it to
/// the CRC.
struct JsonOutput<'a, W: Write + ?Sized> {
    /// Where the line goes.
    sink: &'a mut W,
    /// CRC of the JSON text written so far.
    crc: Crc32,
}

impl<W: Write + ?Sized> Write for JsonOutput<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.crc.update(text.as_bytes());
        self.sink.write_str(text)
    }
}

/// Writes `text` as a JSON string of pure ASCII.
fn write_json_string(output: &mut impl Write, text: &str) -> fmt::Result {
    /// Characters below this are control characters and must be escaped.
    const FIRST_PRINTABLE: char = ' ';
    /// DEL is the last ASCII character; it and everything above is escaped.
    const DELETE: char = '\u{7f}';
    /// A UTF-16 encoding needs at most two units (a surrogate pair).
    const MAX_UTF16_UNITS: usize = 2;
    /// Hex digits of one `\uXXXX` escape.
    const UNIT_HEX_DIGITS: usize = 4;

    output.write_char('"')?;
    let mut unescaped_start = 0;
    for (position, character) in text.char_indices() {
        let escape = match character {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            _ if character < FIRST_PRINTABLE || character >= DELETE => None,
            _ => continue,
        };
        output.write_str(&text[unescaped_start..position])?;
        match escape {
            Some(escape) => output.write_str(escape)?,
            None => {
                let mut units = [0; MAX_UTF16_UNITS];
                for unit in character.encode_utf16(&mut units) {
                    write!(output, "\\u{unit:0width$x}", width = UNIT_HEX_DIGITS)?;
                }
            }
        }
        unescaped_start = position + character.len_utf8();
    }
    output.write_str(&text[unescaped_start..])?;
    output.write_char('"')
}

/// Writes `value / 10^decimals` as a JSON number with exactly `decimals`
/// digits after the point.
fn write_fixed(output: &mut impl Write, value: u64, decimals: u32) -> fmt::Result {
    /// Base of the decimal fraction.
    const DECIMAL_BASE: u64 = 10;
    if decimals > MAX_FIXED_DECIMALS {
        return Err(fmt::Error);
    }
    if decimals == 0 {
        return write!(output, "{value}");
    }
    let divisor = DECIMAL_BASE.pow(decimals);
    let width = decimals as usize;
    write!(output, "{}.{:0width$}", value / divisor, value % divisor)
}

/// Writes the fields of one JSON object: the nested objects of
/// [`RecordWriter::object_list`] and [`ObjectWriter::object`].
///
/// [`RecordWriter`] has the same field methods and forwards them here.
pub struct ObjectWriter<'o, 'a, W: Write + ?Sized> {
    /// The record's JSON output.
    output: &'o mut JsonOutput<'a, W>,
    /// Whether a field was written already (the next one needs a comma).
    needs_comma: bool,
}

impl<'a, W: Write + ?Sized> ObjectWriter<'_, 'a, W> {
    /// Writes the separator, the key and the colon.
    fn key(&mut self, key: &str) -> fmt::Result {
        if self.needs_comma {
            self.output.write_char(',')?;
        }
        self.needs_comma = true;
        write_json_string(self.output, key)?;
        self.output.write_char(':')
    }

    /// Writes `"key":value` with an unsigned integer.
    pub fn u64(&mut self, key: &str, value: u64) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        write!(self.output, "{value}")?;
        Ok(self)
    }

    /// Writes `"key":value` with a signed integer.
    pub fn i64(&mut self, key: &str, value: i64) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        write!(self.output, "{value}")?;
        Ok(self)
    }

    /// Writes `"key":true` or `"key":false`.
    pub fn bool(&mut self, key: &str, value: bool) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        write!(self.output, "{value}")?;
        Ok(self)
    }

    /// Writes `"key":"value"`, escaped to pure ASCII.
    pub fn str(&mut self, key: &str, value: &str) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        write_json_string(self.output, value)?;
        Ok(self)
    }

    /// Writes `value / 10^decimals` as a JSON decimal without floating
    /// point: `fixed("boot_ms", 12345, 3)` writes `"boot_ms":12.345`, and
    /// `fixed("x", 5, 2)` writes `"x":0.05`.
    ///
    /// # Errors
    ///
    /// The sink's error, or [`fmt::Error`] if `decimals` is above
    /// [`MAX_FIXED_DECIMALS`] (the key is then already written: the line is
    /// unusable, like after any error).
    pub fn fixed(&mut self, key: &str, value: u64, decimals: u32) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        write_fixed(self.output, value, decimals)?;
        Ok(self)
    }

    /// Writes `"key":[v1,v2,...]` with unsigned integers.
    pub fn u64_list(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = u64>,
    ) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        self.output.write_char('[')?;
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                self.output.write_char(',')?;
            }
            write!(self.output, "{value}")?;
        }
        self.output.write_char(']')?;
        Ok(self)
    }

    /// Writes `"key":[[a,b],[c,d],...]` with pairs of unsigned integers
    /// (e.g. histogram buckets as `[index, count]`).
    pub fn pairs(
        &mut self,
        key: &str,
        pairs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<&mut Self, fmt::Error> {
        self.key(key)?;
        self.output.write_char('[')?;
        for (position, (first, second)) in pairs.into_iter().enumerate() {
            if position > 0 {
                self.output.write_char(',')?;
            }
            write!(self.output, "[{first},{second}]")?;
        }
        self.output.write_char(']')?;
        Ok(self)
    }

    /// Writes `"key":["a","b",...]` with escaped strings.
    pub fn str_list<I>(&mut self, key: &str, values: I) -> Result<&mut Self, fmt::Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.key(key)?;
        self.output.write_char('[')?;
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                self.output.write_char(',')?;
            }
            write_json_string(self.output, value.as_ref())?;
        }
        self.output.write_char(']')?;
        Ok(self)
    }

    /// Writes `"key":{...}`, a nested object whose fields `write_fields`
    /// writes.
    pub fn object<F>(&mut self, key: &str, write_fields: F) -> Result<&mut Self, fmt::Error>
    where
        F: FnOnce(&mut ObjectWriter<'_, 'a, W>) -> fmt::Result,
    {
        self.key(key)?;
        self.output.write_char('{')?;
        write_fields(&mut ObjectWriter {
            output: &mut *self.output,
            needs_comma: false,
        })?;
        self.output.write_char('}')?;
        Ok(self)
    }

    /// Writes `"key":[{...},{...},...]`, one object per item, whose fields
    /// `write_item` writes; for example
    /// `[{"extension":"x","reason":"y"}]`.
    pub fn object_list<I, F>(
        &mut self,
        key: &str,
        items: I,
        mut write_item: F,
    ) -> Result<&mut Self, fmt::Error>
    where
        I: IntoIterator,
        F: FnMut(&mut ObjectWriter<'_, 'a, W>, I::Item) -> fmt::Result,
    {
        self.key(key)?;
        self.output.write_char('[')?;
        for (position, item) in items.into_iter().enumerate() {
            if position > 0 {
                self.output.write_char(',')?;
            }
            self.output.write_char('{')?;
            let mut object = ObjectWriter {
                output: &mut *self.output,
                needs_comma: false,
            };
            write_item(&mut object, item)?;
            self.output.write_char('}')?;
        }
        self.output.write_char(']')?;
        Ok(self)
    }
}

/// Streams one record line into a [`core::fmt::Write`] sink while computing
/// its CRC; nothing is buffered.
///
/// [`Self::begin`] writes `@sp1 {"t":"<type>"`, the field methods append
/// `,"key":value`, and [`Self::finish`] writes `} #<crc32>\n`. A writer
/// dropped without `finish` leaves an unterminated line (which a host
/// reports as corrupt). After any error the line is unusable; the error is
/// the sink's (or [`fmt::Error`] for a bad [`Self::fixed`] scale).
///
/// Keys are escaped like string values; the writer does not check them for
/// duplicates.
#[must_use = "a record line is complete only after `finish`"]
pub struct RecordWriter<'a, W: Write + ?Sized> {
    /// The JSON output with its running CRC.
    output: JsonOutput<'a, W>,
}

impl<'a, W: Write + ?Sized> RecordWriter<'a, W> {
    /// Starts a record of type `record_type`: writes `@sp1 {"t":"<type>"`.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn begin(sink: &'a mut W, record_type: &str) -> Result<Self, fmt::Error> {
        sink.write_str(PREFIX)?;
        let mut output = JsonOutput {
            sink,
            crc: Crc32::new(),
        };
        output.write_str("{\"t\":")?;
        write_json_string(&mut output, record_type)?;
        Ok(Self { output })
    }

    /// The field writer of the top-level object (`t` is already written, so
    /// every field needs a comma).
    fn fields(&mut self) -> ObjectWriter<'_, 'a, W> {
        ObjectWriter {
            output: &mut self.output,
            needs_comma: true,
        }
    }

    /// Writes `"key":value` with an unsigned integer.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn u64(&mut self, key: &str, value: u64) -> Result<&mut Self, fmt::Error> {
        self.fields().u64(key, value)?;
        Ok(self)
    }

    /// Writes `"key":value` with a signed integer.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn i64(&mut self, key: &str, value: i64) -> Result<&mut Self, fmt::Error> {
        self.fields().i64(key, value)?;
        Ok(self)
    }

    /// Writes `"key":true` or `"key":false`.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn bool(&mut self, key: &str, value: bool) -> Result<&mut Self, fmt::Error> {
        self.fields().bool(key, value)?;
        Ok(self)
    }

    /// Writes `"key":"value"`, escaped to pure ASCII.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn str(&mut self, key: &str, value: &str) -> Result<&mut Self, fmt::Error> {
        self.fields().str(key, value)?;
        Ok(self)
    }

    /// Writes `value / 10^decimals` as a JSON decimal without floating
    /// point: `fixed("boot_ms", 12345, 3)` writes `"boot_ms":12.345`.
    ///
    /// # Errors
    ///
    /// The sink's error, or [`fmt::Error`] if `decimals` is above
    /// [`MAX_FIXED_DECIMALS`].
    pub fn fixed(&mut self, key: &str, value: u64, decimals: u32) -> Result<&mut Self, fmt::Error> {
        self.fields().fixed(key, value, decimals)?;
        Ok(self)
    }

    /// Writes `"key":[v1,v2,...]` with unsigned integers.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn u64_list(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = u64>,
    ) -> Result<&mut Self, fmt::Error> {
        self.fields().u64_list(key, values)?;
        Ok(self)
    }

    /// Writes `"key":[[a,b],[c,d],...]` with pairs of unsigned integers.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn pairs(
        &mut self,
        key: &str,
        pairs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<&mut Self, fmt::Error> {
        self.fields().pairs(key, pairs)?;
        Ok(self)
    }

    /// Writes `"key":["a","b",...]` with escaped strings.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn str_list<I>(&mut self, key: &str, values: I) -> Result<&mut Self, fmt::Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.fields().str_list(key, values)?;
        Ok(self)
    }

    /// Writes `"key":{...}`, a nested object whose fields `write_fields`
    /// writes.
    ///
    /// # Errors
    ///
    /// The sink's error, or the closure's.
    pub fn object<F>(&mut self, key: &str, write_fields: F) -> Result<&mut Self, fmt::Error>
    where
        F: FnOnce(&mut ObjectWriter<'_, 'a, W>) -> fmt::Result,
    {
        self.fields().object(key, write_fields)?;
        Ok(self)
    }

    /// Writes `"key":[{...},{...},...]`, one flat object per item, whose
    /// fields `write_item` writes with the same field methods:
    ///
    /// ```
    /// # use spindle_records::RecordWriter;
    /// let mut line = String::new();
    /// let mut record = RecordWriter::begin(&mut line, "ejections")?;
    /// record.object_list("ejections", [("x", "y")], |object, (extension, reason)| {
    ///     object.str("extension", extension)?.str("reason", reason)?;
    ///     Ok(())
    /// })?;
    /// record.finish()?;
    /// assert!(line.contains(r#""ejections":[{"extension":"x","reason":"y"}]"#));
    /// # Ok::<(), core::fmt::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The sink's error, or the closure's.
    pub fn object_list<I, F>(
        &mut self,
        key: &str,
        items: I,
        write_item: F,
    ) -> Result<&mut Self, fmt::Error>
    where
        I: IntoIterator,
        F: FnMut(&mut ObjectWriter<'_, 'a, W>, I::Item) -> fmt::Result,
    {
        self.fields().object_list(key, items, write_item)?;
        Ok(self)
    }

    /// Ends the record: writes `} #<crc32 as 8 lower-case hex digits>\n`.
    ///
    /// # Errors
    ///
    /// The sink's error.
    pub fn finish(mut self) -> Result<(), fmt::Error> {
        self.output.write_char('}')?;
        let checksum = self.output.crc.finish();
        writeln!(
            self.output.sink,
            "{CHECKSUM_SEPARATOR}{checksum:0width$x}",
            width = CHECKSUM_DIGITS
        )
    }
}

#[cfg(test)]
mod tests;
