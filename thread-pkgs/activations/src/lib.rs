//! Spindle's scheduler activations (Anderson et al., SOSP 1991): the package side's state machine, with no context switching of its own.
//!
//! The kernel grants the package processors and tells it of every change by
//! an *upcall* on a fresh activation; the package answers each upcall (and
//! each thread operation) with [`Action`]s: which thread to run on which
//! processor, and its *downcalls* to the kernel (`AddMoreProcessors`,
//! `ProcessorIsIdle`). [`Package`] holds the ready list, the processors and
//! activations it knows of, and critical-section recovery: a thread stopped
//! inside the package's own critical section is run first, marked
//! recovering, until it reports [`Package::critical_section_done`].
//!
//! Threads are named by [`ThreadId`], shared with `spindle-uthreads`. The
//! crate is `no_std` outside its tests and has no `unsafe`; the kernel glue
//! wraps a [`Package`] in its own lock.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod ledger;
mod package;
pub mod runtime;

pub use package::Package;
pub use spindle_uthreads::ThreadId;

/// A processor the kernel may grant to the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u16);

/// An activation: the kernel's execution context for one upcall, and then for the thread it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActivationId(pub u32);

/// A user thread's state as the kernel hands it back in an upcall (the registers themselves stay with the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedThread {
    /// The thread.
    pub thread: ThreadId,
    /// It was stopped inside one of the package's critical sections.
    pub in_critical_section: bool,
}

/// Where an upcall is delivered when the kernel has to stop a processor of the package to make it: that processor, the fresh activation, and the thread it stopped there (if one ran).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The processor the upcall runs on.
    pub cpu: CpuId,
    /// The fresh activation it runs in.
    pub activation: ActivationId,
    /// The thread the kernel stopped on that processor to deliver the upcall.
    pub interrupted: Option<SavedThread>,
}

/// What the package does next, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Switch `cpu` (its current activation) to `thread`.
    Run {
        /// The processor.
        cpu: CpuId,
        /// The thread it runs.
        thread: ThreadId,
        /// The thread only finishes a critical section, then reports [`Package::critical_section_done`].
        recovering: bool,
    },
    /// Downcall: the package could use this many more processors.
    AddMoreProcessors(u32),
    /// Downcall: this processor has nothing to run; the kernel may take it back.
    ProcessorIsIdle(CpuId),
}

/// Where a thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the ready list (the recovering part if it is recovering).
    Ready,
    /// Running on this processor.
    Running(CpuId),
    /// Blocked in the kernel in this activation.
    BlockedInKernel(ActivationId),
}

/// A thread's place and whether it still has to finish a critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadState {
    /// Where it is.
    pub place: Place,
    /// It was stopped inside a critical section and has not reported its end.
    pub recovering: bool,
}

/// Why a call was refused: the kernel's report does not match what the package knows, or the thread cannot do that now. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The processor is not granted to the package.
    UnknownCpu(CpuId),
    /// `processor_added` for a processor the package already has.
    CpuAlreadyGranted(CpuId),
    /// The processor does not run this activation.
    WrongActivation {
        /// The processor.
        cpu: CpuId,
        /// The activation named.
        activation: ActivationId,
    },
    /// A "fresh" activation is still live (on a processor or blocked).
    ActivationInUse(ActivationId),
    /// `activation_unblocked` for an activation that is not blocked.
    NotBlocked(ActivationId),
    /// The thread the kernel reports is not the one the package has there.
    WrongThread {
        /// The thread the package has there.
        expected: Option<ThreadId>,
        /// The thread reported.
        reported: Option<ThreadId>,
    },
    /// An upcall delivered on the very processor it reports taken away.
    DeliveredOnPreemptedCpu(CpuId),
    /// No such live thread.
    UnknownThread(ThreadId),
    /// The thread cannot do this in its state (e.g. exit while recovering).
    WrongState {
        /// The thread.
        thread: ThreadId,
        /// Its state.
        state: ThreadState,
    },
    /// Thread ids are used up.
    Exhausted,
}

/// A broken invariant found by [`Package::check_invariants`]: a bug in the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What is wrong.
    pub problem: &'static str,
}

/// Running totals: upcalls and downcalls by kind, and the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `processor_added` upcalls.
    pub processors_added: u64,
    /// `processor_preempted` upcalls.
    pub processors_preempted: u64,
    /// `activation_blocked` upcalls.
    pub activations_blocked: u64,
    /// `activation_unblocked` upcalls.
    pub activations_unblocked: u64,
    /// `AddMoreProcessors` downcalls.
    pub add_more_processors: u64,
    /// `ProcessorIsIdle` downcalls.
    pub processor_is_idle: u64,
    /// Threads marked recovering (stopped inside a critical section).
    pub recoveries: u64,
    /// Threads spawned.
    pub spawned: u64,
    /// Threads exited.
    pub exited: u64,
    /// Calls of [`Package::check_invariants`].
    pub invariant_checks: u64,
}
