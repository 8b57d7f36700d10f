//! Decoding the kernel's records and building the JSON document of `docs/serial-protocol.md`.
//!
//! [`RecordCollector`] takes the parsed serial lines one at a time
//! ([`RecordCollector::observe`]) and keeps what the run needs: scalars,
//! histograms (merged per name and per CPU), `error`/`fault`/`panic`
//! records, the `end` record, and every protocol problem (corrupt lines,
//! malformed records). [`RecordCollector::document`] then produces the
//! document:
//!
//! * every `scalar` record becomes a top-level key (a later record with the
//!   same name replaces the earlier one);
//! * `protocol` (1), `accel` and `smp` are added by the runner and win over a
//!   scalar of the same name;
//! * `histograms` lists merged histograms in first-seen order, then the
//!   per-CPU ones (`name.cpuN`, grouped by name in first-seen order, CPUs
//!   ascending);
//! * `exit` is `{status, qemu_status, wall_ms}`.
//!
//! Percentiles come from an `hdrhistogram::Histogram<u64>` (3 significant
//! digits) rebuilt by recording each kernel bucket's midpoint `count` times,
//! then clamped to the record's `[min, max]` (a midpoint, or hdrhistogram's
//! rounding up, may otherwise land past the largest value recorded).

use std::collections::BTreeMap;

use hdrhistogram::Histogram as HdrHistogram;
use serde::Serialize;
use serde_json::{json, Map, Value};
use spindle_histogram::Histogram as KernelHistogram;
use spindle_records::{Line, Record};

use crate::outcome::{EndStatus, ExitStatusKind, Observation};
use crate::Accel;

/// The `protocol` version written into the document.
pub const PROTOCOL_VERSION: u64 = 1;

/// Significant digits of the host-side hdrhistogram.
pub const HDR_SIGNIFICANT_DIGITS: u8 = 3;

/// The quantiles reported for each histogram, with their document keys.
pub const REPORTED_QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// One histogram as reported: merged over CPUs (`cpu` is `None`) or one CPU's.
#[derive(Debug, Clone)]
pub struct HistogramSummary {
    /// The reported name: the record's `name`, or `name.cpuN` for a per-CPU one.
    pub name: String,
    /// The record's `name` (without the `.cpuN` suffix).
    pub base_name: String,
    /// The CPU for a per-CPU histogram, `None` for the merged one.
    pub cpu: Option<u32>,
    /// The unit of the values (`ns`).
    pub unit: String,
    /// Number of values recorded.
    pub count: u64,
    /// Smallest value recorded (exact, from the records; 0 when empty).
    pub min: u64,
    /// Largest value recorded (exact, from the records; 0 when empty).
    pub max: u64,
    /// Sum of the values recorded (from the records).
    pub sum: u64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The non-empty kernel buckets as `(low, high, count)`, bounds inclusive.
    pub buckets: Vec<(u64, u64, u64)>,
    /// The rebuilt hdrhistogram (bucket midpoints), for `.hgrm` output.
    pub hdr: HdrHistogram<u64>,
}

impl HistogramSummary {
    /// The histogram's entry in the document's `histograms` list.
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .buckets
            .iter()
            .map(|&(low, high, count)| json!([low, high, count]))
            .collect();
        json!({
            "name": self.name,
            "unit": self.unit,
            "count": self.count,
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
            "buckets": buckets,
        })
    }
}

/// The document's `exit` object.
#[derive(Debug, Clone, Serialize)]
pub struct ExitSection {
    /// `ok`, `kernel-failed`, `fault`, `timeout`, `protocol-error` or `qemu-failed`.
    pub status: &'static str,
    /// QEMU's exit status; `null` when it was killed.
    pub qemu_status: Option<i32>,
    /// Wall-clock time of the QEMU run in milliseconds.
    pub wall_ms: u64,
}

/// A record line that could not be used (corrupt, or a record with bad fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolProblem {
    /// A line starting with `@sp1 ` that failed framing, checksum or JSON checks.
    Corrupt {
        /// 1-based number of the line in the serial output.
        line_number: usize,
        /// Why the record parser rejected it.
        reason: String,
        /// The line itself.
        line: String,
    },
    /// A well-formed record whose fields are wrong (missing, wrong type,
    /// inconsistent histogram, unsupported `sub_bits`...).
    BadRecord {
        /// 1-based number of the line in the serial output.
        line_number: usize,
        /// The record's type (`t`).
        record_type: String,
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for ProtocolProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolProblem::Corrupt {
                line_number,
                reason,
                line,
            } => {
                const SHOWN: usize = 120;
                let shown: String = line.chars().take(SHOWN).collect();
                let ellipsis = if line.chars().count() > SHOWN {
                    "..."
                } else {
                    ""
                };
                write!(
                    formatter,
                    "line {line_number}: corrupt record ({reason}): {shown}{ellipsis}"
                )
            }
            ProtocolProblem::BadRecord {
                line_number,
                record_type,
                detail,
            } => {
                write!(
                    formatter,
                    "line {line_number}: bad {record_type:?} record: {detail}"
                )
            }
        }
    }
}

/// Summary figures of a histogram that the kernel sends beside its buckets.
#[derive(Debug, Clone, Copy)]
struct Extremes {
    count: u64,
    min: u64,
    max: u64,
    sum: u64,
}

impl Extremes {
    const EMPTY: Extremes = Extremes {
        count: 0,
        min: 0,
        max: 0,
        sum: 0,
    };

    fn merge(&mut self, other: Extremes) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum = self.sum.saturating_add(other.sum);
    }
}

/// A kernel histogram being accumulated from records, with its exact extremes.
#[derive(Clone)]
struct Accumulated {
    histogram: KernelHistogram,
    extremes: Extremes,
}

impl Accumulated {
    fn new() -> Self {
        Accumulated {
            histogram: KernelHistogram::new(),
            extremes: Extremes::EMPTY,
        }
    }

    fn merge(&mut self, other: &Accumulated) {
        self.histogram.merge(&other.histogram);
        self.extremes.merge(other.extremes);
    }
}

/// All records of one histogram name.
struct NamedHistogram {
    name: String,
    unit: String,
    merged: Accumulated,
    per_cpu: BTreeMap<u32, Accumulated>,
}

/// A `hist` record decoded and checked.
struct DecodedHistogram {
    name: String,
    unit: String,
    cpu: Option<u32>,
    accumulated: Accumulated,
}

/// Collects the records of one run; see the module documentation.
#[derive(Default)]
pub struct RecordCollector {
    line_count: usize,
    scalars: Map<String, Value>,
    histograms: Vec<NamedHistogram>,
    hello: Option<String>,
    end: Option<EndStatus>,
    errors: Vec<String>,
    faults: Vec<String>,
    problems: Vec<ProtocolProblem>,
}

impl RecordCollector {
    /// An empty collector.
    pub fn new() -> Self {
        RecordCollector::default()
    }

    /// Takes one serial line. Human lines are only counted (for line numbers);
    /// records are decoded; corrupt lines become protocol problems. Returns
    /// the protocol problem this line caused, if any, so the caller can
    /// report it at once.
    pub fn observe(&mut self, line: &Line) -> Option<&ProtocolProblem> {
        self.line_count += 1;
        let line_number = self.line_count;
        let problems_before = self.problems.len();
        match line {
            Line::Human(_) => {}
            Line::Corrupt { line, reason } => self.problems.push(ProtocolProblem::Corrupt {
                line_number,
                reason: reason.to_string(),
                line: line.clone(),
            }),
            Line::Record(record) => {
                if let Err(detail) = self.observe_record(record) {
                    self.problems.push(ProtocolProblem::BadRecord {
                        line_number,
                        record_type: record.record_type.clone(),
                        detail,
                    });
                }
            }
        }
        if self.problems.len() > problems_before {
            self.problems.last()
        } else {
            None
        }
    }

    fn observe_record(&mut self, record: &Record) -> Result<(), String> {
        let fields = &record.fields;
        match record.record_type.as_str() {
            "hello" => {
                let version = required_u64(fields, "version")?;
                if version != PROTOCOL_VERSION {
                    return Err(format!(
                        "protocol version {version}, this runner speaks {PROTOCOL_VERSION}"
                    ));
                }
                let kernel = optional_str(fields, "kernel")?.unwrap_or("").to_string();
                self.hello = Some(kernel);
            }
            "scalar" => {
                let name = required_str(fields, "name")?;
                let value = fields.get("value").ok_or("missing field \"value\"")?;
                self.scalars.insert(name.to_string(), value.clone());
            }
            "hist" => {
                let decoded = decode_histogram(fields)?;
                self.add_histogram(decoded)?;
            }
            "error" => {
                let message = required_str(fields, "message")?;
                self.errors.push(message.to_string());
            }
            "fault" => self.faults.push(describe_fault(fields)),
            "panic" => self.faults.push(describe_panic(fields)),
            "end" => {
                let status = required_str(fields, "status")?;
                self.end = Some(match status {
                    "ok" => EndStatus::Ok,
                    "fail" => EndStatus::Fail,
                    other => EndStatus::Other(other.to_string()),
                });
            }
            // Unknown record types are ignored (forward compatibility).
            _ => {}
        }
        Ok(())
    }

    fn add_histogram(&mut self, decoded: DecodedHistogram) -> Result<(), String> {
        let position = self
            .histograms
            .iter()
            .position(|named| named.name == decoded.name);
        let named = match position {
            Some(index) => &mut self.histograms[index],
            None => {
                self.histograms.push(NamedHistogram {
                    name: decoded.name.clone(),
                    unit: decoded.unit.clone(),
                    merged: Accumulated::new(),
                    per_cpu: BTreeMap::new(),
                });
                self.histograms.last_mut().expect("just pushed")
            }
        };
        if named.unit != decoded.unit {
            return Err(format!(
                "histogram {:?} has unit {:?} here but {:?} in an earlier record",
                decoded.name, decoded.unit, named.unit
            ));
        }
        named.merged.merge(&decoded.accumulated);
        if let Some(cpu) = decoded.cpu {
            named
                .per_cpu
                .entry(cpu)
                .or_insert_with(Accumulated::new)
                .merge(&decoded.accumulated);
        }
        Ok(())
    }

    /// Whether a `hello` record arrived.
    pub fn hello_seen(&self) -> bool {
        self.hello.is_some()
    }

    /// The `kernel` field of the `hello` record, if one arrived.
    pub fn kernel_name(&self) -> Option<&str> {
        self.hello.as_deref()
    }

    /// The protocol problems seen so far.
    pub fn problems(&self) -> &[ProtocolProblem] {
        &self.problems
    }

    /// The scalars seen so far (name → latest value).
    pub fn scalars(&self) -> &Map<String, Value> {
        &self.scalars
    }

    /// What [`crate::outcome::classify`] needs from the records; the caller
    /// fills in the QEMU side (`timed_out`, `qemu_status`, stderr).
    pub fn observation(&self) -> Observation {
        Observation {
            end: self.end.clone(),
            hello_seen: self.hello_seen(),
            errors: self.errors.clone(),
            faults: self.faults.clone(),
            protocol_problems: self.problems.iter().map(ToString::to_string).collect(),
            ..Observation::default()
        }
    }

    /// The histograms, merged ones first (first-seen order), then per-CPU ones.
    pub fn histogram_summaries(&self) -> Result<Vec<HistogramSummary>, String> {
        let mut summaries = Vec::new();
        for named in &self.histograms {
            summaries.push(summarize(
                &named.name,
                &named.name,
                None,
                &named.unit,
                &named.merged,
            )?);
        }
        for named in &self.histograms {
            for (&cpu, accumulated) in &named.per_cpu {
                let name = format!("{}.cpu{cpu}", named.name);
                summaries.push(summarize(
                    &name,
                    &named.name,
                    Some(cpu),
                    &named.unit,
                    accumulated,
                )?);
            }
        }
        Ok(summaries)
    }

    /// Builds the JSON document from the records and the runner's facts.
    pub fn document(
        &self,
        histograms: &[HistogramSummary],
        accel: Accel,
        smp: u32,
        exit: &ExitSection,
    ) -> Value {
        let mut document = self.scalars.clone();
        document.insert("protocol".into(), json!(PROTOCOL_VERSION));
        document.insert("accel".into(), json!(accel.as_str()));
        document.insert("smp".into(), json!(smp));
        document.insert(
            "histograms".into(),
            Value::Array(histograms.iter().map(HistogramSummary::to_json).collect()),
        );
        document.insert(
            "exit".into(),
            serde_json::to_value(exit).expect("plain struct serializes"),
        );
        Value::Object(document)
    }
}

/// Builds the exit section for a status.
pub fn exit_section(
    status: ExitStatusKind,
    qemu_status: Option<i32>,
    wall: std::time::Duration,
) -> ExitSection {
    ExitSection {
        status: status.as_str(),
        qemu_status,
        wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
    }
}

fn summarize(
    name: &str,
    base_name: &str,
    cpu: Option<u32>,
    unit: &str,
    accumulated: &Accumulated,
) -> Result<HistogramSummary, String> {
    let mut hdr = HdrHistogram::<u64>::new(HDR_SIGNIFICANT_DIGITS)
        .map_err(|error| format!("cannot create an hdrhistogram: {error}"))?;
    let mut buckets = Vec::new();
    for (index, count) in accumulated.histogram.nonzero_buckets() {
        let count = u64::from(count);
        let low = spindle_histogram::bucket_low(index);
        let high = spindle_histogram::bucket_high(index);
        buckets.push((low, high, count));
        hdr.record_n(spindle_histogram::bucket_mid(index), count)
            .map_err(|error| {
                format!("histogram {name:?}: cannot record bucket {index}: {error}")
            })?;
    }
    let extremes = accumulated.extremes;
    let percentile = |quantile: f64| {
        if hdr.is_empty() {
            0
        } else {
            hdr.value_at_quantile(quantile)
                .clamp(extremes.min, extremes.max.max(extremes.min))
        }
    };
    Ok(HistogramSummary {
        name: name.to_string(),
        base_name: base_name.to_string(),
        cpu,
        unit: unit.to_string(),
        count: hdr.len(),
        min: extremes.min,
        max: extremes.max,
        sum: extremes.sum,
        p50: percentile(REPORTED_QUANTILES[0].1),
        p90: percentile(REPORTED_QUANTILES[1].1),
        p99: percentile(REPORTED_QUANTILES[2].1),
        p999: percentile(REPORTED_QUANTILES[3].1),
        buckets,
        hdr,
    })
}

fn decode_histogram(fields: &Map<String, Value>) -> Result<DecodedHistogram, String> {
    let name = required_str(fields, "name")?.to_string();
    let unit = required_str(fields, "unit")?.to_string();
    let cpu = match fields.get("cpu") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|cpu| u32::try_from(cpu).ok())
                .ok_or_else(|| format!("field \"cpu\" is not a CPU index: {value}"))?,
        ),
    };
    let sub_bits = required_u64(fields, "sub_bits")?;
    if sub_bits != u64::from(spindle_histogram::SUB_BITS) {
        return Err(format!(
            "histogram {name:?} has sub_bits {sub_bits}; this runner decodes sub_bits {}",
            spindle_histogram::SUB_BITS
        ));
    }
    let count = required_u64(fields, "count")?;
    let min = required_u64(fields, "min")?;
    let max = required_u64(fields, "max")?;
    let sum = required_u64(fields, "sum")?;
    let buckets = fields
        .get("buckets")
        .and_then(Value::as_array)
        .ok_or("field \"buckets\" is missing or not an array")?;

    let mut histogram = KernelHistogram::new();
    let mut bucket_total: u64 = 0;
    let mut previous_index: Option<usize> = None;
    for pair in buckets {
        let (index, bucket_count) = match pair.as_array().map(Vec::as_slice) {
            Some([index, bucket_count]) => (index.as_u64(), bucket_count.as_u64()),
            _ => (None, None),
        };
        let (Some(index), Some(bucket_count)) = (index, bucket_count) else {
            return Err(format!(
                "histogram {name:?}: bucket {pair} is not an [index, count] pair"
            ));
        };
        let index = usize::try_from(index)
            .ok()
            .filter(|&index| index < spindle_histogram::BUCKETS)
            .ok_or_else(|| format!("histogram {name:?}: bucket index {index} out of range"))?;
        let bucket_count = u32::try_from(bucket_count)
            .map_err(|_| format!("histogram {name:?}: bucket count {bucket_count} too large"))?;
        if previous_index.is_some_and(|previous| previous >= index) {
            return Err(format!(
                "histogram {name:?}: bucket indices not increasing at {index}"
            ));
        }
        previous_index = Some(index);
        histogram
            .add_bucket(index, bucket_count)
            .map_err(|error| format!("histogram {name:?}: bucket {index}: {error}"))?;
        bucket_total += u64::from(bucket_count);
    }
    if bucket_total != count {
        return Err(format!(
            "histogram {name:?}: count is {count} but the buckets hold {bucket_total}"
        ));
    }
    if count > 0 && min > max {
        return Err(format!("histogram {name:?}: min {min} > max {max}"));
    }
    histogram.set_summary(min, max, sum);
    let extremes = if count == 0 {
        Extremes::EMPTY
    } else {
        Extremes {
            count,
            min,
            max,
            sum,
        }
    };
    Ok(DecodedHistogram {
        name,
        unit,
        cpu,
        accumulated: Accumulated {
            histogram,
            extremes,
        },
    })
}

fn required_str<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("field {key:?} is missing or not a string"))
}

fn optional_str<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match fields.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_str()
            .map(Some)
            .ok_or_else(|| format!("field {key:?} is not a string")),
    }
}

fn required_u64(fields: &Map<String, Value>, key: &str) -> Result<u64, String> {
    fields
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("field {key:?} is missing or not a non-negative integer"))
}

/// A field for a message: integers of address-like fields in hex, strings as they are.
fn field_text(fields: &Map<String, Value>, key: &str, hexadecimal: bool) -> String {
    match fields.get(key) {
        None => "?".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(value) => match value.as_u64() {
            Some(number) if hexadecimal => format!("{number:#x}"),
            _ => value.to_string(),
        },
    }
}

fn describe_fault(fields: &Map<String, Value>) -> String {
    let mut text = format!(
        "{} (vector {}) on cpu {} at rip {}",
        field_text(fields, "name", false),
        field_text(fields, "vector", false),
        field_text(fields, "cpu", false),
        field_text(fields, "rip", true),
    );
    for key in ["error_code", "cr2", "rsp", "cs", "rflags"] {
        if fields.contains_key(key) {
            text.push_str(&format!(", {key} {}", field_text(fields, key, true)));
        }
    }
    text
}

fn describe_panic(fields: &Map<String, Value>) -> String {
    format!(
        "panic on cpu {} at {}:{}: {}",
        field_text(fields, "cpu", false),
        field_text(fields, "file", false),
        field_text(fields, "line", false),
        field_text(fields, "message", false),
    )
}
