//! Handlers as installers describe them, as the owner authorizes them, and as the dispatcher keeps them.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::accounting::Measurement;
use crate::deferred::{DeferredFactory, DeferredParts, DeferredTarget, DeferredWork};
use crate::error::RemoveError;
use crate::identity::{DomainId, HandlerId};

/// Capacity of a deferred handler's queue of argument copies unless the
/// installer chooses another with [`Handler::deferred_capacity`].
pub const DEFAULT_DEFERRED_CAPACITY: usize = 64;

/// A predicate on an event's argument; a handler runs only if all its guards
/// accept.
pub type Guard<A> = Box<dyn Fn(&A) -> bool + Send + Sync>;

/// A synchronous handler's function.
pub(crate) type HandlerFunction<A, R> = Box<dyn Fn(&A) -> R + Send + Sync>;

/// A guard once installed: shared by the entry and the handler lists that
/// call it inline.
pub(crate) type SharedGuard<A> = Arc<dyn Fn(&A) -> bool + Send + Sync>;

/// A handler function once installed, shared like [`SharedGuard`].
pub(crate) type SharedFunction<A, R> = Arc<dyn Fn(&A) -> R + Send + Sync>;

/// A guard and a function compiled into one call ([`Handler::guarded`]):
/// `None` when the guard refuses, the function's result otherwise.
pub(crate) type FusedFunction<A, R> = Arc<dyn Fn(&A) -> Option<R> + Send + Sync>;

/// Where a handler asks to run among the event's handlers.
///
/// Handlers run in three groups, `First`, then `Any`, then `Last`; within a
/// group they run in installation order. So when several handlers ask to be
/// `First`, the earliest installed runs first, and when several ask to be
/// `Last`, the latest installed runs last. The default handler's place is
/// set by the event's [`DefaultPolicy`](crate::DefaultPolicy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// Before every `Any` and `Last` handler.
    First,
    /// After the `First` handlers, before the `Last` handlers.
    #[default]
    Any,
    /// After every `First` and `Any` handler.
    Last,
}

/// What a handler does when it runs.
pub(crate) enum HandlerBody<A: ?Sized, R> {
    /// Called inside the raise; its result is combined.
    Synchronous(HandlerFunction<A, R>),
    /// Called later with a copy of the argument; no result.
    Deferred(Box<dyn DeferredFactory<A>>),
}

/// A handler as its installer describes it: the function, an optional guard
/// and options. Install it with [`Event::install`](crate::Event::install) or
/// add it to an [`ExtensionPlan`](crate::ExtensionPlan).
pub struct Handler<A: ?Sized + 'static, R: 'static> {
    pub(crate) body: HandlerBody<A, R>,
    pub(crate) guard: Option<Guard<A>>,
    /// `guard` and the synchronous function in one call, when both were
    /// given together ([`Handler::guarded`]).
    pub(crate) fused: Option<FusedFunction<A, R>>,
    pub(crate) order: Order,
    pub(crate) budget_nanoseconds: Option<u64>,
    pub(crate) replaces_default: bool,
    pub(crate) deferred_capacity: usize,
}

impl<A: ?Sized + 'static, R: 'static> Handler<A, R> {
    /// A synchronous handler: called inside each raise whose guards accept,
    /// its result combined with the others as the event's owner chose.
    pub fn new(function: impl Fn(&A) -> R + Send + Sync + 'static) -> Handler<A, R> {
        Handler {
            body: HandlerBody::Synchronous(Box::new(function)),
            guard: None,
            fused: None,
            order: Order::Any,
            budget_nanoseconds: None,
            replaces_default: false,
            deferred_capacity: DEFAULT_DEFERRED_CAPACITY,
        }
    }

    /// A synchronous handler with the installer's guard, compiled together:
    /// the same handler as `Handler::new(function).guard(guard)`, but a
    /// raise calls guard and function as one (the guard inlined into it),
    /// where the two-step form makes two calls. SPIN's dispatcher did the
    /// same by generating code that evaluated guards inline.
    pub fn guarded<G, F>(guard: G, function: F) -> Handler<A, R>
    where
        G: Fn(&A) -> bool + Send + Sync + 'static,
        F: Fn(&A) -> R + Send + Sync + 'static,
    {
        let (guard, function) = (Arc::new(guard), Arc::new(function));
        let fused: FusedFunction<A, R> = {
            let (guard, function) = (Arc::clone(&guard), Arc::clone(&function));
            Arc::new(move |argument: &A| {
                if guard(argument) {
                    Some(function(argument))
                } else {
                    None
                }
            })
        };
        Handler {
            fused: Some(fused),
            ..Handler::new(move |argument: &A| function(argument))
                .guard(move |argument: &A| guard(argument))
        }
    }

    /// Adds the installer's guard: the handler runs only when `guard`
    /// accepts the argument (and the owner's guard, if it imposed one, too).
    /// Replaces a guard given before.
    pub fn guard(mut self, guard: impl Fn(&A) -> bool + Send + Sync + 'static) -> Handler<A, R> {
        self.guard = Some(Box::new(guard));
        self.fused = None;
        self
    }

    /// Asks for a place among the event's handlers.
    pub fn order(mut self, order: Order) -> Handler<A, R> {
        self.order = order;
        self
    }

    /// Gives each call a time budget: calls are measured, charged to the
    /// installing domain, and a call over budget is reported to the owner.
    pub fn budget_nanoseconds(mut self, budget: u64) -> Handler<A, R> {
        self.budget_nanoseconds = Some(budget);
        self
    }

    /// Asks to replace the event's default handler: while this handler runs
    /// in a raise, the default does not (only on events whose owner chose
    /// [`DefaultPolicy::Replaceable`](crate::DefaultPolicy::Replaceable); the
    /// authorization procedure sees the request).
    pub fn replacing_default(mut self) -> Handler<A, R> {
        self.replaces_default = true;
        self
    }

    /// Capacity of a deferred handler's queue of argument copies (allocated at
    /// installation; a raise finding it full drops that call and counts it).
    pub fn deferred_capacity(mut self, capacity: usize) -> Handler<A, R> {
        self.deferred_capacity = capacity;
        self
    }

    /// Whether this is a deferred handler.
    pub(crate) fn is_deferred(&self) -> bool {
        matches!(self.body, HandlerBody::Deferred(_))
    }
}

impl<A: ?Sized + 'static, R: 'static> fmt::Debug for Handler<A, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Handler")
            .field("deferred", &self.is_deferred())
            .field("guarded", &self.guard.is_some())
            .field("order", &self.order)
            .field("budget_nanoseconds", &self.budget_nanoseconds)
            .field("replaces_default", &self.replaces_default)
            .field("deferred_capacity", &self.deferred_capacity)
            .finish()
    }
}

impl<A: Clone + Send + 'static, R: 'static> Handler<A, R> {
    /// A deferred (asynchronous) handler: a raise whose guards accept queues
    /// a copy of the argument, and `function` is called with it later, when
    /// [`Dispatcher::run_deferred`](crate::Dispatcher::run_deferred) runs
    /// (never inside the raise). Its calls produce no result.
    pub fn deferred(function: impl Fn(A) + Send + Sync + 'static) -> Handler<A, R> {
        Handler {
            body: HandlerBody::Deferred(Box::new(DeferredParts {
                function: Box::new(function),
            })),
            guard: None,
            fused: None,
            order: Order::Any,
            budget_nanoseconds: None,
            replaces_default: false,
            deferred_capacity: DEFAULT_DEFERRED_CAPACITY,
        }
    }
}

/// An install request as the event's authorization procedure sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallRequest {
    /// The domain asking to install.
    pub domain: DomainId,
    /// The event's name.
    pub event: &'static str,
    /// The requested place.
    pub order: Order,
    /// The requested budget, if any.
    pub budget_nanoseconds: Option<u64>,
    /// Whether the handler asks to replace the default handler.
    pub replaces_default: bool,
    /// Whether the handler is deferred.
    pub deferred: bool,
    /// The extension the handler belongs to, if any.
    pub extension: Option<&'static str>,
}

/// The answer of an event's authorization procedure.
pub enum Authorization<A: ?Sized> {
    /// Install the handler as asked.
    Accept,
    /// Install the handler, but only let it run when this guard accepts too.
    /// The installer cannot see or remove it.
    AcceptWithGuard(Guard<A>),
    /// Do not install; the installer gets
    /// [`InstallError::Refused`](crate::InstallError::Refused) with this reason.
    Refuse(&'static str),
}

impl<A: ?Sized> Authorization<A> {
    /// Accept, imposing `guard`.
    pub fn with_guard(guard: impl Fn(&A) -> bool + Send + Sync + 'static) -> Authorization<A> {
        Authorization::AcceptWithGuard(Box::new(guard))
    }
}

impl<A: ?Sized> fmt::Debug for Authorization<A> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorization::Accept => formatter.write_str("Accept"),
            Authorization::AcceptWithGuard(_) => formatter.write_str("AcceptWithGuard(..)"),
            Authorization::Refuse(reason) => formatter.debug_tuple("Refuse").field(reason).finish(),
        }
    }
}

/// An installed handler as the event's owner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerInfo {
    /// Its identifier.
    pub id: HandlerId,
    /// The domain that installed it.
    pub domain: DomainId,
    /// Its place.
    pub order: Order,
    /// Whether it is deferred.
    pub deferred: bool,
    /// Whether it replaces the default handler.
    pub replaces_default: bool,
    /// The extension it belongs to, if any.
    pub extension: Option<&'static str>,
}

/// The single switch that makes all of an extension's handlers visible or
/// invisible at once (see the crate documentation, "Extensions").
pub(crate) struct ExtensionSwitch {
    /// The extension's name.
    pub(crate) name: &'static str,
    /// First visibility sequence value at which the handlers are visible.
    enabled_from: AtomicU64,
    /// First visibility sequence value at which they are invisible again.
    disabled_from: AtomicU64,
}

impl ExtensionSwitch {
    /// A switch whose handlers are not visible yet.
    pub(crate) fn pending(name: &'static str) -> ExtensionSwitch {
        ExtensionSwitch {
            name,
            enabled_from: AtomicU64::new(u64::MAX),
            disabled_from: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a raise that read visibility sequence `sequence` runs the
    /// handlers.
    #[inline]
    pub(crate) fn visible_at(&self, sequence: u64) -> bool {
        self.enabled_from.load(Ordering::Relaxed) <= sequence
            && sequence < self.disabled_from.load(Ordering::Relaxed)
    }

    /// Makes the handlers visible from `sequence` on (called inside a commit).
    pub(crate) fn enable_from(&self, sequence: u64) {
        self.enabled_from.store(sequence, Ordering::Relaxed);
    }

    /// Makes the handlers invisible from `sequence` on, unless they already
    /// are from an earlier value (called inside a commit).
    pub(crate) fn disable_from(&self, sequence: u64) {
        if self.disabled_from.load(Ordering::Relaxed) == u64::MAX {
            self.disabled_from.store(sequence, Ordering::Relaxed);
        }
    }

    /// Whether the switch was ever turned off.
    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled_from.load(Ordering::Relaxed) != u64::MAX
    }
}

/// What an installed handler does.
pub(crate) enum EntryBody<A: ?Sized, R> {
    /// Called inside the raise.
    Synchronous(SharedFunction<A, R>),
    /// Queued for later.
    Deferred {
        target: Arc<dyn DeferredTarget<A>>,
        work: Arc<dyn DeferredWork>,
    },
}

/// An installed handler, shared by every handler list that holds it.
pub(crate) struct Entry<A: ?Sized, R> {
    pub(crate) id: HandlerId,
    pub(crate) domain: DomainId,
    pub(crate) order: Order,
    pub(crate) replaces_default: bool,
    /// The owner's guard (from the authorization procedure).
    pub(crate) imposed_guard: Option<SharedGuard<A>>,
    /// The installer's guard.
    pub(crate) installer_guard: Option<SharedGuard<A>>,
    /// The installer's guard and the synchronous function as one call
    /// ([`Handler::guarded`]), for the plain shapes.
    pub(crate) fused: Option<FusedFunction<A, R>>,
    pub(crate) body: EntryBody<A, R>,
    /// How calls are measured, if they are.
    pub(crate) measurement: Option<Measurement>,
    /// The extension switch, for handlers of an extension.
    pub(crate) switch: Option<Arc<ExtensionSwitch>>,
}

impl<A: ?Sized, R> Entry<A, R> {
    /// Whether both guards accept `argument` (the owner's first).
    #[inline]
    pub(crate) fn accepts(&self, argument: &A) -> bool {
        if let Some(guard) = &self.imposed_guard {
            if !guard(argument) {
                return false;
            }
        }
        match &self.installer_guard {
            Some(guard) => guard(argument),
            None => true,
        }
    }

    /// The owner's view of this handler.
    pub(crate) fn info(&self) -> HandlerInfo {
        HandlerInfo {
            id: self.id,
            domain: self.domain,
            order: self.order,
            deferred: matches!(self.body, EntryBody::Deferred { .. }),
            replaces_default: self.replaces_default,
            extension: self.switch.as_ref().map(|switch| switch.name),
        }
    }
}

/// An event seen without its argument and result types, so that handles of
/// handlers on different events have one type.
pub(crate) trait EventControl: Send + Sync {
    /// The event's name.
    fn name(&self) -> &'static str;
    /// Removes handler `id` (see [`HandlerHandle::remove`]).
    fn remove_handler(&self, id: HandlerId) -> Result<(), RemoveError>;
    /// Calls dropped because handler `id`'s deferred queue was full (0 for a
    /// synchronous or removed handler).
    fn dropped_deferred(&self, id: HandlerId) -> u64;
}

/// The installer's right to remove the handler it installed. Dropping the
/// handle leaves the handler installed (until the event's owner evicts it).
#[must_use = "dropping the handle leaves the handler installed with no way to remove it"]
pub struct HandlerHandle {
    pub(crate) event: Arc<dyn EventControl>,
    pub(crate) id: HandlerId,
    pub(crate) domain: DomainId,
}

impl HandlerHandle {
    /// The handler's identifier.
    pub fn id(&self) -> HandlerId {
        self.id
    }

    /// The domain that installed it.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The event's name.
    pub fn event_name(&self) -> &'static str {
        self.event.name()
    }

    /// Calls of this deferred handler dropped because its queue was full.
    pub fn dropped_deferred(&self) -> u64 {
        self.event.dropped_deferred(self.id)
    }

    /// Removes the handler. When this returns `Ok`, no CPU is running the
    /// handler or will ever call it again (queued deferred calls are
    /// dropped), and its function and captured state have been dropped
    /// unless something else holds them. Waits for the raises that were in
    /// progress, so it refuses to run inside a raise
    /// ([`RemoveError::InsideRaise`]).
    pub fn remove(&self) -> Result<(), RemoveError> {
        self.event.remove_handler(self.id)
    }
}

impl fmt::Debug for HandlerHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HandlerHandle")
            .field("event", &self.event.name())
            .field("id", &self.id)
            .field("domain", &self.domain)
            .finish()
    }
}
