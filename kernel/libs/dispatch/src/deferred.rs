//! Deferred (asynchronous) handlers: a bounded queue of argument copies per handler.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::accounting::Measurement;
use crate::dispatcher::{lock_with, DispatcherInner};
use crate::identity::HandlerId;

/// `running_on` when no CPU is draining the queue.
const NOT_RUNNING: usize = usize::MAX;

/// The raise side of a deferred handler: queue a copy of the argument.
pub(crate) trait DeferredTarget<A: ?Sized>: Send + Sync {
    /// Queues a copy of `argument` (raised on `cpu`); counts it as dropped if
    /// the queue is full.
    fn enqueue(&self, argument: &A, cpu: usize);
}

/// The running side of a deferred handler, independent of the argument type.
pub(crate) trait DeferredWork: Send + Sync {
    /// Runs the calls queued now (unless another CPU is running them) on
    /// `cpu`; returns how many ran.
    fn run(&self, cpu: usize) -> usize;

    /// After the handler left every handler list: stops future calls, waits
    /// for a call in progress on another CPU, and drops the queued copies.
    fn retire(&self, current_cpu: usize);

    /// Number of calls dropped because the queue was full.
    fn dropped(&self) -> u64;
}

/// The function of a deferred handler, before installation.
pub(crate) type DeferredFunction<A> = Box<dyn Fn(A) + Send + Sync>;

/// Builds the queue of a deferred handler at installation (type-erased, so
/// that handlers of events with unsized arguments need not name it).
pub(crate) trait DeferredFactory<A: ?Sized>: Send {
    /// The handler's state, seen from the raise side and from the runner.
    fn build(
        self: Box<Self>,
        handler: HandlerId,
        capacity: usize,
        measurement: Option<Measurement>,
        dispatcher: Arc<DispatcherInner>,
    ) -> (Arc<dyn DeferredTarget<A>>, Arc<dyn DeferredWork>);
}

/// A deferred handler's function waiting to be installed.
pub(crate) struct DeferredParts<A> {
    pub(crate) function: DeferredFunction<A>,
}

impl<A: Clone + Send + 'static> DeferredFactory<A> for DeferredParts<A> {
    fn build(
        self: Box<Self>,
        handler: HandlerId,
        capacity: usize,
        measurement: Option<Measurement>,
        dispatcher: Arc<DispatcherInner>,
    ) -> (Arc<dyn DeferredTarget<A>>, Arc<dyn DeferredWork>) {
        let state = Arc::new(DeferredState {
            handler,
            function: self.function,
            queue: ArrayQueue::new(capacity),
            run_lock: spin::Mutex::new(()),
            running_on: AtomicUsize::new(NOT_RUNNING),
            removed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            measurement,
            dispatcher,
        });
        let target: Arc<dyn DeferredTarget<A>> = state.clone();
        let work: Arc<dyn DeferredWork> = state;
        (target, work)
    }
}

/// A deferred handler once installed.
struct DeferredState<A> {
    handler: HandlerId,
    function: DeferredFunction<A>,
    /// Argument copies waiting to be run (allocated at installation).
    queue: ArrayQueue<A>,
    /// Held by the CPU draining the queue.
    run_lock: spin::Mutex<()>,
    /// The CPU holding `run_lock`, or [`NOT_RUNNING`].
    running_on: AtomicUsize,
    /// Set when the handler is removed: no call starts afterwards.
    removed: AtomicBool,
    /// Calls dropped because the queue was full.
    dropped: AtomicU64,
    measurement: Option<Measurement>,
    dispatcher: Arc<DispatcherInner>,
}

impl<A> DeferredState<A> {
    /// Drops every queued copy, keeping the dispatcher's pending count right.
    fn discard_queued(&self) {
        while self.queue.pop().is_some() {
            self.dispatcher
                .pending_deferred
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<A: Clone + Send> DeferredTarget<A> for DeferredState<A> {
    fn enqueue(&self, argument: &A, cpu: usize) {
        // Count first, so that the pending count never drops below the
        // number of queued copies (the runner decrements after taking one).
        let previous = self
            .dispatcher
            .pending_deferred
            .fetch_add(1, Ordering::AcqRel);
        match self.queue.push(argument.clone()) {
            Ok(()) => {
                if previous == 0 {
                    (self.dispatcher.platform.deferred_ready)(cpu);
                }
            }
            Err(_full) => {
                self.dispatcher
                    .pending_deferred
                    .fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<A: Send> DeferredWork for DeferredState<A> {
    fn run(&self, cpu: usize) -> usize {
        let Some(_running) = self.run_lock.try_lock() else {
            return 0;
        };
        self.running_on.store(cpu, Ordering::SeqCst);
        let mut ran = 0;
        for _ in 0..self.queue.len() {
            if self.removed.load(Ordering::SeqCst) {
                break;
            }
            let Some(argument) = self.queue.pop() else {
                break;
            };
            self.dispatcher
                .pending_deferred
                .fetch_sub(1, Ordering::AcqRel);
            match &self.measurement {
                None => (self.function)(argument),
                Some(measurement) => measurement.call(&self.dispatcher.platform, cpu, true, || {
                    (self.function)(argument)
                }),
            }
            ran += 1;
        }
        self.running_on.store(NOT_RUNNING, Ordering::SeqCst);
        ran
    }

    fn retire(&self, current_cpu: usize) {
        self.removed.store(true, Ordering::SeqCst);
        // A handler removing itself from its own deferred call must not wait
        // for itself; its runner checks `removed` before the next call.
        if self.running_on.load(Ordering::SeqCst) != current_cpu {
            drop(lock_with(&self.run_lock, self.dispatcher.platform.relax));
        }
        self.discard_queued();
        self.dispatcher.unregister_deferred(self.handler);
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<A> Drop for DeferredState<A> {
    fn drop(&mut self) {
        self.discard_queued();
    }
}
