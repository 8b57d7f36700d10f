//! Shared helpers for the integration tests: scratch directories, fake QEMU scripts, transcripts.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};
use spindle_tools::record_writer::record_line;

/// A fresh directory under the system temp dir, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "spindle-test-{}-{label}-{number}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    /// A stand-in kernel image (any existing file will do for a fake QEMU).
    pub fn kernel(&self) -> PathBuf {
        let path = self.path.join("kernel.elf");
        fs::write(&path, b"not really a kernel").unwrap();
        path
    }

    /// Writes an executable `/bin/sh` script named `name` with `body`.
    ///
    /// Every invocation bumps `count`, and writes its arguments one per line
    /// to `args.N` (N = 1, 2, ...) in the scratch directory.
    pub fn fake_qemu(&self, name: &str, body: &str) -> PathBuf {
        let directory = self.path.display();
        let script = format!(
            "#!/bin/sh\n\
             dir='{directory}'\n\
             n=$(cat \"$dir/count\" 2>/dev/null || echo 0)\n\
             n=$((n + 1))\n\
             echo \"$n\" > \"$dir/count\"\n\
             printf '%s\\n' \"$@\" > \"$dir/args.$n\"\n\
             {body}\n"
        );
        let path = self.path.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The arguments of the Nth invocation of a fake QEMU.
    pub fn arguments(&self, invocation: usize) -> Vec<String> {
        fs::read_to_string(self.path.join(format!("args.{invocation}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times a fake QEMU ran.
    pub fn invocations(&self) -> usize {
        fs::read_to_string(self.path.join("count"))
            .map(|text| text.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Shell lines printing `lines` on stdout, each as it is (no quoting issues:
/// the lines must not contain a single quote).
pub fn print_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| {
            assert!(
                !line.contains('\''),
                "fake output lines cannot contain a single quote: {line}"
            );
            format!("printf '%s\\n' '{line}'")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn hello() -> String {
    record_line(&json!({"t": "hello", "version": 1, "kernel": "spindle 0.1.0"}))
}

pub fn end(status: &str) -> String {
    record_line(&json!({"t": "end", "status": status}))
}

pub fn scalar(name: &str, value: Value) -> String {
    record_line(&json!({"t": "scalar", "name": name, "value": value}))
}

/// The kernel bucket holding `value`, found by binary search over
/// `spindle_histogram::bucket_low` (which increases with the index).
pub fn bucket_of(value: u64) -> usize {
    let (mut low, mut high) = (0, spindle_histogram::BUCKETS - 1);
    while low < high {
        let middle = (low + high).div_ceil(2);
        if spindle_histogram::bucket_low(middle) <= value {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    assert!(
        spindle_histogram::bucket_low(low) <= value && value <= spindle_histogram::bucket_high(low)
    );
    low
}

/// A `hist` record as the kernel would send it for `samples`.
pub fn hist_record(name: &str, cpu: Option<u32>, samples: &[u64]) -> Value {
    let mut counts = std::collections::BTreeMap::<usize, u64>::new();
    for &sample in samples {
        *counts.entry(bucket_of(sample)).or_default() += 1;
    }
    let buckets: Vec<Value> = counts
        .into_iter()
        .map(|(index, count)| json!([index, count]))
        .collect();
    let mut record = json!({
        "t": "hist",
        "name": name,
        "unit": "ns",
        "sub_bits": spindle_histogram::SUB_BITS,
        "count": samples.len(),
        "min": samples.iter().min().copied().unwrap_or(0),
        "max": samples.iter().max().copied().unwrap_or(0),
        "sum": samples.iter().sum::<u64>(),
        "buckets": buckets,
    });
    if let Some(cpu) = cpu {
        record["cpu"] = json!(cpu);
    }
    record
}

/// A successful transcript: human lines, hello, a few scalars, one
/// histogram per CPU, end ok.
pub fn successful_transcript() -> Vec<String> {
    vec![
        "spindle booting".to_string(),
        hello(),
        "[cpu1] online".to_string(),
        scalar("cpus_online", json!(2)),
        scalar("apic_mode", json!("x2apic")),
        scalar("tsc_hz", json!(2_994_000_000_u64)),
        scalar("boot_ms", json!(12.5)),
        record_line(&hist_record(
            "apic.timer_lateness",
            Some(0),
            &[1000, 1100, 1200, 5000],
        )),
        record_line(&hist_record("apic.timer_lateness", Some(1), &[900, 2000])),
        end("ok"),
    ]
}

/// Whether a process exists.
pub fn process_exists(process_id: u32) -> bool {
    Path::new(&format!("/proc/{process_id}")).exists()
}
