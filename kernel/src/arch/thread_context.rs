//! Thread contexts for thread packages: a body that runs on its own guarded stack inside [`ThreadContext::resume`] and gives the CPU back with [`Suspender::suspend`], switching only the callee-saved registers and the stack pointer.
//!
//! This is the context primitive of issue 6: the one place where a thread
//! package's threads touch registers and stacks, behind a safe API.
//!
//! * **Asymmetric.** A context runs only inside `resume`, which returns
//!   when the body suspends or finishes. A thread package's scheduler loop
//!   (on its strand's own stack) resumes one thread after another; a
//!   thread-to-thread switch is two context switches (thread → loop →
//!   thread), each a dozen instructions.
//! * **No dangling context.** `resume` borrows the context mutably for as
//!   long as the body runs, so the context (and its stack) cannot be dropped
//!   or resumed twice meanwhile. The body is `'static`, so nothing outside
//!   borrows from its stack, and the [`Suspender`] it is handed cannot leave
//!   it (it is neither `Send` nor `'static`). Dropping a suspended context
//!   frees its stack without running the destructors of the body's frames
//!   (they leak).
//! * **Preemption hands the thread back.** When the kernel preempts a
//!   strand while it runs inside a context (SPIN's Checkpoint), the
//!   interrupted state (its interrupt frame, on the context's stack) becomes
//!   the context's suspended state, and the strand resumes (SPIN's Resume)
//!   where its `resume` call returns, with [`Resumed::Preempted`]: the thread
//!   package's own scheduler then chooses which thread continues, not
//!   necessarily the one that was running ([`hand_back`]). A strand that
//!   blocks or yields inside a context keeps it, and continues in it.
//! * **Registers.** Kernel code is built without SSE (the target's
//!   soft-float ABI), so the System V callee-saved integer registers and the
//!   stack pointer are the whole state a voluntary switch must keep.

use alloc::boxed::Box;
use core::arch::global_asm;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use super::interrupts::InterruptFrame;
use super::paging::{GuardedStack, PagingError};

// `spindle_context_switch(save: *mut u64, load: u64)`: pushes the
// callee-saved registers, stores the stack pointer at `save`, loads `load`
// as the stack pointer and pops the registers saved there, returning into
// that context. `spindle_context_start` is where a new context first
// "returns" to: it calls the entry in r13 with the argument in r12.
global_asm!(
    ".global spindle_context_switch",
    "spindle_context_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    ".global spindle_context_start",
    "spindle_context_start:",
    "    mov rdi, r12",
    "    call r13",
    "    ud2",
    // A preempted context's first switch lands here with rsp at the
    // interrupt frame saved on its stack: restore it as interrupt_common's
    // exit does (arch/interrupts.rs).
    ".global spindle_context_resume_frame",
    "spindle_context_resume_frame:",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    add rsp, 16",
    "    iretq",
    // A strand whose thread was handed back resumes here (through a
    // synthetic interrupt frame) with rsp at the registers its `resume`
    // saved: pop them and return from that `resume`'s switch.
    ".global spindle_context_return",
    "spindle_context_return:",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
);

extern "C" {
    fn spindle_context_switch(save: *mut u64, load: u64);
    fn spindle_context_start();
    fn spindle_context_resume_frame();
    fn spindle_context_return();
}

/// Per CPU: the innermost context the running strand is inside (its
/// `Shared`'s address, 0: none). The scheduler keeps it per strand
/// (`save_current`, `load_current`).
static CURRENT: [AtomicU64; super::cpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; super::cpu::MAX_CPUS];

/// The running strand's innermost context, for the scheduler to keep with
/// the strand when it leaves the CPU.
pub fn save_current() -> u64 {
    CURRENT[super::cpu::current_index()].load(Ordering::Relaxed)
}

/// Restores the context a strand that is resumed on this CPU is inside.
pub fn load_current(context: u64) {
    CURRENT[super::cpu::current_index()].store(context, Ordering::Relaxed);
}

/// Bytes left free below a stack's used part before a synthetic frame (a
/// margin: nothing needs it, as kernel code has no red zone).
const FRAME_CLEARANCE: u64 = 64;

/// Registers `spindle_context_switch` pops before its `ret`.
const SAVED_REGISTERS: usize = 6;
/// Words of a new context's first switch frame: the registers, the return
/// address (`spindle_context_start`) and two words of padding, so that the
/// frame starts 8 bytes off a 16-byte boundary and the stack is 16-byte
/// aligned at `spindle_context_start`'s call, as the System V ABI wants.
const START_FRAME_WORDS: usize = SAVED_REGISTERS + 3;
/// Slots of the saved registers in a switch frame (from its lowest word).
const R13_SLOT: usize = 2;
const R12_SLOT: usize = 3;
const RETURN_SLOT: usize = SAVED_REGISTERS;

/// What a context runs.
type ContextBody = Box<dyn FnOnce(&Suspender) + Send>;

/// What the two sides of a context share; boxed, so its address is stable.
struct Shared {
    /// The body, taken by the context's first instructions.
    body: Option<ContextBody>,
    /// The resumer's stack pointer while the context runs.
    resumer: u64,
    /// The context's stack pointer while it is suspended.
    suspended: u64,
    /// The body returned.
    finished: bool,
    /// The kernel took the thread back from its strand (`hand_back`).
    preempted: bool,
    /// The context's stack: [bottom, top).
    stack_bottom: u64,
    stack_top: u64,
}

/// How [`ThreadContext::resume`] came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The body called [`Suspender::suspend`]; resume it again to continue.
    Suspended,
    /// The body returned; resuming again does nothing.
    Finished,
    /// The kernel preempted the strand while it ran the body, and handed the
    /// body's state back: resume it again (from any strand) to continue.
    Preempted,
}

/// A thread's execution context: its guarded stack and, while it is
/// suspended, its saved registers.
pub struct ThreadContext {
    shared: Box<Shared>,
    stack: GuardedStack,
}

// SAFETY: a context is a stack and a saved stack pointer; it is only
// switched to inside `resume(&mut self)`, by one CPU at a time, and the body
// it runs is `Send`.
unsafe impl Send for ThreadContext {}

impl ThreadContext {
    /// A context that will run `body` on a fresh guarded stack of
    /// `stack_bytes` (rounded up to whole pages).
    pub fn new(
        stack_bytes: usize,
        body: impl FnOnce(&Suspender) + Send + 'static,
    ) -> Result<ThreadContext, PagingError> {
        let stack = GuardedStack::new(stack_bytes)?;
        let stack_top = stack.top();
        let mut context = ThreadContext {
            shared: Box::new(Shared {
                body: None,
                resumer: 0,
                suspended: 0,
                finished: true,
                preempted: false,
                stack_bottom: stack_top - stack_bytes as u64,
                stack_top,
            }),
            stack,
        };
        context.start(Box::new(body));
        Ok(context)
    }

    /// Gives a finished context a new body, reusing its stack (a thread
    /// package keeps finished contexts to make thread creation cheap).
    /// Returns the body back if the context has not finished.
    pub fn reuse<F>(&mut self, body: F) -> Result<(), F>
    where
        F: FnOnce(&Suspender) + Send + 'static,
    {
        if !self.shared.finished {
            return Err(body);
        }
        self.start(Box::new(body));
        Ok(())
    }

    /// Builds the first switch frame at the top of the (unused) stack.
    fn start(&mut self, body: ContextBody) {
        let top = self.stack.top() & !0xf;
        let frame = (top as usize - START_FRAME_WORDS * 8) as *mut u64;
        let argument: *mut Shared = &mut *self.shared;
        // SAFETY: `frame` lies within this context's stack, below its
        // 16-byte aligned top; nothing runs on the stack (the context is new
        // or finished, and a finished context's frames are dead). The words
        // written are the switch frame `spindle_context_switch` pops the next
        // time the context is resumed.
        unsafe {
            for slot in 0..START_FRAME_WORDS {
                frame.add(slot).write(0);
            }
            frame.add(R13_SLOT).write(context_entry as *const () as u64);
            frame.add(R12_SLOT).write(argument as u64);
            frame
                .add(RETURN_SLOT)
                .write(spindle_context_start as *const () as u64);
        }
        self.shared.body = Some(body);
        self.shared.suspended = frame as u64;
        self.shared.finished = false;
    }

    /// Runs the body until it suspends or finishes.
    pub fn resume(&mut self) -> Resumed {
        if self.shared.finished {
            return Resumed::Finished;
        }
        let shared: *mut Shared = &mut *self.shared;
        // Interrupts stay off across the switch, both ways (see `suspend`
        // and `context_entry`): a preemption in the middle of a switch would
        // hand back a half-switched thread.
        let were_enabled = super::cpu::disable_interrupts();
        let outer = save_current();
        load_current(shared as u64);
        // SAFETY: `shared` is valid for as long as `self` is borrowed, which
        // outlasts the body's run (it runs inside this call); the saved stack
        // pointer is the start frame `start` built, the one the body left in
        // `suspend`, or the switch frame `hand_back` put below the body's
        // interrupt frame, all on this context's stack, which `self` owns.
        // The body (and the kernel, in `hand_back`) reaches `shared` only
        // through raw pointers while this side is switched out, so no
        // reference aliases it.
        let outcome = unsafe {
            spindle_context_switch(ptr::addr_of_mut!((*shared).resumer), (*shared).suspended);
            if (*shared).finished {
                Resumed::Finished
            } else if core::mem::replace(&mut (*shared).preempted, false) {
                Resumed::Preempted
            } else {
                Resumed::Suspended
            }
        };
        // Back on this strand's own stack (or its outer context's): the
        // scheduler's view follows before interrupts can see a stale one
        // (a preemption right here finds the frame outside the context's
        // stack and leaves it alone).
        load_current(outer);
        // (`hand_back`'s frame also returns here with interrupts off.)
        super::cpu::restore_interrupts(were_enabled);
        outcome
    }

    /// Whether the body has returned.
    pub fn is_finished(&self) -> bool {
        self.shared.finished
    }
}

/// Handed to a context's body: gives the CPU back to the resumer.
pub struct Suspender {
    shared: *mut Shared,
    /// Neither `Send` nor `Sync`: it stays with the body it was made for.
    _not_send: PhantomData<*mut ()>,
}

impl Suspender {
    /// Suspends the body: the pending [`ThreadContext::resume`] returns
    /// [`Resumed::Suspended`], and the next one continues from here. Inside
    /// a raise of the dispatcher it returns at once instead.
    pub fn suspend(&self) {
        if crate::extensions::inside_raise() {
            // A raise must end on the CPU where it began, and a suspended
            // thread may be resumed on another: inside an event handler,
            // suspending returns at once (as a yield that found nothing
            // else to run would).
            return;
        }
        // Interrupts off across the switch: a preemption between saving
        // this side and loading the other would hand this thread back with
        // a stale resumer.
        let were_enabled = super::cpu::disable_interrupts();
        // SAFETY: the body runs inside `resume`, so `shared` is alive and its
        // `resumer` holds the resumer's stack pointer; the switch saves this
        // context's registers on its own stack first.
        unsafe {
            spindle_context_switch(
                ptr::addr_of_mut!((*self.shared).suspended),
                (*self.shared).resumer,
            );
        }
        // Resumed (by a `resume`, which switched with interrupts off).
        super::cpu::restore_interrupts(were_enabled);
    }
}

/// Where a context's first switch lands (through `spindle_context_start`):
/// runs the body, marks the context finished and returns to the resumer for
/// good.
extern "C" fn context_entry(shared: *mut Shared) -> ! {
    // The first `resume` switched here with interrupts off; a body runs with
    // them on, like the strand that resumes it.
    super::cpu::enable_interrupts();
    // SAFETY: `shared` is the context's boxed state, alive while its
    // `resume` runs (this is inside the first one).
    let body = unsafe { (*shared).body.take() };
    let suspender = Suspender {
        shared,
        _not_send: PhantomData,
    };
    if let Some(body) = body {
        body(&suspender);
    }
    super::cpu::disable_interrupts();
    // SAFETY: as above; after this switch the context is never resumed
    // again (`resume` checks `finished`), so the frame left here is dead.
    unsafe {
        (*shared).finished = true;
        spindle_context_switch(ptr::addr_of_mut!((*shared).suspended), (*shared).resumer);
    }
    unreachable!("a finished context is never resumed");
}

/// SPIN's Checkpoint for a strand inside a context: if the strand being
/// preempted was interrupted on the stack of the context it is inside
/// (`context`, from `save_current`), makes the interrupted state that
/// context's suspended state and returns a frame that resumes the strand
/// where that context's `resume` returns (with [`Resumed::Preempted`]).
/// `None` leaves the strand as it is (no context, or the interrupt hit
/// elsewhere, e.g. on the strand's own stack in `resume`'s prologue).
///
/// # Safety
/// `frame` must be the strand's saved interrupt frame, and `context` the
/// value `save_current` gave for that strand when it left the CPU; the
/// strand must not be running anywhere (the scheduler is switching it out).
pub unsafe fn hand_back(frame: *mut InterruptFrame, context: u64) -> Option<*mut InterruptFrame> {
    if context == 0 {
        return None;
    }
    let shared = context as *mut Shared;
    let frame_address = frame as u64;
    // SAFETY: `context` names a live context: the strand is inside its
    // `resume`, which keeps it borrowed; the strand is stopped, so nobody
    // else touches `shared`.
    let (bottom, top, resumer) = unsafe {
        (
            (*shared).stack_bottom,
            (*shared).stack_top,
            (*shared).resumer,
        )
    };
    let switch_frame_bytes = (SAVED_REGISTERS as u64 + 1) * 8;
    if frame_address < bottom + switch_frame_bytes || frame_address >= top || resumer == 0 {
        return None;
    }
    // 1. The thread: a switch frame just below its interrupt frame, whose
    //    return address restores that frame.
    let switch_frame = (frame_address - switch_frame_bytes) as *mut u64;
    // SAFETY: the words below the interrupt frame on the context's stack
    // are unused (the interrupt pushed the frame last; kernel code has no
    // red zone), and above `bottom` (checked).
    unsafe {
        for slot in 0..SAVED_REGISTERS {
            switch_frame.add(slot).write(0);
        }
        switch_frame
            .add(RETURN_SLOT)
            .write(spindle_context_resume_frame as *const () as u64);
        (*shared).suspended = switch_frame as u64;
        (*shared).preempted = true;
    }
    // 2. The strand: a synthetic interrupt frame on its own stack, below the
    //    registers its `resume` saved, that returns into that `resume` with
    //    interrupts off (it re-enables them itself once its view is right).
    let synthetic = ((resumer - FRAME_CLEARANCE - size_of::<InterruptFrame>() as u64) & !0xf)
        as *mut InterruptFrame;
    // SAFETY: the strand's stack below `resumer` is unused while the strand
    // is inside the context (its `resume` is suspended in the switch).
    unsafe {
        synthetic.write(super::context::kernel_frame(
            spindle_context_return as *const () as u64,
            resumer,
            RFLAGS_RESERVED,
        ));
    }
    Some(synthetic)
}

/// RFLAGS with only the always-one bit: interrupts off.
const RFLAGS_RESERVED: u64 = 0x2;
