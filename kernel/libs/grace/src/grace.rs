//! Per-CPU read sections, quiescent states, idle CPUs and the writers' wait for a grace period.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::identity::{CpuIdentity, IdentityKind};

/// The most CPUs one [`Grace`] serves.
pub const MAX_CPUS: usize = 256;

/// How many times a writer checks the CPUs it waits for with a plain
/// `spin_loop` hint between checks before it calls its `relax` step.
const SPINS_BEFORE_RELAX: u32 = 64;

/// One CPU's grace state, alone on its cache lines: only this CPU writes it
/// on the read path.
#[repr(align(128))]
struct CpuGrace {
    /// Read sections open on this CPU (written only by this CPU).
    depth: AtomicUsize,
    /// Quiescent states reported so far (trusted identities), or outermost
    /// read sections ended (host threads).
    reports: AtomicU64,
    /// Whether this CPU is idle: quiescent until its next read section.
    idle: AtomicBool,
    /// Whether some writer waits for this CPU's next quiescent state.
    wanted: AtomicBool,
    /// Host threads: the thread inside a read section here, 0 if none.
    #[cfg_attr(not(any(test, feature = "std")), allow(dead_code))]
    owner: AtomicUsize,
}

impl CpuGrace {
    const fn new() -> CpuGrace {
        CpuGrace {
            depth: AtomicUsize::new(0),
            reports: AtomicU64::new(0),
            idle: AtomicBool::new(true),
            wanted: AtomicBool::new(false),
            owner: AtomicUsize::new(0),
        }
    }

    /// Reports a quiescent state: a full fence, so that every reference this
    /// CPU read before it is dead before a writer can see the count move.
    #[inline]
    fn report(&self) {
        self.wanted.store(false, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

/// Grace periods over a fixed set of CPUs; see the [crate documentation](crate).
pub struct Grace {
    identity: CpuIdentity,
    cpus: Box<[CpuGrace]>,
}

impl core::fmt::Debug for Grace {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Grace")
            .field("identity", &self.identity)
            .field("cpus", &self.cpus.len())
            .finish()
    }
}

/// The CPUs a writer still waits for (see [`Grace::synchronize_watched`]).
#[derive(Clone, Copy, Debug)]
pub struct Awaited<'a> {
    /// (CPU, reports seen when the wait began).
    waiting: &'a [(usize, u64)],
}

impl Awaited<'_> {
    /// The awaited CPUs, in ascending order.
    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().map(|&(cpu, _)| cpu)
    }

    /// How many CPUs are awaited.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no CPU is awaited (never, when `watch` is called).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// An open read section on one CPU (see [`Grace::read`]). Not `Send`: it
/// ends on the CPU, and the thread, where it began.
pub struct ReadSection<'grace> {
    grace: &'grace Grace,
    cpu: usize,
    /// The CPU's state (`grace.cpus[cpu]`), kept so that leaving does not
    /// index again.
    state: &'grace CpuGrace,
    _not_send: PhantomData<*const ()>,
}

impl core::fmt::Debug for ReadSection<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("ReadSection")
            .field("cpu", &self.cpu)
            .finish()
    }
}

impl ReadSection<'_> {
    /// The CPU the section runs on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The grace domain the section belongs to.
    #[inline]
    pub(crate) fn grace(&self) -> &Grace {
        self.grace
    }
}

impl Drop for ReadSection<'_> {
    #[inline]
    fn drop(&mut self) {
        self.grace.leave(self.state);
    }
}

impl Grace {
    /// Grace periods for `cpus` CPUs (clamped to `1..=MAX_CPUS`), every one
    /// idle until it first reads.
    pub fn new(identity: CpuIdentity, cpus: usize) -> Grace {
        let cpus = cpus.clamp(1, MAX_CPUS);
        Grace {
            identity,
            cpus: (0..cpus)
                .map(|_| CpuGrace::new())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        }
    }

    /// Number of CPUs served.
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// The identity in use.
    pub fn identity(&self) -> CpuIdentity {
        self.identity
    }

    /// The calling CPU's index. Panics if the identity names a CPU this
    /// `Grace` does not serve.
    #[inline]
    pub fn current_cpu(&self) -> usize {
        let cpu = match self.identity.kind {
            IdentityKind::Trusted(source) => source.current(),
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => crate::identity::thread_cpu(),
        };
        assert!(
            cpu < self.cpus.len(),
            "cpu {cpu} is not served (this grace domain has {} cpus)",
            self.cpus.len()
        );
        cpu
    }

    /// Opens a read section on the calling CPU: until it is dropped, values
    /// read from [`Published`](crate::Published) cells of this `Grace` stay
    /// alive. With a trusted identity this is a load and a store of the
    /// CPU's own counter (and, the first time after idling, a fence).
    #[inline]
    pub fn read(&self) -> ReadSection<'_> {
        let cpu = self.current_cpu();
        let state = &self.cpus[cpu];
        match self.identity.kind {
            IdentityKind::Trusted(_) => {
                if state.idle.load(Ordering::Relaxed) {
                    Grace::wake(state);
                }
            }
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => Grace::claim(state),
        }
        let depth = state.depth.load(Ordering::Relaxed);
        state.depth.store(depth + 1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        ReadSection {
            grace: self,
            cpu,
            state,
            _not_send: PhantomData,
        }
    }

    /// Ends a read section on the CPU whose state is `state` (the one it
    /// began on).
    #[inline]
    fn leave(&self, state: &CpuGrace) {
        compiler_fence(Ordering::SeqCst);
        let depth = state.depth.load(Ordering::Relaxed) - 1;
        state.depth.store(depth, Ordering::Relaxed);
        if depth != 0 {
            return;
        }
        match self.identity.kind {
            IdentityKind::Trusted(_) => {
                if state.wanted.load(Ordering::Relaxed) {
                    Grace::report_wanted(state);
                }
            }
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => {
                state.reports.fetch_add(1, Ordering::SeqCst);
                state.owner.store(0, Ordering::SeqCst);
            }
        }
    }

    /// Reports the quiescent state a writer waits for (out of line: the
    /// read path stays short).
    #[cold]
    #[inline(never)]
    fn report_wanted(state: &CpuGrace) {
        state.report();
    }

    /// Leaves idle: a full fence, so that this CPU's next reads see every
    /// value published before a writer saw it idle.
    #[cold]
    #[inline(never)]
    fn wake(state: &CpuGrace) {
        state.idle.swap(false, Ordering::SeqCst);
    }

    /// Host threads: claims `state`'s CPU for the calling thread, waiting
    /// while another thread is inside a read section there.
    #[cfg(any(test, feature = "std"))]
    fn claim(state: &CpuGrace) {
        let me = crate::identity::thread_token();
        if state.owner.load(Ordering::Relaxed) == me {
            return;
        }
        while state
            .owner
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    /// Whether the calling CPU is inside a read section.
    #[inline]
    pub fn inside_read(&self) -> bool {
        let cpu = self.current_cpu();
        match self.identity.kind {
            IdentityKind::Trusted(_) => self.cpus[cpu].depth.load(Ordering::Relaxed) != 0,
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => {
                self.cpus[cpu].owner.load(Ordering::Relaxed) == crate::identity::thread_token()
            }
        }
    }

    /// Tells the grace domain that the calling CPU holds no reference read
    /// in a section: counted if it is outside every read section, ignored
    /// otherwise (so it is always safe to call). The kernel calls it at
    /// every timer tick and in its wait loops. One locked instruction.
    #[inline]
    #[allow(irrefutable_let_patterns)] // refutable with the host identities
    pub fn quiescent_state(&self) {
        if let IdentityKind::Trusted(_) = self.identity.kind {
            let state = &self.cpus[self.current_cpu()];
            if state.depth.load(Ordering::Relaxed) == 0 {
                state.report();
            }
        }
    }

    /// Marks the calling CPU idle (about to halt) if it is outside every read
    /// section: writers stop waiting for it until it reads again. Returns
    /// whether it was marked.
    pub fn enter_idle(&self) -> bool {
        match self.identity.kind {
            IdentityKind::Trusted(_) => {
                let state = &self.cpus[self.current_cpu()];
                if state.depth.load(Ordering::Relaxed) != 0 {
                    return false;
                }
                state.idle.store(true, Ordering::SeqCst);
                true
            }
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => false,
        }
    }

    /// Marks the calling CPU busy again (after a halt). Optional: a read
    /// section leaves idle by itself; this only spares the first one the
    /// fence.
    #[allow(irrefutable_let_patterns)] // refutable with the host identities
    pub fn leave_idle(&self) {
        if let IdentityKind::Trusted(_) = self.identity.kind {
            let state = &self.cpus[self.current_cpu()];
            if state.idle.load(Ordering::Relaxed) {
                Grace::wake(state);
            }
        }
    }

    /// Whether CPU `cpu` is marked idle.
    pub fn is_idle(&self, cpu: usize) -> bool {
        self.cpus
            .get(cpu)
            .is_some_and(|state| state.idle.load(Ordering::Relaxed))
    }

    /// Quiescent states CPU `cpu` has reported so far.
    pub fn reports(&self, cpu: usize) -> u64 {
        self.cpus
            .get(cpu)
            .map_or(0, |state| state.reports.load(Ordering::Relaxed))
    }

    /// Waits for a grace period: returns once every read section that was
    /// open on any CPU when it was called has ended. Reports the caller's own
    /// quiescent state while it waits (so writers on two CPUs never wait for
    /// each other), spins, and calls `relax` between checks once spinning has
    /// not been enough.
    ///
    /// Panics if called inside a read section (it would wait for itself).
    pub fn synchronize(&self, relax: fn()) {
        self.synchronize_watched(relax, &mut |_awaited| {});
    }

    /// [`synchronize`](Grace::synchronize), calling `watch` after each
    /// `relax` step with the CPUs still awaited: the caller can time the
    /// wait and report a grace period that does not end (a CPU that stays
    /// in a read section, or never passes a quiescent state).
    pub fn synchronize_watched(&self, relax: fn(), watch: &mut dyn FnMut(Awaited<'_>)) {
        assert!(
            !self.inside_read(),
            "Grace::synchronize called inside a read section"
        );
        fence(Ordering::SeqCst);
        let me = match self.identity.kind {
            IdentityKind::Trusted(_) => Some(self.current_cpu()),
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => None,
        };
        // (cpu, count seen) for every CPU still to be seen quiescent.
        let mut waiting: Vec<(usize, u64)> = Vec::new();
        for (cpu, state) in self.cpus.iter().enumerate() {
            if Some(cpu) == me || self.quiescent_now(state) {
                continue;
            }
            waiting.push((cpu, state.reports.load(Ordering::SeqCst)));
            state.wanted.store(true, Ordering::SeqCst);
        }
        let mut spins = 0u32;
        while !waiting.is_empty() {
            waiting.retain(|&(cpu, seen)| {
                let state = &self.cpus[cpu];
                !(self.quiescent_now(state) || state.reports.load(Ordering::SeqCst) != seen)
            });
            if waiting.is_empty() {
                break;
            }
            self.quiescent_state();
            if spins < SPINS_BEFORE_RELAX {
                spins += 1;
                core::hint::spin_loop();
            } else {
                relax();
                watch(Awaited { waiting: &waiting });
            }
        }
        fence(Ordering::SeqCst);
    }

    /// Whether `state`'s CPU is quiescent by its flags alone: idle (trusted
    /// identities) or with no thread inside (host threads).
    fn quiescent_now(&self, state: &CpuGrace) -> bool {
        match self.identity.kind {
            IdentityKind::Trusted(_) => state.idle.load(Ordering::SeqCst),
            #[cfg(any(test, feature = "std"))]
            IdentityKind::HostThreads => state.owner.load(Ordering::SeqCst) == 0,
        }
    }
}
