//! The human summary printed after a run: key figures, a percentile table, the verdict.

use std::io::{self, Write};

use serde_json::Value;

use crate::document::HistogramSummary;
use crate::outcome::ExitStatusKind;
use crate::runner::RunReport;

/// Per-CPU rows are shown under a merged histogram only up to this many CPUs
/// (all of them are always in `--json` and `--hgrm`).
pub const MAX_PER_CPU_ROWS: usize = 8;

/// Formats a value for people: nanoseconds with three significant digits and
/// a scaled unit (`950 ns`, `1.23 µs`, `45.6 ms`, `2.00 s`); other units as
/// plain integers followed by the unit.
pub fn format_value(value: u64, unit: &str) -> String {
    if unit != "ns" {
        return if unit.is_empty() {
            value.to_string()
        } else {
            format!("{value} {unit}")
        };
    }
    if value < 1_000 {
        return format!("{value} ns");
    }
    let (scaled, suffix) = match value {
        0..=999_999 => (value as f64 / 1e3, "µs"),
        1_000_000..=999_999_999 => (value as f64 / 1e6, "ms"),
        _ => (value as f64 / 1e9, "s"),
    };
    // Three significant digits; rounding can carry to 1000 (999.96 µs), which stays readable.
    let decimals = if scaled < 10.0 {
        2
    } else if scaled < 100.0 {
        1
    } else {
        0
    };
    format!("{scaled:.decimals$} {suffix}")
}

/// The scalar as people read it: strings unquoted, everything else as JSON; `-` when absent.
fn scalar_text(document: &Value, key: &str) -> String {
    match document.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
    }
}

/// The one-line overview: `cpus_online=4 apic_mode=x2apic accel=kvm tsc_hz=2994000000 boot_ms=12.5`.
pub fn overview_line(document: &Value) -> String {
    ["cpus_online", "apic_mode", "accel", "tsc_hz", "boot_ms"]
        .iter()
        .map(|key| format!("{key}={}", scalar_text(document, key)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The percentile table: a header, then one row per merged histogram with its
/// per-CPU rows indented below it (up to [`MAX_PER_CPU_ROWS`] per name).
pub fn percentile_table(histograms: &[HistogramSummary]) -> String {
    let mut rows: Vec<(String, &HistogramSummary)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for merged in histograms.iter().filter(|summary| summary.cpu.is_none()) {
        rows.push((merged.name.clone(), merged));
        let per_cpu: Vec<&HistogramSummary> = histograms
            .iter()
            .filter(|summary| summary.cpu.is_some() && summary.base_name == merged.base_name)
            .collect();
        if per_cpu.len() > MAX_PER_CPU_ROWS {
            notes.push(format!(
                "{}: {} per-CPU histograms not shown (see --json / --hgrm)",
                merged.name,
                per_cpu.len()
            ));
            continue;
        }
        for summary in per_cpu {
            let cpu = summary.cpu.expect("filtered on cpu");
            rows.push((format!("  cpu{cpu}"), summary));
        }
    }
    let name_width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .max("histogram".len());
    const VALUE_WIDTH: usize = 10;
    let mut table = String::new();
    table.push_str(&format!(
        "{:<name_width$} {:>9} {:>VALUE_WIDTH$} {:>VALUE_WIDTH$} {:>VALUE_WIDTH$} {:>VALUE_WIDTH$} {:>VALUE_WIDTH$} {:>VALUE_WIDTH$}\n",
        "histogram", "count", "min", "p50", "p90", "p99", "p99.9", "max"
    ));
    for (name, summary) in rows {
        let values = [
            summary.min,
            summary.p50,
            summary.p90,
            summary.p99,
            summary.p999,
            summary.max,
        ]
        .map(|value| format!("{:>VALUE_WIDTH$}", format_value(value, &summary.unit)));
        table.push_str(&format!(
            "{name:<name_width$} {:>9} {}\n",
            summary.count,
            values.join(" ")
        ));
    }
    for note in notes {
        table.push_str(&note);
        table.push('\n');
    }
    table
}

/// The verdict line: `spindle: ok`, or `spindle: <status>: <why>`.
pub fn verdict_line(report: &RunReport) -> String {
    match (&report.status, &report.message) {
        (ExitStatusKind::Ok, _) => "spindle: ok".to_string(),
        (ExitStatusKind::Timeout, Some(message)) => format!("spindle: {message}"),
        (status, Some(message)) => format!("spindle: {status}: {message}"),
        (status, None) => format!("spindle: {status}"),
    }
}

/// Prints the overview and the table to `output` (the verdict is separate:
/// the binary prints it on stdout for success and stderr for failure).
pub fn write_summary(report: &RunReport, output: &mut impl Write) -> io::Result<()> {
    writeln!(output, "{}", overview_line(&report.document))?;
    if !report.histograms.is_empty() {
        write!(output, "{}", percentile_table(&report.histograms))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_formatting() {
        assert_eq!(format_value(0, "ns"), "0 ns");
        assert_eq!(format_value(999, "ns"), "999 ns");
        assert_eq!(format_value(1_234, "ns"), "1.23 µs");
        assert_eq!(format_value(12_345, "ns"), "12.3 µs");
        assert_eq!(format_value(123_456, "ns"), "123 µs");
        assert_eq!(format_value(45_600_000, "ns"), "45.6 ms");
        assert_eq!(format_value(2_000_000_000, "ns"), "2.00 s");
        assert_eq!(format_value(17, "bytes"), "17 bytes");
        assert_eq!(format_value(17, ""), "17");
    }

    #[test]
    fn overview_shows_missing_scalars_as_dashes() {
        let document = serde_json::json!({"cpus_online": 4, "apic_mode": "x2apic", "accel": "kvm", "boot_ms": 12.5});
        assert_eq!(
            overview_line(&document),
            "cpus_online=4 apic_mode=x2apic accel=kvm tsc_hz=- boot_ms=12.5"
        );
    }
}
