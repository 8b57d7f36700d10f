//! Unit tests for command line splitting, keys, values and error messages.

use super::*;

/// Parses `text`, which must be valid.
fn parse(text: &str) -> Cmdline<'_> {
    match Cmdline::parse(text) {
        Ok(cmdline) => cmdline,
        Err(error) => panic!("{text:?} should parse, got: {error}"),
    }
}

/// The error of parsing `text`, which must be invalid.
fn parse_error(text: &str) -> CmdlineError<'_> {
    match Cmdline::parse(text) {
        Ok(cmdline) => panic!("{text:?} should be refused, got {cmdline:?}"),
        Err(error) => error,
    }
}

/// The `(key, value)` pairs of `text`.
fn pairs(text: &str) -> Vec<(&str, Option<&str>)> {
    parse(text)
        .iter()
        .map(|argument| (argument.key, argument.value))
        .collect()
}

// ---- splitting ----

#[test]
fn empty_and_blank_lines_have_no_arguments() {
    for text in ["", " ", "\t\n\r ", "\u{c}"] {
        let cmdline = parse(text);
        assert!(cmdline.is_empty());
        assert_eq!(cmdline.len(), 0);
        assert_eq!(cmdline.iter().count(), 0);
        assert!(cmdline.arguments().is_empty());
    }
    assert!(Cmdline::default().is_empty());
}

#[test]
fn words_flags_values_and_quotes() {
    assert_eq!(
        pairs(r#"smp=4 quiet name="two words" empty= quoted_empty="" tick=1ms"#),
        vec![
            ("smp", Some("4")),
            ("quiet", None),
            ("name", Some("two words")),
            ("empty", Some("")),
            ("quoted_empty", Some("")),
            ("tick", Some("1ms")),
        ]
    );
}

#[test]
fn any_ascii_whitespace_separates_words() {
    assert_eq!(
        pairs("  a=1\tb\n c=\"x\ty\"\r\nd  "),
        vec![
            ("a", Some("1")),
            ("b", None),
            ("c", Some("x\ty")),
            ("d", None)
        ]
    );
}

#[test]
fn value_keeps_later_equals_signs_and_non_ascii() {
    assert_eq!(
        pairs("opt=a=b path=/x/y.z name=caf\u{e9}"),
        vec![
            ("opt", Some("a=b")),
            ("path", Some("/x/y.z")),
            ("name", Some("caf\u{e9}")),
        ]
    );
}

#[test]
fn quoted_value_has_no_escapes() {
    assert_eq!(
        pairs(r#"a="back\slash" b="=""#),
        vec![("a", Some(r"back\slash")), ("b", Some("="))]
    );
}

#[test]
fn quoted_value_at_end_of_text() {
    assert_eq!(pairs(r#"a="x y""#), vec![("a", Some("x y"))]);
}

#[test]
fn keys_accept_every_allowed_character() {
    assert_eq!(
        pairs("abcdefghijklmnopqrstuvwxyz0123456789_.- apic.timer_hz=1 x-y 9"),
        vec![
            ("abcdefghijklmnopqrstuvwxyz0123456789_.-", None),
            ("apic.timer_hz", Some("1")),
            ("x-y", None),
            ("9", None),
        ]
    );
}

#[test]
fn arguments_keep_command_line_order() {
    let cmdline = parse("c b=2 a=1");
    let keys: Vec<&str> = cmdline.iter().map(|argument| argument.key).collect();
    assert_eq!(keys, ["c", "b", "a"]);
    assert_eq!(
        cmdline.arguments()[1],
        Argument {
            key: "b",
            value: Some("2")
        }
    );
}

// ---- syntax errors ----

#[test]
fn unterminated_quote_reports_its_byte() {
    let text = r#"smp=4 name="abc"#;
    assert_eq!(
        parse_error(text),
        CmdlineError::UnterminatedQuote { position: 11 }
    );
    assert_eq!(
        parse_error(text).to_string(),
        "unterminated quote at byte 11"
    );
    assert_eq!(
        parse_error("a=\""),
        CmdlineError::UnterminatedQuote { position: 2 }
    );
}

#[test]
fn quote_inside_unquoted_value_is_refused() {
    assert_eq!(
        parse_error(r#"a=b"c d""#),
        CmdlineError::UnexpectedQuote { position: 3 }
    );
    assert_eq!(
        parse_error(r#"a=b""#).to_string(),
        "unexpected quote at byte 3 (quote a whole value, like key=\"a b\")"
    );
}

#[test]
fn text_after_closing_quote_is_refused() {
    assert_eq!(
        parse_error(r#"a="b"c"#),
        CmdlineError::TextAfterQuote { position: 5 }
    );
    assert_eq!(
        parse_error(r#"a="b""c""#),
        CmdlineError::TextAfterQuote { position: 5 }
    );
    assert_eq!(
        parse_error(r#"a="b"c"#).to_string(),
        "text right after a closing quote at byte 5 (separate arguments with spaces)"
    );
}

#[test]
fn word_starting_with_equals_has_no_key() {
    assert_eq!(
        parse_error("a=1 =2"),
        CmdlineError::EmptyKey { position: 4 }
    );
    assert_eq!(parse_error("="), CmdlineError::EmptyKey { position: 0 });
    assert_eq!(
        parse_error(" =x").to_string(),
        "kernel argument at byte 1 has no key before '='"
    );
}

#[test]
fn invalid_keys_are_refused() {
    let cases = [
        ("SMP=4", "SMP", 0),
        ("a b/c", "b/c", 2),
        ("x k\u{e9}y=1", "k\u{e9}y", 2),
        ("\"quoted\"=1", "\"quoted\"", 0),
        ("a key:value", "key:value", 2),
        ("a+b", "a+b", 0),
    ];
    for (text, key, position) in cases {
        assert_eq!(
            parse_error(text),
            CmdlineError::InvalidKey { key, position },
            "{text:?}"
        );
    }
    assert_eq!(
        parse_error("Smp=4").to_string(),
        "kernel argument 'Smp' at byte 0 is not a valid key (keys use only a-z, 0-9, '_', '.' and '-')"
    );
}

#[test]
fn duplicate_key_is_named() {
    assert_eq!(
        parse_error("smp=4 quiet smp=2"),
        CmdlineError::DuplicateKey { key: "smp" }
    );
    assert_eq!(
        parse_error("quiet quiet"),
        CmdlineError::DuplicateKey { key: "quiet" }
    );
    assert_eq!(
        parse_error("a=1 a"),
        CmdlineError::DuplicateKey { key: "a" }
    );
    assert_eq!(
        parse_error("smp=4 smp=4").to_string(),
        "kernel argument 'smp' appears twice"
    );
}

/// A command line with `count` distinct flags `k0 k1 ...`.
fn many_arguments(count: usize) -> String {
    (0..count)
        .map(|index| format!("k{index}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn exactly_max_arguments_is_accepted() {
    let text = many_arguments(MAX_ARGUMENTS);
    let cmdline = parse(&text);
    assert_eq!(cmdline.len(), MAX_ARGUMENTS);
    assert_eq!(
        cmdline.arguments().last().map(|argument| argument.key),
        Some("k63")
    );
}

#[test]
fn more_than_max_arguments_is_refused() {
    let text = many_arguments(MAX_ARGUMENTS + 1);
    assert_eq!(parse_error(&text), CmdlineError::TooManyArguments);
    assert_eq!(
        CmdlineError::TooManyArguments.to_string(),
        "more than 64 kernel arguments"
    );
}

#[test]
fn first_error_from_the_left_wins() {
    assert_eq!(
        parse_error("A=1 b=\""),
        CmdlineError::InvalidKey {
            key: "A",
            position: 0
        }
    );
    assert_eq!(
        parse_error("b=\" A=1"),
        CmdlineError::UnterminatedQuote { position: 2 }
    );
}

// ---- lookups ----

#[test]
fn get_contains_and_value() {
    let cmdline = parse("smp=4 quiet empty=");
    assert_eq!(
        cmdline.get("smp"),
        Some(Argument {
            key: "smp",
            value: Some("4")
        })
    );
    assert_eq!(
        cmdline.get("quiet"),
        Some(Argument {
            key: "quiet",
            value: None
        })
    );
    assert_eq!(cmdline.get("missing"), None);
    assert!(cmdline.contains("quiet"));
    assert!(!cmdline.contains("sm"));
    assert_eq!(cmdline.value("smp"), Ok(Some("4")));
    assert_eq!(cmdline.value("empty"), Ok(Some("")));
    assert_eq!(cmdline.value("missing"), Ok(None));
    assert_eq!(
        cmdline.value("quiet"),
        Err(CmdlineError::MissingValue { key: "quiet" })
    );
    assert_eq!(
        cmdline.value("quiet").unwrap_err().to_string(),
        "kernel argument 'quiet' needs a value (quiet=...)"
    );
}

#[test]
fn typed_getters() {
    let cmdline = parse("smp=0x10 tick=250us bad=12x slow=5h bare");
    assert_eq!(cmdline.u64("smp"), Ok(Some(16)));
    assert_eq!(cmdline.u64("missing"), Ok(None));
    assert_eq!(cmdline.duration_ns("tick"), Ok(Some(250_000)));
    assert_eq!(cmdline.duration_ns("missing"), Ok(None));
    assert_eq!(
        cmdline.u64("bad"),
        Err(CmdlineError::InvalidValue {
            key: "bad",
            error: ValueError::NotANumber { text: "12x" }
        })
    );
    assert_eq!(
        cmdline.duration_ns("slow").unwrap_err().to_string(),
        "kernel argument 'slow': '5h' has an unknown unit 'h' (use ns, us, ms or s)"
    );
    assert_eq!(
        cmdline.u64("bare"),
        Err(CmdlineError::MissingValue { key: "bare" })
    );
    assert_eq!(
        cmdline.duration_ns("bare"),
        Err(CmdlineError::MissingValue { key: "bare" })
    );
}

#[test]
fn flag_getter() {
    let cmdline = parse("quiet verbose=off debug=yes odd=maybe");
    assert_eq!(cmdline.flag("quiet"), Ok(true));
    assert_eq!(cmdline.flag("verbose"), Ok(false));
    assert_eq!(cmdline.flag("debug"), Ok(true));
    assert_eq!(cmdline.flag("missing"), Ok(false));
    assert_eq!(
        cmdline.flag("odd"),
        Err(CmdlineError::InvalidValue {
            key: "odd",
            error: ValueError::NotABool { text: "maybe" }
        })
    );
}

#[test]
fn unknown_keys_returns_first_unknown() {
    let cmdline = parse("smp=4 typo=1 quiet other");
    assert_eq!(cmdline.unknown_keys(&["smp", "quiet"]), Some("typo"));
    assert_eq!(
        cmdline.unknown_keys(&["smp", "quiet", "typo", "other"]),
        None
    );
    assert_eq!(cmdline.unknown_keys(&[]), Some("smp"));
    assert_eq!(parse("").unknown_keys(&[]), None);
    assert_eq!(
        cmdline.reject_unknown(&["smp", "quiet"]),
        Err(CmdlineError::UnknownKey { key: "typo" })
    );
    assert_eq!(
        cmdline.reject_unknown(&["smp"]).unwrap_err().to_string(),
        "unknown kernel argument 'typo'"
    );
    assert_eq!(
        cmdline.reject_unknown(&["smp", "quiet", "typo", "other"]),
        Ok(())
    );
}

// ---- parse_u64 ----

#[test]
fn parse_u64_accepts_decimal_hex_and_separators() {
    let cases = [
        ("0", 0),
        ("007", 7),
        ("4096", 4096),
        ("1_000_000", 1_000_000),
        ("0x3f8", 0x3f8),
        ("0X3F8", 0x3f8),
        ("0xFFFF_0000", 0xFFFF_0000),
        ("0x0", 0),
        ("18446744073709551615", u64::MAX),
        ("0xffffffffffffffff", u64::MAX),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_u64(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn parse_u64_refuses_malformed_numbers() {
    for text in [
        "", "x", "0x", "0x_1", "_1", "1_", "1__0", "12a", "-1", "+1", " 1", "1 ", "1.0", "0b101",
        "0xg", "0o7", "\u{661}",
    ] {
        assert_eq!(
            parse_u64(text),
            Err(ValueError::NotANumber { text }),
            "{text:?}"
        );
    }
}

#[test]
fn parse_u64_reports_overflow() {
    for text in [
        "18446744073709551616",
        "99999999999999999999999",
        "0x1_0000_0000_0000_0000",
    ] {
        assert_eq!(
            parse_u64(text),
            Err(ValueError::Overflow { text }),
            "{text:?}"
        );
    }
    // A syntax error wins over overflow.
    let text = "99999999999999999999999x";
    assert_eq!(parse_u64(text), Err(ValueError::NotANumber { text }));
}

#[test]
fn parse_u64_messages() {
    assert_eq!(
        ValueError::NotANumber { text: "" }.to_string(),
        "expected a number, found nothing"
    );
    assert_eq!(
        parse_u64("abc").unwrap_err().to_string(),
        "'abc' is not a number (use decimal like 1_000 or hexadecimal like 0x3f8)"
    );
    assert_eq!(
        parse_u64("18446744073709551616").unwrap_err().to_string(),
        "'18446744073709551616' is too large (the largest number is 18446744073709551615)"
    );
}

// ---- parse_duration_ns ----

#[test]
fn parse_duration_accepts_every_unit() {
    let cases = [
        ("750ns", 750),
        ("5us", 5_000),
        ("100ms", 100_000_000),
        ("2s", 2_000_000_000),
        ("0s", 0),
        ("1_500us", 1_500_000),
        ("18446744073709551615ns", u64::MAX),
        ("18446744073s", 18_446_744_073_000_000_000),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration_ns(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn parse_duration_requires_a_unit() {
    for text in ["1500", "0", "1_000"] {
        assert_eq!(
            parse_duration_ns(text),
            Err(ValueError::MissingUnit { text }),
            "{text:?}"
        );
    }
    assert_eq!(
        parse_duration_ns("1500").unwrap_err().to_string(),
        "'1500' has no unit (add ns, us, ms or s, like 1500ns)"
    );
}

#[test]
fn parse_duration_refuses_unknown_units() {
    let cases = [
        ("5h", "h"),
        ("1min", "min"),
        ("3MS", "MS"),
        ("2sec", "sec"),
        ("1m", "m"),
    ];
    for (text, unit) in cases {
        assert_eq!(
            parse_duration_ns(text),
            Err(ValueError::UnknownUnit { text, unit }),
            "{text:?}"
        );
    }
}

#[test]
fn parse_duration_refuses_malformed_durations() {
    for text in [
        "", "ms", "1.5ms", "-1ms", "0x10ms", " 1ms", "1 ms", "_1ms", "1_ms", "5\u{b5}s",
    ] {
        assert_eq!(
            parse_duration_ns(text),
            Err(ValueError::NotADuration { text }),
            "{text:?}"
        );
    }
    assert_eq!(
        parse_duration_ns("1.5ms").unwrap_err().to_string(),
        "'1.5ms' is not a duration (use a whole number and a unit: ns, us, ms or s, like 100ms)"
    );
    assert_eq!(
        parse_duration_ns("").unwrap_err().to_string(),
        "expected a duration, found nothing (use a whole number and a unit, like 100ms)"
    );
}

#[test]
fn parse_duration_reports_overflow() {
    for text in [
        "18446744074s",
        "18446744073709551616ns",
        "99999999999999999999999ms",
    ] {
        assert_eq!(
            parse_duration_ns(text),
            Err(ValueError::DurationOverflow { text }),
            "{text:?}"
        );
    }
    assert!(parse_duration_ns("18446744074s")
        .unwrap_err()
        .to_string()
        .starts_with(
            "'18446744074s' is too long (the longest duration is 18446744073709551615 ns"
        ));
}

// ---- parse_bool ----

#[test]
fn parse_bool_accepts_listed_words() {
    for text in ["1", "true", "on", "yes"] {
        assert_eq!(parse_bool(text), Ok(true), "{text:?}");
    }
    for text in ["0", "false", "off", "no"] {
        assert_eq!(parse_bool(text), Ok(false), "{text:?}");
    }
}

#[test]
fn parse_bool_refuses_other_words() {
    for text in ["", "2", "TRUE", "Yes", "y", "n", "enable", " on"] {
        assert_eq!(
            parse_bool(text),
            Err(ValueError::NotABool { text }),
            "{text:?}"
        );
    }
    assert_eq!(
        parse_bool("maybe").unwrap_err().to_string(),
        "'maybe' is not a yes/no value (use 1, 0, true, false, on, off, yes or no)"
    );
}

// ---- split_list ----

#[test]
fn split_list_skips_empty_items_and_trims() {
    let items: Vec<&str> = split_list("a,,b, c ,", ',').collect();
    assert_eq!(items, ["a", "b", "c"]);
    assert_eq!(split_list("", ',').count(), 0);
    assert_eq!(split_list(",,, ,", ',').count(), 0);
    let items: Vec<&str> = split_list("0:1:2", ':').collect();
    assert_eq!(items, ["0", "1", "2"]);
    let items: Vec<&str> = split_list("single", ',').collect();
    assert_eq!(items, ["single"]);
}

#[test]
fn split_list_values_feed_parsers() {
    let cmdline = parse("cpus=0,2,0x3");
    let value = cmdline
        .value("cpus")
        .expect("has a value")
        .expect("is present");
    let cpus: Result<Vec<u64>, _> = split_list(value, ',').map(parse_u64).collect();
    assert_eq!(cpus, Ok(vec![0, 2, 3]));
}

// ---- display ----

#[test]
fn invalid_value_message_names_key_and_problem() {
    let error = CmdlineError::InvalidValue {
        key: "smp",
        error: ValueError::Overflow {
            text: "99999999999999999999",
        },
    };
    assert_eq!(
        error.to_string(),
        "kernel argument 'smp': '99999999999999999999' is too large (the largest number is 18446744073709551615)"
    );
}
