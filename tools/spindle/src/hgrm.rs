//! HdrHistogram percentile-distribution text files (`.hgrm`), as written by
//! Java HdrHistogram's `outputPercentileDistribution`.
//!
//! The `hdrhistogram` crate has no writer for this format, so this module
//! reproduces it: the same column widths and number formats
//! (`%12.Nf %2.12f %10d %14.2f`, N = the histogram's significant digits), the
//! last row without the `1/(1-Percentile)` column, and the
//! `#[Mean ...]`, `#[Max ...]`, `#[Buckets ...]` footer. Values are written
//! unscaled (in the histogram's unit, nanoseconds for Spindle), so the files
//! load into HdrHistogram's plotter and HistogramLogAnalyzer as they are.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::document::HistogramSummary;

/// The classic number of percentile ticks per half distance to 100 %.
pub const DEFAULT_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes `histogram`'s percentile distribution in the `.hgrm` text format.
pub fn write_percentile_distribution(
    histogram: &Histogram<u64>,
    ticks_per_half_distance: u32,
    output: &mut impl Write,
) -> io::Result<()> {
    let digits = usize::from(histogram.sigfig());
    writeln!(
        output,
        "{:>12} {:>14} {:>10} {:>14}",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    writeln!(output)?;
    let mut total_count: u64 = 0;
    for step in histogram.iter_quantiles(ticks_per_half_distance.max(1)) {
        total_count += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            writeln!(
                output,
                "{value:12.digits$} {quantile:2.12} {total_count:10} {:14.2}",
                1.0 / (1.0 - quantile)
            )?;
        } else {
            writeln!(
                output,
                "{value:12.digits$} {quantile:2.12} {total_count:10}"
            )?;
        }
    }
    let sub_buckets = (2 * 10_u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    writeln!(
        output,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        histogram.mean(),
        histogram.stdev()
    )?;
    writeln!(
        output,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        histogram.max() as f64,
        histogram.len()
    )?;
    writeln!(
        output,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets
    )?;
    Ok(())
}

/// The percentile distribution as a string (see [`write_percentile_distribution`]).
pub fn percentile_distribution(histogram: &Histogram<u64>, ticks_per_half_distance: u32) -> String {
    let mut text = Vec::new();
    write_percentile_distribution(histogram, ticks_per_half_distance, &mut text)
        .expect("writing to a Vec cannot fail");
    String::from_utf8(text).expect("the format is ASCII")
}

/// The file name for a histogram: its name with every character other than
/// ASCII letters, digits, `.`, `_` and `-` replaced by `_`, plus `.hgrm`.
pub fn file_name(histogram_name: &str) -> String {
    let safe: String = histogram_name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-') {
                character
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.hgrm")
}

/// Writes one `.hgrm` file per histogram into `directory` (created if
/// missing) and returns the paths written.
pub fn write_directory(
    directory: &Path,
    histograms: &[HistogramSummary],
) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(directory)?;
    let mut written = Vec::new();
    for summary in histograms {
        let path = directory.join(file_name(&summary.name));
        let mut file = io::BufWriter::new(fs::File::create(&path)?);
        write_percentile_distribution(&summary.hdr, DEFAULT_TICKS_PER_HALF_DISTANCE, &mut file)?;
        file.flush()?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_histogram() -> Histogram<u64> {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for value in 1..=1000_u64 {
            histogram.record(value * 10).unwrap();
        }
        histogram
    }

    #[test]
    fn header_rows_and_footer_follow_the_classic_format() {
        let histogram = sample_histogram();
        let text = percentile_distribution(&histogram, DEFAULT_TICKS_PER_HALF_DISTANCE);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let footer = &lines[lines.len() - 3..];
        assert!(footer[0].starts_with("#[Mean    = "), "{}", footer[0]);
        assert!(footer[0].contains(", StdDeviation   = "));
        assert!(footer[0].ends_with(']'));
        assert!(footer[1].starts_with("#[Max     = "), "{}", footer[1]);
        assert!(footer[1].ends_with(&format!("Total count    = {:>12}]", 1000)));
        assert_eq!(
            footer[2],
            format!(
                "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
                histogram.buckets(),
                2048
            )
        );

        let rows = &lines[2..lines.len() - 3];
        assert!(
            rows.len() > 20,
            "expected many percentile rows, got {}",
            rows.len()
        );
        // Every row but the last has four columns; the first column has three decimals.
        for row in &rows[..rows.len() - 1] {
            let columns: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(columns.len(), 4, "{row}");
            assert_eq!(columns[0].split_once('.').unwrap().1.len(), 3, "{row}");
            assert_eq!(columns[1].split_once('.').unwrap().1.len(), 12, "{row}");
            assert_eq!(row.len(), 12 + 1 + 14 + 1 + 10 + 1 + 14, "{row:?}");
        }
        // The last row reaches percentile 1.0 and the total count, without the last column.
        let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
        assert_eq!(last.len(), 3);
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        // Total counts never decrease and percentiles increase.
        let mut previous = (0_u64, -1.0_f64);
        for row in rows {
            let columns: Vec<&str> = row.split_whitespace().collect();
            let quantile: f64 = columns[1].parse().unwrap();
            let total: u64 = columns[2].parse().unwrap();
            assert!(total >= previous.0 && quantile > previous.1, "{row}");
            previous = (total, quantile);
        }
    }

    #[test]
    fn max_and_mean_in_footer() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        histogram.record_n(100, 3).unwrap();
        histogram.record(200).unwrap();
        let text = percentile_distribution(&histogram, DEFAULT_TICKS_PER_HALF_DISTANCE);
        assert!(
            text.contains("#[Mean    =      125.000, StdDeviation   =       43.301]"),
            "{text}"
        );
        assert!(
            text.contains("#[Max     =      200.000, Total count    =            4]"),
            "{text}"
        );
        let first_row = text.lines().nth(2).unwrap();
        assert_eq!(
            first_row,
            "     100.000 0.000000000000          3           1.00"
        );
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let histogram = Histogram::<u64>::new(3).unwrap();
        let text = percentile_distribution(&histogram, DEFAULT_TICKS_PER_HALF_DISTANCE);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[4].starts_with("#[Buckets"));
    }

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(
            file_name("apic.timer_lateness.cpu3"),
            "apic.timer_lateness.cpu3.hgrm"
        );
        assert_eq!(file_name("a/b c"), "a_b_c.hgrm");
    }

    #[test]
    fn write_directory_creates_it() {
        let directory =
            std::env::temp_dir().join(format!("spindle-hgrm-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        let histogram = sample_histogram();
        let summary = HistogramSummary {
            name: "x.y".into(),
            base_name: "x.y".into(),
            cpu: None,
            unit: "ns".into(),
            count: 1000,
            min: 10,
            max: 10000,
            sum: 0,
            p50: 0,
            p90: 0,
            p99: 0,
            p999: 0,
            buckets: Vec::new(),
            hdr: histogram,
        };
        let written = write_directory(&directory.join("nested"), &[summary]).unwrap();
        assert_eq!(written, vec![directory.join("nested").join("x.y.hgrm")]);
        assert!(fs::read_to_string(&written[0])
            .unwrap()
            .starts_with("       Value"));
        fs::remove_dir_all(&directory).unwrap();
    }
}
