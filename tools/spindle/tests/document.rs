//! Building the JSON document from canned serial transcripts.

mod common;

use std::time::Duration;

use common::{end, hello, hist_record, scalar};
use serde_json::{json, Value};
use spindle_records::{parse_line, LineAssembler};
use spindle_tools::document::{exit_section, RecordCollector};
use spindle_tools::outcome::{classify, ExitStatusKind};
use spindle_tools::record_writer::record_line;
use spindle_tools::Accel;

fn collect(lines: &[String]) -> RecordCollector {
    let mut collector = RecordCollector::new();
    for line in lines {
        collector.observe(&parse_line(line));
    }
    collector
}

fn document_of(collector: &RecordCollector, qemu_status: i32) -> (Value, ExitStatusKind) {
    let histograms = collector.histogram_summaries().unwrap();
    let mut observation = collector.observation();
    observation.qemu_status = Some(qemu_status);
    let (status, _) = classify(&observation);
    let exit = exit_section(status, Some(qemu_status), Duration::from_millis(812));
    (
        collector.document(&histograms, Accel::Kvm, 4, &exit),
        status,
    )
}

/// The exact value at quantile `q` of `samples` (rank `ceil(q * n)`), as hdrhistogram defines it.
fn exact_quantile(samples: &[u64], quantile: f64) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn assert_close(label: &str, reported: u64, exact: u64) {
    let error = (reported as f64 - exact as f64).abs() / exact as f64;
    // Half a bucket (0.8 % at sub_bits 6) plus hdrhistogram's 0.1 %, with margin.
    assert!(
        error <= 0.012,
        "{label}: reported {reported}, exact {exact} ({:.2} %)",
        error * 100.0
    );
}

#[test]
fn scalars_histograms_and_exit_make_the_document() {
    // CPU 0: 600 samples 1000..=6990 ns; CPU 2: 400 samples 20000..=99800 ns.
    let cpu0: Vec<u64> = (0..600).map(|i| 1000 + 10 * i).collect();
    let cpu2: Vec<u64> = (0..400).map(|i| 20_000 + 200 * i).collect();
    let all: Vec<u64> = cpu0.iter().chain(&cpu2).copied().collect();
    let transcript = vec![
        "SeaBIOS-free boot".to_string(),
        hello(),
        scalar("cpus_online", json!(3)),
        scalar("apic_mode", json!("x2apic")),
        scalar("ticks_per_cpu", json!([201, 200, 199])),
        record_line(&json!({"t": "future-record", "x": 1})),
        scalar("cpus_online", json!(4)),
        record_line(&hist_record("apic.timer_lateness", Some(2), &cpu2)),
        record_line(&hist_record("apic.timer_lateness", Some(0), &cpu0)),
        record_line(&hist_record("tsc.read_cost", None, &[20, 21, 22, 22])),
        end("ok"),
    ];
    let collector = collect(&transcript);
    assert!(
        collector.problems().is_empty(),
        "{:?}",
        collector.problems()
    );
    let (document, status) = document_of(&collector, 33);
    assert_eq!(status, ExitStatusKind::Ok);

    // Scalars flattened; a later scalar replaces an earlier one; runner keys added.
    assert_eq!(document["protocol"], json!(1));
    assert_eq!(document["accel"], json!("kvm"));
    assert_eq!(document["smp"], json!(4));
    assert_eq!(document["cpus_online"], json!(4));
    assert_eq!(document["apic_mode"], json!("x2apic"));
    assert_eq!(document["ticks_per_cpu"], json!([201, 200, 199]));
    assert_eq!(
        document["exit"],
        json!({"status": "ok", "qemu_status": 33, "wall_ms": 812})
    );

    // Merged histograms in first-seen order, then per-CPU ones (CPUs ascending).
    let histograms = document["histograms"].as_array().unwrap();
    let names: Vec<&str> = histograms
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "apic.timer_lateness",
            "tsc.read_cost",
            "apic.timer_lateness.cpu0",
            "apic.timer_lateness.cpu2"
        ]
    );
    for histogram in histograms {
        let keys: Vec<&String> = histogram.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 10, "{keys:?}");
        for key in [
            "name", "unit", "count", "min", "p50", "p90", "p99", "p999", "max", "buckets",
        ] {
            assert!(histogram.get(key).is_some(), "missing {key}");
        }
        assert_eq!(histogram["unit"], "ns");
        // Buckets are [low, high, count] with low <= high, increasing, counts adding up.
        let buckets = histogram["buckets"].as_array().unwrap();
        let mut total = 0;
        let mut previous_high = None;
        for bucket in buckets {
            let [low, high, count] = [0, 1, 2].map(|i| bucket[i].as_u64().unwrap());
            assert!(low <= high && count > 0);
            assert!(previous_high.is_none_or(|previous| previous < low));
            previous_high = Some(high);
            total += count;
        }
        assert_eq!(Some(total), histogram["count"].as_u64());
        // Percentiles are ordered and within [min, max].
        let values: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|k| histogram[*k].as_u64().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|pair| pair[0] <= pair[1]),
            "{}: {values:?}",
            histogram["name"]
        );
    }

    let merged = &histograms[0];
    assert_eq!(merged["count"], json!(1000));
    assert_eq!(merged["min"], json!(1000));
    assert_eq!(merged["max"], json!(99_800));
    for (key, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        assert_close(
            key,
            merged[key].as_u64().unwrap(),
            exact_quantile(&all, quantile),
        );
    }
    let cpu0_histogram = &histograms[2];
    assert_eq!(cpu0_histogram["count"], json!(600));
    assert_eq!(
        (
            cpu0_histogram["min"].as_u64(),
            cpu0_histogram["max"].as_u64()
        ),
        (Some(1000), Some(6990))
    );
    assert_close(
        "cpu0 p50",
        cpu0_histogram["p50"].as_u64().unwrap(),
        exact_quantile(&cpu0, 0.5),
    );
    let cpu2_histogram = &histograms[3];
    assert_close(
        "cpu2 p99",
        cpu2_histogram["p99"].as_u64().unwrap(),
        exact_quantile(&cpu2, 0.99),
    );

    // Small values have exact buckets.
    let read_cost = &histograms[1];
    assert_eq!(
        read_cost["buckets"],
        json!([[20, 20, 1], [21, 21, 1], [22, 22, 2]])
    );
    assert_eq!(
        (read_cost["p50"].as_u64(), read_cost["max"].as_u64()),
        (Some(21), Some(22))
    );
}

#[test]
fn line_assembler_transcript_split_anywhere() {
    let text = common::successful_transcript().join("\r\n") + "\r\n";
    let mut assembler = LineAssembler::new();
    let mut collector = RecordCollector::new();
    for chunk in text.as_bytes().chunks(7) {
        for line in assembler.push(chunk) {
            collector.observe(&line);
        }
    }
    if let Some(line) = assembler.finish() {
        collector.observe(&line);
    }
    assert!(
        collector.problems().is_empty(),
        "{:?}",
        collector.problems()
    );
    assert!(collector.hello_seen());
    let (document, status) = document_of(&collector, 33);
    assert_eq!(status, ExitStatusKind::Ok);
    assert_eq!(document["histograms"][0]["count"], json!(6));
    assert_eq!(document["histograms"][0]["min"], json!(900));
    assert_eq!(document["histograms"][0]["max"], json!(5000));
}

#[test]
fn corrupt_and_malformed_records_are_protocol_errors() {
    let good = scalar("cpus_online", json!(2));
    let (json_part, _) = good.rsplit_once(" #").unwrap();
    let bad_checksum = format!("{json_part} #00000000");
    let mut wrong_sub_bits = hist_record("x", None, &[5]);
    wrong_sub_bits["sub_bits"] = json!(spindle_histogram::SUB_BITS + 1);
    let mut wrong_count = hist_record("y", None, &[5, 6]);
    wrong_count["count"] = json!(3);
    let cases = [
        bad_checksum,
        record_line(&wrong_sub_bits),
        record_line(&wrong_count),
        record_line(&json!({"t": "scalar", "value": 1})),
        record_line(&json!({"t": "hello", "version": 2})),
    ];
    for bad_line in cases {
        let collector = collect(&[hello(), bad_line.clone(), end("ok")]);
        assert_eq!(collector.problems().len(), 1, "{bad_line}");
        let (document, status) = document_of(&collector, 33);
        assert_eq!(status, ExitStatusKind::ProtocolError, "{bad_line}");
        assert_eq!(document["exit"]["status"], "protocol-error");
    }
    // A corrupt scalar is never used as data.
    let collector = collect(&[format!("{json_part} #00000000")]);
    assert!(collector.scalars().get("cpus_online").is_none());
}

#[test]
fn failure_records_classify_the_run() {
    let fault = record_line(&json!({
        "t": "fault", "cpu": 1, "vector": 14, "name": "page fault", "error_code": 2,
        "rip": 0xffff_8000_0010_2345_u64, "cs": 8, "rflags": 0x86, "rsp": 0x1000, "cr2": 0xdead_0000_u64
    }));
    let collector = collect(&[hello(), fault]);
    let mut observation = collector.observation();
    observation.qemu_status = Some(35);
    let (status, message) = classify(&observation);
    assert_eq!(status, ExitStatusKind::Fault);
    let message = message.unwrap();
    assert!(
        message.contains("page fault") && message.contains("0xffff800000102345"),
        "{message}"
    );
    assert!(message.contains("cr2 0xdead0000"), "{message}");

    let panic = record_line(
        &json!({"t": "panic", "cpu": 0, "message": "oops", "file": "src/main.rs", "line": 7}),
    );
    let collector = collect(&[hello(), panic]);
    let mut observation = collector.observation();
    observation.qemu_status = Some(35);
    let (status, message) = classify(&observation);
    assert_eq!(status, ExitStatusKind::Fault);
    assert!(message.unwrap().contains("src/main.rs:7: oops"));

    let error = record_line(&json!({"t": "error", "message": "unknown kernel argument bogus"}));
    let collector = collect(&[hello(), error, end("fail")]);
    let mut observation = collector.observation();
    observation.qemu_status = Some(35);
    let (status, message) = classify(&observation);
    assert_eq!(status, ExitStatusKind::KernelFailed);
    assert!(message.unwrap().contains("unknown kernel argument bogus"));
}

#[test]
fn empty_histogram_is_reported_with_zeros() {
    let collector = collect(&[record_line(&hist_record("idle", None, &[]))]);
    let histograms = collector.histogram_summaries().unwrap();
    assert_eq!(histograms.len(), 1);
    let json = histograms[0].to_json();
    assert_eq!(json["count"], json!(0));
    assert_eq!(json["p99"], json!(0));
    assert_eq!(json["buckets"], json!([]));
}
