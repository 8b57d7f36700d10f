//! The per-CPU tick: each CPU's APIC timer armed one deadline at a time
//! (TSC-deadline mode where the CPU has it, one-shot counts otherwise), with
//! every tick's lateness (interrupt entry minus programmed deadline) recorded
//! per CPU. Also the periodic-mode self-test.

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Once;

use crate::arch::interrupts::InterruptFrame;
use crate::arch::{apic, cpu, recovery, tsc};
use crate::metrics::{self, PerCpuHistogram};

static LATENESS: Once<&'static PerCpuHistogram> = Once::new();

/// A tick later than this counts as a stall of its CPU (see
/// [`stalled_nanoseconds`]). The kernel never keeps interrupts off this long
/// on purpose: its interrupts-off sections (a scheduling pass outside policy
/// calls, a spin lock's hold) take microseconds.
pub const STALL_THRESHOLD_NS: u64 = 200_000;

/// Time CPU `index` could not take its timer interrupt, as the CPU itself
/// can tell: the summed lateness of its ticks that came more than
/// [`STALL_THRESHOLD_NS`] after their deadline. Under a hypervisor that is
/// mostly time the host did not run the virtual CPU or did not deliver its
/// timer (QEMU's TCG fires guest timers from a thread that competes for the
/// host's cores); on bare metal it would be time spent with interrupts off
/// (an SMI, or a kernel bug). A tickless CPU measures nothing while idle.
pub fn stalled_nanoseconds(index: usize) -> u64 {
    cpu::per_cpu(index).stalled_ns.load(Ordering::Relaxed)
}

/// Registers the timer's histogram and interrupt handler (bootstrap
/// processor, after the CPU count is known).
pub fn init() {
    LATENESS.call_once(|| metrics::register("apic.timer_lateness", "ns"));
    crate::arch::interrupts::register_handler(apic::VECTOR_TIMER, on_timer_interrupt);
}

fn on_timer_interrupt(frame: &mut InterruptFrame) {
    let now = tsc::now();
    // Every tick proves the CPU quiescent for the dispatcher's grace
    // periods, unless it came inside a raise (then it is ignored).
    crate::extensions::quiescent_state();
    let block = cpu::current();
    match apic::timer_arming() {
        apic::TimerArming::Periodic => {
            block.periodic_ticks.fetch_add(1, Ordering::Relaxed);
        }
        apic::TimerArming::OneShot | apic::TimerArming::TscDeadline => {
            let deadline = block.timer_deadline_tsc.load(Ordering::Relaxed);
            let period = block.tick_period_tsc.load(Ordering::Relaxed);
            if deadline != 0 && period != 0 {
                block.ticks.fetch_add(1, Ordering::Relaxed);
                let lateness = tsc::cycles_to_ns(now.saturating_sub(deadline));
                if let Some(histogram) = LATENESS.get() {
                    histogram.record(lateness);
                }
                if lateness > STALL_THRESHOLD_NS {
                    block.stalled_ns.fetch_add(lateness, Ordering::Relaxed);
                }
                // Keep the grid (no drift); if we fell behind, restart it.
                let mut next = deadline + period;
                if next <= now {
                    next = now + period;
                }
                block.timer_deadline_tsc.store(next, Ordering::Relaxed);
                apic::arm_deadline(next);
                // Acknowledged before the scheduler's part, so that the next
                // tick can interrupt extension code the policy's `tick` runs
                // (the local APIC holds back a vector until its EOI).
                apic::end_of_interrupt();
                if recovery::in_guarded_call() {
                    // Extension code was interrupted: only its budget is
                    // checked; the scheduler's part waits for the next tick.
                    let interrupted_depth = block
                        .interrupt_depth
                        .load(Ordering::Relaxed)
                        .saturating_sub(1);
                    recovery::break_overrun(
                        frame,
                        interrupted_depth,
                        crate::kernel::nanoseconds_since_boot(),
                    );
                } else {
                    crate::strand::on_tick();
                }
                return;
            }
        }
        apic::TimerArming::Stopped => {}
    }
    apic::end_of_interrupt();
}

/// Starts the calling CPU's tick at `hz`.
pub fn start_ticking(hz: u64) {
    let period = tsc::hz() / hz.max(1);
    let block = cpu::current();
    let deadline = tsc::now() + period;
    block.tick_period_tsc.store(period, Ordering::Relaxed);
    block.timer_deadline_tsc.store(deadline, Ordering::Relaxed);
    apic::arm_deadline(deadline);
}

/// Whether idle CPUs may stop their tick (off during the boot-time timer
/// window, which measures every CPU's ticks; `tickless=off` keeps it off).
static TICKLESS_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Lets idle CPUs stop their tick from now on (or not).
pub fn allow_tickless_idle(allowed: bool) {
    TICKLESS_ALLOWED.store(allowed, Ordering::Release);
}

/// CPUs whose tick is stopped while they idle.
static TICKLESS: [AtomicBool; cpu::MAX_CPUS] = [const { AtomicBool::new(false) }; cpu::MAX_CPUS];

/// Tickless idle: stops the calling CPU's tick while it has nothing to run;
/// an interrupt (a wake-up IPI) brings it back through [`resume_tick`].
/// CPU 0 always ticks: its tick wakes sleepers, runs the watchdog and starts
/// scheduled swaps.
pub fn stop_tick_while_idle() {
    let me = cpu::current_index();
    let block = cpu::current();
    if me == 0 || !TICKLESS_ALLOWED.load(Ordering::Acquire) || TICKLESS[me].load(Ordering::Relaxed)
    {
        return;
    }
    if block.tick_period_tsc.load(Ordering::Relaxed) == 0 {
        return;
    }
    TICKLESS[me].store(true, Ordering::Release);
    // A tick already pending finds no deadline and is only acknowledged.
    block.timer_deadline_tsc.store(0, Ordering::Relaxed);
    apic::disarm_timer();
    block.tickless_entries.fetch_add(1, Ordering::Relaxed);
}

/// Restarts the calling CPU's tick if [`stop_tick_while_idle`] stopped it
/// (before the scheduler calls a policy: the tick is also what breaks a
/// policy call that never returns).
pub fn resume_tick() {
    let me = cpu::current_index();
    if !TICKLESS[me].load(Ordering::Acquire) {
        return;
    }
    TICKLESS[me].store(false, Ordering::Release);
    let block = cpu::current();
    let period = block.tick_period_tsc.load(Ordering::Relaxed);
    if period == 0 {
        return;
    }
    let deadline = tsc::now() + period;
    block.timer_deadline_tsc.store(deadline, Ordering::Relaxed);
    apic::arm_deadline(deadline);
}

/// Whether CPU `index` idles with its tick stopped.
pub fn is_tickless(index: usize) -> bool {
    TICKLESS[index].load(Ordering::Acquire)
}

/// Stops the calling CPU's tick.
pub fn stop_ticking() {
    let block = cpu::current();
    block.tick_period_tsc.store(0, Ordering::Relaxed);
    block.timer_deadline_tsc.store(0, Ordering::Relaxed);
    TICKLESS[cpu::current_index()].store(false, Ordering::Release);
    apic::stop_timer();
}

/// Runs the APIC timer in periodic mode until `wanted` interrupts arrived or
/// `timeout_ns` passed, halting between ticks; returns with interrupts
/// disabled. Returns the number of periodic ticks seen.
pub fn periodic_self_test(period_ns: u64, wanted: u64, timeout_ns: u64) -> u64 {
    let block = cpu::current();
    let counts = tsc::cycles_to_timer_counts(tsc::ns_to_cycles(period_ns), apic::timer_hz())
        .clamp(1, u64::from(u32::MAX));
    let start_ticks = block.periodic_ticks.load(Ordering::Relaxed);
    apic::arm_periodic(counts as u32);
    let start = tsc::now();
    let timeout = tsc::ns_to_cycles(timeout_ns);
    // Halt between ticks rather than spin: each tick wakes the CPU, and a
    // halted virtual CPU leaves the host's cores to the others.
    while block.periodic_ticks.load(Ordering::Relaxed) - start_ticks < wanted
        && tsc::now() - start < timeout
    {
        crate::extensions::halt_until_interrupt();
        cpu::disable_interrupts();
    }
    apic::stop_timer();
    block.periodic_ticks.load(Ordering::Relaxed) - start_ticks
}
