//! `Contexts`: the execution contexts the kernel makes for thread packages (a guarded stack and saved registers per thread), behind a safe interface; the register and stack switching itself is the kernel's (`kernel/src/arch/thread_context.rs`).

use alloc::boxed::Box;
use alloc::string::String;

/// Handed to a context's body: gives the CPU back to whoever resumed it.
pub trait Suspend {
    /// Suspends the body; the pending `resume` returns `false` (not
    /// finished), and the next `resume` continues from here.
    fn suspend(&self);
}

/// What a context runs.
pub type Body = Box<dyn FnOnce(&dyn Suspend) + Send>;

/// How a [`ExecutionContext::resume`] came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The body called [`Suspend::suspend`].
    Suspended,
    /// The body returned (later resumes return this at once).
    Finished,
    /// The kernel preempted the strand running the body (SPIN's
    /// Checkpoint) and handed the body's state back: the package chooses
    /// what runs next, and may resume this context later from any strand.
    Preempted,
}

/// One thread's execution context.
pub trait ExecutionContext: Send {
    /// Runs the body until it suspends, returns or is preempted.
    fn resume(&mut self) -> Outcome;
    /// Gives a finished context a new body on the same stack; returns the
    /// body back if the context has not finished.
    fn reuse(&mut self, body: Body) -> Result<(), Body>;
}

/// Makes execution contexts.
pub trait Contexts: Sync {
    /// A context that will run `body` on a fresh guarded stack.
    fn create(&self, body: Body) -> Result<Box<dyn ExecutionContext>, String>;
}
