//! Unit tests for the CRC, the record writer and the host-side parser.

use super::*;
use serde_json::{json, Value};

/// The CRC-32/IEEE check value: the CRC of `"123456789"`.
const CHECK_VALUE: u32 = 0xCBF4_3926;

/// Writes one record of type `record_type` with the fields `write_fields`
/// writes, and returns the whole line.
fn record_line(
    record_type: &str,
    write_fields: impl FnOnce(&mut RecordWriter<'_, String>) -> fmt::Result,
) -> String {
    let mut line = String::new();
    let mut record = RecordWriter::begin(&mut line, record_type).expect("String never fails");
    write_fields(&mut record).expect("String never fails");
    record.finish().expect("String never fails");
    line
}

/// The JSON part of a record line written by [`RecordWriter`].
fn json_of(line: &str) -> &str {
    let body = line.strip_prefix(PREFIX).expect("line has the prefix");
    let end = body.rfind(CHECKSUM_SEPARATOR).expect("line has a checksum");
    &body[..end]
}

/// Builds a record line around arbitrary `json` with its correct checksum.
fn line_around(json: &str) -> String {
    format!(
        "{PREFIX}{json}{CHECKSUM_SEPARATOR}{:08x}",
        crc32(json.as_bytes())
    )
}

/// Parses `line`, which must be a valid record.
fn parse_record_line(line: &str) -> Record {
    match parse_line(line) {
        Line::Record(record) => record,
        other => panic!("expected a record from {line:?}, got {other:?}"),
    }
}

/// The reason `line` is corrupt; fails if it is not.
fn corrupt_reason(line: &str) -> CorruptReason {
    match parse_line(line) {
        Line::Corrupt { reason, line: kept } => {
            assert_eq!(kept, line.trim_end_matches(['\r', '\n']));
            reason
        }
        other => panic!("expected a corrupt record from {line:?}, got {other:?}"),
    }
}

// ---- CRC-32 ----

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), CHECK_VALUE);
}

#[test]
fn crc32_known_values() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"a"), 0xE8B7_BE43);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414F_A339
    );
}

#[test]
fn crc32_incremental_matches_one_shot_at_every_split() {
    let text = b"@sp1 {\"t\":\"hello\",\"version\":1}";
    let whole = crc32(text);
    for split in 0..=text.len() {
        let mut crc = Crc32::new();
        crc.update(&text[..split]);
        crc.update(&text[split..]);
        assert_eq!(crc.finish(), whole, "split at {split}");
    }
}

#[test]
fn crc32_finish_keeps_state() {
    let mut crc = Crc32::default();
    crc.update(b"1234");
    assert_eq!(crc.finish(), crc32(b"1234"));
    crc.update(b"56789");
    assert_eq!(crc.finish(), CHECK_VALUE);
    assert_eq!(Crc32::new().finish(), 0);
}

// ---- writer ----

#[test]
fn minimal_record_line_is_exact() {
    let line = record_line("hello", |_| Ok(()));
    let json = r#"{"t":"hello"}"#;
    assert_eq!(
        line,
        format!("@sp1 {json} #{:08x}\n", crc32(json.as_bytes()))
    );
}

#[test]
fn every_field_kind_is_written_exactly() {
    let line = record_line("all", |record| {
        record
            .u64("unsigned", u64::MAX)?
            .i64("signed", i64::MIN)?
            .bool("yes", true)?
            .bool("no", false)?
            .str("text", "plain")?
            .fixed("boot_ms", 12_345, 3)?
            .u64_list("list", [1, 2, 3])?
            .pairs("pairs", [(4, 5), (6, 7)])?
            .str_list("names", ["a", "b"])?
            .object("inner", |object| {
                object.u64("x", 1)?;
                Ok(())
            })?
            .object_list("items", [1, 2], |object, item| {
                object.u64("item", item)?.str("kind", "k")?;
                Ok(())
            })?;
        Ok(())
    });
    assert_eq!(
        json_of(&line),
        concat!(
            r#"{"t":"all","unsigned":18446744073709551615,"signed":-9223372036854775808,"#,
            r#""yes":true,"no":false,"text":"plain","boot_ms":12.345,"list":[1,2,3],"#,
            r#""pairs":[[4,5],[6,7]],"names":["a","b"],"inner":{"x":1},"#,
            r#""items":[{"item":1,"kind":"k"},{"item":2,"kind":"k"}]}"#
        )
    );
}

#[test]
fn every_field_kind_round_trips() {
    let line = record_line("all", |record| {
        record
            .u64("unsigned", u64::MAX)?
            .i64("signed", -5)?
            .i64("largest", i64::MAX)?
            .bool("flag", true)?
            .str("text", "quote \" backslash \\ newline \n tab \t")?
            .fixed("milliseconds", 12_345, 3)?
            .u64_list("list", [0, 1, u64::MAX])?
            .pairs("buckets", [(0, 1), (2239, u64::from(u32::MAX))])?
            .str_list("names", vec![String::from("é"), String::from("\"")])?
            .object_list("ejections", [("x", "y")], |object, (extension, reason)| {
                object.str("extension", extension)?.str("reason", reason)?;
                Ok(())
            })?;
        Ok(())
    });
    let record = parse_record_line(&line);
    assert_eq!(record.record_type, "all");
    assert_eq!(
        Value::Object(record.fields.clone()),
        json!({
            "t": "all",
            "unsigned": u64::MAX,
            "signed": -5,
            "largest": i64::MAX,
            "flag": true,
            "text": "quote \" backslash \\ newline \n tab \t",
            "milliseconds": 12.345,
            "list": [0, 1, u64::MAX],
            "buckets": [[0, 1], [2239, u32::MAX]],
            "names": ["é", "\""],
            "ejections": [{"extension": "x", "reason": "y"}],
        })
    );
    assert_eq!(record.get_u64("unsigned"), Some(u64::MAX));
    assert_eq!(record.get_i64("signed"), Some(-5));
    assert_eq!(record.get_u64("signed"), None);
    assert_eq!(record.get_bool("flag"), Some(true));
    assert_eq!(record.get_f64("milliseconds"), Some(12.345));
    assert_eq!(record.get_str("t"), Some("all"));
    assert_eq!(record.get_str("missing"), None);
    assert_eq!(record.get_u64_list("list"), Some(vec![0, 1, u64::MAX]));
    assert_eq!(record.get_u64_list("names"), None);
    assert_eq!(
        record.get_pairs("buckets"),
        Some(vec![(0, 1), (2239, u64::from(u32::MAX))])
    );
    assert_eq!(record.get_pairs("list"), None);
    assert_eq!(record.get_array("ejections").map(<[Value]>::len), Some(1));
    assert!(record.get("text").is_some_and(Value::is_string));
}

#[test]
fn strings_are_escaped_to_ascii_and_round_trip() {
    let tricky = [
        "",
        "plain",
        "\"quoted\"",
        "back\\slash",
        "line\nbreak\r\n",
        "\t\u{0}\u{1}\u{1f}",
        "delete\u{7f}",
        "caf\u{e9}",
        "\u{4e2d}\u{6587}",
        "emoji \u{1F600} pair",
        "\u{FFFF}\u{10FFFF}",
        "}\" #deadbeef",
    ];
    for text in tricky {
        let line = record_line(text, |record| {
            record.str(text, text)?.str_list("list", [text])?;
            Ok(())
        });
        assert!(line.is_ascii(), "line is not ASCII: {line:?}");
        assert_eq!(line.matches('\n').count(), 1, "line break inside {line:?}");
        let record = parse_record_line(&line);
        assert_eq!(record.record_type, text);
        assert_eq!(record.get_str(text), Some(text));
        assert_eq!(record.get("list"), Some(&json!([text])));
    }
}

#[test]
fn escapes_use_the_documented_forms() {
    let line = record_line("e", |record| {
        record.str("s", "\"\\\n\u{7f}\u{e9}\u{1F600}")?;
        Ok(())
    });
    assert_eq!(
        json_of(&line),
        r#"{"t":"e","s":"\"\\\u000a\u007f\u00e9\ud83d\ude00"}"#
    );
}

#[test]
fn fixed_point_values() {
    let cases: [(u64, u32, &str); 8] = [
        (12_345, 3, "12.345"),
        (5, 2, "0.05"),
        (0, 3, "0.000"),
        (7, 0, "7"),
        (100, 1, "10.0"),
        (u64::MAX, 0, "18446744073709551615"),
        (u64::MAX, MAX_FIXED_DECIMALS, "1.8446744073709551615"),
        (1, MAX_FIXED_DECIMALS, "0.0000000000000000001"),
    ];
    for (value, decimals, expected) in cases {
        let line = record_line("f", |record| {
            record.fixed("v", value, decimals)?;
            Ok(())
        });
        assert_eq!(json_of(&line), format!(r#"{{"t":"f","v":{expected}}}"#));
        let parsed = parse_record_line(&line);
        assert!(parsed.get("v").is_some_and(Value::is_number));
    }
}

#[test]
fn fixed_rejects_too_many_decimals() {
    let mut line = String::new();
    let mut record = RecordWriter::begin(&mut line, "f").expect("String never fails");
    assert_eq!(
        record.fixed("v", 1, MAX_FIXED_DECIMALS + 1).map(|_| ()),
        Err(fmt::Error)
    );
    assert_eq!(record.fixed("v", 1, u32::MAX).map(|_| ()), Err(fmt::Error));
}

#[test]
fn empty_collections() {
    let line = record_line("empty", |record| {
        record
            .u64_list("a", [])?
            .pairs("b", [])?
            .str_list("c", [""; 0])?
            .object_list("d", [(); 0], |_, ()| Ok(()))?
            .object_list("e", [()], |_, ()| Ok(()))?
            .object("f", |_| Ok(()))?;
        Ok(())
    });
    assert_eq!(
        json_of(&line),
        r#"{"t":"empty","a":[],"b":[],"c":[],"d":[],"e":[{}],"f":{}}"#
    );
    parse_record_line(&line);
}

#[test]
fn nested_objects_inside_object_lists() {
    let line = record_line("nest", |record| {
        record.object_list("cpus", [0_u64, 1], |object, cpu| {
            object
                .u64("cpu", cpu)?
                .object_list("ticks", [cpu, cpu + 1], |inner, tick| {
                    inner.u64("tick", tick)?;
                    Ok(())
                })?;
            Ok(())
        })?;
        Ok(())
    });
    let record = parse_record_line(&line);
    assert_eq!(
        record.get("cpus"),
        Some(&json!([
            {"cpu": 0, "ticks": [{"tick": 0}, {"tick": 1}]},
            {"cpu": 1, "ticks": [{"tick": 1}, {"tick": 2}]},
        ]))
    );
}

#[test]
fn histogram_sized_record_round_trips() {
    const BUCKETS: u64 = 2240;
    let buckets: Vec<(u64, u64)> = (0..BUCKETS)
        .map(|index| (index, u64::from(u32::MAX) - index))
        .collect();
    let line = record_line("hist", |record| {
        record
            .str("name", "apic.timer_lateness")?
            .pairs("buckets", buckets.iter().copied())?;
        Ok(())
    });
    assert!(line.len() > 20_000);
    let record = parse_record_line(&line);
    assert_eq!(record.get_pairs("buckets"), Some(buckets));
}

#[test]
fn writer_accepts_unsized_sink() {
    let mut line = String::new();
    let sink: &mut dyn Write = &mut line;
    let mut record = RecordWriter::begin(sink, "dyn").expect("String never fails");
    record.u64("n", 1).expect("String never fails");
    record.finish().expect("String never fails");
    assert_eq!(parse_record_line(&line).get_u64("n"), Some(1));
}

/// A sink that accepts `budget` bytes and then fails.
struct FailingSink {
    /// Bytes still accepted.
    budget: usize,
    /// What was accepted.
    written: String,
}

impl Write for FailingSink {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if text.len() > self.budget {
            return Err(fmt::Error);
        }
        self.budget -= text.len();
        self.written.push_str(text);
        Ok(())
    }
}

/// Writes a record with every field kind into `sink`.
fn write_everything(sink: &mut FailingSink) -> fmt::Result {
    let mut record = RecordWriter::begin(sink, "everything")?;
    record
        .u64("a", 1)?
        .i64("b", -1)?
        .bool("c", true)?
        .str("d", "x\u{e9}\"")?
        .fixed("e", 1_500, 3)?
        .u64_list("f", [1, 2])?
        .pairs("g", [(1, 2)])?
        .str_list("h", ["y"])?
        .object("i", |object| {
            object.u64("j", 2)?;
            Ok(())
        })?
        .object_list("k", [3], |object, item| {
            object.u64("l", item)?;
            Ok(())
        })?;
    record.finish()
}

#[test]
fn sink_errors_propagate_at_every_point() {
    let mut unlimited = FailingSink {
        budget: usize::MAX,
        written: String::new(),
    };
    write_everything(&mut unlimited).expect("unlimited sink never fails");
    let full_length = unlimited.written.len();
    parse_record_line(&unlimited.written);
    for budget in 0..full_length {
        let mut sink = FailingSink {
            budget,
            written: String::new(),
        };
        assert_eq!(
            write_everything(&mut sink),
            Err(fmt::Error),
            "budget {budget}"
        );
        assert!(sink.written.len() <= budget);
    }
    let mut exact = FailingSink {
        budget: full_length,
        written: String::new(),
    };
    assert_eq!(write_everything(&mut exact), Ok(()));
    assert_eq!(exact.written, unlimited.written);
}

#[test]
fn closure_errors_propagate() {
    let mut line = String::new();
    let mut record = RecordWriter::begin(&mut line, "x").expect("String never fails");
    let result = record.object_list("items", [1], |_, _| Err(fmt::Error));
    assert!(result.is_err());
    let result = record.object("item", |_| Err(fmt::Error));
    assert!(result.is_err());
}

// ---- parse_line ----

#[test]
fn human_lines_pass_through() {
    let cases = [
        ("[cpu1] online", "[cpu1] online"),
        ("", ""),
        ("\n", ""),
        ("plain\r\n", "plain"),
        ("@sp1", "@sp1"),
        ("@sp1\n", "@sp1"),
        ("@sp10 x", "@sp10 x"),
        (
            "@sp2 {\"t\":\"x\"} #00000000",
            "@sp2 {\"t\":\"x\"} #00000000",
        ),
        (" @sp1 {}", " @sp1 {}"),
        ("@SP1 {}", "@SP1 {}"),
        ("caf\u{e9} \u{1F600}", "caf\u{e9} \u{1F600}"),
    ];
    for (line, text) in cases {
        assert_eq!(parse_line(line), Line::Human(text.to_owned()), "{line:?}");
    }
}

#[test]
fn line_endings_are_stripped_from_records() {
    let line = record_line("hello", |record| {
        record.u64("version", 1)?;
        Ok(())
    });
    let bare = line.trim_end();
    for variant in [
        line.clone(),
        bare.to_owned(),
        format!("{bare}\r\n"),
        format!("{bare}\r\r\n"),
    ] {
        assert_eq!(parse_record_line(&variant).get_u64("version"), Some(1));
    }
}

#[test]
fn corrupted_checksum_is_bad_checksum() {
    let json = r#"{"t":"hello","version":1}"#;
    let correct = crc32(json.as_bytes());
    let wrong = correct ^ 1;
    let line = format!("{PREFIX}{json} #{wrong:08x}");
    assert_eq!(
        corrupt_reason(&line),
        CorruptReason::BadChecksum {
            expected: correct,
            found: wrong
        }
    );
}

#[test]
fn corrupted_json_byte_is_bad_checksum() {
    let line = record_line("hello", |record| {
        record.u64("version", 1)?;
        Ok(())
    });
    let damaged = line.replace("version", "versiom");
    assert!(matches!(
        corrupt_reason(&damaged),
        CorruptReason::BadChecksum { .. }
    ));
}

#[test]
fn missing_or_malformed_checksum() {
    let json = r#"{"t":"x"}"#;
    let correct = crc32(json.as_bytes());
    let cases = [
        String::from("@sp1 "),
        String::from("@sp1 \r\n"),
        format!("{PREFIX}{json}"),
        format!("{PREFIX}{json} #"),
        format!("{PREFIX}{json} #{}", &format!("{correct:08x}")[1..]),
        format!("{PREFIX}{json}#{correct:08x}"),
        format!("{PREFIX}{json}  {correct:08x}"),
        format!("{PREFIX}{json} #{correct:08x} "),
        format!("{PREFIX}{json} #xyzxyzxy"),
        format!("{PREFIX}{json} #+1234567"),
        String::from("@sp1 \u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"),
        String::from("@sp1 x #1234567\u{e9}"),
        String::from("@sp1 \u{e9}123456789"),
    ];
    for line in cases {
        assert_eq!(
            corrupt_reason(&line),
            CorruptReason::MissingChecksum,
            "{line:?}"
        );
    }
}

#[test]
fn upper_case_checksum_is_refused() {
    let json = r#"{"t":"abc"}"#;
    let line = format!("{PREFIX}{json} #{:08X}", crc32(json.as_bytes()));
    assert!(
        line.bytes().any(|byte| byte.is_ascii_uppercase()),
        "needs a hex letter: {line}"
    );
    assert_eq!(corrupt_reason(&line), CorruptReason::MissingChecksum);
}

#[test]
fn truncated_line_is_corrupt_at_every_length() {
    let line = record_line("hist", |record| {
        record
            .str("name", "x")?
            .pairs("buckets", [(1, 2), (3, 4)])?;
        Ok(())
    });
    let line = line.trim_end();
    for length in PREFIX.len()..line.len() {
        assert_eq!(
            corrupt_reason(&line[..length]),
            CorruptReason::MissingChecksum,
            "truncated to {length}"
        );
    }
}

#[test]
fn bad_json_with_valid_checksum() {
    for json in [r#"{"t":"x",}"#, "{", "", "not json", r#"{"t":"x"} extra"#] {
        assert!(
            matches!(corrupt_reason(&line_around(json)), CorruptReason::BadJson(ref message) if !message.is_empty()),
            "{json:?}"
        );
    }
}

#[test]
fn non_object_json() {
    for json in ["[1,2]", "\"t\"", "42", "null", "true"] {
        assert_eq!(
            corrupt_reason(&line_around(json)),
            CorruptReason::NotAnObject,
            "{json:?}"
        );
    }
}

#[test]
fn missing_or_non_string_type() {
    for json in [
        "{}",
        r#"{"a":1}"#,
        r#"{"t":5}"#,
        r#"{"t":null}"#,
        r#"{"T":"x"}"#,
    ] {
        assert_eq!(
            corrupt_reason(&line_around(json)),
            CorruptReason::MissingType,
            "{json:?}"
        );
    }
}

#[test]
fn hand_written_record_with_spaces_parses() {
    let record = parse_record_line(&line_around(r#"{ "t" : "end", "status" : "ok" }"#));
    assert_eq!(record.record_type, "end");
    assert_eq!(record.get_str("status"), Some("ok"));
}

#[test]
fn corrupt_reasons_display() {
    assert_eq!(
        CorruptReason::BadChecksum {
            expected: 0xCBF4_3926,
            found: 1
        }
        .to_string(),
        "checksum mismatch: the line says #00000001 but its JSON has CRC-32 #cbf43926"
    );
    assert!(CorruptReason::MissingChecksum
        .to_string()
        .contains("8 lower-case hex digits"));
    assert_eq!(
        CorruptReason::BadJson(String::from("EOF")).to_string(),
        "invalid JSON: EOF"
    );
    assert_eq!(
        CorruptReason::NotAnObject.to_string(),
        "the JSON is not an object"
    );
    assert_eq!(
        CorruptReason::MissingType.to_string(),
        "the object has no string field \"t\""
    );
}

// ---- LineAssembler ----

/// A stream of human lines, records and a corrupt record.
fn sample_stream() -> String {
    let mut stream = String::from("boot\r\n[cpu0] hello \u{e9}\n\n");
    stream.push_str(&record_line("hello", |record| {
        record.u64("version", 1)?.str("kernel", "spindle \"0.1\"")?;
        Ok(())
    }));
    stream.push_str("[cpu1] online\n");
    stream.push_str(&record_line("hist", |record| {
        record.pairs("buckets", [(1, 2), (300, 4)])?;
        Ok(())
    }));
    stream.push_str("@sp1 {\"t\":\"broken\"} #00000000\n");
    stream.push_str(&record_line("end", |record| {
        record.str("status", "ok")?;
        Ok(())
    }));
    stream
}

/// The lines of `stream` parsed one by one.
fn expected_lines(stream: &str) -> Vec<Line> {
    stream.split_inclusive('\n').map(parse_line).collect()
}

#[test]
fn assembler_whole_stream() {
    let stream = sample_stream();
    let mut assembler = LineAssembler::new();
    let lines = assembler.push(stream.as_bytes());
    assert_eq!(lines, expected_lines(&stream));
    assert_eq!(assembler.pending_len(), 0);
    assert_eq!(assembler.finish(), None);
    let records = lines
        .iter()
        .filter(|line| matches!(line, Line::Record(_)))
        .count();
    let corrupt = lines
        .iter()
        .filter(|line| matches!(line, Line::Corrupt { .. }))
        .count();
    assert_eq!((records, corrupt), (3, 1));
}

#[test]
fn assembler_split_at_every_offset() {
    let stream = sample_stream();
    let bytes = stream.as_bytes();
    let expected = expected_lines(&stream);
    for split in 0..=bytes.len() {
        let mut assembler = LineAssembler::new();
        let mut lines = assembler.push(&bytes[..split]);
        lines.extend(assembler.push(&bytes[split..]));
        assert_eq!(lines, expected, "split at {split}");
        assert_eq!(assembler.finish(), None);
    }
}

#[test]
fn assembler_every_pair_of_splits_inside_each_record() {
    let record = record_line("hello", |record| {
        record.u64("version", 1)?;
        Ok(())
    });
    let stream = format!("x\n{record}y\n");
    let bytes = stream.as_bytes();
    let expected = expected_lines(&stream);
    for first in 0..=bytes.len() {
        for second in first..=bytes.len() {
            let mut assembler = LineAssembler::new();
            let mut lines = assembler.push(&bytes[..first]);
            lines.extend(assembler.push(&bytes[first..second]));
            lines.extend(assembler.push(&bytes[second..]));
            assert_eq!(lines, expected, "splits at {first} and {second}");
        }
    }
}

#[test]
fn assembler_one_byte_at_a_time() {
    let stream = sample_stream();
    let mut assembler = LineAssembler::new();
    let mut lines = Vec::new();
    for &byte in stream.as_bytes() {
        lines.extend(assembler.push(&[byte]));
    }
    assert_eq!(lines, expected_lines(&stream));
}

#[test]
fn assembler_finish_parses_partial_line() {
    let record = record_line("end", |record| {
        record.str("status", "ok")?;
        Ok(())
    });
    let unterminated = record.trim_end();
    let mut assembler = LineAssembler::new();
    assert!(assembler.push(unterminated.as_bytes()).is_empty());
    assert_eq!(assembler.pending_len(), unterminated.len());
    assert!(
        matches!(assembler.finish(), Some(Line::Record(ref parsed)) if parsed.record_type == "end")
    );

    let mut assembler = LineAssembler::new();
    assembler.push(&unterminated.as_bytes()[..unterminated.len() - 1]);
    assert!(matches!(
        assembler.finish(),
        Some(Line::Corrupt {
            reason: CorruptReason::MissingChecksum,
            ..
        })
    ));

    let mut assembler = LineAssembler::new();
    assembler.push(b"partial human");
    assert_eq!(
        assembler.finish(),
        Some(Line::Human(String::from("partial human")))
    );
}

#[test]
fn assembler_replaces_invalid_utf8() {
    let mut assembler = LineAssembler::new();
    let lines = assembler.push(b"bad \xff byte\n");
    assert_eq!(lines, vec![Line::Human(String::from("bad \u{FFFD} byte"))]);

    let record = record_line("x", |record| {
        record.str("s", "ab")?;
        Ok(())
    });
    let mut damaged = record.into_bytes();
    let position = damaged
        .iter()
        .position(|&byte| byte == b'a')
        .expect("has an 'a'");
    damaged[position] = 0xFF;
    let lines = assembler.push(&damaged);
    assert!(matches!(
        lines.as_slice(),
        [Line::Corrupt {
            reason: CorruptReason::BadChecksum { .. },
            ..
        }]
    ));
}
