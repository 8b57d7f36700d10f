//! Boots Spindle at -smp 1, 2 and 4 (and with non-dense APIC IDs) and checks
//! what it reports: every CPU online and ticking, every IPI answered, the
//! histograms filled.

use spindle_tests::{
    boot, boot_with_input, boot_with_topology, expect_status, histogram, records_of_type,
    scalar_list, scalar_u64, ExitStatusKind, Topology, BOOT_TIMEOUT,
};

fn check_boot(smp: u32) {
    let report = boot(smp, "");
    expect_status(&report, ExitStatusKind::Ok);
    let cpus = smp as usize;
    assert_eq!(scalar_u64(&report, "cpus_online"), u64::from(smp));
    assert_eq!(scalar_u64(&report, "cpus_found"), u64::from(smp));
    let apic_ids = scalar_list(&report, "apic_ids");
    assert_eq!(apic_ids.len(), cpus);
    let mut distinct = apic_ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        cpus,
        "APIC IDs must be distinct: {apic_ids:?}"
    );

    let mode = report.document["apic_mode"].as_str().expect("apic_mode");
    assert!(mode == "x2apic" || mode == "xapic", "apic_mode {mode}");
    let accel = report.document["accel"].as_str().expect("accel");
    assert!(accel == "kvm" || accel == "tcg", "accel {accel}");
    assert!(
        scalar_u64(&report, "tsc_hz") > 100_000_000,
        "implausible TSC frequency"
    );
    assert!(
        scalar_u64(&report, "apic_timer_hz") > 1_000_000,
        "implausible APIC timer frequency"
    );
    assert!(report.document["boot_ms"].as_f64().expect("boot_ms") > 0.0);

    // Every CPU ticks, in the periodic self-test and in deadline mode.
    let ticks = scalar_list(&report, "ticks_per_cpu");
    assert_eq!(ticks.len(), cpus);
    assert!(
        ticks.iter().all(|&count| count > 0),
        "a CPU did not tick: {ticks:?}"
    );
    let periodic = scalar_list(&report, "periodic_ticks_per_cpu");
    assert!(
        periodic.iter().all(|&count| count >= 5),
        "periodic self-test: {periodic:?}"
    );

    // Every ping answered: CPU 0 pings the others 100 times each (default).
    let answered = scalar_list(&report, "ipi_answered");
    assert_eq!(answered[0], 0);
    assert!(
        answered[1..].iter().all(|&count| count == 100),
        "ipi_answered {answered:?}"
    );
    assert_eq!(scalar_u64(&report, "ipi_lost"), 0);

    let lateness = histogram(&report, "apic.timer_lateness");
    assert_eq!(
        lateness["count"].as_u64(),
        Some(ticks.iter().sum::<u64>()),
        "one lateness sample per tick"
    );
    // Stalls are the lateness of the ticks over 0.2 ms, each counted whole:
    // none if no tick was that late, else at least the latest one.
    let stalled = scalar_list(&report, "stalled_ns_per_cpu");
    assert_eq!(stalled.len(), cpus);
    let latest = lateness["max"].as_u64().expect("lateness max");
    let most_stalled = stalled.iter().copied().max().unwrap_or(0);
    if latest > 200_000 {
        assert!(
            most_stalled >= latest,
            "stalled {stalled:?}, latest tick {latest} ns"
        );
    } else {
        assert_eq!(
            most_stalled, 0,
            "stalled {stalled:?}, latest tick {latest} ns"
        );
    }
    let tsc = histogram(&report, "tsc.read_cost");
    assert_eq!(tsc["count"].as_u64(), Some(1_000 * smp as u64));
    if smp > 1 {
        let round_trip = histogram(&report, "ipi.round_trip");
        assert_eq!(
            round_trip["count"].as_u64(),
            Some(100 * (u64::from(smp) - 1))
        );
        assert!(round_trip["p50"].as_u64().unwrap() > 0);
        for cpu in 1..cpus {
            let per_cpu = histogram(&report, &format!("ipi.round_trip.cpu{cpu}"));
            assert_eq!(per_cpu["count"].as_u64(), Some(100));
        }
    }
}

#[test]
fn boots_on_one_cpu() {
    check_boot(1);
}

#[test]
fn boots_on_two_cpus() {
    check_boot(2);
}

#[test]
fn boots_on_four_cpus() {
    check_boot(4);
}

#[test]
fn selected_benchmarks_only() {
    let report = boot(2, "bench=tsc tsc_samples=500");
    expect_status(&report, ExitStatusKind::Ok);
    assert_eq!(
        histogram(&report, "tsc.read_cost")["count"].as_u64(),
        Some(1000)
    );
    let histograms = report.document["histograms"].as_array().unwrap();
    assert!(
        histograms
            .iter()
            .all(|histogram| !histogram["name"].as_str().unwrap().starts_with("ipi.")),
        "bench=tsc must not run the IPI benchmark"
    );
}

#[test]
fn serial_console_reads_input_lines() {
    let input = b"hello spindle\r\nsecond \"line\" with \\ and tab\t\n";
    let report = boot_with_input(1, "read_lines=2 bench=tsc", BOOT_TIMEOUT, Some(input));
    expect_status(&report, ExitStatusKind::Ok);
    let lines: Vec<String> = records_of_type(&report, "input")
        .iter()
        .map(|record| {
            record["line"]
                .as_str()
                .expect("input record has a line")
                .to_string()
        })
        .collect();
    assert_eq!(
        lines,
        ["hello spindle", "second \"line\" with \\ and tab\t"]
    );
}

#[test]
fn non_dense_apic_ids_are_found_and_started() {
    // QEMU pads the core field of the APIC ID to a power of two: 2 sockets
    // of 3 cores give APIC IDs 0, 1, 2, 4, 5, 6.
    let topology = Topology {
        sockets: 2,
        cores: 3,
        threads: 1,
    };
    let report = boot_with_topology(topology, "");
    expect_status(&report, ExitStatusKind::Ok);
    assert_eq!(scalar_list(&report, "apic_ids"), [0, 1, 2, 4, 5, 6]);
    assert_eq!(scalar_u64(&report, "cpus_online"), 6);
    assert!(scalar_list(&report, "ticks_per_cpu")
        .iter()
        .all(|&ticks| ticks > 0));
    assert_eq!(
        scalar_list(&report, "ipi_answered"),
        [0, 100, 100, 100, 100, 100]
    );
}
