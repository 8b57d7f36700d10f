//! Strand contexts: a new strand's first interrupt frame, and the software interrupt a strand gives up its CPU with.
//!
//! Every switch between strands goes through an interrupt frame: the timer
//! interrupt (preemption) or `request_switch` (yield, exit) saves the
//! running context as an `InterruptFrame` on its own stack, the scheduler
//! returns another context's frame from `interrupt_dispatch`, and
//! `interrupt_common` restores it with `iretq`. A new strand starts from a
//! frame built here, so it is resumed exactly like a preempted one.

use core::mem::size_of;

use super::cpu;
use super::interrupts::InterruptFrame;

/// The vector of the frames `request_switch` builds (`rax` = request,
/// `rdi` = argument); no interrupt is ever delivered on it.
pub const VECTOR_SWITCH: u8 = 0x44;
/// RFLAGS of a new strand: interrupts enabled, and the always-one bit 1.
const INITIAL_RFLAGS: u64 = 0x202;
/// Bytes left free above a new strand's first frame.
const FRAME_CLEARANCE: u64 = 64;
/// Frames sit on 16-byte boundaries (the SysV stack alignment, which
/// `interrupt_common` keeps for its calls).
const FRAME_ALIGNMENT: u64 = 16;

/// A frame that resumes kernel code at `rip` on stack `rsp` with `rflags`,
/// every general register zero.
pub fn kernel_frame(rip: u64, rsp: u64, rflags: u64) -> InterruptFrame {
    InterruptFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip,
        cs: u64::from(cpu::KERNEL_CODE_SELECTOR.bits()),
        rflags,
        rsp,
        ss: u64::from(cpu::KERNEL_DATA_SELECTOR.bits()),
    }
}

/// Writes a new strand's first frame below `stack_top` (16-byte aligned, of
/// a stack of at least one page that nothing else uses) and returns its
/// address: resuming it enters `entry(argument)` on that stack with
/// interrupts enabled, as if `entry` had been called.
pub fn initial_frame(stack_top: u64, entry: extern "C" fn(u64) -> !, argument: u64) -> u64 {
    // At a function's entry, rsp + 8 is 16-byte aligned (the call pushed
    // the return address): point rsp at a zero "return address" slot.
    let entry_rsp = stack_top - 8;
    let frame_address =
        (stack_top - FRAME_CLEARANCE - size_of::<InterruptFrame>() as u64) & !(FRAME_ALIGNMENT - 1);
    let frame = InterruptFrame {
        rdi: argument,
        vector: u64::from(VECTOR_SWITCH),
        ..kernel_frame(entry as usize as u64, entry_rsp, INITIAL_RFLAGS)
    };
    // SAFETY: the caller owns the stack below `stack_top` and nothing runs
    // on it yet; the return-address slot and the frame lie inside it (the
    // frame ends FRAME_CLEARANCE bytes below the top) and are aligned.
    unsafe {
        core::ptr::write(entry_rsp as *mut u64, 0);
        core::ptr::write(frame_address as *mut InterruptFrame, frame);
    }
    frame_address
}

// `context_switch_request`: enters `interrupt_common` exactly as an
// interrupt of vector VECTOR_SWITCH from ring 0 would (Intel SDM Vol. 3A,
// 6.14.2: align RSP to 16, push SS, RSP, RFLAGS, CS, RIP, then the stub's
// error code and vector), with interrupts disabled as by an interrupt gate.
// Resuming the frame returns to the caller with its RFLAGS. A software
// `int` would do the same, but some hypervisors (PVM) fail to emulate it.
core::arch::global_asm!(
    r#"
    .section .text.context, "ax"
    .code64
    .global context_switch_request
context_switch_request:
    pushfq
    popq %r11
    cli
    popq %r10
    movq %rsp, %r9
    andq $-16, %rsp
    pushq ${data_selector}
    pushq %r9
    pushq %r11
    pushq ${code_selector}
    pushq %r10
    pushq $0
    pushq ${vector}
    jmp interrupt_common
    .text
"#,
    data_selector = const 0x10,
    code_selector = const 0x08,
    vector = const VECTOR_SWITCH,
    options(att_syntax)
);

/// Enters the scheduler with `request` (in the saved frame's `rax`) and
/// `argument` (in `rdi`), through a frame like an interrupt's. Returns when
/// this context is resumed (never, for an exit request).
pub fn request_switch(request: u64, argument: u64) {
    debug_assert_eq!(cpu::KERNEL_CODE_SELECTOR.bits(), 0x08);
    debug_assert_eq!(cpu::KERNEL_DATA_SELECTOR.bits(), 0x10);
    // SAFETY: `context_switch_request` saves every register in an
    // `InterruptFrame` through `interrupt_common` and restores them when the
    // frame is resumed, except r9-r11 (scratch, declared) and rax/rdi
    // (inputs, declared clobbered); it returns to the instruction after the
    // call with the caller's stack pointer and flags.
    unsafe {
        core::arch::asm!(
            "call context_switch_request",
            inout("rax") request => _,
            inout("rdi") argument => _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
}
