//! Which CPU runs the caller: the promise every grace period rests on.

/// How a [`Grace`](crate::Grace) learns which CPU runs the caller.
///
/// * [`CpuIdentity::new`] (the kernel): a function returning the current
///   CPU's index, trusted, which is why building one is `unsafe`.
/// * [`CpuIdentity::gs_relative`] (the kernel, x86_64): the index read from
///   the CPU's own per-CPU block through the GS segment, one load inlined
///   into every read section instead of a call; `unsafe` for the same
///   reason.
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
    /// A trusted source of the kernel (or a checked single thread).
    Trusted(Source),
    /// Host threads playing CPUs, each claiming its CPU while it reads.
    #[cfg(any(test, feature = "std"))]
    HostThreads,
}

/// Where a trusted identity reads the CPU index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A call of the kernel's function.
    Function(fn() -> usize),
    /// The `u32` at `offset` in the block the GS base points at (inlined);
    /// `function` reads the same word, for callers that need a function.
    #[cfg(target_arch = "x86_64")]
    GsWord {
        offset: u32,
        function: fn() -> usize,
    },
}

impl Source {
    /// The calling CPU's index.
    #[inline(always)]
    pub(crate) fn current(self) -> usize {
        match self {
            Source::Function(current_cpu) => current_cpu(),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `GsWord` source is only built by
            // `CpuIdentity::gs_relative`, whose caller promised that the GS
            // base of every CPU using it points at a block whose `u32` at
            // `offset` is readable and holds that CPU's index.
            Source::GsWord { offset, .. } => unsafe { read_gs_u32(offset) },
        }
    }

    /// The same index as a function.
    const fn function(self) -> fn() -> usize {
        match self {
            Source::Function(current_cpu) => current_cpu,
            #[cfg(target_arch = "x86_64")]
            Source::GsWord { function, .. } => function,
        }
    }
}

/// Reads the `u32` at `offset` from the GS segment.
///
/// # Safety
///
/// The GS base plus `offset` must address a readable, aligned `u32`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn read_gs_u32(offset: u32) -> usize {
    let value: u32;
    // SAFETY: the caller guarantees that `gs:[offset]` is a readable,
    // aligned u32; the load writes nothing and touches neither the stack nor
    // the flags.
    unsafe {
        core::arch::asm!(
            "mov {value:e}, dword ptr gs:[{offset}]",
            value = out(reg) value,
            offset = in(reg) u64::from(offset),
            options(nostack, readonly, preserves_flags),
        );
    }
    value as usize
}

/// [`read_gs_u32`] at a fixed offset, as a function pointer.
#[cfg(target_arch = "x86_64")]
fn gs_word<const OFFSET: u32>() -> usize {
    // SAFETY: only reachable through an identity built by
    // `CpuIdentity::gs_relative::<OFFSET>`, whose caller promised that
    // `gs:[OFFSET]` is this CPU's index on every CPU that uses it.
    unsafe { read_gs_u32(OFFSET) }
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
            kind: IdentityKind::Trusted(Source::Function(current_cpu)),
        }
    }

    /// The identity read from the GS segment: the `u32` at `OFFSET` in the
    /// block the calling CPU's GS base points at. Every read section loads
    /// it inline (`mov r32, gs:[OFFSET]`), with no call.
    ///
    /// # Safety
    ///
    /// 1. On every CPU that uses a [`Grace`](crate::Grace) with this
    ///    identity, from before its first use there until the grace domain
    ///    is dropped, the GS base points at a block of readable memory whose
    ///    aligned `u32` at `OFFSET` holds that CPU's index, and nothing
    ///    changes either while the CPU runs code that may use the identity.
    ///    Interrupt handlers see the same GS base (a kernel that runs only
    ///    in ring 0 and never executes `swapgs`).
    /// 2. and 3.: the promises of [`CpuIdentity::new`].
    #[cfg(target_arch = "x86_64")]
    pub const unsafe fn gs_relative<const OFFSET: u32>() -> CpuIdentity {
        CpuIdentity {
            kind: IdentityKind::Trusted(Source::GsWord {
                offset: OFFSET,
                function: gs_word::<OFFSET>,
            }),
        }
    }

    /// The function that names the calling CPU under this identity.
    pub const fn current_function(self) -> fn() -> usize {
        match self.kind {
            IdentityKind::Trusted(source) => source.function(),
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
                kind: IdentityKind::Trusted(super::Source::Function(one_thread_cpu)),
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
