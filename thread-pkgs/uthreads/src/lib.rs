//! Spindle's user-level thread package core: M threads multiplexed on N carriers (strands), with no context switching of its own.
//!
//! * [`Package`]: the thread table, one ready queue per carrier with
//!   stealing, join/exit, sleep, the Checkpoint/Resume events the kernel glue
//!   raises when a carrier's strand is preempted, and counters.
//! * Synchronization as wait-queue state machines over [`ThreadId`]s:
//!   mutexes ([`MutexId`]), condition variables ([`CondvarId`]) and counting
//!   semaphores ([`SemaphoreId`]), all with FIFO hand-off.
//!
//! * [`runtime`]: the package at work, running threads in execution
//!   contexts the kernel makes (`spindle_services::contexts`) on carrier
//!   strands (`spindle_services::strands`).
//!
//! The package only decides *which* thread runs where and keeps the books;
//! saving and restoring register state is the kernel's context primitive's
//! job. Every operation
//! takes one spin lock, so a [`Package`] is `Send + Sync` and can be shared by
//! several CPUs. Stale or unknown ids are refused with an [`Error`], never a
//! panic. The crate is `no_std` outside its tests and has no `unsafe`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod package;
pub mod runtime;
mod sync;

pub use package::Package;

/// A user-level thread: a slot index in the thread table and the slot's generation, so an id outlives its thread only as a refused, stale id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId {
    /// Slot in the thread table.
    pub index: u32,
    /// How many times the slot had been reused when the thread was spawned.
    pub generation: u32,
}

/// A carrier: one of the strands the package runs its threads on, numbered `0..N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CarrierId(pub u16);

/// A mutex created by [`Package::new_mutex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MutexId(pub u32);

/// A condition variable created by [`Package::new_condvar`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CondvarId(pub u32);

/// A counting semaphore created by [`Package::new_semaphore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SemaphoreId(pub u32);

/// Where a thread is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// In exactly one carrier's ready queue.
    Ready,
    /// Running on this carrier.
    Running(CarrierId),
    /// Waiting; in exactly one wait queue (none for [`WaitReason::Parked`]).
    Blocked(WaitReason),
    /// Finished; the slot is kept for joiners until [`Package::reap`].
    Exited,
}

/// What a blocked thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// This thread's exit.
    Join(ThreadId),
    /// This mutex, in its FIFO of waiters.
    Mutex(MutexId),
    /// A signal on this condition variable.
    Condvar(CondvarId),
    /// A unit of this semaphore.
    Semaphore(SemaphoreId),
    /// The clock to reach this deadline, in nanoseconds.
    Sleep(u64),
    /// An explicit [`Package::make_ready`] (e.g. a thread blocked in the kernel).
    Parked,
}

/// The result of [`Package::join`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The target had exited; the waiter keeps running.
    AlreadyExited,
    /// The waiter is blocked until the target exits; its carrier is free.
    MustWait,
}

/// The result of [`Package::lock`] and [`Package::down`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Taken at once; the thread keeps running.
    Acquired,
    /// The thread is queued (FIFO) and blocked; its carrier is free.
    MustWait,
}

/// Why an operation was refused. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The thread never existed or its slot has been reaped (stale generation).
    UnknownThread(ThreadId),
    /// The carrier is outside `0..N`.
    UnknownCarrier(CarrierId),
    /// No such mutex.
    UnknownMutex(MutexId),
    /// No such condition variable.
    UnknownCondvar(CondvarId),
    /// No such semaphore.
    UnknownSemaphore(SemaphoreId),
    /// The operation needs the thread in another state (e.g. running).
    WrongState {
        /// The thread.
        thread: ThreadId,
        /// Its state, which the operation does not accept.
        state: ThreadState,
    },
    /// A pick was asked for a carrier that still runs a thread.
    CarrierBusy {
        /// The carrier.
        carrier: CarrierId,
        /// The thread it runs.
        running: ThreadId,
    },
    /// Checkpoint named a thread that is not the one running on the carrier.
    NotOnCarrier {
        /// The thread named.
        thread: ThreadId,
        /// The carrier.
        carrier: CarrierId,
    },
    /// A thread tried to join itself.
    SelfJoin(ThreadId),
    /// The thread locked a mutex it already holds (it would wait forever).
    AlreadyOwner {
        /// The mutex.
        mutex: MutexId,
        /// The thread.
        thread: ThreadId,
    },
    /// The thread unlocked (or waited with) a mutex it does not hold.
    NotOwner {
        /// The mutex.
        mutex: MutexId,
        /// The thread.
        thread: ThreadId,
    },
    /// The thread tried to exit while holding mutexes, which would be lost.
    HoldsMutexes(ThreadId),
    /// An `up` would overflow the semaphore's count.
    SemaphoreOverflow(SemaphoreId),
    /// No id is left (more than `u32::MAX` threads or objects).
    Exhausted,
}

/// A broken invariant found by [`Package::check_invariants`]: a bug in the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The thread concerned.
    pub thread: ThreadId,
    /// What is wrong.
    pub problem: &'static str,
}

/// Running totals since the package was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Threads spawned.
    pub spawned: u64,
    /// Threads exited.
    pub exited: u64,
    /// Picks that took a thread from another carrier's queue.
    pub steals: u64,
    /// Picks that put a carrier on a thread other than the one it last ran.
    pub context_switches: u64,
    /// Checkpoints (a carrier's strand preempted under a running thread).
    pub preemptions: u64,
    /// Calls of [`Package::check_invariants`].
    pub invariant_checks: u64,
}
