//! Host side: classifying serial lines and cutting a byte stream into lines.

use crate::{crc32, CHECKSUM_DIGITS, CHECKSUM_SEPARATOR, PREFIX};
use serde_json::{Map, Value};
use std::fmt;

/// Name of the record type field every record object has.
const TYPE_FIELD: &str = "t";

/// Radix of the checksum digits.
const HEX_RADIX: u32 = 16;

/// One line of serial output, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// A line for people (anything that does not start with [`PREFIX`]),
    /// without its line ending.
    Human(String),
    /// A record whose checksum and JSON are valid.
    Record(Record),
    /// A line that starts with [`PREFIX`] but is not a valid record.
    Corrupt {
        /// The line as received, without its line ending.
        line: String,
        /// What is wrong with it.
        reason: CorruptReason,
    },
}

/// Why a line that starts with [`PREFIX`] is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptReason {
    /// The checksum on the line does not match the JSON bytes.
    BadChecksum {
        /// The CRC-32 of the JSON bytes as received.
        expected: u32,
        /// The CRC-32 written on the line.
        found: u32,
    },
    /// The line does not end with ` #` and 8 lower-case hex digits (for
    /// example, it was cut short).
    MissingChecksum,
    /// The checksum matches but the text is not valid JSON (the parser's
    /// message).
    BadJson(String),
    /// The JSON is valid but not an object.
    NotAnObject,
    /// The object has no string field `t`.
    MissingType,
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChecksum { expected, found } => write!(
                formatter,
                "checksum mismatch: the line says #{found:08x} but its JSON has CRC-32 #{expected:08x}"
            ),
            Self::MissingChecksum => formatter.write_str(
                "no checksum: a record line must end with \" #\" and 8 lower-case hex digits",
            ),
            Self::BadJson(message) => write!(formatter, "invalid JSON: {message}"),
            Self::NotAnObject => formatter.write_str("the JSON is not an object"),
            Self::MissingType => formatter.write_str("the object has no string field \"t\""),
        }
    }
}

/// A valid record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The record type (the `t` field).
    pub record_type: String,
    /// Every field of the object, `t` included.
    pub fields: Map<String, Value>,
}

impl Record {
    /// The field `key`, of any JSON type.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The field `key` if it is a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// The field `key` if it is an integer that fits an `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// The field `key` if it is a number.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    /// The field `key` if it is a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// The field `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The field `key` if it is an array.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key)?.as_array().map(Vec::as_slice)
    }

    /// The field `key` if it is an array of non-negative integers.
    pub fn get_u64_list(&self, key: &str) -> Option<Vec<u64>> {
        self.get_array(key)?.iter().map(Value::as_u64).collect()
    }

    /// The field `key` if it is an array of `[a, b]` pairs of non-negative
    /// integers (as [`crate::RecordWriter::pairs`] writes).
    pub fn get_pairs(&self, key: &str) -> Option<Vec<(u64, u64)>> {
        self.get_array(key)?
            .iter()
            .map(|pair| match pair.as_array()?.as_slice() {
                [first, second] => Some((first.as_u64()?, second.as_u64()?)),
                _ => None,
            })
            .collect()
    }
}

/// Removes one trailing `\n` and then any trailing `\r`.
fn strip_line_ending(line: &str) -> &str {
    line.strip_suffix('\n')
        .unwrap_or(line)
        .trim_end_matches('\r')
}

/// Splits `body` (the text after the prefix) into the JSON text and the
/// checksum written on the line.
fn split_checksum(body: &str) -> Option<(&str, u32)> {
    let suffix_length = CHECKSUM_SEPARATOR.len() + CHECKSUM_DIGITS;
    let json_length = body.len().checked_sub(suffix_length)?;
    // The suffix must be ASCII for the split to fall on a character boundary.
    let (json, suffix) = (body.get(..json_length)?, &body[json_length..]);
    let digits = suffix.strip_prefix(CHECKSUM_SEPARATOR)?;
    let lower_case_hex = digits
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !lower_case_hex {
        return None;
    }
    let checksum = u32::from_str_radix(digits, HEX_RADIX).ok()?;
    Some((json, checksum))
}

/// Parses the text after [`PREFIX`].
fn parse_record(body: &str) -> Result<Record, CorruptReason> {
    let (json, found) = split_checksum(body).ok_or(CorruptReason::MissingChecksum)?;
    let expected = crc32(json.as_bytes());
    if expected != found {
        return Err(CorruptReason::BadChecksum { expected, found });
    }
    let value: Value =
        serde_json::from_str(json).map_err(|error| CorruptReason::BadJson(error.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(CorruptReason::NotAnObject);
    };
    let record_type = fields
        .get(TYPE_FIELD)
        .and_then(Value::as_str)
        .ok_or(CorruptReason::MissingType)?
        .to_owned();
    Ok(Record {
        record_type,
        fields,
    })
}

/// Classifies one line of serial output.
///
/// A trailing `\n` and any `\r` before it are removed first. Only a line
/// that starts with [`PREFIX`] (`"@sp1 "`, with the space) is a record
/// candidate: `"@sp1"` alone or `"@sp10 x"` are human lines. A candidate
/// with a bad or missing checksum, bad JSON, a non-object or no `t` is
/// [`Line::Corrupt`], never silently dropped.
pub fn parse_line(line: &str) -> Line {
    let line = strip_line_ending(line);
    let Some(body) = line.strip_prefix(PREFIX) else {
        return Line::Human(line.to_owned());
    };
    match parse_record(body) {
        Ok(record) => Line::Record(record),
        Err(reason) => Line::Corrupt {
            line: line.to_owned(),
            reason,
        },
    }
}

/// Parses one line given as bytes (invalid UTF-8 replaced lossily).
fn parse_line_bytes(bytes: &[u8]) -> Line {
    parse_line(&String::from_utf8_lossy(bytes))
}

/// Cuts a byte stream that arrives in chunks (serial output) into lines.
///
/// Lines end with `\n`. Bytes that are not UTF-8 are replaced with U+FFFD
/// (a record containing them then fails its checksum and is reported as
/// corrupt).
#[derive(Clone, Debug, Default)]
pub struct LineAssembler {
    /// Bytes of the line not yet ended.
    pending: Vec<u8>,
}

impl LineAssembler {
    /// An assembler with no pending bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns every line they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            self.pending.extend_from_slice(&rest[..end]);
            lines.push(parse_line_bytes(&self.pending));
            self.pending.clear();
            rest = &rest[end + 1..];
        }
        self.pending.extend_from_slice(rest);
        lines
    }

    /// Number of bytes received after the last complete line.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: the unterminated last line, parsed, if there are
    /// pending bytes.
    pub fn finish(self) -> Option<Line> {
        if self.pending.is_empty() {
            None
        } else {
            Some(parse_line_bytes(&self.pending))
        }
    }
}
