//! Typed events: creation by the owner, the raise path, installation, removal and publication.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use spin::{RwLock, RwLockReadGuard};
use spindle_grace::Published;

use crate::accounting::{Measurement, OverrunCallback, OverrunReport};
use crate::dispatcher::{lock_with, Backoff, Dispatcher, DispatcherInner};
use crate::error::{InstallError, RemoveError};
use crate::handler::{
    Authorization, Entry, EntryBody, EventControl, ExtensionSwitch, FusedFunction, Guard, Handler,
    HandlerBody, HandlerFunction, HandlerHandle, HandlerInfo, InstallRequest, Order,
    SharedFunction, SharedGuard,
};
use crate::identity::{DomainId, HandlerId};
use crate::padded::CachePadded;
use crate::platform::{GraceStall, Platform};

/// How many handlers one domain may install on one event unless its owner
/// chooses otherwise with [`EventBuilder::quota`].
pub const DEFAULT_QUOTA: usize = 16;

/// The reason given by the authorization procedure of an event whose owner
/// supplied none.
pub const NO_AUTHORIZATION_REASON: &str = "the event's owner accepts no handlers";

/// How the results of the synchronous handlers (and of the default handler,
/// when it runs) that ran in one raise become the raise's result. The owner
/// chooses at creation. Every handler whose guards accept runs whatever the
/// combination; deferred handlers produce no result.
pub enum Combine<R> {
    /// The result of the first handler that ran.
    First,
    /// The result of the last handler that ran.
    Last,
    /// Every result, in order, through [`Event::raise_each`]'s sink (with no
    /// allocation); [`Event::raise`] returns the last one.
    All,
    /// The results folded left in order with this function: with results
    /// r1, r2, r3 the raise returns `reduce(reduce(r1, r2), r3)`.
    Reduce(fn(R, R) -> R),
}

impl<R> Clone for Combine<R> {
    fn clone(&self) -> Combine<R> {
        *self
    }
}

impl<R> Copy for Combine<R> {}

impl<R> fmt::Debug for Combine<R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Combine::First => "First",
            Combine::Last => "Last",
            Combine::All => "All",
            Combine::Reduce(_) => "Reduce(..)",
        })
    }
}

/// When the owner's default handler runs. The owner chooses at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// In every raise, after the `First` handlers and before the `Any` and
    /// `Last` ones: handlers observe or add to the default.
    #[default]
    Always,
    /// Only when no synchronous handler ran (none installed, or no guard
    /// accepted), after them: the default is a fallback.
    OnlyIfNoHandlerRan,
    /// After the handlers, unless one that was installed with
    /// [`Handler::replacing_default`] ran in this raise: handlers may
    /// replace the default (when the authorization procedure lets them).
    Replaceable,
}

/// The owner's authorization procedure.
type Authorize<A> = Box<dyn Fn(&InstallRequest) -> Authorization<A> + Send + Sync>;

/// An event's default handler and how its calls are measured.
struct DefaultHandler<A: ?Sized, R> {
    function: SharedFunction<A, R>,
    measurement: Option<Measurement>,
}

/// One published version of an event's handlers: immutable, shared by every
/// CPU slot that holds it, read without writing on the raise path.
struct HandlerList<A: ?Sized, R> {
    /// Installed handlers in running order: `First`, `Any`, `Last` groups,
    /// installation order within a group.
    entries: Box<[Arc<Entry<A, R>>]>,
    /// Index of the first entry after the `First` group (where the default
    /// runs under [`DefaultPolicy::Always`]).
    default_position: usize,
    /// The default handler.
    default: Arc<DefaultHandler<A, R>>,
    /// Whether some entry belongs to an extension (only then does a raise
    /// read the visibility sequence).
    has_switches: bool,
    /// How [`Event::raise`] runs this list: a plain shape when nothing is
    /// measured, queued, switched or replacing the default (the common case,
    /// and the one benchmarked), the general path otherwise.
    shape: Shape<A, R>,
    /// The default handler's function, inline for the plain shapes.
    default_function: SharedFunction<A, R>,
}

/// The plain shapes of a handler list, precomputed when it is published so
/// that a raise follows as few pointers as a hand-written call would: the
/// event's list, then the handler's guard and function, stored inline.
#[repr(u8)]
enum Shape<A: ?Sized, R> {
    /// Something to measure, queue, switch or replace: the general path.
    General,
    /// No handler: the default alone.
    DefaultOnly,
    /// One synchronous handler installed with [`Handler::guarded`] on an
    /// event whose default runs only if no handler ran: the owner's imposed
    /// guard, if any, then one call for the installer's guard and function.
    OneFusedOrDefault {
        imposed_guard: Option<SharedGuard<A>>,
        fused: FusedFunction<A, R>,
    },
    /// One other synchronous handler on such an event.
    OneOrDefault(PlainCall<A, R>),
    /// One or more synchronous handlers, in running order, the first
    /// `default_position` of them before the default.
    Many(Box<[PlainCall<A, R>]>),
}

/// One handler as the plain shapes call it.
struct PlainCall<A: ?Sized, R> {
    /// The owner's and the installer's guards, composed into one (the
    /// owner's first) when there are both.
    guard: Option<SharedGuard<A>>,
    function: SharedFunction<A, R>,
}

impl<A: ?Sized + 'static, R> PlainCall<A, R> {
    /// The plain call of `entry`, if it is synchronous.
    fn of(entry: &Entry<A, R>) -> Option<PlainCall<A, R>> {
        let EntryBody::Synchronous(function) = &entry.body else {
            return None;
        };
        let guard = match (&entry.imposed_guard, &entry.installer_guard) {
            (None, None) => None,
            (Some(guard), None) | (None, Some(guard)) => Some(Arc::clone(guard)),
            (Some(imposed), Some(installer)) => {
                let (imposed, installer) = (Arc::clone(imposed), Arc::clone(installer));
                let both: SharedGuard<A> =
                    Arc::new(move |argument: &A| imposed(argument) && installer(argument));
                Some(both)
            }
        };
        Some(PlainCall {
            guard,
            function: Arc::clone(function),
        })
    }

    /// Calls the function if the guard accepts.
    #[inline(always)]
    fn call(&self, argument: &A) -> Option<R> {
        if let Some(guard) = &self.guard {
            if !guard(argument) {
                return None;
            }
        }
        Some((self.function)(argument))
    }
}

impl<A: ?Sized + 'static, R> HandlerList<A, R> {
    /// The list of `entries` (already in running order) with `default`.
    fn build(
        entries: &[Arc<Entry<A, R>>],
        default: &Arc<DefaultHandler<A, R>>,
        policy: DefaultPolicy,
    ) -> HandlerList<A, R> {
        let plain = default.measurement.is_none()
            && entries.iter().all(|entry| {
                entry.switch.is_none()
                    && entry.measurement.is_none()
                    && !entry.replaces_default
                    && matches!(entry.body, EntryBody::Synchronous(_))
            });
        let default_position = entries
            .iter()
            .take_while(|entry| entry.order == Order::First)
            .count();
        let calls: Vec<PlainCall<A, R>> = entries
            .iter()
            .filter_map(|entry| PlainCall::of(entry))
            .collect();
        let shape = if !plain {
            Shape::General
        } else if calls.is_empty() {
            Shape::DefaultOnly
        } else if calls.len() == 1 && policy == DefaultPolicy::OnlyIfNoHandlerRan {
            match &entries[0].fused {
                Some(fused) => Shape::OneFusedOrDefault {
                    imposed_guard: entries[0].imposed_guard.clone(),
                    fused: Arc::clone(fused),
                },
                None => Shape::OneOrDefault(calls.into_iter().next().expect("one call")),
            }
        } else {
            Shape::Many(calls.into_boxed_slice())
        };
        HandlerList {
            entries: entries.to_vec().into_boxed_slice(),
            default_position,
            default: Arc::clone(default),
            has_switches: entries.iter().any(|entry| entry.switch.is_some()),
            shape,
            default_function: Arc::clone(&default.function),
        }
    }
}

/// Folds one more synchronous result into the raise's value as `combine`
/// says (the plain path's [`Combiner::push`], without a sink).
#[inline(always)]
fn fold<R>(combine: Combine<R>, value: Option<R>, result: R) -> Option<R> {
    match combine {
        Combine::First => value.or(Some(result)),
        Combine::Last | Combine::All => Some(result),
        Combine::Reduce(reduce) => Some(match value {
            Some(accumulated) => reduce(accumulated, result),
            None => result,
        }),
    }
}

/// One CPU's view of an event: two locks holding the current list. A raise
/// read-locks one of them; a publisher replaces them one after the other,
/// so a raise always finds one it can read without waiting.
struct CpuSlot<A: ?Sized, R> {
    primary: RwLock<Arc<HandlerList<A, R>>>,
    secondary: RwLock<Arc<HandlerList<A, R>>>,
}

impl<A: ?Sized, R> CpuSlot<A, R> {
    /// Read-locks whichever of the two locks no publisher holds. Only one
    /// publisher works on an event at a time and it holds at most one of the
    /// two, so this succeeds at the first or second try (a third only when a
    /// publisher moved from one lock to the other in between).
    #[inline]
    fn read(&self) -> RwLockReadGuard<'_, Arc<HandlerList<A, R>>> {
        loop {
            if let Some(guard) = self.primary.try_read() {
                return guard;
            }
            if let Some(guard) = self.secondary.try_read() {
                return guard;
            }
            core::hint::spin_loop();
        }
    }
}

/// Where raises find an event's current handler list.
enum Lists<A: ?Sized, R> {
    /// One read-locked copy per CPU, each on its own cache lines (a platform
    /// without a trusted CPU identity).
    Locked(Box<[CachePadded<CpuSlot<A, R>>]>),
    /// One copy, read inside grace-period read sections, replaced after a
    /// grace period (a platform with a trusted CPU identity).
    Published(Published<HandlerList<A, R>>),
}

/// Replaces the list behind `lock` once no raise holds it: first blocks new
/// readers (they use the other lock of the slot), then waits for the readers
/// already inside to leave (the grace period of this lock).
fn replace_list<A: ?Sized, R>(
    lock: &RwLock<Arc<HandlerList<A, R>>>,
    list: &Arc<HandlerList<A, R>>,
    relax: fn(),
) {
    let mut backoff = Backoff::new(relax);
    let mut upgradeable = loop {
        if let Some(guard) = lock.try_upgradeable_read() {
            break guard;
        }
        backoff.wait();
    };
    let mut writable = loop {
        match upgradeable.try_upgrade() {
            Ok(guard) => break guard,
            Err(guard) => upgradeable = guard,
        }
        backoff.wait();
    };
    let previous = core::mem::replace(&mut *writable, Arc::clone(list));
    drop(writable);
    drop(previous);
}

/// What installers and removers change, under the event's writer lock.
struct WriterState<A: ?Sized, R> {
    entries: Vec<Arc<Entry<A, R>>>,
    default: Arc<DefaultHandler<A, R>>,
}

/// Accumulates the results of one raise as the owner's [`Combine`] says.
struct Combiner<'sink, R, S: FnMut(R)> {
    combine: Combine<R>,
    value: Option<R>,
    sink: Option<&'sink mut S>,
    /// Synchronous results so far (handlers and default).
    results: usize,
    /// Whether a handler replacing the default ran.
    replaced: bool,
}

impl<'sink, R, S: FnMut(R)> Combiner<'sink, R, S> {
    fn new(combine: Combine<R>, sink: Option<&'sink mut S>) -> Combiner<'sink, R, S> {
        Combiner {
            combine,
            value: None,
            sink,
            results: 0,
            replaced: false,
        }
    }

    #[inline]
    fn push(&mut self, result: R) {
        self.results += 1;
        match self.combine {
            Combine::First => {
                if self.value.is_none() {
                    self.value = Some(result);
                }
            }
            Combine::Last => self.value = Some(result),
            Combine::Reduce(reduce) => {
                self.value = Some(match self.value.take() {
                    Some(accumulated) => reduce(accumulated, result),
                    None => result,
                });
            }
            Combine::All => match self.sink.as_deref_mut() {
                Some(sink) => sink(result),
                None => self.value = Some(result),
            },
        }
    }
}

/// Shared state of an event.
pub(crate) struct EventInner<A: ?Sized + 'static, R: 'static> {
    name: &'static str,
    pub(crate) dispatcher: Arc<DispatcherInner>,
    platform: Platform,
    combine: Combine<R>,
    default_policy: DefaultPolicy,
    quota: usize,
    accounting: bool,
    owner_domain: DomainId,
    on_overrun: Option<OverrunCallback>,
    authorize: Authorize<A>,
    /// The current handler list, as raises find it.
    lists: Lists<A, R>,
    /// Serialises installers, removers and the owner's changes. On its own
    /// cache lines, so that taking it does not disturb the fields raises read.
    writer: CachePadded<spin::Mutex<WriterState<A, R>>>,
}

impl<A: ?Sized + 'static, R: 'static> EventInner<A, R> {
    /// Runs every visible handler whose guards accept, and the default
    /// handler where the policy says, feeding results to `combiner`.
    #[inline]
    fn run_handlers<S: FnMut(R)>(
        &self,
        argument: &A,
        list: &HandlerList<A, R>,
        cpu: usize,
        combiner: &mut Combiner<'_, R, S>,
    ) {
        let sequence = if list.has_switches {
            self.dispatcher.visible_sequence()
        } else {
            0
        };
        let (before_default, after_default) = list
            .entries
            .split_at(list.default_position.min(list.entries.len()));
        self.run_group(before_default, argument, sequence, cpu, combiner);
        if self.default_policy == DefaultPolicy::Always {
            combiner.push(self.call_default(list, argument, cpu));
        }
        self.run_group(after_default, argument, sequence, cpu, combiner);
        let fallback = match self.default_policy {
            DefaultPolicy::Always => false,
            DefaultPolicy::OnlyIfNoHandlerRan => combiner.results == 0,
            DefaultPolicy::Replaceable => !combiner.replaced,
        };
        if fallback {
            combiner.push(self.call_default(list, argument, cpu));
        }
    }

    /// Runs the visible, accepting handlers of `entries` in order.
    #[inline(always)]
    fn run_group<S: FnMut(R)>(
        &self,
        entries: &[Arc<Entry<A, R>>],
        argument: &A,
        sequence: u64,
        cpu: usize,
        combiner: &mut Combiner<'_, R, S>,
    ) {
        for entry in entries {
            if let Some(switch) = &entry.switch {
                if !switch.visible_at(sequence) {
                    continue;
                }
            }
            if !entry.accepts(argument) {
                continue;
            }
            match &entry.body {
                EntryBody::Synchronous(function) => {
                    let result = match &entry.measurement {
                        None => function(argument),
                        Some(measurement) => {
                            measurement.call(&self.platform, cpu, false, || function(argument))
                        }
                    };
                    combiner.replaced |= entry.replaces_default;
                    combiner.push(result);
                }
                EntryBody::Deferred { target, .. } => target.enqueue(argument, cpu),
            }
        }
    }

    /// Calls the default handler of `list`.
    #[inline]
    fn call_default(&self, list: &HandlerList<A, R>, argument: &A, cpu: usize) -> R {
        let default = &list.default;
        match &default.measurement {
            None => (default.function)(argument),
            Some(measurement) => {
                measurement.call(&self.platform, cpu, false, || (default.function)(argument))
            }
        }
    }

    /// Publishes the writer state's handlers to every CPU slot. Returns once
    /// no raise anywhere can still be using an earlier list: each lock was
    /// replaced only after the raises inside it had left.
    fn publish(&self, state: &WriterState<A, R>) {
        let list = Arc::new(HandlerList::build(
            &state.entries,
            &state.default,
            self.default_policy,
        ));
        let relax = self.platform.relax;
        match &self.lists {
            Lists::Published(cell) => match self.platform.grace_stall {
                None => drop(cell.replace(list, relax)),
                Some(stall) => {
                    let now = self.platform.now_nanoseconds;
                    let started = now();
                    let mut next_report = stall.after_nanoseconds.max(1);
                    let event = self.name;
                    drop(cell.replace_watched(list, relax, &mut |awaited| {
                        let waited = now().saturating_sub(started);
                        if waited >= next_report {
                            (stall.report)(&GraceStall {
                                event,
                                waited_nanoseconds: waited,
                                awaited,
                            });
                            next_report = next_report.saturating_mul(2);
                        }
                    }));
                }
            },
            Lists::Locked(slots) => {
                for slot in slots.iter() {
                    replace_list(&slot.primary, &list, relax);
                    replace_list(&slot.secondary, &list, relax);
                }
            }
        }
    }

    /// Runs `raise` on the current handler list and CPU index, inside a
    /// read section (grace periods) or under the CPU's read lock.
    #[inline(always)]
    fn with_list<T>(&self, raise: impl FnOnce(&HandlerList<A, R>, usize) -> T) -> T {
        match &self.lists {
            Lists::Published(cell) => {
                let reading = cell.read_section();
                raise(reading.value(), reading.cpu())
            }
            Lists::Locked(slots) => Self::with_locked_list(&self.dispatcher, slots, raise),
        }
    }

    /// [`with_list`](EventInner::with_list) under read locks, out of line so
    /// that the grace-period path inlines `raise`.
    #[inline(never)]
    fn with_locked_list<T>(
        dispatcher: &DispatcherInner,
        slots: &[CachePadded<CpuSlot<A, R>>],
        raise: impl FnOnce(&HandlerList<A, R>, usize) -> T,
    ) -> T {
        let cpu = dispatcher.cpu_index();
        let _scope = dispatcher.enter_raise(cpu);
        let list = slots[cpu].read();
        raise(&list, cpu)
    }

    /// Runs one raise on `list` (already protected by the caller) on `cpu`:
    /// a plain shape inline, anything else out of line, so that the plain
    /// raise stays small enough to be inlined into its caller.
    #[inline(always)]
    fn raise_on(&self, list: &HandlerList<A, R>, argument: &A, cpu: usize) -> R {
        match self.raise_plain(list, argument) {
            Some(result) => result,
            None => self.raise_general(list, argument, cpu),
        }
    }

    /// The general path of [`raise_on`](EventInner::raise_on).
    #[inline(never)]
    fn raise_general(&self, list: &HandlerList<A, R>, argument: &A, cpu: usize) -> R {
        let mut combiner = Combiner::new(self.combine, None::<&mut fn(R)>);
        self.run_handlers(argument, list, cpu, &mut combiner);
        match combiner.value {
            Some(result) => result,
            None => self.call_default(list, argument, cpu),
        }
    }

    /// The raise of a list with a plain shape (see [`Shape`]): the same
    /// order, guards, default policy and combination as the general path,
    /// with nothing to measure, queue or switch.
    #[inline(always)]
    fn raise_plain(&self, list: &HandlerList<A, R>, argument: &A) -> Option<R> {
        let default = &list.default_function;
        // The commonest shapes are tested first, on their own, rather than
        // through a jump table.
        if let Shape::OneFusedOrDefault {
            imposed_guard,
            fused,
        } = &list.shape
        {
            if imposed_guard.as_ref().is_none_or(|guard| guard(argument)) {
                if let Some(result) = fused(argument) {
                    return Some(result);
                }
            }
            return Some(default(argument));
        }
        if let Shape::OneOrDefault(call) = &list.shape {
            return Some(call.call(argument).unwrap_or_else(|| default(argument)));
        }
        match &list.shape {
            Shape::OneFusedOrDefault { .. } | Shape::OneOrDefault(_) => {
                unreachable!("tested above")
            }
            Shape::DefaultOnly => Some(default(argument)),
            Shape::Many(calls) => Some(self.run_plain_calls(calls, list, argument)),
            Shape::General => None,
        }
    }

    /// Runs `calls` (`list`'s plain calls, in running order) and the default
    /// handler where the policy says, combining the results: the general
    /// path's order and rules, with nothing to measure, queue or switch.
    #[inline(always)]
    fn run_plain_calls(
        &self,
        calls: &[PlainCall<A, R>],
        list: &HandlerList<A, R>,
        argument: &A,
    ) -> R {
        let combine = self.combine;
        let policy = self.default_policy;
        let default = &list.default_function;
        let (before_default, after_default) =
            calls.split_at(list.default_position.min(calls.len()));
        let mut value = None;
        for call in before_default {
            if let Some(result) = call.call(argument) {
                value = fold(combine, value, result);
            }
        }
        if policy == DefaultPolicy::Always {
            value = fold(combine, value, default(argument));
        }
        for call in after_default {
            if let Some(result) = call.call(argument) {
                value = fold(combine, value, result);
            }
        }
        // As on the general path; no plain handler replaces the default.
        let fallback = match policy {
            DefaultPolicy::Always => false,
            DefaultPolicy::OnlyIfNoHandlerRan => value.is_none(),
            DefaultPolicy::Replaceable => true,
        };
        if fallback {
            value = fold(combine, value, default(argument));
        }
        match value {
            Some(result) => result,
            None => default(argument),
        }
    }

    /// Runs one raise on `list` on `cpu`, handing results to `sink`.
    #[inline(always)]
    fn raise_each_on(
        &self,
        list: &HandlerList<A, R>,
        argument: &A,
        cpu: usize,
        sink: &mut impl FnMut(R),
    ) {
        let mut combiner = Combiner::new(self.combine, Some(sink));
        self.run_handlers(argument, list, cpu, &mut combiner);
        if let Some(result) = combiner.value.take() {
            (combiner.sink.take().expect("the sink is kept"))(result);
        }
    }

    /// How calls of a handler of `domain` are measured, if they are.
    fn measurement(
        &self,
        domain: DomainId,
        handler: HandlerId,
        budget_nanoseconds: Option<u64>,
    ) -> Option<Measurement> {
        (budget_nanoseconds.is_some() || self.accounting).then(|| Measurement {
            account: self.dispatcher.account(domain),
            budget_nanoseconds,
            on_overrun: self.on_overrun.clone(),
            event: self.name,
            handler,
        })
    }

    /// Installs `handler` for `domain`, part of the extension behind `switch`
    /// if there is one.
    pub(crate) fn install(
        self: &Arc<Self>,
        domain: DomainId,
        handler: Handler<A, R>,
        switch: Option<Arc<ExtensionSwitch>>,
    ) -> Result<HandlerHandle, InstallError> {
        let event = self.name;
        if self.dispatcher.inside_raise() {
            return Err(InstallError::InsideRaise { event });
        }
        let deferred = handler.is_deferred();
        if handler.replaces_default && self.default_policy != DefaultPolicy::Replaceable {
            return Err(InstallError::DefaultNotReplaceable { event });
        }
        if handler.replaces_default && deferred {
            return Err(InstallError::InvalidOptions {
                event,
                reason:
                    "a deferred handler has no result, so it cannot replace the default handler",
            });
        }
        if deferred && handler.deferred_capacity == 0 {
            return Err(InstallError::InvalidOptions {
                event,
                reason: "a deferred handler needs a queue capacity of at least 1",
            });
        }
        let request = InstallRequest {
            domain,
            event,
            order: handler.order,
            budget_nanoseconds: handler.budget_nanoseconds,
            replaces_default: handler.replaces_default,
            deferred,
            extension: switch.as_ref().map(|switch| switch.name),
        };
        let imposed_guard: Option<Guard<A>> = match (self.authorize)(&request) {
            Authorization::Accept => None,
            Authorization::AcceptWithGuard(guard) => Some(guard),
            Authorization::Refuse(reason) => {
                return Err(InstallError::Refused {
                    event,
                    domain,
                    reason,
                })
            }
        };

        let mut state = lock_with(&self.writer, self.platform.relax);
        let installed = state
            .entries
            .iter()
            .filter(|entry| entry.domain == domain)
            .count();
        if installed >= self.quota {
            return Err(InstallError::QuotaExceeded {
                event,
                domain,
                quota: self.quota,
            });
        }
        let id = self.dispatcher.next_handler_id();
        let measurement = self.measurement(domain, id, handler.budget_nanoseconds);
        let (body, measurement) = match handler.body {
            HandlerBody::Synchronous(function) => {
                (EntryBody::Synchronous(Arc::from(function)), measurement)
            }
            HandlerBody::Deferred(factory) => {
                let (target, work) = factory.build(
                    id,
                    handler.deferred_capacity,
                    measurement,
                    Arc::clone(&self.dispatcher),
                );
                self.dispatcher.register_deferred(id, Arc::downgrade(&work));
                (EntryBody::Deferred { target, work }, None)
            }
        };
        let entry = Arc::new(Entry {
            id,
            domain,
            order: handler.order,
            replaces_default: handler.replaces_default,
            imposed_guard: imposed_guard.map(Arc::from),
            installer_guard: handler.guard.map(Arc::from),
            fused: handler.fused,
            body,
            measurement,
            switch,
        });
        let position = state
            .entries
            .iter()
            .position(|installed| installed.order > entry.order)
            .unwrap_or(state.entries.len());
        state.entries.insert(position, entry);
        self.publish(&state);
        drop(state);
        let event: Arc<dyn EventControl> = Arc::clone(self) as Arc<dyn EventControl>;
        Ok(HandlerHandle { event, id, domain })
    }

    /// Removes handler `id`; when `evict`, first switches off the whole
    /// extension it belongs to (if any), so its handlers vanish together.
    fn remove(&self, id: HandlerId, evict: bool) -> Result<(), RemoveError> {
        if self.dispatcher.inside_raise() {
            return Err(RemoveError::InsideRaise);
        }
        let mut state = lock_with(&self.writer, self.platform.relax);
        let position = state
            .entries
            .iter()
            .position(|entry| entry.id == id)
            .ok_or(RemoveError::NotInstalled)?;
        if evict {
            if let Some(switch) = &state.entries[position].switch {
                self.dispatcher.commit(|next| switch.disable_from(next));
            }
        }
        let entry = state.entries.remove(position);
        self.publish(&state);
        drop(state);
        // No raise holds the entry any more; stop its deferred calls too.
        if let EntryBody::Deferred { work, .. } = &entry.body {
            work.retire(self.dispatcher.cpu_index());
        }
        drop(entry);
        Ok(())
    }

    /// Replaces the default handler.
    fn set_default(&self, function: HandlerFunction<A, R>) -> Result<(), InstallError> {
        if self.dispatcher.inside_raise() {
            return Err(InstallError::InsideRaise { event: self.name });
        }
        let measurement = self.accounting.then(|| Measurement {
            account: self.dispatcher.account(self.owner_domain),
            budget_nanoseconds: None,
            on_overrun: None,
            event: self.name,
            handler: HandlerId::DEFAULT,
        });
        let mut state = lock_with(&self.writer, self.platform.relax);
        state.default = Arc::new(DefaultHandler {
            function: Arc::from(function),
            measurement,
        });
        self.publish(&state);
        Ok(())
    }

    /// The owner's view of the installed handlers, in running order.
    fn handlers(&self) -> Vec<HandlerInfo> {
        lock_with(&self.writer, self.platform.relax)
            .entries
            .iter()
            .map(|entry| entry.info())
            .collect()
    }
}

impl<A: ?Sized + 'static, R: 'static> EventControl for EventInner<A, R> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn remove_handler(&self, id: HandlerId) -> Result<(), RemoveError> {
        self.remove(id, false)
    }

    fn dropped_deferred(&self, id: HandlerId) -> u64 {
        lock_with(&self.writer, self.platform.relax)
            .entries
            .iter()
            .find(|entry| entry.id == id)
            .map_or(0, |entry| match &entry.body {
                EntryBody::Deferred { work, .. } => work.dropped(),
                EntryBody::Synchronous(_) => 0,
            })
    }
}

/// The owner's choices for a new event; from [`Dispatcher::event`].
pub struct EventBuilder<A: ?Sized + 'static, R: 'static> {
    dispatcher: Arc<DispatcherInner>,
    name: &'static str,
    default: HandlerFunction<A, R>,
    combine: Combine<R>,
    default_policy: DefaultPolicy,
    quota: usize,
    accounting: bool,
    owner_domain: DomainId,
    on_overrun: Option<OverrunCallback>,
    authorize: Authorize<A>,
}

impl<A: ?Sized + 'static, R: 'static> fmt::Debug for EventBuilder<A, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EventBuilder")
            .field("name", &self.name)
            .field("combine", &self.combine)
            .field("default_policy", &self.default_policy)
            .field("quota", &self.quota)
            .field("accounting", &self.accounting)
            .field("owner_domain", &self.owner_domain)
            .finish()
    }
}

impl<A: ?Sized + 'static, R: 'static> EventBuilder<A, R> {
    /// The defaults: [`Combine::Last`], [`DefaultPolicy::Always`], quota
    /// [`DEFAULT_QUOTA`], no accounting, owned by [`DomainId::KERNEL`], no
    /// overrun callback, and an authorization procedure that refuses
    /// everything (with [`NO_AUTHORIZATION_REASON`]).
    pub(crate) fn new(
        dispatcher: &Dispatcher,
        name: &'static str,
        default_handler: impl Fn(&A) -> R + Send + Sync + 'static,
    ) -> EventBuilder<A, R> {
        EventBuilder {
            dispatcher: Arc::clone(&dispatcher.inner),
            name,
            default: Box::new(default_handler),
            combine: Combine::Last,
            default_policy: DefaultPolicy::Always,
            quota: DEFAULT_QUOTA,
            accounting: false,
            owner_domain: DomainId::KERNEL,
            on_overrun: None,
            authorize: Box::new(|_request| Authorization::Refuse(NO_AUTHORIZATION_REASON)),
        }
    }

    /// How results combine.
    pub fn combine(mut self, combine: Combine<R>) -> EventBuilder<A, R> {
        self.combine = combine;
        self
    }

    /// When the default handler runs.
    pub fn default_policy(mut self, policy: DefaultPolicy) -> EventBuilder<A, R> {
        self.default_policy = policy;
        self
    }

    /// How many handlers one domain may install on this event.
    pub fn quota(mut self, quota: usize) -> EventBuilder<A, R> {
        self.quota = quota;
        self
    }

    /// Whether every handler call (and default handler call) is measured
    /// and charged to its domain, budget or not. Off by default: then only
    /// handlers with a budget read the clock.
    pub fn accounting(mut self, accounting: bool) -> EventBuilder<A, R> {
        self.accounting = accounting;
        self
    }

    /// The domain of the owner, charged for the default handler's calls.
    pub fn owner_domain(mut self, domain: DomainId) -> EventBuilder<A, R> {
        self.owner_domain = domain;
        self
    }

    /// The callback told about every handler call that overran its budget.
    /// It runs right after the call, on the same CPU, inside the raise (or
    /// inside `run_deferred`): it must be short and must not install or
    /// remove handlers.
    pub fn on_overrun(
        mut self,
        callback: impl Fn(&OverrunReport) + Send + Sync + 'static,
    ) -> EventBuilder<A, R> {
        self.on_overrun = Some(Arc::new(callback));
        self
    }

    /// The authorization procedure, called on every install request (outside
    /// any lock of the event) with the requester's domain and options.
    pub fn authorize(
        mut self,
        authorize: impl Fn(&InstallRequest) -> Authorization<A> + Send + Sync + 'static,
    ) -> EventBuilder<A, R> {
        self.authorize = Box::new(authorize);
        self
    }

    /// Accepts every install request (for events internal to the kernel).
    pub fn accept_all(self) -> EventBuilder<A, R> {
        self.authorize(|_request| Authorization::Accept)
    }

    /// Creates the event: the shareable [`Event`] and the owner's
    /// [`EventOwner`] (the primary right), which only the creator holds.
    pub fn create(self) -> (Event<A, R>, EventOwner<A, R>) {
        let dispatcher = self.dispatcher;
        let measurement = self.accounting.then(|| Measurement {
            account: dispatcher.account(self.owner_domain),
            budget_nanoseconds: None,
            on_overrun: None,
            event: self.name,
            handler: HandlerId::DEFAULT,
        });
        let default = Arc::new(DefaultHandler {
            function: Arc::from(self.default),
            measurement,
        });
        let empty = Arc::new(HandlerList::build(&[], &default, self.default_policy));
        let lists = match &dispatcher.grace {
            Some(grace) => Lists::Published(Published::new(empty, Arc::clone(grace))),
            None => Lists::Locked(
                (0..dispatcher.cpus())
                    .map(|_| {
                        CachePadded(CpuSlot {
                            primary: RwLock::new(Arc::clone(&empty)),
                            secondary: RwLock::new(Arc::clone(&empty)),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            ),
        };
        let inner = Arc::new(EventInner {
            name: self.name,
            platform: dispatcher.platform,
            dispatcher,
            combine: self.combine,
            default_policy: self.default_policy,
            quota: self.quota,
            accounting: self.accounting,
            owner_domain: self.owner_domain,
            on_overrun: self.on_overrun,
            authorize: self.authorize,
            lists,
            writer: CachePadded(spin::Mutex::new(WriterState {
                entries: Vec::new(),
                default,
            })),
        });
        (
            Event {
                inner: Arc::clone(&inner),
            },
            EventOwner { inner },
        )
    }
}

/// A typed event: raising it calls the handlers installed on it. A cheap,
/// shareable handle (`Clone` shares the event); keep it in a `static`
/// (`spin::Once`) or pass it around.
pub struct Event<A: ?Sized + 'static, R: 'static> {
    pub(crate) inner: Arc<EventInner<A, R>>,
}

impl<A: ?Sized + 'static, R: 'static> Clone for Event<A, R> {
    fn clone(&self) -> Event<A, R> {
        Event {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: ?Sized + 'static, R: 'static> fmt::Debug for Event<A, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Event")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl<A: ?Sized + 'static, R: 'static> Event<A, R> {
    /// The event's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// Raises the event: runs every visible handler whose guards accept (in
    /// [`Order`]), queues the deferred ones, runs the default handler as the
    /// owner's [`DefaultPolicy`] says, and returns the results combined as
    /// the owner's [`Combine`] says. Allocates nothing and takes no lock
    /// shared with other CPUs.
    #[inline(always)]
    pub fn raise(&self, argument: &A) -> R {
        let inner = &*self.inner;
        // The grace-period path written out rather than through `with_list`,
        // so that the plain raise is inlined here instead of called.
        match &inner.lists {
            Lists::Published(cell) => {
                let reading = cell.read_section();
                inner.raise_on(reading.value(), argument, reading.cpu())
            }
            Lists::Locked(slots) => {
                EventInner::with_locked_list(&inner.dispatcher, slots, |list, cpu| {
                    inner.raise_on(list, argument, cpu)
                })
            }
        }
    }

    /// Raises the event like [`raise`](Event::raise), handing the results to
    /// `sink` instead of returning them: every result in running order under
    /// [`Combine::All`], the one combined result otherwise.
    pub fn raise_each(&self, argument: &A, mut sink: impl FnMut(R)) {
        let inner = &*self.inner;
        inner.with_list(|list, cpu| inner.raise_each_on(list, argument, cpu, &mut sink));
    }

    /// Asks to install `handler` for `domain`. The owner's authorization
    /// procedure decides (and may impose a guard); the domain's quota on this
    /// event must not be full. When this returns `Ok`, every raise that
    /// starts afterwards on any CPU runs the handler.
    pub fn install(
        &self,
        domain: DomainId,
        handler: Handler<A, R>,
    ) -> Result<HandlerHandle, InstallError> {
        self.inner.install(domain, handler, None)
    }

    /// Number of installed handlers (including those of extensions not yet
    /// or no longer switched on).
    pub fn handler_count(&self) -> usize {
        lock_with(&self.inner.writer, self.inner.platform.relax)
            .entries
            .len()
    }
}

/// The primary right on an event: held only by the module that created it.
/// Lists, evicts and replaces handlers; the authorization procedure, quota,
/// combination and default policy were fixed at creation.
pub struct EventOwner<A: ?Sized + 'static, R: 'static> {
    inner: Arc<EventInner<A, R>>,
}

impl<A: ?Sized + 'static, R: 'static> fmt::Debug for EventOwner<A, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EventOwner")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl<A: ?Sized + 'static, R: 'static> EventOwner<A, R> {
    /// The event this right governs.
    pub fn event(&self) -> Event<A, R> {
        Event {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The installed handlers, in running order.
    pub fn handlers(&self) -> Vec<HandlerInfo> {
        self.inner.handlers()
    }

    /// Removes handler `id` whoever installed it (e.g. an extension that
    /// keeps overrunning its budget). If it belongs to an extension, the
    /// whole extension is switched off first, atomically: none of its
    /// handlers on any event runs in a raise that starts afterwards. Same
    /// guarantees as [`HandlerHandle::remove`].
    pub fn evict(&self, id: HandlerId) -> Result<(), RemoveError> {
        self.inner.remove(id, true)
    }

    /// Replaces the default handler; raises that start after this returns
    /// call the new one, and the old one has been dropped.
    pub fn set_default_handler(
        &self,
        default_handler: impl Fn(&A) -> R + Send + Sync + 'static,
    ) -> Result<(), InstallError> {
        self.inner.set_default(Box::new(default_handler))
    }
}
