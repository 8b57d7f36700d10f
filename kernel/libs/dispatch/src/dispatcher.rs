//! The dispatcher: per-CPU raise state, handler identifiers, extension commits, accounts, deferred work.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{compiler_fence, AtomicU64, AtomicUsize, Ordering};

use crate::accounting::{DomainAccount, DomainUsage};
use crate::deferred::DeferredWork;
use crate::event::EventBuilder;
use crate::identity::{DomainId, HandlerId};
use crate::padded::CachePadded;
use crate::platform::{Platform, MAX_CPUS};
use spindle_grace::Grace;

/// The first value of the extension visibility sequence (see
/// [`DispatcherInner::commit`]); pending extension handlers wait for a later one.
const FIRST_VISIBLE_SEQUENCE: u64 = 1;

/// One registered deferred handler: its identifier and its queue.
type DeferredEntry = (HandlerId, Weak<dyn DeferredWork>);

/// The registry of deferred handlers, replaced (never edited) on each change,
/// so that [`Dispatcher::run_deferred`] can walk it without holding the lock.
type DeferredRegistry = Arc<Vec<DeferredEntry>>;

/// State of one CPU that only that CPU writes on the raise path.
struct CpuState {
    /// How many raises of this dispatcher are in progress on this CPU
    /// (nesting: a handler raising, an interrupt raising).
    raise_depth: AtomicUsize,
}

/// Shared state behind a [`Dispatcher`] handle and every event it created.
pub(crate) struct DispatcherInner {
    /// The environment.
    pub(crate) platform: Platform,
    /// Per-CPU raise depth, one cache line each (read-locked raises).
    cpu_states: Box<[CachePadded<CpuState>]>,
    /// The grace domain of raises, when the platform has a trusted CPU
    /// identity: raises are its read sections, and depth is counted there.
    pub(crate) grace: Option<Arc<Grace>>,
    /// Extension visibility: a raise reads it once; extension handlers are
    /// visible to raises that read a value in their `[enabled, disabled)`.
    /// On its own cache lines: raises read it, only commits write it.
    visible_sequence: CachePadded<AtomicU64>,
    /// Serialises changes of `visible_sequence`.
    commit_lock: spin::Mutex<()>,
    /// Next handler identifier.
    next_handler: AtomicU64,
    /// Usage counters of every domain that had a measured handler.
    accounts: spin::Mutex<Vec<Arc<DomainAccount>>>,
    /// Every deferred handler.
    deferred: spin::Mutex<DeferredRegistry>,
    /// Deferred calls queued and not yet taken. On its own cache lines, so
    /// that deferred traffic does not disturb the fields raises read.
    pub(crate) pending_deferred: CachePadded<AtomicUsize>,
}

/// Marks the current CPU as inside a raise until dropped (restores the depth
/// it found, so nested raises unwind in order).
pub(crate) struct RaiseScope<'dispatcher> {
    depth: &'dispatcher AtomicUsize,
    previous: usize,
}

impl Drop for RaiseScope<'_> {
    #[inline]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.depth.store(self.previous, Ordering::Relaxed);
    }
}

/// How many times a waiting installer or remover retries with a plain
/// `spin_loop` hint before it starts calling the platform's `relax` between
/// attempts (most waits are for a raise of a few nanoseconds to end).
pub(crate) const SPINS_BEFORE_RELAX: u32 = 256;

/// The waiting step of installers and removers: [`SPINS_BEFORE_RELAX`] spin
/// hints, then the platform's `relax` at every step.
pub(crate) struct Backoff {
    relax: fn(),
    spins: u32,
}

impl Backoff {
    /// A fresh wait that relaxes with `relax` once spinning is over.
    pub(crate) fn new(relax: fn()) -> Backoff {
        Backoff { relax, spins: 0 }
    }

    /// Waits one step before the next attempt.
    pub(crate) fn wait(&mut self) {
        if self.spins < SPINS_BEFORE_RELAX {
            self.spins += 1;
            core::hint::spin_loop();
        } else {
            (self.relax)();
        }
    }
}

/// Waits (see [`Backoff`]) until `mutex` is free and returns its guard.
pub(crate) fn lock_with<T>(mutex: &spin::Mutex<T>, relax: fn()) -> spin::MutexGuard<'_, T> {
    let mut backoff = Backoff::new(relax);
    loop {
        if let Some(guard) = mutex.try_lock() {
            return guard;
        }
        backoff.wait();
    }
}

impl DispatcherInner {
    /// The index of the current CPU, folded into `0..cpus` (with a grace
    /// domain, out of range panics instead: see [`Grace::current_cpu`]).
    #[inline]
    pub(crate) fn cpu_index(&self) -> usize {
        if let Some(grace) = &self.grace {
            return grace.current_cpu();
        }
        let cpu = (self.platform.current_cpu)();
        let cpus = self.cpu_states.len();
        if cpu < cpus {
            cpu
        } else {
            cpu % cpus
        }
    }

    /// Number of CPUs served.
    pub(crate) fn cpus(&self) -> usize {
        self.cpu_states.len()
    }

    /// Marks `cpu` as inside a raise. The depth is a plain load and store of
    /// the CPU's own counter: nested raises on one CPU end in reverse order,
    /// so each restores what it found.
    #[inline]
    pub(crate) fn enter_raise(&self, cpu: usize) -> RaiseScope<'_> {
        let depth = &self.cpu_states[cpu].raise_depth;
        let previous = depth.load(Ordering::Relaxed);
        depth.store(previous.wrapping_add(1), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        RaiseScope { depth, previous }
    }

    /// Whether the current CPU is inside a raise of this dispatcher.
    pub(crate) fn inside_raise(&self) -> bool {
        if let Some(grace) = &self.grace {
            return grace.inside_read();
        }
        self.cpu_states[self.cpu_index()]
            .raise_depth
            .load(Ordering::Relaxed)
            != 0
    }

    /// A fresh handler identifier.
    pub(crate) fn next_handler_id(&self) -> HandlerId {
        HandlerId(self.next_handler.fetch_add(1, Ordering::Relaxed))
    }

    /// The visibility sequence a raise uses (see [`DispatcherInner::commit`]).
    #[inline]
    pub(crate) fn visible_sequence(&self) -> u64 {
        self.visible_sequence.load(Ordering::Acquire)
    }

    /// Moves the visibility sequence to its next value `next` after `apply`
    /// (which stores `next` into extension switches) has run: every raise that
    /// reads `next` or later sees what `apply` stored, every raise that read an
    /// earlier value ignores it. One store switches a whole extension.
    pub(crate) fn commit(&self, apply: impl FnOnce(u64)) {
        let _serialised = lock_with(&self.commit_lock, self.platform.relax);
        let next = self.visible_sequence.load(Ordering::Relaxed) + 1;
        apply(next);
        self.visible_sequence.store(next, Ordering::Release);
    }

    /// The usage counters of `domain`, created on first use.
    pub(crate) fn account(&self, domain: DomainId) -> Arc<DomainAccount> {
        let mut accounts = lock_with(&self.accounts, self.platform.relax);
        if let Some(account) = accounts.iter().find(|account| account.domain() == domain) {
            return Arc::clone(account);
        }
        let account = Arc::new(DomainAccount::new(domain, self.cpus()));
        accounts.push(Arc::clone(&account));
        account
    }

    /// Adds a deferred handler to the registry (dropping entries of handlers
    /// that no longer exist).
    pub(crate) fn register_deferred(&self, handler: HandlerId, work: Weak<dyn DeferredWork>) {
        let mut registry = lock_with(&self.deferred, self.platform.relax);
        let mut entries: Vec<DeferredEntry> = registry
            .iter()
            .filter(|(_, work)| work.strong_count() > 0)
            .cloned()
            .collect();
        entries.push((handler, work));
        *registry = Arc::new(entries);
    }

    /// Removes a deferred handler from the registry.
    pub(crate) fn unregister_deferred(&self, handler: HandlerId) {
        let mut registry = lock_with(&self.deferred, self.platform.relax);
        let entries: Vec<DeferredEntry> = registry
            .iter()
            .filter(|(identifier, work)| *identifier != handler && work.strong_count() > 0)
            .cloned()
            .collect();
        *registry = Arc::new(entries);
    }
}

/// The event dispatcher: creates events, accounts handler time per domain and
/// runs deferred handler calls. A cheap handle (`Clone` shares it); the
/// kernel keeps one, e.g. in a `spin::Once<Dispatcher>`.
#[derive(Clone)]
pub struct Dispatcher {
    pub(crate) inner: Arc<DispatcherInner>,
}

impl core::fmt::Debug for Dispatcher {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Dispatcher")
            .field("cpus", &self.cpus())
            .field("pending_deferred", &self.pending_deferred())
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher for `cpus` CPUs (clamped to `1..=MAX_CPUS`), whose
    /// platform's `current_cpu` returns indices below `cpus`.
    pub fn new(platform: Platform, cpus: usize) -> Dispatcher {
        let cpus = cpus.clamp(1, MAX_CPUS);
        Dispatcher {
            inner: Arc::new(DispatcherInner {
                platform,
                grace: platform
                    .identity
                    .map(|identity| Arc::new(Grace::new(identity, cpus))),
                cpu_states: (0..cpus)
                    .map(|_| {
                        CachePadded(CpuState {
                            raise_depth: AtomicUsize::new(0),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
                visible_sequence: CachePadded(AtomicU64::new(FIRST_VISIBLE_SEQUENCE)),
                commit_lock: spin::Mutex::new(()),
                next_handler: AtomicU64::new(HandlerId::FIRST_INSTALLED),
                accounts: spin::Mutex::new(Vec::new()),
                deferred: spin::Mutex::new(Arc::new(Vec::new())),
                pending_deferred: CachePadded(AtomicUsize::new(0)),
            }),
        }
    }

    /// Number of CPUs this dispatcher serves.
    pub fn cpus(&self) -> usize {
        self.inner.cpus()
    }

    /// Starts creating an event named `name` with argument type `A` and result
    /// type `R`, whose default handler is `default_handler`; see
    /// [`EventBuilder`] for the owner's other choices.
    pub fn event<A, R>(
        &self,
        name: &'static str,
        default_handler: impl Fn(&A) -> R + Send + Sync + 'static,
    ) -> EventBuilder<A, R>
    where
        A: ?Sized + 'static,
        R: 'static,
    {
        EventBuilder::new(self, name, default_handler)
    }

    /// What `domain`'s measured handler calls have cost so far (zero if it
    /// never had a measured handler).
    pub fn usage(&self, domain: DomainId) -> DomainUsage {
        let accounts = lock_with(&self.inner.accounts, self.inner.platform.relax);
        accounts
            .iter()
            .find(|account| account.domain() == domain)
            .map(|account| account.usage())
            .unwrap_or_default()
    }

    /// Whether raises are protected by grace periods (the platform came from
    /// [`Platform::per_cpu`]) rather than by per-CPU read locks.
    pub fn uses_grace_periods(&self) -> bool {
        self.inner.grace.is_some()
    }

    /// Tells the dispatcher that the calling CPU is outside every raise, if
    /// it is (ignored inside a raise, so always safe to call): removals
    /// waiting for a grace period may count this CPU as done. The kernel
    /// calls it at every timer tick and in its wait loops. Does nothing
    /// without grace periods.
    #[inline]
    pub fn quiescent_state(&self) {
        if let Some(grace) = &self.inner.grace {
            grace.quiescent_state();
        }
    }

    /// Marks the calling CPU idle (about to halt) if it is outside every
    /// raise: removals stop waiting for it until its next raise. Returns
    /// whether it was marked.
    pub fn enter_idle(&self) -> bool {
        self.inner
            .grace
            .as_ref()
            .is_some_and(|grace| grace.enter_idle())
    }

    /// Marks the calling CPU busy after a halt (optional: its next raise
    /// would do it).
    pub fn leave_idle(&self) {
        if let Some(grace) = &self.inner.grace {
            grace.leave_idle();
        }
    }

    /// Whether the calling CPU is inside a raise of this dispatcher (the
    /// kernel does not preempt or switch strands there).
    #[inline]
    pub fn inside_raise(&self) -> bool {
        self.inner.inside_raise()
    }

    /// Whether deferred handler calls are queued. An idle loop checks this
    /// (with interrupts disabled) before halting.
    pub fn has_deferred(&self) -> bool {
        self.inner.pending_deferred.load(Ordering::Acquire) != 0
    }

    /// Number of deferred handler calls queued and not yet taken.
    pub fn pending_deferred(&self) -> usize {
        self.inner.pending_deferred.load(Ordering::Acquire)
    }

    /// Runs queued deferred handler calls on the current CPU and returns how
    /// many ran. Each queued call runs exactly once, on whichever CPU takes
    /// it; one handler's calls run one at a time, in the order they were
    /// queued (a handler being drained by another CPU is skipped). Takes at
    /// most the calls queued when it reaches each handler, so a steady stream
    /// of raises cannot keep it here: call it again while
    /// [`has_deferred`](Dispatcher::has_deferred) says so. Inside a raise it
    /// does nothing and returns 0 (deferred work never runs inside a raiser).
    pub fn run_deferred(&self) -> usize {
        let inner = &self.inner;
        if inner.pending_deferred.load(Ordering::Acquire) == 0 {
            return 0;
        }
        if inner.inside_raise() {
            return 0;
        }
        let cpu = inner.cpu_index();
        let registry = Arc::clone(&lock_with(&inner.deferred, inner.platform.relax));
        registry
            .iter()
            .filter_map(|(_, work)| work.upgrade())
            .map(|work| work.run(cpu))
            .sum()
    }
}
