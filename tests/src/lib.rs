//! Shared helpers of the QEMU integration tests (`tests/*.rs`): build the
//! kernel image once per test binary, boot it with the runner's library, and
//! read figures out of the JSON document.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
pub use spindle_tools::AccelChoice;
use spindle_tools::RunOptions;
pub use spindle_tools::Topology;
pub use spindle_tools::{ExitStatusKind, RunReport};

/// Time limit for one boot. Generous: under TCG on a loaded 2-core machine
/// a 4-CPU boot with its measurements takes a few seconds.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Environment variable that forces the accelerator of the integration
/// tests (`kvm`, `tcg` or `auto`, the default), e.g. to check the suite
/// under TCG on a machine that has KVM.
pub const ACCEL_VARIABLE: &str = "SPINDLE_ACCEL";

static KERNEL: OnceLock<PathBuf> = OnceLock::new();

/// The accelerator the tests ask for (see `ACCEL_VARIABLE`).
pub fn accel_choice() -> AccelChoice {
    match std::env::var(ACCEL_VARIABLE).as_deref() {
        Ok("kvm") => AccelChoice::Kvm,
        Ok("tcg") => AccelChoice::Tcg,
        Ok("tcg-icount") => AccelChoice::TcgIcount,
        Ok("auto") | Err(_) => AccelChoice::Auto,
        Ok(other) => panic!("{ACCEL_VARIABLE}={other}: expected kvm, tcg, tcg-icount or auto"),
    }
}
/// QEMU runs one at a time inside a test binary: TCG guests with several
/// vCPUs on a 2-core machine starve each other otherwise.
static ONE_QEMU_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The kernel image, built on first use.
pub fn kernel_image() -> PathBuf {
    KERNEL
        .get_or_init(|| {
            spindle_tools::build_kernel()
                .unwrap_or_else(|error| panic!("building the kernel failed: {error}"))
        })
        .clone()
}

/// Boots Spindle with `smp` CPUs and extra kernel arguments.
pub fn boot(smp: u32, append: &str) -> RunReport {
    boot_with(smp, append, BOOT_TIMEOUT)
}

/// Boots Spindle with a given timeout.
pub fn boot_with(smp: u32, append: &str, timeout: Duration) -> RunReport {
    boot_with_input(smp, append, timeout, None)
}

/// Boots Spindle and types `input` into its serial console.
pub fn boot_with_input(
    smp: u32,
    append: &str,
    timeout: Duration,
    input: Option<&[u8]>,
) -> RunReport {
    boot_with_options(RunOptions {
        smp,
        append: append.to_string(),
        timeout,
        serial_input: input.map(<[u8]>::to_vec),
        ..RunOptions::default()
    })
}

/// Boots Spindle under TCG whatever `SPINDLE_ACCEL` says: for runs whose
/// checks depend on timing, which the nested PVM "KVM" of this project's
/// machines distorts (a policy call there takes milliseconds).
pub fn boot_tcg(smp: u32, append: &str, timeout: Duration) -> RunReport {
    boot_under(AccelChoice::Tcg, smp, append, timeout)
}

/// Boots Spindle under `accel` whatever `SPINDLE_ACCEL` says, e.g.
/// [`AccelChoice::TcgIcount`] for checks that must not depend on how the
/// host schedules QEMU's threads: there the guest's clocks count its own
/// instructions, so no host stall can make a deadline late.
pub fn boot_under(accel: AccelChoice, smp: u32, append: &str, timeout: Duration) -> RunReport {
    boot_with_options(RunOptions {
        smp,
        accel,
        append: append.to_string(),
        timeout,
        ..RunOptions::default()
    })
}

/// Boots Spindle with `topology` (sockets × cores × threads CPUs).
pub fn boot_with_topology(topology: Topology, append: &str) -> RunReport {
    boot_with_options(RunOptions {
        smp: topology.cpus(),
        topology: Some(topology),
        append: append.to_string(),
        timeout: BOOT_TIMEOUT,
        ..RunOptions::default()
    })
}

/// Boots Spindle with `options`; the image, the accelerator (see
/// `ACCEL_VARIABLE`) and quiet output are set here for every test.
pub fn boot_with_options(options: RunOptions) -> RunReport {
    let image = kernel_image();
    let _turn = ONE_QEMU_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A test that names an accelerator keeps it; the others follow
    // SPINDLE_ACCEL.
    let accel = match options.accel {
        AccelChoice::Auto => accel_choice(),
        chosen => chosen,
    };
    let options = RunOptions {
        accel,
        kernel: Some(image),
        echo: false,
        ..options
    };
    spindle_tools::run(&options).unwrap_or_else(|error| panic!("running QEMU failed: {error}"))
}

/// A top-level scalar of the document as u64.
pub fn scalar_u64(report: &RunReport, name: &str) -> u64 {
    report.document[name].as_u64().unwrap_or_else(|| {
        panic!(
            "scalar {name} missing or not a number in {}",
            report.document
        )
    })
}

/// A top-level list scalar as a vector of u64.
pub fn scalar_list(report: &RunReport, name: &str) -> Vec<u64> {
    report.document[name]
        .as_array()
        .unwrap_or_else(|| panic!("scalar {name} missing or not a list"))
        .iter()
        .map(|value| {
            value
                .as_u64()
                .unwrap_or_else(|| panic!("{name} holds a non-number"))
        })
        .collect()
}

/// The histogram called `name` in the document.
pub fn histogram<'a>(report: &'a RunReport, name: &str) -> &'a Value {
    report.document["histograms"]
        .as_array()
        .expect("document has histograms")
        .iter()
        .find(|histogram| histogram["name"] == name)
        .unwrap_or_else(|| panic!("histogram {name} missing"))
}

/// Panics with the serial log when `report` did not end as `expected`.
pub fn expect_status(report: &RunReport, expected: ExitStatusKind) {
    assert_eq!(
        report.status, expected,
        "unexpected run status; serial log:\n{}",
        report.serial_log
    );
}

/// The records of type `record_type` found in the serial log.
pub fn records_of_type(
    report: &RunReport,
    record_type: &str,
) -> Vec<serde_json::Map<String, Value>> {
    report
        .serial_log
        .lines()
        .filter_map(|line| match spindle_records::parse_line(line) {
            spindle_records::Line::Record(record) if record.record_type == record_type => {
                Some(record.fields)
            }
            _ => None,
        })
        .collect()
}
