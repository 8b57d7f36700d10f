//! Which CPU runs the caller: the promise every grace period rests on.

/// How a [`Grace`](crate::Grace) learns which CPU runs the caller.
///
/// * [`CpuIdentity::new`] (the kernel): a function returning the current
///   CPU's index, trusted, which is why building one is `unsafe`.
/// * [`CpuIdentity::one_thread`] (host benchmarks and examples): CPU 0, for
///   the first thread of the process that uses it; any other thread panics.
/// * [`CpuIdentity::host_threads`] (host tests): each thread says which CPU it
///   plays with [`set_thread_cpu`](crate::CpuIdentity::set_thread_cpu); a
///   read section claims its CPU for the thread, so two threads playing one
///   CPU take turns instead of breaking the rules. Writers wait for the
///   claims rather than for quiescent states.
#[derive(Clone, Copy, Debug)]
pub struct CpuIdentity {
    pub(crate) kind: IdentityKind,
}

/// The two ways of knowing the CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IdentityKind {
    /// A trusted function of the kernel (or a checked single thread).
    Trusted(fn() -> usize),
    /// Host threads playing CPUs, each claiming its CPU while it reads.
    #[cfg(any(test, feature = "std"))]
    HostThreads,
}

impl CpuIdentity {
    /// The identity given by `current_cpu`.
    ///
    /// # Safety
    ///
    /// 1. `current_cpu` returns the index of the CPU that executes the call,
    ///    and is callable with interrupts disabled and from interrupt
    ///    handlers.
    /// 2. At any moment at most one thread of execution runs on a CPU index;
    ///    interrupt handlers nest inside what they interrupt, which is
    ///    allowed, as long as each returns to it.
    /// 3. A read section ends on the CPU where it began: the caller never
    ///    moves to another CPU (is not preempted and rescheduled elsewhere,
    ///    does not block) while it holds a [`ReadSection`](crate::ReadSection).
    pub const unsafe fn new(current_cpu: fn() -> usize) -> CpuIdentity {
        CpuIdentity {
            kind: IdentityKind::Trusted(current_cpu),
        }
    }

    /// The function that names the calling CPU under this identity.
    pub const fn current_function(self) -> fn() -> usize {
        match self.kind {
            IdentityKind::Trusted(current_cpu) => current_cpu,
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => thread_cpu,
        }
    }
}

#[cfg(any(test, feature = "std"))]
mod host {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::{CpuIdentity, IdentityKind};

    thread_local! {
        /// The CPU this thread plays under [`CpuIdentity::host_threads`].
        static THREAD_CPU: Cell<usize> = const { Cell::new(0) };
        /// A byte whose address names this thread while it lives.
        static THREAD_TOKEN: u8 = const { 0 };
    }

    /// The thread that owns [`CpuIdentity::one_thread`]'s CPU 0 (its token),
    /// 0 before any thread used it.
    static ONE_THREAD_OWNER: AtomicUsize = AtomicUsize::new(0);

    /// A number naming the calling thread, never 0, distinct among the
    /// threads alive at once.
    pub(crate) fn thread_token() -> usize {
        THREAD_TOKEN.with(|token| token as *const u8 as usize)
    }

    /// The CPU the calling thread plays under [`CpuIdentity::host_threads`].
    pub(crate) fn thread_cpu() -> usize {
        THREAD_CPU.with(Cell::get)
    }

    /// CPU 0 for the process's first caller; panics on any other thread.
    fn one_thread_cpu() -> usize {
        let me = thread_token();
        let owner = ONE_THREAD_OWNER.load(Ordering::Relaxed);
        if owner != me
            && ONE_THREAD_OWNER
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            panic!("CpuIdentity::one_thread used from a second thread");
        }
        0
    }

    impl CpuIdentity {
        /// CPU 0, for one thread only: the first thread of the process that
        /// uses such an identity owns it for the life of the process, and
        /// any other thread using one panics. For single-threaded host
        /// benchmarks and examples, which then run the kernel's raise path.
        pub const fn one_thread() -> CpuIdentity {
            CpuIdentity {
                kind: IdentityKind::Trusted(one_thread_cpu),
            }
        }

        /// Host threads playing CPUs (see [`set_thread_cpu`](CpuIdentity::set_thread_cpu)).
        pub const fn host_threads() -> CpuIdentity {
            CpuIdentity {
                kind: IdentityKind::HostThreads,
            }
        }

        /// Makes the calling thread play CPU `cpu` under
        /// [`host_threads`](CpuIdentity::host_threads) identities (0 until
        /// called). Takes effect at the thread's next read section.
        pub fn set_thread_cpu(cpu: usize) {
            THREAD_CPU.with(|current| current.set(cpu));
        }

        /// The CPU the calling thread plays under `host_threads` identities.
        pub fn thread_cpu() -> usize {
            thread_cpu()
        }
    }
}

#[cfg(any(test, feature = "std"))]
pub(crate) use host::{thread_cpu, thread_token};
