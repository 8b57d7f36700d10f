//! The IDT, the 256 interrupt entry stubs, the common register-saving path,
//! and the dispatcher that routes vectors to registered handlers (Intel SDM
//! Vol. 3A §6.10–§6.14). Exceptions (vectors 0–31) are reported on serial and
//! end the run with the failure exit code: never a silent hang or triple fault.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use x86::bits64::segmentation::Descriptor64;
use x86::dtables::DescriptorTablePointer;
use x86::segmentation::{BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder};
use x86::Ring;

use super::cpu;

/// Number of interrupt vectors.
pub const VECTORS: usize = 256;
/// Vectors below this are CPU exceptions.
pub const FIRST_EXTERNAL_VECTOR: u64 = 32;
/// Size of each entry stub (see the assembly below).
const STUB_SIZE: usize = 16;

/// NMI vector.
pub const VECTOR_NMI: u64 = 2;
/// Double-fault vector.
pub const VECTOR_DOUBLE_FAULT: u64 = 8;
/// Page-fault vector.
pub const VECTOR_PAGE_FAULT: u64 = 14;
/// Machine-check vector.
pub const VECTOR_MACHINE_CHECK: u64 = 18;

/// Register state saved on interrupt entry, in the order the common stub
/// pushes it (lowest address first).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector, pushed by the entry stub.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One 16-byte stub per vector: push a zero error code where the CPU pushes
// none (all but 8, 10-14, 17, 21, 29, 30), push the vector, jump to the common
// path. The common path saves the general registers, calls
// `interrupt_dispatch(frame)` with a 16-byte aligned stack, and resumes the
// frame it returns (the same one today; a different strand's later).
core::arch::global_asm!(
    r#"
    .section .text.interrupts, "ax"
    .code64
    .balign 16
    .global interrupt_stubs
interrupt_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || (vector >= 10 && vector <= 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp interrupt_common
    .set vector, vector + 1
    .endr

    .global interrupt_common
interrupt_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    /* External interrupts (vector >= 32) run on the CPU's interrupt stack,
       so the scheduler may hand the interrupted strand to another CPU
       before this one leaves the handler; exceptions stay where they are. */
    cmpq $32, 120(%rsp)
    jb 1f
    movq %gs:{interrupt_stack_top}, %rax
    testq %rax, %rax
    jz 1f
    /* Already on it (an interrupt that arrived while extension code ran
       with interrupts enabled, see recovery.rs): stay, below the frames
       already there. */
    movq %rax, %rcx
    subq %rsp, %rcx
    cmpq ${interrupt_stack_size}, %rcx
    jbe 1f
    movq %rax, %rsp
1:
    call interrupt_dispatch
    movq %rax, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    .text
"#,
    interrupt_stack_top = const super::cpu::INTERRUPT_STACK_TOP_OFFSET,
    interrupt_stack_size = const super::cpu::INTERRUPT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static interrupt_stubs: [u8; VECTORS * STUB_SIZE];
}

#[repr(C, align(16))]
struct Idt([Descriptor64; VECTORS]);

struct IdtCell(UnsafeCell<Idt>);
// SAFETY: the IDT is written once by the bootstrap processor in `init_idt`
// before any other CPU starts or any CPU enables interrupts; afterwards it is
// only read (by the CPUs' `lidt` and by the hardware).
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(UnsafeCell::new(Idt([Descriptor64::NULL; VECTORS])));

/// A handler for an external vector: runs with interrupts off on the CPU
/// that took the interrupt; it must acknowledge the interrupt (EOI) itself
/// when the source needs one.
pub type InterruptHandler = fn(&mut InterruptFrame);

static HANDLERS: [AtomicUsize; VECTORS] = [const { AtomicUsize::new(0) }; VECTORS];

/// Installs `handler` for `vector` (32..256). A later call replaces it.
pub fn register_handler(vector: u8, handler: InterruptHandler) {
    assert!(
        u64::from(vector) >= FIRST_EXTERNAL_VECTOR,
        "vector {vector} is a CPU exception"
    );
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Builds the IDT: every vector gets its stub; double fault, NMI and machine
/// check run on their own IST stacks.
///
/// # Safety
/// Must be called once, on the bootstrap processor, before any CPU loads
/// the IDT.
pub unsafe fn init_idt() {
    // SAFETY: function contract: nobody else reads or writes the IDT yet.
    let idt = unsafe { &mut *IDT.0.get() };
    let stubs_start = core::ptr::addr_of!(interrupt_stubs) as u64;
    for (vector, entry) in idt.0.iter_mut().enumerate() {
        let ist = match vector as u64 {
            VECTOR_DOUBLE_FAULT => cpu::IST_DOUBLE_FAULT,
            VECTOR_NMI => cpu::IST_NMI,
            VECTOR_MACHINE_CHECK => cpu::IST_MACHINE_CHECK,
            _ => 0,
        };
        let stub = stubs_start + (vector * STUB_SIZE) as u64;
        *entry = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
            cpu::KERNEL_CODE_SELECTOR,
            stub,
        )
        .present()
        .dpl(Ring::Ring0)
        .ist(ist)
        .finish();
    }
}

/// Loads the IDT on the calling CPU.
pub fn load_idt() {
    // SAFETY: the IDT is only written before any CPU loads it (`init_idt`).
    let pointer = DescriptorTablePointer::new(unsafe { &(*IDT.0.get()).0 });
    // SAFETY: the IDT is static and complete; every gate points at a stub.
    unsafe { x86::dtables::lidt(&pointer) };
}

/// Loads an empty IDT, so the next exception triple-faults the machine. Only
/// the `fault=triple` self-test uses it (to check that the runner reports a
/// triple fault as a failure).
pub fn load_empty_idt_for_self_test() {
    let pointer: DescriptorTablePointer<u64> = DescriptorTablePointer {
        limit: 0,
        base: core::ptr::null(),
    };
    // SAFETY: deliberately breaks interrupt delivery on this CPU; the caller
    // raises an exception right after, which resets the machine (-no-reboot
    // makes QEMU exit).
    unsafe { x86::dtables::lidt(&pointer) };
}

/// The Rust side of every interrupt: called by `interrupt_common` with the
/// saved frame; returns the frame to resume.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) -> *mut InterruptFrame {
    let per_cpu = cpu::current();
    let depth = per_cpu.interrupt_depth.fetch_add(1, Ordering::Relaxed);
    if frame.vector < FIRST_EXTERNAL_VECTOR {
        // Extension code that faults is abandoned, not the kernel.
        if super::recovery::recover_from_exception(frame, depth) {
            per_cpu.interrupt_depth.fetch_sub(1, Ordering::Relaxed);
            return frame;
        }
        crate::exceptions::report_exception(frame, depth);
    }
    let handler = HANDLERS[frame.vector as usize].load(Ordering::Acquire);
    if handler == 0 {
        crate::exceptions::report_unexpected_vector(frame);
    } else {
        // SAFETY: HANDLERS only ever holds 0 or an `InterruptHandler` stored
        // by `register_handler`.
        let handler: InterruptHandler =
            unsafe { core::mem::transmute::<usize, InterruptHandler>(handler) };
        handler(frame);
    }
    per_cpu.interrupt_depth.fetch_sub(1, Ordering::Relaxed);
    if depth == 0 && !super::recovery::in_guarded_call() {
        // The outermost interrupt may hand the CPU to another strand: its
        // frame is the one `interrupt_common` resumes. Not while extension
        // code runs on this CPU (the scheduler is not reentrant; it runs
        // when that code returns).
        return crate::strand::on_interrupt_exit(frame);
    }
    frame as *mut InterruptFrame
}
