//! The local APIC through the `x2apic` crate: x2APIC mode when CPUID says the
//! CPU has it (KVM), xAPIC (MMIO at the identity-mapped base) otherwise (QEMU
//! 7.2's TCG). Timer modes, IPIs and EOI (Intel SDM Vol. 3A ch. 10).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use x2apic::lapic::{LocalApic, LocalApicBuilder, TimerDivide, TimerMode};

use super::{cpu, tsc};

/// Vector of the local APIC timer.
pub const VECTOR_TIMER: u8 = 0x40;
/// Vector of the "ping" IPI (IPI round-trip benchmark, CPU 0 → CPU k).
pub const VECTOR_IPI_PING: u8 = 0x41;
/// Vector of the "pong" IPI (the answer, CPU k → CPU 0).
pub const VECTOR_IPI_PONG: u8 = 0x42;
/// Vector of the wake-up IPI (mailbox work, later: reschedule).
pub const VECTOR_IPI_WAKE: u8 = 0x43;
/// Vector of the APIC error interrupt.
pub const VECTOR_APIC_ERROR: u8 = 0xFE;
/// Vector of the APIC spurious interrupt.
pub const VECTOR_SPURIOUS: u8 = 0xFF;

/// IA32_TSC_DEADLINE (SDM Vol. 3A §10.5.4.1).
const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1B;
/// Physical base address mask in IA32_APIC_BASE.
const APIC_BASE_ADDRESS_MASK: u64 = 0xF_FFFF_F000;
/// In xAPIC mode the ICR destination sits in bits 56–63 (SDM §10.6.1).
const XAPIC_DESTINATION_SHIFT: u32 = 24;
/// The 8259 PIC data ports, masked so only the APICs deliver interrupts.
const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_DATA: u16 = 0xA1;
/// Timer mode encodings in the LVT timer register.
const MODE_NONE: u8 = 0;
const MODE_PERIODIC: u8 = 1;
const MODE_ONE_SHOT: u8 = 2;
const MODE_TSC_DEADLINE: u8 = 3;

static X2APIC_MODE: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE_AVAILABLE: AtomicBool = AtomicBool::new(false);
/// APIC timer input frequency after the divider (Hz).
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// How the APIC timer is currently armed on one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerArming {
    /// Not armed.
    Stopped,
    /// Periodic interrupts every N timer counts.
    Periodic,
    /// One interrupt after N timer counts.
    OneShot,
    /// One interrupt when the TSC reaches a value.
    TscDeadline,
}

static CURRENT_MODE: [AtomicU8; cpu::MAX_CPUS] =
    [const { AtomicU8::new(MODE_NONE) }; cpu::MAX_CPUS];

/// Whether the local APICs run in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC_MODE.load(Ordering::Relaxed)
}

/// `x2apic` or `xapic`.
pub fn mode_name() -> &'static str {
    if is_x2apic() {
        "x2apic"
    } else {
        "xapic"
    }
}

/// Whether the TSC-deadline timer mode exists (CPUID.1:ECX[24]).
pub fn has_tsc_deadline() -> bool {
    TSC_DEADLINE_AVAILABLE.load(Ordering::Relaxed)
}

/// The calibrated APIC timer frequency (Hz, divide-by-1).
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// Runs `f` on the calling CPU's local APIC with interrupts disabled.
///
/// Panics if the CPU's APIC is not initialised.
pub fn with_local_apic<R>(f: impl FnOnce(&mut LocalApic) -> R) -> R {
    let were_enabled = cpu::disable_interrupts();
    let block = cpu::current();
    // SAFETY: `local_apic` is only accessed here, on its own CPU, with
    // interrupts disabled, so this is the only live reference (no nesting:
    // `f` never calls `with_local_apic`).
    let slot = unsafe { &mut *block.local_apic.get() };
    let apic = slot
        .as_mut()
        .expect("local APIC used before initialisation");
    let result = f(apic);
    cpu::restore_interrupts(were_enabled);
    result
}

/// Masks the legacy 8259 PICs (only the APICs deliver interrupts).
pub fn mask_legacy_pic() {
    const ALL_MASKED: u8 = 0xFF;
    // SAFETY: writing the PIC interrupt-mask registers only masks its lines.
    unsafe {
        x86::io::outb(PIC_MASTER_DATA, ALL_MASKED);
        x86::io::outb(PIC_SLAVE_DATA, ALL_MASKED);
    }
}

/// Enables the calling CPU's local APIC (x2APIC when available), with the
/// timer stopped. Called once per CPU, interrupts off.
pub fn init_local_apic() {
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    let base = unsafe { x86::msr::rdmsr(MSR_APIC_BASE) } & APIC_BASE_ADDRESS_MASK;
    let mut apic = LocalApicBuilder::new()
        .timer_vector(VECTOR_TIMER as usize)
        .error_vector(VECTOR_APIC_ERROR as usize)
        .spurious_vector(VECTOR_SPURIOUS as usize)
        .timer_mode(TimerMode::OneShot)
        .timer_divide(TimerDivide::Div1)
        .timer_initial(0)
        .set_xapic_base(base) // identity-mapped, uncached (boot page tables)
        .build()
        .expect("local APIC builder has every field");
    // SAFETY: enabling the APIC on its own CPU with interrupts off; the
    // vectors have handlers or are ignored (spurious), and the timer's
    // initial count of 0 keeps it from firing.
    // `enable` unmasks the LVT timer *before* it sets the software-enable
    // bit in the SVR; on an application processor fresh from INIT the APIC
    // is software-disabled then, and the unmask is ignored (SDM Vol. 3A
    // §10.4.7.2). Unmask again now that the APIC is enabled.
    unsafe {
        apic.enable();
        apic.enable_timer();
    }
    let x2apic = cpu::cpuid(1, 0).ecx & (1 << 21) != 0;
    X2APIC_MODE.store(x2apic, Ordering::Relaxed);
    TSC_DEADLINE_AVAILABLE.store(cpu::cpuid(1, 0).ecx & (1 << 24) != 0, Ordering::Relaxed);
    let block = cpu::current();
    // SAFETY: first and only initialisation of this CPU's slot, on this CPU,
    // interrupts off: no other reference exists.
    unsafe { *block.local_apic.get() = Some(apic) };
}

/// Signals end of interrupt.
pub fn end_of_interrupt() {
    // SAFETY: EOI while servicing an APIC interrupt acknowledges it.
    with_local_apic(|apic| unsafe { apic.end_of_interrupt() });
}

fn destination(apic_id: u32) -> u32 {
    if is_x2apic() {
        apic_id
    } else {
        apic_id << XAPIC_DESTINATION_SHIFT
    }
}

fn wait_for_delivery(apic: &mut LocalApic) {
    if is_x2apic() {
        return; // x2APIC ICR writes have no delivery-status bit to poll.
    }
    // SAFETY: reading the ICR's delivery-status bit has no side effects.
    while unsafe { apic.get_ipi_delivery_status() } {
        core::hint::spin_loop();
    }
}

/// Sends a fixed IPI with `vector` to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    with_local_apic(|apic| {
        wait_for_delivery(apic);
        // SAFETY: a fixed IPI to an existing APIC ID with a vector that has
        // a registered handler.
        unsafe { apic.send_ipi(vector, destination(apic_id)) };
        wait_for_delivery(apic);
    });
}

/// Sends INIT to the CPU with `apic_id` (application processor start-up,
/// SDM Vol. 3A §8.4.4.1).
pub fn send_init(apic_id: u32) {
    with_local_apic(|apic| {
        wait_for_delivery(apic);
        // SAFETY: INIT resets a CPU that has not been started yet.
        unsafe { apic.send_init_ipi(destination(apic_id)) };
        wait_for_delivery(apic);
    });
}

/// Sends a start-up IPI to `apic_id`: it starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    with_local_apic(|apic| {
        wait_for_delivery(apic);
        // SAFETY: the SIPI vector names the trampoline page prepared by
        // `smp`, and the target is in wait-for-SIPI state after INIT.
        unsafe { apic.send_sipi(page, destination(apic_id)) };
        wait_for_delivery(apic);
    });
}

fn set_mode(mode: u8) {
    CURRENT_MODE[cpu::current_index()].store(mode, Ordering::Relaxed);
}

/// The calling CPU's current timer arming.
pub fn timer_arming() -> TimerArming {
    match CURRENT_MODE[cpu::current_index()].load(Ordering::Relaxed) {
        MODE_PERIODIC => TimerArming::Periodic,
        MODE_ONE_SHOT => TimerArming::OneShot,
        MODE_TSC_DEADLINE => TimerArming::TscDeadline,
        _ => TimerArming::Stopped,
    }
}

/// Stops the calling CPU's timer.
pub fn stop_timer() {
    with_local_apic(|apic| {
        // SAFETY: writing the timer's initial count / deadline only disarms it.
        unsafe {
            if has_tsc_deadline() {
                x86::msr::wrmsr(MSR_TSC_DEADLINE, 0);
            }
            apic.set_timer_mode(TimerMode::OneShot);
            apic.set_timer_initial(0);
        }
    });
    set_mode(MODE_NONE);
}

/// Disarms the calling CPU's timer but keeps its mode, so that the next
/// [`arm_deadline`] is a single write (tickless idle).
pub fn disarm_timer() {
    with_local_apic(|apic| {
        // SAFETY: a zero deadline (TSC-deadline mode) or a zero initial
        // count (one-shot mode) only disarms this CPU's own timer (SDM
        // §10.5.4, §10.5.4.1).
        unsafe {
            if timer_arming() == TimerArming::TscDeadline {
                x86::msr::wrmsr(MSR_TSC_DEADLINE, 0);
            } else {
                apic.set_timer_initial(0);
            }
        }
    });
}

/// Arms the calling CPU's timer to interrupt every `counts` timer counts.
pub fn arm_periodic(counts: u32) {
    with_local_apic(|apic| {
        // SAFETY: programming this CPU's own timer; the vector has a handler.
        unsafe {
            apic.set_timer_mode(TimerMode::Periodic);
            apic.set_timer_divide(TimerDivide::Div1);
            apic.set_timer_initial(counts.max(1));
        }
    });
    set_mode(MODE_PERIODIC);
}

/// Arms the calling CPU's timer to interrupt once after `counts` counts.
pub fn arm_one_shot(counts: u32) {
    with_local_apic(|apic| {
        // SAFETY: programming this CPU's own timer; the vector has a handler.
        unsafe {
            if timer_arming() != TimerArming::OneShot {
                apic.set_timer_mode(TimerMode::OneShot);
                apic.set_timer_divide(TimerDivide::Div1);
            }
            apic.set_timer_initial(counts.max(1));
        }
    });
    set_mode(MODE_ONE_SHOT);
}

/// Arms the calling CPU's timer to interrupt when the TSC reaches
/// `deadline_tsc`: the TSC-deadline mode when the CPU has it, else a one-shot
/// count computed from the calibrated frequencies. Returns the mode used.
pub fn arm_deadline(deadline_tsc: u64) -> TimerArming {
    if has_tsc_deadline() {
        let already = timer_arming() == TimerArming::TscDeadline;
        with_local_apic(|apic| {
            // SAFETY: switching this CPU's own timer to TSC-deadline mode and
            // writing the deadline; MFENCE orders the LVT write before the
            // MSR write (SDM §10.5.4.1).
            unsafe {
                if !already {
                    apic.set_timer_mode(TimerMode::TscDeadline);
                    core::arch::asm!("mfence", options(nostack, preserves_flags));
                }
                x86::msr::wrmsr(MSR_TSC_DEADLINE, deadline_tsc);
            }
        });
        set_mode(MODE_TSC_DEADLINE);
        TimerArming::TscDeadline
    } else {
        let now = tsc::now();
        let cycles = deadline_tsc.saturating_sub(now);
        let counts = tsc::cycles_to_timer_counts(cycles, timer_hz()).clamp(1, u64::from(u32::MAX));
        arm_one_shot(counts as u32);
        TimerArming::OneShot
    }
}

/// Reads the calling CPU's timer current count.
pub fn timer_current_count() -> u32 {
    // SAFETY: reading the current-count register has no side effects.
    with_local_apic(|apic| unsafe { apic.timer_current() })
}

/// Measures the APIC timer frequency against the (already calibrated) TSC
/// over `window_cycles` TSC cycles and stores it.
pub fn calibrate_timer(window_cycles: u64) -> u64 {
    arm_one_shot(u32::MAX);
    let start_tsc = tsc::now();
    let start_count = timer_current_count();
    while tsc::now() - start_tsc < window_cycles {
        core::hint::spin_loop();
    }
    let end_count = timer_current_count();
    let end_tsc = tsc::now();
    stop_timer();
    let counts = u64::from(start_count - end_count);
    let hz = tsc::scale(counts, tsc::hz(), end_tsc - start_tsc);
    TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}
