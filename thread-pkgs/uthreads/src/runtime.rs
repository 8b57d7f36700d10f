//! The package at work: [`Runtime`] runs threads on carrier strands, each thread in its own execution context, with the [`Package`] deciding which thread each carrier runs next.
//!
//! A carrier is a strand running [`Runtime`]'s carrier loop: it asks the
//! package for a thread, resumes that thread's context until the thread
//! suspends (it yielded, or blocked on a join, a mutex, a condition variable
//! or a semaphore), finishes, or is handed back because the kernel preempted
//! the carrier (SPIN's Checkpoint: the thread goes back to the ready queue,
//! and the loop's next pick is the package's Resume), and asks again. A
//! thread switch is two context switches (thread → carrier loop → thread)
//! and no kernel entry; a thread that makes a blocking kernel call blocks
//! its whole carrier.
//!
//! The package changes a thread's state before the thread has switched out
//! (a `lock` that must wait marks it blocked at once), so another carrier may
//! pick the thread again (after an `unlock`) while its first carrier is still
//! switching away from it. Each thread's context therefore lives in its slot
//! only while nobody runs it: a carrier takes it out to resume it and puts it
//! back afterwards, and a carrier that picks a thread whose context is still
//! out waits for it (briefly: the other carrier is in its last few
//! instructions).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::num::NonZeroU16;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::{Mutex, Once};
use spindle_sched_ext::{CpuId, CpuSet, SchedParams};
use spindle_services::contexts::{Contexts, ExecutionContext, Outcome, Suspend};
use spindle_services::strands::Strands;

use crate::{
    AcquireOutcome, CarrierId, CondvarId, Error, JoinOutcome, MutexId, Package, SemaphoreId,
    ThreadId,
};

/// What a thread body gets: its identity and the package's operations.
pub type ThreadBody = Box<dyn FnOnce(&Thread<'_>) + Send>;

/// One thread table slot: its thread's context, taken out while a carrier
/// runs it.
struct Slot {
    context: Mutex<Option<Box<dyn ExecutionContext>>>,
    /// The thread is inside the package's critical section (a call that
    /// takes the package's or the runtime's locks).
    in_package: AtomicBool,
}

/// What the runtime counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeCounts {
    /// Threads spawned.
    pub spawned: u64,
    /// Threads that finished.
    pub finished: u64,
    /// Contexts made (the rest of the threads reused a finished one's).
    pub contexts_made: u64,
    /// Times a carrier found the picked thread's context still out.
    pub context_waits: u64,
    /// Threads the kernel handed back when it preempted their carrier.
    pub preemptions: u64,
    /// Threads preempted inside the package's critical section and
    /// continued at once.
    pub recoveries: u64,
}

/// What a runtime's threads run on when it is not the runtime's own carrier
/// strands: a scheduler-activations package (`spindle-activations`) is a
/// host. It runs [`Runtime::pick`] and [`Runtime::run_thread`] on its own
/// activations, and takes over the two things that differ.
pub trait Host: Send + Sync {
    /// `thread`'s blocking kernel call (it calls
    /// [`Thread::leave_carrier`] around the kernel's call).
    fn block_in_kernel(&self, thread: &Thread<'_>, nanoseconds: u64);
    /// Threads may have become ready: an idle processor should look.
    fn threads_ready(&self);
}

/// Threads of one package instance on `carriers` strands.
pub struct Runtime {
    package: Package,
    /// The CPU of carrier 0 (carrier `i` runs on `first_cpu + i`, modulo
    /// the CPUs).
    first_cpu: u16,
    /// Set when something other than the carriers runs the threads.
    host: Once<Arc<dyn Host>>,
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Finished contexts kept for new threads.
    spare: Mutex<Vec<Box<dyn ExecutionContext>>>,
    /// Threads spawned and not yet finished.
    live: AtomicU64,
    spawned: AtomicU64,
    finished: AtomicU64,
    contexts_made: AtomicU64,
    context_waits: AtomicU64,
    preemptions: AtomicU64,
    recoveries: AtomicU64,
}

/// Why the runtime could not start.
#[derive(Debug)]
pub enum RuntimeError {
    /// The package refused (see [`Error`]).
    Package(Error),
    /// A context or a carrier strand could not be made.
    Kernel(String),
}

impl From<Error> for RuntimeError {
    fn from(error: Error) -> Self {
        RuntimeError::Package(error)
    }
}

impl Runtime {
    /// A runtime with `carriers` carriers (one strand each, carrier `i`
    /// pinned to CPU `i % cpu_count`).
    pub fn new(
        strands: &'static dyn Strands,
        contexts: &'static dyn Contexts,
        carriers: NonZeroU16,
    ) -> Arc<Runtime> {
        Self::new_from_cpu(strands, contexts, carriers, 0)
    }

    /// A runtime whose carrier `i` runs on CPU `(first_cpu + i) %
    /// cpu_count` (so that a comparison can leave CPU 0 to the driver, as
    /// processor allocation does).
    pub fn new_from_cpu(
        strands: &'static dyn Strands,
        contexts: &'static dyn Contexts,
        carriers: NonZeroU16,
        first_cpu: u16,
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            package: Package::new(carriers),
            first_cpu,
            host: Once::new(),
            strands,
            contexts,
            slots: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            live: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            contexts_made: AtomicU64::new(0),
            context_waits: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        })
    }

    /// The package (its counters and invariant check).
    pub fn package(&self) -> &Package {
        &self.package
    }

    /// What the runtime counted so far.
    pub fn counts(&self) -> RuntimeCounts {
        RuntimeCounts {
            spawned: self.spawned.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            contexts_made: self.contexts_made.load(Ordering::Relaxed),
            context_waits: self.context_waits.load(Ordering::Relaxed),
            preemptions: self.preemptions.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }

    /// Runs `main` as the first thread, with one carrier strand per carrier,
    /// and returns once every thread has finished and every carrier exited.
    /// Called from a CPU's own context; gives up after `timeout_ns`.
    pub fn run(
        self: &Arc<Self>,
        main: impl FnOnce(&Thread<'_>) + Send + 'static,
        timeout_ns: u64,
    ) -> Result<(), RuntimeError> {
        self.spawn(Box::new(main), None)?;
        let carriers = self.package.carrier_count();
        let cpus = self.strands.cpu_count().max(1);
        let exited = Arc::new(AtomicU64::new(0));
        let mut held = Vec::new();
        for carrier in 0..carriers {
            let runtime = Arc::clone(self);
            let exited = Arc::clone(&exited);
            let body = Box::new(move || {
                runtime.carrier_loop(CarrierId(carrier));
                exited.fetch_add(1, Ordering::Release);
            });
            let cpu = CpuSet::single(CpuId((self.first_cpu + carrier) % cpus));
            let strand = self
                .strands
                .spawn_held(body, cpu, SchedParams::default())
                .map_err(RuntimeError::Kernel)?;
            held.push(strand);
        }
        for strand in held {
            self.strands.start(strand);
        }
        let done = || exited.load(Ordering::Acquire) == u64::from(carriers);
        if self.strands.wait_until(&done, timeout_ns) {
            Ok(())
        } else {
            Err(RuntimeError::Kernel(alloc::format!(
                "threads did not finish in time: {:?}",
                self.counts()
            )))
        }
    }

    /// Makes `host` run this runtime's threads instead of carrier strands
    /// (set once, before [`start_main`](Runtime::start_main)).
    pub fn set_host(&self, host: Arc<dyn Host>) {
        self.host.call_once(|| host);
    }

    /// For a host: creates the first thread, running `main`.
    pub fn start_main(
        self: &Arc<Self>,
        main: impl FnOnce(&Thread<'_>) + Send + 'static,
    ) -> Result<ThreadId, RuntimeError> {
        self.spawn(Box::new(main), None)
    }

    /// Threads spawned and not yet finished.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    /// Ready threads waiting on all carriers' queues.
    pub fn waiting(&self) -> usize {
        (0..self.package.carrier_count())
            .filter_map(|carrier| self.package.ready_len(CarrierId(carrier)).ok())
            .sum()
    }

    /// For a host: a thread that left its carrier (see
    /// [`Thread::leave_carrier`]) becomes ready again.
    pub fn make_ready(&self, thread: ThreadId) -> Result<(), Error> {
        self.package.make_ready(thread)?;
        self.threads_ready();
        Ok(())
    }

    /// Tells the host (if any) that threads may have become ready.
    fn threads_ready(&self) {
        if let Some(host) = self.host.get() {
            host.threads_ready();
        }
    }

    /// Creates a thread running `body`, ready on `carrier` (or the least
    /// loaded one).
    fn spawn(
        self: &Arc<Self>,
        body: ThreadBody,
        carrier: Option<CarrierId>,
    ) -> Result<ThreadId, RuntimeError> {
        // The slot and its context exist before the thread is ready, so a
        // carrier that picks it finds them.
        self.live.fetch_add(1, Ordering::AcqRel);
        let id = match self.package.spawn(carrier) {
            Ok(id) => id,
            Err(error) => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                return Err(error.into());
            }
        };
        let runtime = Arc::clone(self);
        // Looked up here, not in the thread: its first instructions must not
        // take a lock the thread could be preempted holding.
        let slot = self.slot(id);
        let thread_slot = Arc::clone(&slot);
        let context_body = Box::new(move |suspend: &dyn Suspend| {
            let thread = Thread {
                runtime: &runtime,
                id,
                suspend,
                slot: thread_slot,
            };
            body(&thread);
        });
        let reused = self.spare.lock().pop();
        let context = match reused {
            Some(mut context) => match context.reuse(context_body) {
                Ok(()) => context,
                Err(_) => unreachable!("spare contexts have finished"),
            },
            None => {
                self.contexts_made.fetch_add(1, Ordering::Relaxed);
                self.contexts
                    .create(context_body)
                    .map_err(RuntimeError::Kernel)?
            }
        };
        *slot.context.lock() = Some(context);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        self.threads_ready();
        Ok(id)
    }

    /// The slot of thread table index `id.index` (made on first use).
    fn slot(&self, id: ThreadId) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        let index = id.index as usize;
        while slots.len() <= index {
            slots.push(Arc::new(Slot {
                context: Mutex::new(None),
                in_package: AtomicBool::new(false),
            }));
        }
        Arc::clone(&slots[index])
    }

    /// A carrier's life: run threads until none is left.
    fn carrier_loop(self: &Arc<Self>, carrier: CarrierId) {
        loop {
            match self.package.next_for(carrier) {
                Ok(Some(thread)) => {
                    self.run_thread(carrier, thread);
                }
                Ok(None) => {
                    if self.live.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    // Nothing ready here or to steal: let other strands run.
                    self.strands.yield_now();
                }
                Err(error) => {
                    // A carrier never picks while it runs a thread.
                    unreachable!("carrier {carrier:?}: {error:?}");
                }
            }
        }
    }

    /// The thread `carrier` runs next (its own queue first, else one stolen
    /// from the longest other queue), if any.
    pub fn pick(&self, carrier: CarrierId) -> Result<Option<ThreadId>, Error> {
        self.package.next_for(carrier)
    }

    /// Runs `thread` (just picked for `carrier`) until it suspends,
    /// finishes or is preempted; returns how it came back.
    pub fn run_thread(self: &Arc<Self>, carrier: CarrierId, thread: ThreadId) -> Outcome {
        let slot = self.slot(thread);
        let mut context = loop {
            if let Some(context) = slot.context.lock().take() {
                break context;
            }
            // Its last carrier is still switching away from it.
            self.context_waits.fetch_add(1, Ordering::Relaxed);
            core::hint::spin_loop();
        };
        let mut outcome = context.resume();
        while outcome == Outcome::Preempted && slot.in_package.load(Ordering::Acquire) {
            // Critical-section recovery: preempted inside the package (it
            // may hold the package's lock), the thread is continued to the
            // end of the section before its state is reused.
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            outcome = context.resume();
        }
        if outcome == Outcome::Preempted {
            // SPIN's Checkpoint: the kernel took the carrier while the thread
            // ran, and handed the thread's state back in its context. It goes
            // back to the ready queue; the carrier loop's next pick is the
            // package's Resume (round robin: another thread first).
            let _ = self.package.checkpoint(carrier, thread);
            self.preemptions.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == Outcome::Finished {
            let joiners = self.package.exit(thread);
            let _ = self.package.reap(thread);
            self.spare.lock().push(context);
            self.finished.fetch_add(1, Ordering::Relaxed);
            self.live.fetch_sub(1, Ordering::AcqRel);
            if joiners.is_ok_and(|joiners| !joiners.is_empty()) {
                self.threads_ready();
            }
            return outcome;
        }
        // The thread already told the package why it stopped (yield, or a
        // wait that must block): only the context goes back.
        *slot.context.lock() = Some(context);
        outcome
    }
}

/// A running thread's view of its package: the operations that may switch.
pub struct Thread<'a> {
    runtime: &'a Arc<Runtime>,
    id: ThreadId,
    suspend: &'a dyn Suspend,
    slot: Arc<Slot>,
}

impl Thread<'_> {
    /// This thread.
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// The kernel's strand operations (the clock, histograms).
    pub fn strands(&self) -> &'static dyn Strands {
        self.runtime.strands
    }

    /// Creates a thread (ready on the least loaded carrier).
    pub fn spawn(
        &self,
        body: impl FnOnce(&Thread<'_>) + Send + 'static,
    ) -> Result<ThreadId, RuntimeError> {
        self.in_package(|| self.runtime.spawn(Box::new(body), None))
    }

    /// Gives the carrier to the next ready thread (this one goes to the back).
    pub fn yield_now(&self) {
        self.in_package(|| {
            if self.runtime.package.yield_now(self.id).is_ok() {
                self.switch_out();
            }
        });
    }

    /// Waits until `target` has finished (at once if it has).
    pub fn join(&self, target: ThreadId) -> Result<(), Error> {
        self.in_package(|| match self.runtime.package.join(self.id, target) {
            Ok(JoinOutcome::AlreadyExited) => Ok(()),
            Ok(JoinOutcome::MustWait) => {
                self.switch_out();
                Ok(())
            }
            // A reaped thread has finished too.
            Err(Error::UnknownThread(_)) => Ok(()),
            Err(error) => Err(error),
        })
    }

    /// A new mutex.
    pub fn new_mutex(&self) -> Result<MutexId, Error> {
        self.in_package(|| self.runtime.package.new_mutex())
    }

    /// Takes `mutex`, waiting (FIFO) if another thread holds it.
    pub fn lock(&self, mutex: MutexId) -> Result<(), Error> {
        self.in_package(|| {
            if self.runtime.package.lock(mutex, self.id)? == AcquireOutcome::MustWait {
                // Woken as the owner (FIFO hand-off).
                self.switch_out();
            }
            Ok(())
        })
    }

    /// Releases `mutex` (the next waiter becomes its owner and ready).
    pub fn unlock(&self, mutex: MutexId) -> Result<(), Error> {
        self.in_package(|| {
            let woken = self.runtime.package.unlock(mutex, self.id)?;
            self.woke(woken.is_some());
            Ok(())
        })
    }

    /// A new condition variable.
    pub fn new_condvar(&self) -> Result<CondvarId, Error> {
        self.in_package(|| self.runtime.package.new_condvar())
    }

    /// Releases `mutex` (which this thread holds), waits on `condvar`, and
    /// returns holding `mutex` again.
    pub fn wait(&self, condvar: CondvarId, mutex: MutexId) -> Result<(), Error> {
        self.in_package(|| {
            let next_owner = self.runtime.package.wait(condvar, mutex, self.id)?;
            self.woke(next_owner.is_some());
            // Woken as the mutex's owner (signal hands it over FIFO).
            self.switch_out();
            Ok(())
        })
    }

    /// Wakes `condvar`'s first waiter (it re-acquires its mutex).
    pub fn signal(&self, condvar: CondvarId) -> Result<(), Error> {
        self.in_package(|| {
            let woken = self.runtime.package.signal(condvar)?;
            self.woke(woken.is_some());
            Ok(())
        })
    }

    /// Wakes every waiter of `condvar`.
    pub fn broadcast(&self, condvar: CondvarId) -> Result<(), Error> {
        self.in_package(|| {
            let woken = self.runtime.package.broadcast(condvar)?;
            self.woke(!woken.is_empty());
            Ok(())
        })
    }

    /// A new counting semaphore.
    pub fn new_semaphore(&self, initial: u32) -> Result<SemaphoreId, Error> {
        self.in_package(|| self.runtime.package.new_semaphore(initial))
    }

    /// Takes a unit of `semaphore`, waiting (FIFO) for one.
    pub fn down(&self, semaphore: SemaphoreId) -> Result<(), Error> {
        self.in_package(|| {
            if self.runtime.package.down(semaphore, self.id)? == AcquireOutcome::MustWait {
                self.switch_out();
            }
            Ok(())
        })
    }

    /// Returns a unit to `semaphore` (handed to the first waiter, if any).
    pub fn up(&self, semaphore: SemaphoreId) -> Result<(), Error> {
        self.in_package(|| {
            let woken = self.runtime.package.up(semaphore)?;
            self.woke(woken.is_some());
            Ok(())
        })
    }

    /// A blocking kernel call (a simulated I/O that waits `nanoseconds` on
    /// the kernel's timer). On carrier strands it blocks the thread's whole
    /// carrier, and no other thread runs on it meanwhile; under a host
    /// (scheduler activations) the host decides.
    pub fn block_in_kernel(&self, nanoseconds: u64) {
        match self.runtime.host.get() {
            // The host's own bookkeeping takes its locks: a critical section.
            Some(host) => self.in_package(|| host.block_in_kernel(self, nanoseconds)),
            None => self.runtime.strands.sleep(nanoseconds),
        }
    }

    /// For a host's blocking call: the thread leaves its carrier (the
    /// carrier may run other threads), `call` runs (the kernel call, still
    /// on this thread's stack), and then the thread switches out; it
    /// continues once the host calls [`Runtime::make_ready`] and a carrier
    /// picks it. All of it is one critical section of the package.
    pub fn leave_carrier(&self, call: impl FnOnce()) -> Result<(), Error> {
        self.in_package(|| {
            self.runtime.package.park(self.id)?;
            call();
            self.switch_out();
            Ok(())
        })
    }

    /// Tells the host that this operation made a thread ready (inside the
    /// critical section: the host takes its own locks).
    fn woke(&self, any: bool) {
        if any {
            self.runtime.threads_ready();
        }
    }

    /// Runs `call` as the package's critical section: a preemption inside it
    /// does not hand the thread back (see `run_thread`). An operation that
    /// switches out stays inside until it is resumed: between the package's
    /// decision (the thread is ready, or waits) and the switch, the thread's
    /// state must not be handed to the package twice.
    fn in_package<R>(&self, call: impl FnOnce() -> R) -> R {
        // Sections nest (a host's call inside an operation): the outermost
        // one ends it.
        let outer = self.slot.in_package.swap(true, Ordering::AcqRel);
        let result = call();
        self.slot.in_package.store(outer, Ordering::Release);
        result
    }

    /// Gives the carrier back to its loop; returns when a carrier resumes
    /// this thread again.
    fn switch_out(&self) {
        self.suspend.suspend();
    }
}
