//! What the kernel (or a host test) supplies: CPU index, clock, deferred-work wake-up, relax.

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
}

/// The default deferred-work notification: nothing (the idle loop polls
/// [`Dispatcher::has_deferred`](crate::Dispatcher::has_deferred)).
fn ignore_deferred_ready(_cpu: usize) {}
