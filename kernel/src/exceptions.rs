//! Fault reports: every CPU exception, unexpected vector and panic is
//! reported on serial (a human line and a `fault`/`panic` record) and ends
//! the run with the failure exit code. Nothing hangs silently.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::cpu;
use crate::arch::interrupts::{InterruptFrame, VECTOR_PAGE_FAULT};
use crate::console;
use crate::exit;

/// Set by the first CPU that reports a fatal error; later ones stop quietly
/// so the first report is the one the host sees complete.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// The architectural name of exception `vector` (Intel SDM Vol. 3A table 6-1).
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        9 => "coprocessor segment overrun",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point exception",
        20 => "virtualization exception",
        21 => "control protection exception",
        28 => "hypervisor injection exception",
        29 => "VMM communication exception",
        30 => "security exception",
        _ => "reserved exception",
    }
}

fn claim_report() {
    if REPORTING.swap(true, Ordering::AcqRel) {
        // Another CPU is already reporting and will end the run.
        cpu::halt_forever();
    }
}

/// Reports exception `frame.vector` and ends the run. `depth` is the
/// interrupt nesting depth before this one (non-zero: it hit a handler).
pub fn report_exception(frame: &InterruptFrame, depth: u32) -> ! {
    let fault_address = if frame.vector == VECTOR_PAGE_FAULT {
        Some(cpu::read_cr2())
    } else {
        None
    };
    report_fault(frame, exception_name(frame.vector), fault_address, depth)
}

/// Reports an interrupt on a vector nobody registered, and ends the run.
pub fn report_unexpected_vector(frame: &InterruptFrame) -> ! {
    report_fault(frame, "unexpected interrupt", None, 0)
}

/// Writes the human line, the `fault` record and the `end` record for
/// `frame`, then ends the run with the failure exit code.
fn report_fault(frame: &InterruptFrame, name: &str, fault_address: Option<u64>, depth: u32) -> ! {
    claim_report();
    let cpu_index = cpu::current_index();
    console::with_console_for_report(|console| {
        let _ = write!(
            console,
            "kernel: FAULT on cpu {cpu_index}: {name} (vector {}), error code {:#x}, rip {:#018x}, rsp {:#018x}",
            frame.vector, frame.error_code, frame.rip, frame.rsp
        );
        if let Some(address) = fault_address {
            let _ = write!(console, ", faulting address {address:#018x}");
        }
        if depth > 0 {
            let _ = write!(console, " (inside an interrupt handler)");
        }
        let _ = console.write_str("\n");
        console::write_record(console, "fault", |record| {
            record
                .u64("cpu", cpu_index as u64)?
                .u64("vector", frame.vector)?
                .str("name", name)?
                .u64("error_code", frame.error_code)?
                .u64("rip", frame.rip)?
                .u64("cs", frame.cs)?
                .u64("rflags", frame.rflags)?
                .u64("rsp", frame.rsp)?
                .u64("rax", frame.rax)?
                .u64("rbp", frame.rbp)?;
            if let Some(address) = fault_address {
                record.u64("cr2", address)?;
            }
            Ok(())
        });
        console::write_end(console, "fail");
    });
    exit::exit(exit::ExitCode::Failure)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::disable_interrupts();
    let (file, line) = info
        .location()
        .map_or(("?", 0), |location| (location.file(), location.line()));
    if crate::arch::recovery::panic_is_recoverable() {
        // Extension code panicked: say so, and return to the kernel code
        // that called it (arch/recovery.rs); the caller ejects it.
        crate::kprintln!(
            "kernel: extension code panicked on cpu {} at {file}:{line}: {}",
            cpu::current_index(),
            info.message()
        );
        crate::arch::recovery::recover_from_panic();
    }
    claim_report();
    let cpu_index = cpu::current_index();
    console::with_console_for_report(|console| {
        let _ = writeln!(
            console,
            "kernel: PANIC on cpu {cpu_index} at {file}:{line}: {}",
            info.message()
        );
        // The message is formatted twice (no allocation in the panic path):
        // once for people, once into the record through a bounded buffer.
        let mut message = console::BoundedText::new();
        let _ = write!(message, "{}", info.message());
        console::write_record(console, "panic", |record| {
            record
                .u64("cpu", cpu_index as u64)?
                .str("message", message.as_str())?
                .str("file", file)?
                .u64("line", u64::from(line))?;
            Ok(())
        });
        console::write_end(console, "fail");
    });
    exit::exit(exit::ExitCode::Failure)
}
