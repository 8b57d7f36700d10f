//! What the kernel (or a host test) supplies: CPU index, clock, deferred-work wake-up, relax.

use spindle_grace::{Awaited, CpuIdentity};

/// The most CPUs a dispatcher serves (one slot each per event).
pub const MAX_CPUS: usize = 256;

/// The services the dispatcher needs from its environment, as plain function
/// pointers: a `Platform` is `Copy`, can be built in a `const` or `static`,
/// and costs one indirect call per use.
///
/// * `current_cpu` returns the index of the CPU running the caller, below the
///   CPU count given to [`Dispatcher::new`](crate::Dispatcher::new) (a larger
///   index is folded into range, which is correct but shares a slot). A raise
///   must not move to another CPU while it runs (the kernel raises with
///   preemption disabled), and nested raises on one CPU (a handler raising,
///   an interrupt raising) must end in the reverse order they began, which
///   is what a CPU does naturally.
/// * `now_nanoseconds` is a monotonic clock; it is read only around handler
///   calls that are measured (a budget, or accounting switched on).
/// * `deferred_ready` is called with the raising CPU's index when deferred
///   (asynchronous) work becomes pending where none was; the kernel wakes a
///   CPU whose idle loop then calls
///   [`Dispatcher::run_deferred`](crate::Dispatcher::run_deferred).
/// * `relax` is called by installers and removers while they wait (for a
///   grace period or a lock) once a short spin has not been enough;
///   `core::hint::spin_loop` in the kernel, `std::thread::yield_now` on a
///   host with fewer cores than threads.
///
/// `current_cpu` and `now_nanoseconds` are called on the raise path, and
/// `deferred_ready` inside raises: all three must be cheap and callable with
/// interrupts disabled and from interrupt handlers.
///
/// How raises are protected from removals depends on the constructor:
///
/// * [`Platform::new`]: any `current_cpu` will do (even a wrong one is only
///   slower). A raise read-locks its CPU's copy of the handler list: two
///   locked instructions per raise.
/// * [`Platform::per_cpu`]: a [`CpuIdentity`], which the kernel can only build
///   by promising (in `unsafe` code) that it names the running CPU and that
///   a raise never moves to another CPU. A raise then writes nothing shared
///   and executes no locked instruction; removals wait for a grace period
///   (every CPU seen quiescent: at a timer tick, in a wait loop, idle, or at
///   the end of a raise while a remover waits), reported to the dispatcher
///   through [`Dispatcher::quiescent_state`](crate::Dispatcher::quiescent_state),
///   [`enter_idle`](crate::Dispatcher::enter_idle) and
///   [`leave_idle`](crate::Dispatcher::leave_idle).
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// Index of the CPU running the caller.
    pub current_cpu: fn() -> usize,
    /// Monotonic time in nanoseconds.
    pub now_nanoseconds: fn() -> u64,
    /// Called with the raising CPU's index when deferred work becomes pending.
    pub deferred_ready: fn(usize),
    /// Called in every wait loop of the install and remove paths.
    pub relax: fn(),
    /// The trusted CPU identity, if raises are protected by grace periods
    /// (see [`Platform::per_cpu`]).
    pub identity: Option<CpuIdentity>,
    /// How an install or removal reports a grace period that lasts long
    /// (see [`Platform::with_grace_stall_report`]); `None`: it waits silently.
    pub grace_stall: Option<StallReporting>,
}

/// When and how a publisher reports a long grace period.
#[derive(Clone, Copy, Debug)]
pub struct StallReporting {
    /// The first report comes once the wait has lasted this long; each later
    /// one when it has doubled.
    pub after_nanoseconds: u64,
    /// Called with the report, from the waiting installer or remover (never
    /// inside a raise on its own CPU, so it may raise events, e.g. print).
    pub report: fn(&GraceStall<'_>),
}

/// A grace period that has lasted long: whose handler list waits to be
/// published, for how long so far, and which CPUs it waits for (each either
/// inside a raise or not yet seen quiescent: a CPU spinning with interrupts
/// off outside the kernel's wait loops, a handler that blocks, a CPU that
/// stopped).
#[derive(Debug)]
pub struct GraceStall<'a> {
    /// The event whose new handler list waits.
    pub event: &'static str,
    /// How long the publisher has waited so far.
    pub waited_nanoseconds: u64,
    /// The CPUs it still waits for.
    pub awaited: Awaited<'a>,
}

impl Platform {
    /// A platform with the given CPU index and clock, no deferred-work
    /// notification and `core::hint::spin_loop` as its relax step.
    pub const fn new(current_cpu: fn() -> usize, now_nanoseconds: fn() -> u64) -> Platform {
        Platform {
            current_cpu,
            now_nanoseconds,
            deferred_ready: ignore_deferred_ready,
            relax: core::hint::spin_loop,
            identity: None,
            grace_stall: None,
        }
    }

    /// A platform whose raises run in grace-period read sections of
    /// `identity` (no locked instruction on the raise path), with the given
    /// clock, no deferred-work notification and `core::hint::spin_loop` as
    /// its relax step.
    pub const fn per_cpu(identity: CpuIdentity, now_nanoseconds: fn() -> u64) -> Platform {
        Platform {
            current_cpu: identity.current_function(),
            now_nanoseconds,
            deferred_ready: ignore_deferred_ready,
            relax: core::hint::spin_loop,
            identity: Some(identity),
            grace_stall: None,
        }
    }

    /// This platform with `deferred_ready` as its deferred-work notification.
    pub const fn with_deferred_ready(self, deferred_ready: fn(usize)) -> Platform {
        Platform {
            deferred_ready,
            ..self
        }
    }

    /// This platform with `relax` as its wait step.
    pub const fn with_relax(self, relax: fn()) -> Platform {
        Platform { relax, ..self }
    }

    /// This platform reporting, through `report`, every install or removal
    /// whose grace period has lasted `after_nanoseconds`, and again each
    /// time the wait doubles (grace-period platforms only: under read locks
    /// a publisher waits for one lock at a time and is not watched).
    pub const fn with_grace_stall_report(
        self,
        after_nanoseconds: u64,
        report: fn(&GraceStall<'_>),
    ) -> Platform {
        Platform {
            grace_stall: Some(StallReporting {
                after_nanoseconds,
                report,
            }),
            ..self
        }
    }
}

/// The default deferred-work notification: nothing (the idle loop polls
/// [`Dispatcher::has_deferred`](crate::Dispatcher::has_deferred)).
fn ignore_deferred_ready(_cpu: usize) {}
