//! The boot sequence of the bootstrap processor (`kernel_main`) and of every
//! application processor (`ap_main`), and the end-of-run report.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{apic, cpu, interrupts, paging, pvh, smp, tsc};
use crate::args::{Fault, KernelArgs, Selftest};
use crate::exit::{exit, ExitCode};
use crate::{acpi, bench, console, extensions, heap, kprintln, metrics, selftest, strand, timer};

/// TSC value when the bootstrap processor entered Rust.
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// Tick rate all CPUs use (set from the arguments before APs start).
static TICK_HZ: AtomicU64 = AtomicU64::new(1000);
/// How long the bootstrap processor waits for the application processors.
const AP_STARTUP_TIMEOUT_NS: u64 = 5_000_000_000;
/// Periodic-mode self-test: period, ticks wanted, and the give-up time.
const PERIODIC_TEST_PERIOD_NS: u64 = 1_000_000;
const PERIODIC_TEST_TICKS: u64 = 5;
const PERIODIC_TEST_TIMEOUT_NS: u64 = 2_000_000_000;
/// Longest console input line kept (longer lines are cut).
const INPUT_LINE_CAPACITY: usize = 256;
/// How long `read_lines` waits for each byte of input.
const INPUT_TIMEOUT_NS: u64 = 10_000_000_000;
/// How long a CPU may take to provoke a requested fault.
const FAULT_TIMEOUT_NS: u64 = 5_000_000_000;
/// A canonical address the boot page tables do not map (above 4 GiB).
const UNMAPPED_ADDRESS: u64 = 0x0000_0dea_dbee_f000;
/// A non-canonical address (bits 63:47 not all equal).
const NON_CANONICAL_ADDRESS: u64 = 0x8000_0000_0000_0000;

/// Nanoseconds since the bootstrap processor entered Rust.
pub fn nanoseconds_since_boot() -> u64 {
    tsc::cycles_to_ns(tsc::now().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Reports a problem as a human line and an `error` record; the run goes
/// on (to report what it measured) but will fail.
fn report_problem(message: core::fmt::Arguments<'_>) {
    kprintln!("kernel: error: {message}");
    let mut text = console::BoundedText::new();
    let _ = core::fmt::Write::write_fmt(&mut text, message);
    console::record("error", |record| {
        record.str("message", text.as_str())?;
        Ok(())
    });
}

/// Reports a problem and ends the run with the failure exit code.
fn fail(message: core::fmt::Arguments<'_>) -> ! {
    report_problem(message);
    console::with_console(|console| console::write_end(console, "fail"));
    exit(ExitCode::Failure)
}

/// Gives CPU `index` its IST stacks and its interrupt stack, each with a
/// guard page. Runs on the
/// bootstrap processor before the application processors start.
fn allocate_ist_stacks(index: usize) {
    let block = cpu::per_cpu(index);
    for top in &block.ist_stack_tops {
        // SAFETY: only the bootstrap processor runs yet (see callers).
        match unsafe { paging::allocate_guarded_stack(cpu::IST_STACK_SIZE) } {
            Ok(stack_top) => top.store(stack_top, Ordering::Release),
            Err(error) => fail(format_args!("IST stack for cpu {index}: {error}")),
        }
    }
    // SAFETY: as above.
    match unsafe { paging::allocate_guarded_stack(cpu::INTERRUPT_STACK_SIZE) } {
        Ok(stack_top) => block
            .interrupt_stack_top
            .store(stack_top, Ordering::Release),
        Err(error) => fail(format_args!("interrupt stack for cpu {index}: {error}")),
    }
}

unsafe extern "C" {
    /// Lowest page of the bootstrap processor's boot stack (arch/boot.rs).
    static boot_stack_bottom: u8;
}

/// The bootstrap processor's Rust entry, called by `boot.rs` with the PVH
/// start-info address.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    BOOT_TSC.store(tsc::now(), Ordering::Relaxed);
    console::init();
    console::record("hello", |record| {
        record
            .u64("version", 1)?
            .str("kernel", concat!("spindle ", env!("CARGO_PKG_VERSION")))?;
        Ok(())
    });
    // SAFETY: `start_info` is the address QEMU passed in %ebx to the PVH
    // entry; low memory is identity-mapped and nothing has been written yet.
    let boot_info = match unsafe { pvh::BootInfo::read(u64::from(start_info)) } {
        Ok(info) => info,
        Err(error) => fail(format_args!("PVH start info unusable: {error}")),
    };
    let args = match crate::args::parse(boot_info.command_line()) {
        Ok(args) => args,
        Err(error) => fail(format_args!("{error}")),
    };
    // SAFETY: once, on the bootstrap processor, before any allocation, with
    // the loader's memory map.
    let heap_bytes = unsafe { heap::init(&boot_info) };
    if heap_bytes == 0 {
        fail(format_args!(
            "no usable RAM for the kernel heap in the memory map"
        ));
    }
    // SAFETY: once, on the bootstrap processor, before any CPU loads the IDT.
    unsafe { interrupts::init_idt() };
    allocate_ist_stacks(0);
    // SAFETY: once on this CPU, bound to GS, interrupts off, its IST stacks
    // allocated (and leaked: they live forever).
    unsafe { cpu::load_descriptor_tables() };
    interrupts::load_idt();
    // The boot stack's lowest page becomes its guard page.
    // SAFETY: only this CPU runs; the boot stack is 64 KiB and the kernel
    // runs far above its lowest page, which nothing else uses.
    if let Err(error) = unsafe { paging::unmap_page(core::ptr::addr_of!(boot_stack_bottom) as u64) }
    {
        fail(format_args!("boot stack guard page: {error}"));
    }
    kprintln!(
        "kernel: booting; command line \"{}\"",
        boot_info.command_line()
    );

    let tsc_hz = tsc::calibrate();
    if tsc_hz < tsc::PLAUSIBLE_MINIMUM_HZ {
        fail(format_args!(
            "TSC calibration gave {tsc_hz} Hz ({}): no usable PIT channel 2 gate on this machine",
            tsc::source().name()
        ));
    }
    let topology = match acpi::read_topology(boot_info.rsdp_address) {
        Ok(topology) => topology,
        Err(error) => fail(format_args!("{error}")),
    };
    let my_apic_id = cpu::apic_id_from_cpuid();
    // Dense indices in MADT order, with the bootstrap processor at 0.
    let mut apic_ids: Vec<u32> = alloc::vec![my_apic_id];
    apic_ids.extend(
        topology
            .apic_ids()
            .iter()
            .copied()
            .filter(|&id| id != my_apic_id),
    );
    apic_ids.truncate(cpu::MAX_CPUS);
    cpu::set_cpus_found(apic_ids.len());
    for (index, &apic_id) in apic_ids.iter().enumerate() {
        cpu::assign_apic_id(index, apic_id);
    }
    for index in 1..apic_ids.len() {
        allocate_ist_stacks(index);
    }
    cpu::bind_to_gs(0, my_apic_id);
    if let Err(error) = extensions::init(apic_ids.len()) {
        fail(format_args!("extension services: {error}"));
    }
    if args.extensions.timestamps {
        if let Err(error) = extensions::install(spindle_console_timestamps::NAME) {
            fail(format_args!(
                "extension {}: {error}",
                spindle_console_timestamps::NAME
            ));
        }
    }
    match strand::find_policy(args.sched) {
        Some(policy) => strand::init(
            policy.name,
            (policy.create)(apic_ids.len() as u16),
            args.swaps[..args.swap_count].to_vec(),
            args.watchdog_ms * 1_000_000,
            args.budget_ms * 1_000_000,
            args.tick_hz,
        ),
        None => fail(format_args!(
            "sched={}: not in the sched-ext catalogue",
            args.sched
        )),
    }
    if topology.processors_ignored > 0 {
        kprintln!(
            "kernel: warning: {} processors beyond {} ignored",
            topology.processors_ignored,
            cpu::MAX_CPUS
        );
    }

    TICK_HZ.store(args.tick_hz, Ordering::Relaxed);
    timer::init();
    bench::init();
    interrupts::register_handler(apic::VECTOR_SPURIOUS, |_frame| {});
    interrupts::register_handler(apic::VECTOR_APIC_ERROR, |_frame| apic::end_of_interrupt());
    apic::mask_legacy_pic();
    apic::init_local_apic();
    let calibration_window = tsc_hz / 100; // 10 ms
    let apic_timer_hz = apic::calibrate_timer(calibration_window);
    kprintln!(
        "kernel: {} CPUs in the MADT, {} I/O APIC(s); local APIC in {} mode; TSC {} Hz ({}); APIC timer {} Hz",
        apic_ids.len(),
        topology.io_apics().len(),
        apic::mode_name(),
        tsc_hz,
        tsc::source().name(),
        apic_timer_hz
    );

    cpu::per_cpu(0).online.store(true, Ordering::Release);
    // SAFETY: once, on the bootstrap processor, after heap, IDT, APIC and
    // TSC calibration; the trampoline page (0x8000) is below 1 MiB and
    // outside the heap.
    let bringup = unsafe { smp::start_application_processors(ap_main, AP_STARTUP_TIMEOUT_NS) };
    let boot_ns = tsc::cycles_to_ns(tsc::now() - BOOT_TSC.load(Ordering::Relaxed));
    kprintln!(
        "kernel: {} of {} CPUs online in {}.{:03} ms (INIT-SIPI-SIPI {}.{:03} ms)",
        bringup.online,
        apic_ids.len(),
        boot_ns / 1_000_000,
        boot_ns / 1000 % 1000,
        bringup.elapsed_ns / 1_000_000,
        bringup.elapsed_ns / 1000 % 1000
    );
    if bringup.online < apic_ids.len() {
        let missing: Vec<u32> = (1..apic_ids.len())
            .filter(|&index| !cpu::per_cpu(index).online.load(Ordering::Acquire))
            .map(|index| cpu::per_cpu(index).apic_id.load(Ordering::Relaxed))
            .collect();
        fail(format_args!(
            "application processors with APIC IDs {missing:?} did not come online"
        ));
    }

    let periodic = timer::periodic_self_test(
        PERIODIC_TEST_PERIOD_NS,
        PERIODIC_TEST_TICKS,
        PERIODIC_TEST_TIMEOUT_NS,
    );
    if periodic < PERIODIC_TEST_TICKS {
        fail(format_args!(
            "APIC timer periodic mode gave {periodic} of {PERIODIC_TEST_TICKS} ticks on cpu 0"
        ));
    }
    timer::start_ticking(args.tick_hz);
    cpu::enable_interrupts();

    for _ in 0..args.read_lines {
        echo_input_line();
    }
    if let Some(fault) = args.fault {
        provoke_fault_on(fault, args.fault_cpu);
    }
    run_and_report(&args, &topology, &bringup, boot_ns, heap_bytes)
}

fn run_and_report(
    args: &KernelArgs,
    topology: &acpi::Topology,
    bringup: &smp::Bringup,
    boot_ns: u64,
    heap_bytes: u64,
) -> ! {
    let mut problems = 0;
    let phase_start = tsc::now();
    let elapsed_ms = || tsc::cycles_to_ns(tsc::now() - phase_start) / 1_000_000;
    if args.benches.tsc {
        let missed = bench::tsc_read_cost(args.tsc_samples);
        if missed > 0 {
            report_problem(format_args!(
                "{missed} CPUs did not run the TSC benchmark in time"
            ));
            problems += 1;
        }
    }
    kprintln!("kernel: TSC benchmark done at +{} ms", elapsed_ms());
    let mut ipi_lost = 0;
    if args.benches.ipi {
        ipi_lost = bench::ipi_round_trips(args.ipi_rounds);
        if ipi_lost > 0 {
            report_problem(format_args!("{ipi_lost} IPIs went unanswered"));
            problems += 1;
        }
    }
    kprintln!("kernel: IPI benchmark done at +{} ms", elapsed_ms());
    if args.benches.timer {
        // This CPU ticks too, so halting until the window ends is safe.
        let window_end = tsc::now() + tsc::ns_to_cycles(args.timer_ms * 1_000_000);
        while tsc::now() < window_end {
            crate::extensions::halt_until_interrupt();
        }
    }
    kprintln!("kernel: timer window done at +{} ms", elapsed_ms());
    // Idle CPUs stop their tick from here on (the window above counts ticks).
    timer::allow_tickless_idle(args.tickless);
    if args.benches.dispatch {
        if let Err(error) = bench::dispatch(args.dispatch_samples, args.dispatch_calls) {
            report_problem(format_args!("{error}"));
            problems += 1;
        }
        kprintln!("kernel: dispatch benchmark done at +{} ms", elapsed_ms());
    }
    if args.benches.mixed {
        let found = crate::workloads::mixed(args.mixed_ms, args.mixed_job_us * 1000);
        for problem in &found {
            report_problem(format_args!("{problem}"));
        }
        problems += found.len();
        kprintln!("kernel: mixed benchmark done at +{} ms", elapsed_ms());
    }
    if args.benches.forkjoin || args.benches.pingpong {
        let found = crate::workloads::threads(
            args.benches.forkjoin,
            args.benches.pingpong,
            args.thread_rounds,
        );
        for problem in &found {
            report_problem(format_args!("{problem}"));
        }
        problems += found.len();
        kprintln!("kernel: thread benchmarks done at +{} ms", elapsed_ms());
    }
    if args.benches.blocking {
        let found = crate::workloads::blocking();
        for problem in &found {
            report_problem(format_args!("blocking: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: blocking benchmark done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::Uthreads) = args.selftest {
        let found = crate::workloads::uthreads_stress(args.thread_count);
        for problem in &found {
            report_problem(format_args!("uthreads: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: uthreads self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::Activations) = args.selftest {
        let found = crate::workloads::activations_stress(args.thread_count);
        for problem in &found {
            report_problem(format_args!("activations: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: activations self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::Strands) = args.selftest {
        let found = selftest::strands(args.strand_count, args.strand_ms);
        for problem in &found {
            report_problem(format_args!("strands: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: strands self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::StrandOperations) = args.selftest {
        let found = selftest::strand_operations();
        for problem in &found {
            report_problem(format_args!("strand-ops: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: strand-ops self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::Processors) = args.selftest {
        let found = selftest::processors::run();
        for problem in &found {
            report_problem(format_args!("processors: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: processors self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::GraceStall) = args.selftest {
        let found = selftest::grace_stall::grace_stall();
        for problem in &found {
            report_problem(format_args!("grace-stall: {problem}"));
        }
        problems += found.len();
        kprintln!("kernel: grace-stall self-test done at +{} ms", elapsed_ms());
    }
    if let Some(Selftest::DispatchChurn) = args.selftest {
        let found = selftest::dispatch_churn(args.selftest_ms);
        for problem in &found {
            report_problem(format_args!("dispatch-churn: {problem}"));
        }
        problems += found.len();
        kprintln!(
            "kernel: dispatch-churn self-test done at +{} ms",
            elapsed_ms()
        );
    }
    // Stop every tick so the counts stay put while they are reported.
    let cpus = cpu::cpus_found();
    for index in 0..cpus {
        smp::run_on(index, timer::stop_ticking, FAULT_TIMEOUT_NS);
    }
    let ticks: Vec<u64> = (0..cpus)
        .map(|index| cpu::per_cpu(index).ticks.load(Ordering::Relaxed))
        .collect();
    if args.benches.timer && args.timer_ms > 0 {
        for (index, &count) in ticks.iter().enumerate() {
            if count == 0 {
                report_problem(format_args!("cpu {index} took no timer interrupt"));
                problems += 1;
            }
        }
    }
    report_scalars(topology, bringup, boot_ns, heap_bytes, &ticks, ipi_lost);
    report_extensions();
    metrics::dump();
    metrics::print_summaries();
    for failure in extensions::uninstall_all() {
        report_problem(format_args!("uninstall: {failure}"));
        problems += 1;
    }
    kprintln!("kernel: extensions uninstalled; run complete");
    let status = if problems == 0 { "ok" } else { "fail" };
    console::with_console(|console| console::write_end(console, status));
    exit(if problems == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

fn report_scalars(
    topology: &acpi::Topology,
    bringup: &smp::Bringup,
    boot_ns: u64,
    heap_bytes: u64,
    ticks: &[u64],
    ipi_lost: u64,
) {
    let cpus = cpu::cpus_found();
    let per_cpu =
        |field: fn(&cpu::PerCpu) -> u64| (0..cpus).map(move |index| field(cpu::per_cpu(index)));
    let mut hypervisor = [0u8; 12];
    let hypervisor = cpu::hypervisor_signature(&mut hypervisor);
    console::with_console(|console| {
        let mut scalar = |name: &str,
                          fill: &mut dyn FnMut(
            &mut spindle_records::RecordWriter<'_, console::Console>,
        ) -> core::fmt::Result| {
            console::write_record(console, "scalar", |record| {
                record.str("name", name)?;
                fill(record)
            });
        };
        scalar("cpus_found", &mut |record| {
            record.u64("value", cpus as u64).map(drop)
        });
        scalar("cpus_online", &mut |record| {
            record.u64("value", bringup.online as u64).map(drop)
        });
        scalar("apic_ids", &mut |record| {
            record
                .u64_list(
                    "value",
                    per_cpu(|block| u64::from(block.apic_id.load(Ordering::Relaxed))),
                )
                .map(drop)
        });
        scalar("apic_mode", &mut |record| {
            record.str("value", apic::mode_name()).map(drop)
        });
        scalar("timer_mode", &mut |record| {
            record
                .str(
                    "value",
                    if apic::has_tsc_deadline() {
                        "tsc-deadline"
                    } else {
                        "one-shot"
                    },
                )
                .map(drop)
        });
        scalar("tsc_hz", &mut |record| {
            record.u64("value", tsc::hz()).map(drop)
        });
        scalar("tsc_source", &mut |record| {
            record.str("value", tsc::source().name()).map(drop)
        });
        scalar("apic_timer_hz", &mut |record| {
            record.u64("value", apic::timer_hz()).map(drop)
        });
        scalar("grace_stalls", &mut |record| {
            record.u64("value", extensions::grace_stalls()).map(drop)
        });
        scalar("tick_hz", &mut |record| {
            record
                .u64("value", TICK_HZ.load(Ordering::Relaxed))
                .map(drop)
        });
        scalar("ticks_per_cpu", &mut |record| {
            record.u64_list("value", ticks.iter().copied()).map(drop)
        });
        scalar("stalled_ns_per_cpu", &mut |record| {
            record
                .u64_list(
                    "value",
                    per_cpu(|block| block.stalled_ns.load(Ordering::Relaxed)),
                )
                .map(drop)
        });
        scalar("periodic_ticks_per_cpu", &mut |record| {
            record
                .u64_list(
                    "value",
                    per_cpu(|block| block.periodic_ticks.load(Ordering::Relaxed)),
                )
                .map(drop)
        });
        scalar("ipi_answered", &mut |record| {
            record
                .u64_list(
                    "value",
                    per_cpu(|block| block.ipi_answered.load(Ordering::Relaxed)),
                )
                .map(drop)
        });
        scalar("ipi_lost", &mut |record| {
            record.u64("value", ipi_lost).map(drop)
        });
        scalar("boot_ms", &mut |record| {
            record.fixed("value", boot_ns / 1000, 3).map(drop)
        });
        scalar("smp_bringup_ms", &mut |record| {
            record
                .fixed("value", bringup.elapsed_ns / 1000, 3)
                .map(drop)
        });
        scalar("heap_bytes", &mut |record| {
            record.u64("value", heap_bytes).map(drop)
        });
        scalar("hypervisor", &mut |record| {
            record.str("value", hypervisor).map(drop)
        });
        scalar("io_apics", &mut |record| {
            record
                .object_list("value", topology.io_apics().iter(), |object, io_apic| {
                    object.u64("id", u64::from(io_apic.id))?;
                    object.u64("address", u64::from(io_apic.address))?;
                    object.u64("interrupt_base", u64::from(io_apic.interrupt_base))?;
                    Ok(())
                })
                .map(drop)
        });
    });
}

/// Reports the installed extensions as the `extensions` scalar.
fn report_extensions() {
    let installed = extensions::installed();
    console::record("scalar", |record| {
        record.str("name", "extensions")?;
        record.object_list("value", installed.iter(), |object, extension| {
            let mut provenance = console::BoundedText::new();
            let _ = core::fmt::Write::write_fmt(
                &mut provenance,
                format_args!("{}", extension.provenance),
            );
            object.str("name", extension.name)?;
            object.u64("domain", u64::from(extension.domain.get()))?;
            object.str("provenance", provenance.as_str())?;
            object.u64("handlers", extension.handlers as u64)?;
            object.u64("lines", extension.lines)?;
            object.u64("handler_calls", extension.usage.calls)?;
            object.u64("handler_ns", extension.usage.nanoseconds)?;
            Ok(())
        })?;
        Ok(())
    });
}

/// Reads one line from the serial console and echoes it as an `input`
/// record (the console's input path, checked by the integration tests).
fn echo_input_line() {
    let mut buffer = [0u8; INPUT_LINE_CAPACITY];
    let Some(length) = console::read_line(&mut buffer, INPUT_TIMEOUT_NS) else {
        fail(format_args!(
            "read_lines: no input line arrived within {} s",
            INPUT_TIMEOUT_NS / 1_000_000_000
        ));
    };
    let text = core::str::from_utf8(&buffer[..length]).unwrap_or("<not UTF-8>");
    console::record("input", |record| {
        record.str("line", text)?;
        Ok(())
    });
}

/// Provokes `fault` on CPU `cpu_index` (the fault path's self-test).
fn provoke_fault_on(fault: Fault, cpu_index: usize) {
    if cpu_index >= cpu::cpus_found() {
        fail(format_args!(
            "fault_cpu={cpu_index}, but only {} CPUs are online",
            cpu::cpus_found()
        ));
    }
    *FAULT_TO_PROVOKE.lock() = Some(fault);
    kprintln!("kernel: provoking fault {fault:?} on cpu {cpu_index} (fault= kernel argument)");
    if !smp::run_on(cpu_index, provoke_requested_fault, FAULT_TIMEOUT_NS) && fault != Fault::Hang {
        fail(format_args!(
            "cpu {cpu_index} did not provoke the requested fault"
        ));
    }
    // A hang on another CPU: this CPU stops answering too.
    cpu::halt_forever();
}

/// The fault `provoke_requested_fault` raises on the CPU it is posted to.
static FAULT_TO_PROVOKE: spin::Mutex<Option<Fault>> = spin::Mutex::new(None);

fn provoke_requested_fault() {
    // Copied out, so the lock is free before the fault is raised.
    let requested = *FAULT_TO_PROVOKE.lock();
    let fault = requested.unwrap_or(Fault::Panic);
    match fault {
        // SAFETY: reading an unmapped address raises #PF, which the fault
        // path reports; the read never completes.
        Fault::Page => unsafe {
            core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u64);
        },
        // SAFETY: `ud2` raises #UD, reported by the fault path.
        Fault::InvalidOpcode => unsafe { core::arch::asm!("ud2") },
        // SAFETY: a non-canonical address raises #GP, reported by the fault path.
        Fault::GeneralProtection => unsafe {
            core::ptr::read_volatile(NON_CANONICAL_ADDRESS as *const u64);
        },
        // SAFETY: `div` by zero raises #DE, reported by the fault path.
        Fault::Divide => unsafe {
            core::arch::asm!("xor edx, edx", "xor ecx, ecx", "mov eax, 1", "div ecx", out("eax") _, out("ecx") _, out("edx") _)
        },
        // SAFETY: `int3` raises #BP, reported by the fault path.
        Fault::Breakpoint => unsafe { core::arch::asm!("int3") },
        Fault::Panic => panic!("deliberate panic requested by the fault= kernel argument"),
        Fault::Hang => cpu::halt_forever(),
        Fault::StackOverflow => {
            recurse_forever(0);
        }
        Fault::Triple => {
            cpu::disable_interrupts();
            interrupts::load_empty_idt_for_self_test();
            // SAFETY: with an empty IDT this exception cannot be delivered:
            // the machine triple-faults, which is the point of this test.
            unsafe { core::arch::asm!("int3") };
        }
    }
}

/// Uses 4 KiB of stack per level until the guard page stops it. The
/// recursion depends on a value the compiler cannot see through, so it is
/// neither removed nor turned into a loop.
fn recurse_forever(depth: u64) -> u64 {
    const FRAME_WORDS: usize = 512;
    let frame = core::hint::black_box([depth; FRAME_WORDS]);
    if core::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse_forever(depth + 1).wrapping_add(frame[FRAME_WORDS - 1])
}

/// An application processor's Rust entry, reached from the trampoline with
/// its boot stack (slot `_slot` of the stack table).
extern "C" fn ap_main(_slot: u32) -> ! {
    let apic_id = cpu::apic_id_from_cpuid();
    let Some(index) = cpu::index_of_apic_id(apic_id) else {
        // Not in the MADT list we started: stay parked.
        cpu::halt_forever()
    };
    cpu::bind_to_gs(index, apic_id);
    // SAFETY: once on this CPU, bound to GS, interrupts off (the trampoline
    // starts with `cli`); the bootstrap processor allocated its IST stacks.
    unsafe { cpu::load_descriptor_tables() };
    interrupts::load_idt();
    apic::init_local_apic();
    cpu::current().online.store(true, Ordering::Release);
    let periodic = timer::periodic_self_test(
        PERIODIC_TEST_PERIOD_NS,
        PERIODIC_TEST_TICKS,
        PERIODIC_TEST_TIMEOUT_NS,
    );
    if periodic < PERIODIC_TEST_TICKS {
        fail(format_args!("APIC timer periodic mode gave {periodic} of {PERIODIC_TEST_TICKS} ticks on cpu {index}"));
    }
    timer::start_ticking(TICK_HZ.load(Ordering::Relaxed));
    idle_loop()
}

/// What a CPU does when it has nothing to do: run posted work, else halt
/// until the next interrupt (the strand scheduler replaces this later).
fn idle_loop() -> ! {
    loop {
        extensions::run_deferred();
        cpu::disable_interrupts();
        smp::run_mailbox();
        crate::extensions::halt_until_interrupt();
    }
}
