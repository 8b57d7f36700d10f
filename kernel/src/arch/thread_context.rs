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
//! * **Preemption.** A timer interrupt may arrive while a body runs: its
//!   frame is saved on the context's stack, and the strand (the resumer
//!   included) resumes later, possibly on another CPU, exactly where it was.
//! * **Registers.** Kernel code is built without SSE (the target's
//!   soft-float ABI), so the System V callee-saved integer registers and the
//!   stack pointer are the whole state a voluntary switch must keep.

use alloc::boxed::Box;
use core::arch::global_asm;
use core::marker::PhantomData;
use core::ptr;

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
);

extern "C" {
    fn spindle_context_switch(save: *mut u64, load: u64);
    fn spindle_context_start();
}

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
}

/// How [`ThreadContext::resume`] came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The body called [`Suspender::suspend`]; resume it again to continue.
    Suspended,
    /// The body returned; resuming again does nothing.
    Finished,
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
        let mut context = ThreadContext {
            shared: Box::new(Shared {
                body: None,
                resumer: 0,
                suspended: 0,
                finished: true,
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
        // SAFETY: `shared` is valid for as long as `self` is borrowed, which
        // outlasts the body's run (it runs inside this call); the saved stack
        // pointer is either the start frame `new` built or the one the body
        // left in `suspend`, both on this context's stack, which `self`
        // owns. The body reaches `shared` only through raw pointers while
        // this side is switched out, so no reference aliases it.
        unsafe {
            spindle_context_switch(ptr::addr_of_mut!((*shared).resumer), (*shared).suspended);
            if (*shared).finished {
                Resumed::Finished
            } else {
                Resumed::Suspended
            }
        }
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
    /// [`Resumed::Suspended`], and the next one continues from here.
    pub fn suspend(&self) {
        // SAFETY: the body runs inside `resume`, so `shared` is alive and its
        // `resumer` holds the resumer's stack pointer; the switch saves this
        // context's registers on its own stack first.
        unsafe {
            spindle_context_switch(
                ptr::addr_of_mut!((*self.shared).suspended),
                (*self.shared).resumer,
            );
        }
    }
}

/// Where a context's first switch lands (through `spindle_context_start`):
/// runs the body, marks the context finished and returns to the resumer for
/// good.
extern "C" fn context_entry(shared: *mut Shared) -> ! {
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
    // SAFETY: as above; after this switch the context is never resumed
    // again (`resume` checks `finished`), so the frame left here is dead.
    unsafe {
        (*shared).finished = true;
        spindle_context_switch(ptr::addr_of_mut!((*shared).suspended), (*shared).resumer);
    }
    unreachable!("a finished context is never resumed");
}
