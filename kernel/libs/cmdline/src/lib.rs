//! Kernel command line parsing without allocation: `key`, `key=value` and `key="quoted value"`.
//!
//! # Syntax
//!
//! The command line is split on ASCII whitespace into words; each word is
//!
//! * `key` (a flag, no value),
//! * `key=value` (the value runs to the next whitespace and may be empty),
//!   or
//! * `key="quoted value"` (the value runs to the next `"`; there are no
//!   escapes, so a quoted value cannot contain `"`).
//!
//! Keys are one or more of `a-z`, `0-9`, `_`, `.` and `-`. A key may appear
//! only once, and there are at most [`MAX_ARGUMENTS`] words. Every violation
//! is a [`CmdlineError`] whose `Display` text is meant for the person who
//! typed the command line, with byte positions counted from 0.
//!
//! ```
//! use spindle_cmdline::{parse_duration_ns, Cmdline};
//!
//! let cmdline = Cmdline::parse(r#"smp=4 tick=1ms quiet name="two words""#)?;
//! assert_eq!(cmdline.u64("smp")?, Some(4));
//! assert_eq!(cmdline.duration_ns("tick")?, Some(1_000_000));
//! assert!(cmdline.flag("quiet")?);
//! assert_eq!(cmdline.value("name")?, Some("two words"));
//! assert_eq!(cmdline.unknown_keys(&["smp", "tick", "quiet"]), Some("name"));
//! # Ok::<(), spindle_cmdline::CmdlineError>(())
//! ```
//!
//! # Values
//!
//! [`parse_u64`], [`parse_duration_ns`], [`parse_bool`] and [`split_list`]
//! interpret values; their errors ([`ValueError`]) say what was expected.
//! The typed getters of [`Cmdline`] ([`Cmdline::u64`],
//! [`Cmdline::duration_ns`], [`Cmdline::flag`]) wrap them and name the key
//! in the error.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;

/// The most words a command line may have.
pub const MAX_ARGUMENTS: usize = 64;

/// The quote character that delimits a quoted value.
const QUOTE: u8 = b'"';

/// The character between a key and its value.
const EQUALS: u8 = b'=';

/// The prefix of a hexadecimal number (`0X` is accepted too).
const HEX_PREFIX: &str = "0x";

/// The upper-case form of [`HEX_PREFIX`].
const HEX_PREFIX_UPPER: &str = "0X";

/// Punctuation allowed in keys besides `a-z` and `0-9`.
const KEY_PUNCTUATION: &[u8] = b"_.-";

/// The digit separator in numbers (`1_000_000`).
const DIGIT_SEPARATOR: u8 = b'_';

/// Radix of decimal numbers.
const DECIMAL_RADIX: u32 = 10;

/// Radix of hexadecimal numbers.
const HEX_RADIX: u32 = 16;

/// Nanoseconds per nanosecond.
const NANOSECOND: u64 = 1;

/// Nanoseconds per microsecond.
const MICROSECOND: u64 = 1_000;

/// Nanoseconds per millisecond.
const MILLISECOND: u64 = 1_000_000;

/// Nanoseconds per second.
const SECOND: u64 = 1_000_000_000;

/// Duration units and their length in nanoseconds.
const DURATION_UNITS: [(&str, u64); 4] = [
    ("ns", NANOSECOND),
    ("us", MICROSECOND),
    ("ms", MILLISECOND),
    ("s", SECOND),
];

/// Values [`parse_bool`] reads as `true`.
const TRUE_WORDS: [&str; 4] = ["1", "true", "on", "yes"];

/// Values [`parse_bool`] reads as `false`.
const FALSE_WORDS: [&str; 4] = ["0", "false", "off", "no"];

/// One word of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argument<'a> {
    /// The key (`smp` in `smp=4`).
    pub key: &'a str,
    /// The value: `None` for a bare `key`, `Some("")` for `key=` or
    /// `key=""`, without the quotes of a quoted value.
    pub value: Option<&'a str>,
}

/// Placeholder for unused argument slots.
const NO_ARGUMENT: Argument<'static> = Argument {
    key: "",
    value: None,
};

/// Why a value could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError<'a> {
    /// Not a decimal or `0x` hexadecimal number (with `_` only between
    /// digits).
    NotANumber {
        /// The value.
        text: &'a str,
    },
    /// A number above `u64::MAX`.
    Overflow {
        /// The value.
        text: &'a str,
    },
    /// Not a whole decimal number followed by a unit.
    NotADuration {
        /// The value.
        text: &'a str,
    },
    /// A number without a unit.
    MissingUnit {
        /// The value.
        text: &'a str,
    },
    /// A unit other than `ns`, `us`, `ms` and `s`.
    UnknownUnit {
        /// The value.
        text: &'a str,
        /// The unit.
        unit: &'a str,
    },
    /// A duration longer than `u64::MAX` nanoseconds.
    DurationOverflow {
        /// The value.
        text: &'a str,
    },
    /// Not one of `1`, `0`, `true`, `false`, `on`, `off`, `yes`, `no`.
    NotABool {
        /// The value.
        text: &'a str,
    },
}

impl fmt::Display for ValueError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotANumber { text: "" } => formatter.write_str("expected a number, found nothing"),
            Self::NotANumber { text } => write!(
                formatter,
                "'{text}' is not a number (use decimal like 1_000 or hexadecimal like 0x3f8)"
            ),
            Self::Overflow { text } => write!(
                formatter,
                "'{text}' is too large (the largest number is {})",
                u64::MAX
            ),
            Self::NotADuration { text: "" } => formatter.write_str(
                "expected a duration, found nothing (use a whole number and a unit, like 100ms)",
            ),
            Self::NotADuration { text } => write!(
                formatter,
                "'{text}' is not a duration (use a whole number and a unit: ns, us, ms or s, like 100ms)"
            ),
            Self::MissingUnit { text } => write!(
                formatter,
                "'{text}' has no unit (add ns, us, ms or s, like {text}ns)"
            ),
            Self::UnknownUnit { text, unit } => write!(
                formatter,
                "'{text}' has an unknown unit '{unit}' (use ns, us, ms or s)"
            ),
            Self::DurationOverflow { text } => write!(
                formatter,
                "'{text}' is too long (the longest duration is {} ns, about 584 years)",
                u64::MAX
            ),
            Self::NotABool { text } => write!(
                formatter,
                "'{text}' is not a yes/no value (use 1, 0, true, false, on, off, yes or no)"
            ),
        }
    }
}

impl core::error::Error for ValueError<'_> {}

/// Why a command line (or one of its values) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A `"` opens a value but no `"` closes it.
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        position: usize,
    },
    /// A `"` inside an unquoted value (`key=a"b`).
    UnexpectedQuote {
        /// Byte offset of the quote.
        position: usize,
    },
    /// Text right after a closing quote (`key="a"b`).
    TextAfterQuote {
        /// Byte offset of the first character after the quote.
        position: usize,
    },
    /// A word that starts with `=`.
    EmptyKey {
        /// Byte offset of the word.
        position: usize,
    },
    /// A key with a character outside `a-z`, `0-9`, `_`, `.`, `-`.
    InvalidKey {
        /// The key.
        key: &'a str,
        /// Byte offset of the key.
        position: usize,
    },
    /// A key that appears twice.
    DuplicateKey {
        /// The key.
        key: &'a str,
    },
    /// More than [`MAX_ARGUMENTS`] words.
    TooManyArguments,
    /// A key that the kernel does not know ([`Cmdline::reject_unknown`]).
    UnknownKey {
        /// The key.
        key: &'a str,
    },
    /// A bare `key` where `key=value` is needed.
    MissingValue {
        /// The key.
        key: &'a str,
    },
    /// A value that could not be read.
    InvalidValue {
        /// The key.
        key: &'a str,
        /// What is wrong with the value.
        error: ValueError<'a>,
    },
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnterminatedQuote { position } => {
                write!(formatter, "unterminated quote at byte {position}")
            }
            Self::UnexpectedQuote { position } => write!(
                formatter,
                "unexpected quote at byte {position} (quote a whole value, like key=\"a b\")"
            ),
            Self::TextAfterQuote { position } => write!(
                formatter,
                "text right after a closing quote at byte {position} (separate arguments with spaces)"
            ),
            Self::EmptyKey { position } => write!(
                formatter,
                "kernel argument at byte {position} has no key before '='"
            ),
            Self::InvalidKey { key, position } => write!(
                formatter,
                "kernel argument '{key}' at byte {position} is not a valid key \
                 (keys use only a-z, 0-9, '_', '.' and '-')"
            ),
            Self::DuplicateKey { key } => write!(formatter, "kernel argument '{key}' appears twice"),
            Self::TooManyArguments => {
                write!(formatter, "more than {MAX_ARGUMENTS} kernel arguments")
            }
            Self::UnknownKey { key } => write!(formatter, "unknown kernel argument '{key}'"),
            Self::MissingValue { key } => write!(
                formatter,
                "kernel argument '{key}' needs a value ({key}=...)"
            ),
            Self::InvalidValue { key, error } => write!(formatter, "kernel argument '{key}': {error}"),
        }
    }
}

impl core::error::Error for CmdlineError<'_> {}

/// Whether `key` is a valid key: one or more of `a-z`, `0-9`, `_`, `.`, `-`.
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || KEY_PUNCTUATION.contains(&byte)
        })
}

/// A parsed command line: up to [`MAX_ARGUMENTS`] arguments borrowed from
/// the text, in order, with distinct keys.
#[derive(Clone, Debug)]
pub struct Cmdline<'a> {
    /// The arguments; only the first `length` are used.
    arguments: [Argument<'a>; MAX_ARGUMENTS],
    /// Number of arguments.
    length: usize,
}

impl<'a> Cmdline<'a> {
    /// Parses `text` (see the crate docs for the syntax).
    ///
    /// # Errors
    ///
    /// The first problem found, left to right.
    pub fn parse(text: &'a str) -> Result<Self, CmdlineError<'a>> {
        let bytes = text.as_bytes();
        let mut cmdline = Self::default();
        let mut position = 0;
        while position < bytes.len() {
            if bytes[position].is_ascii_whitespace() {
                position += 1;
                continue;
            }
            let key_start = position;
            while position < bytes.len()
                && !bytes[position].is_ascii_whitespace()
                && bytes[position] != EQUALS
            {
                position += 1;
            }
            let key = &text[key_start..position];
            if key.is_empty() {
                return Err(CmdlineError::EmptyKey {
                    position: key_start,
                });
            }
            if !is_valid_key(key) {
                return Err(CmdlineError::InvalidKey {
                    key,
                    position: key_start,
                });
            }
            let value = if position < bytes.len() && bytes[position] == EQUALS {
                let (value, value_end) = parse_value(text, position + 1)?;
                position = value_end;
                Some(value)
            } else {
                None
            };
            cmdline.push(Argument { key, value })?;
        }
        Ok(cmdline)
    }

    /// Adds an argument, refusing a duplicate key or one too many.
    fn push(&mut self, argument: Argument<'a>) -> Result<(), CmdlineError<'a>> {
        if self.get(argument.key).is_some() {
            return Err(CmdlineError::DuplicateKey { key: argument.key });
        }
        let slot = self
            .arguments
            .get_mut(self.length)
            .ok_or(CmdlineError::TooManyArguments)?;
        *slot = argument;
        self.length += 1;
        Ok(())
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.length
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// The arguments, in command line order.
    pub fn arguments(&self) -> &[Argument<'a>] {
        &self.arguments[..self.length]
    }

    /// The arguments, in command line order.
    pub fn iter(&self) -> impl Iterator<Item = Argument<'a>> + '_ {
        self.arguments().iter().copied()
    }

    /// The argument with `key`, if present.
    pub fn get(&self, key: &str) -> Option<Argument<'a>> {
        self.iter().find(|argument| argument.key == key)
    }

    /// Whether `key` is present (with or without a value).
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`: `None` if absent.
    ///
    /// # Errors
    ///
    /// [`CmdlineError::MissingValue`] if `key` is present without `=`.
    pub fn value(&self, key: &str) -> Result<Option<&'a str>, CmdlineError<'a>> {
        match self.get(key) {
            None => Ok(None),
            Some(Argument { key, value: None }) => Err(CmdlineError::MissingValue { key }),
            Some(Argument {
                value: Some(value), ..
            }) => Ok(Some(value)),
        }
    }

    /// Reads the value of `key` with `parse`, naming the key in errors.
    fn typed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&'a str) -> Result<T, ValueError<'a>>,
    ) -> Result<Option<T>, CmdlineError<'a>> {
        let Some(argument) = self.get(key) else {
            return Ok(None);
        };
        let value = argument
            .value
            .ok_or(CmdlineError::MissingValue { key: argument.key })?;
        parse(value)
            .map(Some)
            .map_err(|error| CmdlineError::InvalidValue {
                key: argument.key,
                error,
            })
    }

    /// The value of `key` read with [`parse_u64`]; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`CmdlineError::MissingValue`] for a bare key,
    /// [`CmdlineError::InvalidValue`] for a bad number.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, CmdlineError<'a>> {
        self.typed(key, parse_u64)
    }

    /// The value of `key` read with [`parse_duration_ns`], in nanoseconds;
    /// `None` if absent.
    ///
    /// # Errors
    ///
    /// [`CmdlineError::MissingValue`] for a bare key,
    /// [`CmdlineError::InvalidValue`] for a bad duration.
    pub fn duration_ns(&self, key: &str) -> Result<Option<u64>, CmdlineError<'a>> {
        self.typed(key, parse_duration_ns)
    }

    /// A yes/no setting: `false` if `key` is absent, `true` for a bare
    /// `key`, otherwise its value read with [`parse_bool`].
    ///
    /// # Errors
    ///
    /// [`CmdlineError::InvalidValue`] for a value that is not yes/no.
    pub fn flag(&self, key: &str) -> Result<bool, CmdlineError<'a>> {
        match self.get(key) {
            None => Ok(false),
            Some(Argument { value: None, .. }) => Ok(true),
            Some(Argument {
                key,
                value: Some(value),
            }) => parse_bool(value).map_err(|error| CmdlineError::InvalidValue { key, error }),
        }
    }

    /// The first key (in command line order) that is not in `known`, if
    /// any.
    pub fn unknown_keys(&self, known: &[&str]) -> Option<&'a str> {
        self.iter()
            .map(|argument| argument.key)
            .find(|key| !known.contains(key))
    }

    /// Refuses a key that is not in `known`.
    ///
    /// # Errors
    ///
    /// [`CmdlineError::UnknownKey`] naming the first unknown key.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), CmdlineError<'a>> {
        match self.unknown_keys(known) {
            Some(key) => Err(CmdlineError::UnknownKey { key }),
            None => Ok(()),
        }
    }
}

impl Default for Cmdline<'_> {
    /// A command line with no arguments.
    fn default() -> Self {
        Self {
            arguments: [NO_ARGUMENT; MAX_ARGUMENTS],
            length: 0,
        }
    }
}

/// Parses the value that starts at byte `start` of `text` (just after the
/// `=`); returns it and the byte offset just after it.
fn parse_value(text: &str, start: usize) -> Result<(&str, usize), CmdlineError<'_>> {
    let bytes = text.as_bytes();
    if bytes.get(start) == Some(&QUOTE) {
        let content_start = start + 1;
        let content_length = bytes[content_start..]
            .iter()
            .position(|&byte| byte == QUOTE)
            .ok_or(CmdlineError::UnterminatedQuote { position: start })?;
        let content_end = content_start + content_length;
        let after_quote = content_end + 1;
        if bytes
            .get(after_quote)
            .is_some_and(|byte| !byte.is_ascii_whitespace())
        {
            return Err(CmdlineError::TextAfterQuote {
                position: after_quote,
            });
        }
        return Ok((&text[content_start..content_end], after_quote));
    }
    let mut end = start;
    while end < bytes.len() && !bytes[end].is_ascii_whitespace() {
        if bytes[end] == QUOTE {
            return Err(CmdlineError::UnexpectedQuote { position: end });
        }
        end += 1;
    }
    Ok((&text[start..end], end))
}

/// Why [`parse_digits`] failed.
enum DigitsError {
    /// Not digits of the radix with `_` only between digits.
    Invalid,
    /// Valid, but above `u64::MAX`.
    Overflow,
}

/// Parses `digits` in `radix`, with `_` allowed only between two digits.
/// Syntax errors win over overflow.
fn parse_digits(digits: &str, radix: u32) -> Result<u64, DigitsError> {
    let mut value: Option<u64> = Some(0);
    let mut previous_was_digit = false;
    for byte in digits.bytes() {
        if byte == DIGIT_SEPARATOR {
            if !previous_was_digit {
                return Err(DigitsError::Invalid);
            }
            previous_was_digit = false;
            continue;
        }
        let digit = char::from(byte)
            .to_digit(radix)
            .ok_or(DigitsError::Invalid)?;
        value = value
            .and_then(|value| value.checked_mul(u64::from(radix)))
            .and_then(|value| value.checked_add(u64::from(digit)));
        previous_was_digit = true;
    }
    if !previous_was_digit {
        return Err(DigitsError::Invalid);
    }
    value.ok_or(DigitsError::Overflow)
}

/// Reads an unsigned number: decimal (`4096`), or hexadecimal after `0x` or
/// `0X` (`0x3f8`, either case of digits), with `_` allowed between digits
/// (`1_000_000`, `0xffff_0000`). No sign, no spaces.
///
/// # Errors
///
/// [`ValueError::NotANumber`] or [`ValueError::Overflow`].
pub fn parse_u64(text: &str) -> Result<u64, ValueError<'_>> {
    let (digits, radix) = match text
        .strip_prefix(HEX_PREFIX)
        .or_else(|| text.strip_prefix(HEX_PREFIX_UPPER))
    {
        Some(digits) => (digits, HEX_RADIX),
        None => (text, DECIMAL_RADIX),
    };
    parse_digits(digits, radix).map_err(|error| match error {
        DigitsError::Invalid => ValueError::NotANumber { text },
        DigitsError::Overflow => ValueError::Overflow { text },
    })
}

/// Reads a duration into nanoseconds: a whole decimal number (with `_`
/// between digits allowed) and a unit, `ns`, `us`, `ms` or `s`: `750ns`,
/// `5us`, `100ms`, `2s`. The unit is required; fractions and hexadecimal
/// are not accepted.
///
/// # Errors
///
/// [`ValueError::NotADuration`], [`ValueError::MissingUnit`],
/// [`ValueError::UnknownUnit`] or [`ValueError::DurationOverflow`].
pub fn parse_duration_ns(text: &str) -> Result<u64, ValueError<'_>> {
    let unit_start = text
        .bytes()
        .position(|byte| !byte.is_ascii_digit() && byte != DIGIT_SEPARATOR)
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    if number.is_empty() {
        return Err(ValueError::NotADuration { text });
    }
    if unit.is_empty() {
        return Err(ValueError::MissingUnit { text });
    }
    if !unit.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Err(ValueError::NotADuration { text });
    }
    let (_, unit_nanoseconds) = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or(ValueError::UnknownUnit { text, unit })?;
    let count = parse_digits(number, DECIMAL_RADIX).map_err(|error| match error {
        DigitsError::Invalid => ValueError::NotADuration { text },
        DigitsError::Overflow => ValueError::DurationOverflow { text },
    })?;
    count
        .checked_mul(*unit_nanoseconds)
        .ok_or(ValueError::DurationOverflow { text })
}

/// Reads a yes/no value: `1`, `true`, `on`, `yes` or `0`, `false`, `off`,
/// `no` (lower case only).
///
/// # Errors
///
/// [`ValueError::NotABool`].
pub fn parse_bool(text: &str) -> Result<bool, ValueError<'_>> {
    if TRUE_WORDS.contains(&text) {
        Ok(true)
    } else if FALSE_WORDS.contains(&text) {
        Ok(false)
    } else {
        Err(ValueError::NotABool { text })
    }
}

/// The items of a list value separated by `separator`, each with ASCII
/// whitespace trimmed; empty items are skipped (`"a,,b,"` gives `a`, `b`).
pub fn split_list(value: &str, separator: char) -> impl Iterator<Item = &str> {
    value
        .split(separator)
        .map(|item| item.trim_matches(|character: char| character.is_ascii_whitespace()))
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests;
