//! Writing record lines the way the kernel does, for tests and fake kernels.
//!
//! The runner never writes records; these helpers let tests (and fake QEMU
//! scripts) produce serial transcripts that the real parser accepts.

use serde_json::Value;

/// CRC-32 (IEEE 802.3 / zlib), the protocol's checksum; the kernel's own
/// implementation from `spindle-records`.
pub use spindle_records::crc32;

/// One record line without the trailing newline: `@sp1 <json> #<crc32>`.
///
/// `record` should be a JSON object with a string field `t`.
pub fn record_line(record: &Value) -> String {
    let json = record.to_string();
    format!("@sp1 {json} #{:08x}", crc32(json.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn record_lines_have_the_protocol_framing() {
        let line = record_line(&serde_json::json!({"t": "end", "status": "ok"}));
        assert!(line.starts_with("@sp1 {"));
        let (json, checksum) = line["@sp1 ".len()..].rsplit_once(" #").unwrap();
        assert_eq!(checksum.len(), 8);
        assert_eq!(
            u32::from_str_radix(checksum, 16).unwrap(),
            crc32(json.as_bytes())
        );
    }
}
