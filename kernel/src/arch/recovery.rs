//! Recovery points: calls into extension code that the kernel can abandon, on a panic, a CPU exception or an overrun of the call's time budget, and return from with an error instead of going down.
//!
//! The kernel is built with `panic = "abort"` (the only strategy the stock
//! `x86_64-unknown-none` target has without `build-std`), so a panic cannot
//! unwind back into the scheduler. Instead, [`guarded`] works like
//! `setjmp`/`longjmp`:
//!
//! 1. `spindle_guarded_call` saves the caller's callee-saved registers and
//!    stack pointer in this CPU's [`RecoveryPoint`], marks it armed, enables
//!    interrupts and calls the extension code.
//! 2. If that code returns, interrupts go off again, the point is disarmed
//!    and `guarded` returns `Ok`.
//! 3. If it panics, the panic handler ([`recover_from_panic`]) finds the
//!    point armed at the same interrupt depth and jumps to
//!    `spindle_recover`, which restores the saved registers and makes
//!    `spindle_guarded_call` return 1: `guarded` returns `Err(Panicked)`.
//! 4. If it raises a CPU exception, the exception path
//!    ([`recover_from_exception`]) rewrites the interrupted frame to resume
//!    in `spindle_recover` (`Err(Exception)`).
//! 5. If it never returns, the CPU's own timer interrupt (extension code runs
//!    with interrupts enabled) sees the budget spent
//!    ([`break_overrun`]) and does the same (`Err(Overran)`). Every CPU
//!    breaks its own hangs, so this works at `-smp 1` and when every CPU is
//!    stuck in the same extension. The budget is wall-clock time *and* a
//!    number of ticks taken inside the call, so a virtual CPU that its
//!    hypervisor descheduled is not taken for a hung one.
//!
//! What is abandoned: the extension's stack frames, never resumed and never
//! dropped. Rust does not define skipping frames that have destructors;
//! Spindle keeps that outside the kernel's own state:
//! - the frames between the recovery point and the fault belong to extension
//!   code and to [`guarded`]'s trampoline only (a nested guarded call is a
//!   kernel bug and panics);
//! - a break is never taken while the CPU holds a kernel lock, because every
//!   kernel lock an extension can reach (the heap's) disables interrupts
//!   while held, and a panic or exception inside such a lock is a kernel
//!   fault, not an extension's;
//! - the call's result slot is forgotten after a fault (it may be half
//!   written), and the caller quarantines the extension: it is never called
//!   again and never dropped (its own locks may be held and its data torn).
//!
//! While a point is armed, interrupts that arrive do their bookkeeping only:
//! the scheduler does not run (`interrupt_dispatch`), and the timer tick
//! does not call the policy (`strand::on_tick`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::cpu;
use super::interrupts::{InterruptFrame, VECTOR_DOUBLE_FAULT, VECTOR_MACHINE_CHECK, VECTOR_NMI};

/// Registers `spindle_guarded_call` saves (offsets used by the assembly).
#[repr(C)]
struct SavedRegisters {
    rsp: u64,
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
}

/// One CPU's recovery point.
#[repr(C)]
pub struct RecoveryPoint {
    registers: UnsafeCell<SavedRegisters>,
    /// 1 while extension code runs under this point (offset 56, written by
    /// the assembly).
    armed: AtomicU64,
    /// When the call began (ns since boot).
    entered_at: AtomicU64,
    /// How long it may run (ns).
    budget: AtomicU64,
    /// How many timer ticks it must have been seen running through first.
    budget_ticks: AtomicU64,
    /// Timer ticks that interrupted it so far.
    ticks: AtomicU64,
    /// The interrupt depth of the guarded call.
    depth: AtomicU32,
    /// Why it was abandoned ([`Fault`] as a number; 0: not abandoned).
    fault: AtomicU8,
}

const ARMED_OFFSET: usize = 56;
const _: () = assert!(core::mem::offset_of!(RecoveryPoint, armed) == ARMED_OFFSET);

// SAFETY: `registers` is written only by `spindle_guarded_call` and read only
// by `spindle_recover`, both on the CPU that owns the point; the rest are
// atomics.
unsafe impl Sync for RecoveryPoint {}

static POINTS: [RecoveryPoint; cpu::MAX_CPUS] = [const {
    RecoveryPoint {
        registers: UnsafeCell::new(SavedRegisters {
            rsp: 0,
            rbx: 0,
            rbp: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
        }),
        armed: AtomicU64::new(0),
        entered_at: AtomicU64::new(0),
        budget: AtomicU64::new(u64::MAX),
        budget_ticks: AtomicU64::new(u64::MAX),
        ticks: AtomicU64::new(0),
        depth: AtomicU32::new(0),
        fault: AtomicU8::new(0),
    }
}; cpu::MAX_CPUS];

/// Why a guarded call was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The extension panicked.
    Panicked,
    /// The extension ran past its time budget (never returned, or not in
    /// time).
    Overran,
    /// The extension raised CPU exception `vector`.
    Exception(u8),
}

const FAULT_PANICKED: u8 = 1;
const FAULT_OVERRAN: u8 = 2;
/// Exceptions are stored as `FAULT_EXCEPTION_BASE + vector`.
const FAULT_EXCEPTION_BASE: u8 = 64;

impl Fault {
    fn decode(code: u8) -> Fault {
        match code {
            FAULT_PANICKED => Fault::Panicked,
            FAULT_OVERRAN => Fault::Overran,
            other => Fault::Exception(other.saturating_sub(FAULT_EXCEPTION_BASE)),
        }
    }
}

// spindle_guarded_call(point: rdi, entry: rsi, data: rdx) -> rax
//   returns 0 when `entry(data)` returned, 1 when recovered.
// spindle_recover(point: rdi) -> !: resumes the point's call with 1.
core::arch::global_asm!(
    r#"
    .section .text.recovery, "ax"
    .code64
    .global spindle_guarded_call
spindle_guarded_call:
    movq %rsp, 0(%rdi)
    movq %rbx, 8(%rdi)
    movq %rbp, 16(%rdi)
    movq %r12, 24(%rdi)
    movq %r13, 32(%rdi)
    movq %r14, 40(%rdi)
    movq %r15, 48(%rdi)
    pushq %rdi
    movq $1, {armed}(%rdi)
    movq %rdx, %rdi
    sti
    callq *%rsi
    cli
    popq %rdi
    movq $0, {armed}(%rdi)
    xorl %eax, %eax
    retq

    .global spindle_recover
spindle_recover:
    cli
    cld
    movq $0, {armed}(%rdi)
    movq 8(%rdi), %rbx
    movq 16(%rdi), %rbp
    movq 24(%rdi), %r12
    movq 32(%rdi), %r13
    movq 40(%rdi), %r14
    movq 48(%rdi), %r15
    movq 0(%rdi), %rsp
    movl $1, %eax
    retq
    .text
"#,
    armed = const ARMED_OFFSET,
    options(att_syntax)
);

unsafe extern "C" {
    fn spindle_guarded_call(
        point: *const RecoveryPoint,
        entry: extern "C" fn(*mut u8),
        data: *mut u8,
    ) -> u64;
    fn spindle_recover(point: *const RecoveryPoint) -> !;
}

/// What the trampoline reads and writes.
struct CallSlot<F, R> {
    work: Option<F>,
    result: Option<R>,
}

extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut u8) {
    // SAFETY: `guarded` passes the address of its own `CallSlot<F, R>`,
    // which outlives this call and is not touched by `guarded` meanwhile.
    let slot = unsafe { &mut *data.cast::<CallSlot<F, R>>() };
    if let Some(work) = slot.work.take() {
        slot.result = Some(work());
    }
}

/// Runs extension code `work` with interrupts enabled under this CPU's
/// recovery point, from `now_ns` (ns since boot, the clock the timer's
/// [`break_overrun`] reads), for at most `budget_ns` *and* `budget_ticks`
/// timer ticks: returns its result, or why it was abandoned.
///
/// Both bounds must be passed before the call is broken. The ticks are the
/// evidence that the CPU really ran the extension meanwhile: under a
/// hypervisor that deschedules the virtual CPU, wall-clock time alone
/// passes without the guest running, and the late tick that follows would
/// break a healthy call. Must be
/// called with interrupts disabled (they are disabled again on return), and
/// not from inside another guarded call.
pub fn guarded<R, F: FnOnce() -> R>(
    budget_ns: u64,
    budget_ticks: u64,
    now_ns: u64,
    work: F,
) -> Result<R, Fault> {
    let block = cpu::current();
    let point = this_cpu_point();
    assert!(
        point.armed.load(Ordering::Relaxed) == 0,
        "a guarded call inside another one"
    );
    assert!(
        !cpu::interrupts_enabled(),
        "guarded calls start with interrupts off"
    );
    point.entered_at.store(now_ns, Ordering::Relaxed);
    point.budget.store(budget_ns, Ordering::Relaxed);
    point.budget_ticks.store(budget_ticks, Ordering::Relaxed);
    point.ticks.store(0, Ordering::Relaxed);
    point.depth.store(
        block.interrupt_depth.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    point.fault.store(0, Ordering::Relaxed);
    let mut slot = CallSlot {
        work: Some(work),
        result: None,
    };
    // SAFETY: 1. `point` is this CPU's, and no other guarded call is active
    // on it (asserted above), so the assembly may overwrite its registers.
    // 2. `trampoline::<F, R>` matches the slot's type and the slot lives on
    // this frame until the call returns. 3. The call returns to this frame
    // exactly once, either normally or through `spindle_recover`, with the
    // callee-saved registers and stack pointer of this frame restored, and
    // with interrupts off, as on entry.
    let returned =
        unsafe { spindle_guarded_call(point, trampoline::<F, R>, (&raw mut slot).cast::<u8>()) };
    if returned == 0 {
        if let Some(result) = slot.result.take() {
            return Ok(result);
        }
    }
    // Abandoned: the slot may be half written; never drop it.
    core::mem::forget(slot);
    Err(Fault::decode(point.fault.load(Ordering::Relaxed)))
}

/// The calling CPU's recovery point.
fn this_cpu_point() -> &'static RecoveryPoint {
    &POINTS[cpu::current_index()]
}

/// The recovery point of this CPU, if extension code runs under it at
/// interrupt depth `depth`.
fn armed_at(depth: u32) -> Option<&'static RecoveryPoint> {
    let point = this_cpu_point();
    (point.armed.load(Ordering::Relaxed) != 0 && point.depth.load(Ordering::Relaxed) == depth)
        .then_some(point)
}

/// Timer ticks that interrupted this CPU's last (or current) guarded call.
pub fn ticks_in_last_call() -> u64 {
    this_cpu_point().ticks.load(Ordering::Relaxed)
}

/// Whether extension code runs under this CPU's recovery point (interrupts
/// that arrive then must not run the scheduler).
pub fn in_guarded_call() -> bool {
    this_cpu_point().armed.load(Ordering::Relaxed) != 0
}

/// Makes `frame` (interrupted at depth `depth`) resume in `spindle_recover`.
fn redirect(point: &'static RecoveryPoint, frame: &mut InterruptFrame, fault: u8) {
    point.fault.store(fault, Ordering::Relaxed);
    frame.rip = spindle_recover as *const () as u64;
    frame.rdi = point as *const RecoveryPoint as u64;
}

/// The timer interrupt's check: counts the tick against extension code it
/// interrupted (at interrupt depth `depth`) and, if that code has run past
/// both its budgets at `now_ns`, makes the interrupt return into the
/// recovery. Returns whether it did.
pub fn break_overrun(frame: &mut InterruptFrame, depth: u32, now_ns: u64) -> bool {
    let Some(point) = armed_at(depth) else {
        return false;
    };
    let ticks = point.ticks.fetch_add(1, Ordering::Relaxed) + 1;
    let entered = point.entered_at.load(Ordering::Relaxed);
    if now_ns.saturating_sub(entered) <= point.budget.load(Ordering::Relaxed)
        || ticks < point.budget_ticks.load(Ordering::Relaxed)
    {
        return false;
    }
    redirect(point, frame, FAULT_OVERRAN);
    true
}

/// The exception path's check: if extension code running at depth `depth`
/// raised the exception in `frame`, makes it return into the recovery
/// (double faults and machine checks are never recovered).
pub fn recover_from_exception(frame: &mut InterruptFrame, depth: u32) -> bool {
    if matches!(
        frame.vector,
        VECTOR_NMI | VECTOR_DOUBLE_FAULT | VECTOR_MACHINE_CHECK
    ) {
        return false;
    }
    let Some(point) = armed_at(depth) else {
        return false;
    };
    redirect(point, frame, FAULT_EXCEPTION_BASE + frame.vector as u8);
    true
}

/// Whether a panic now comes from extension code under this CPU's recovery
/// point (not from an interrupt handler nested in it).
pub fn panic_is_recoverable() -> bool {
    armed_at(cpu::current().interrupt_depth.load(Ordering::Relaxed)).is_some()
}

/// The panic handler's way out when [`panic_is_recoverable`]: resumes the
/// guarded call with `Err(Panicked)`; returns only if there is nothing to
/// recover.
pub fn recover_from_panic() {
    let depth = cpu::current().interrupt_depth.load(Ordering::Relaxed);
    let Some(point) = armed_at(depth) else {
        return;
    };
    point.fault.store(FAULT_PANICKED, Ordering::Relaxed);
    // SAFETY: the point is armed on this CPU at the current interrupt depth,
    // so this code runs inside `spindle_guarded_call`'s call of extension
    // code on the same stack, below the saved stack pointer: restoring the
    // saved registers resumes `guarded` as described there. Only extension
    // frames and the trampoline are abandoned.
    unsafe { spindle_recover(point) }
}
