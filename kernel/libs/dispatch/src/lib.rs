//! Spindle's event dispatcher: typed events, guarded handlers and all-or-nothing extensions, after SPIN.
//!
//! In SPIN (Bershad et al., SOSP 1995) extensions change the system by
//! installing *handlers* on *events*. An event is a typed procedure
//! signature; the module that defines it holds the *primary right*: it
//! supplies the *default handler* (the procedure's original body) and an
//! *authorization procedure* that decides who may install handlers, possibly
//! imposing a *guard* (a predicate on the argument) on them. Raising the
//! event runs every handler whose guards accept, and combines their results.
//!
//! * [`Dispatcher`]: one per kernel; creates events, accounts handler time
//!   per domain, runs deferred work. Built from a [`Platform`].
//! * [`Event<A, R>`](Event): argument type `A` (possibly unsized, e.g. `str`)
//!   and result type `R`, fixed at compile time. [`Dispatcher::event`] gives
//!   an [`EventBuilder`], whose [`create`](EventBuilder::create) returns the
//!   shareable event and the [`EventOwner`], the primary right.
//! * [`Handler`]: a function, the installer's optional guard, an [`Order`],
//!   a time budget, and whether it is deferred or replaces the default.
//!   [`Event::install`] returns a [`HandlerHandle`] to remove it with.
//! * [`ExtensionPlan`] / [`Extension`]: one domain's handlers on several
//!   events, installed and uninstalled all together.
//! * [`DomainId`]: who installs, as a number (the domains crate gives
//!   meaning to it).
//!
//! # Any procedure can be an event
//!
//! `print` below is an ordinary procedure to its callers; which code it runs
//! is bound at run time. The console module owns the event and its default
//! handler; a logger extension observes it, adds to it, then replaces the
//! default.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::{Arc, Mutex, OnceLock};
//!
//! use spindle_dispatch::{
//!     Authorization, DefaultPolicy, Dispatcher, DomainId, Event, Handler, InstallError,
//!     Platform,
//! };
//!
//! /// The kernel's services; here one CPU and a clock that is never read.
//! const PLATFORM: Platform = Platform::new(|| 0, || 0);
//! const LOGGER: DomainId = DomainId(7);
//!
//! static CONSOLE: Mutex<String> = Mutex::new(String::new());
//! static PRINT: OnceLock<Event<str, ()>> = OnceLock::new();
//!
//! /// What callers call: raising the event.
//! fn print(text: &str) {
//!     if let Some(event) = PRINT.get() {
//!         event.raise(text);
//!     }
//! }
//!
//! let dispatcher = Dispatcher::new(PLATFORM, 1);
//! // The console module creates the event: its default handler writes to the
//! // console, it may be replaced, and only the logger may install handlers.
//! let (event, _primary_right) = dispatcher
//!     .event::<str, ()>("console.print", |text: &str| {
//!         CONSOLE.lock().unwrap().push_str(text)
//!     })
//!     .default_policy(DefaultPolicy::Replaceable)
//!     .authorize(|request| {
//!         if request.domain == LOGGER {
//!             Authorization::Accept
//!         } else {
//!             Authorization::Refuse("only the logger may extend print")
//!         }
//!     })
//!     .create();
//! PRINT.set(event.clone()).unwrap();
//!
//! print("boot\n");
//! assert_eq!(*CONSOLE.lock().unwrap(), "boot\n");
//!
//! // Observe: count the lines.
//! let lines = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&lines);
//! let observer = event.install(
//!     LOGGER,
//!     Handler::new(move |_text: &str| {
//!         counter.fetch_add(1, Ordering::Relaxed);
//!     }),
//! )?;
//! // Add: keep a log as well.
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let keeper = Arc::clone(&log);
//! let addition = event.install(
//!     LOGGER,
//!     Handler::new(move |text: &str| keeper.lock().unwrap().push(text.to_owned())),
//! )?;
//! print("hello\n");
//! assert_eq!(*CONSOLE.lock().unwrap(), "boot\nhello\n");
//! assert_eq!(lines.load(Ordering::Relaxed), 1);
//! assert_eq!(*log.lock().unwrap(), ["hello\n"]);
//!
//! // Replace: secrets go to the log only, never to the console.
//! let replacement = event.install(
//!     LOGGER,
//!     Handler::new(|_text: &str| {})
//!         .guard(|text: &str| text.starts_with("secret"))
//!         .replacing_default(),
//! )?;
//! print("secret key\n");
//! print("public\n");
//! assert_eq!(*CONSOLE.lock().unwrap(), "boot\nhello\npublic\n");
//! assert_eq!(*log.lock().unwrap(), ["hello\n", "secret key\n", "public\n"]);
//! assert_eq!(lines.load(Ordering::Relaxed), 3);
//!
//! // Nobody else may extend print.
//! let refusal = event.install(DomainId(8), Handler::new(|_text: &str| {}));
//! assert!(matches!(refusal, Err(InstallError::Refused { .. })));
//!
//! // Removing the handlers restores the procedure's original behaviour.
//! replacement.remove()?;
//! addition.remove()?;
//! observer.remove()?;
//! print("secret again\n");
//! assert_eq!(*CONSOLE.lock().unwrap(), "boot\nhello\npublic\nsecret again\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a raise does
//!
//! [`Event::raise`] runs the handlers in three groups, [`Order::First`],
//! [`Order::Any`], [`Order::Last`] (installation order within a group), and
//! the default handler where the owner's [`DefaultPolicy`] puts it: between
//! the `First` group and the rest ([`DefaultPolicy::Always`]), or after all
//! of them as a fallback when no handler ran
//! ([`DefaultPolicy::OnlyIfNoHandlerRan`]) or when no default-replacing
//! handler ran ([`DefaultPolicy::Replaceable`]). A handler runs only if the
//! owner's imposed guard and the installer's guard both accept. Results
//! combine as the owner's [`Combine`] says: first, last, folded with a
//! function, or all of them through [`Event::raise_each`]'s sink (which
//! allocates nothing). Deferred handlers ([`Handler::deferred`]) get a copy
//! of the argument queued and run later, outside any raise, in
//! [`Dispatcher::run_deferred`]; they produce no result.
//!
//! # The raise path and the grace period
//!
//! A handler list is immutable once published; installing, removing and the
//! owner's changes take the event's writer lock (raises never take it),
//! build a new list (allocation is fine there) and *publish* it, then wait
//! for a *grace period*: until no raise anywhere can still hold an earlier
//! list. When `remove` returns, the handler is in no list any raise can
//! reach and no raise is running it, and dropping the last reference to its
//! entry drops its closure and state there, in the remover. How raises are
//! protected depends on the [`Platform`]:
//!
//! **Grace-period read sections** ([`Platform::per_cpu`], the kernel's). The
//! platform brings a trusted [`CpuIdentity`] (built in `unsafe` code that
//! promises it names the running CPU and that a raise never moves to another
//! CPU), and each event holds one `spindle_grace::Published` list. A raise:
//!
//! 1. asks the identity for the CPU index (the kernel's reads it inline from
//!    `gs:`, with no call) and adds one to that CPU's section depth (a plain
//!    load and store of the CPU's own cache line; the first raise after
//!    idling also fences);
//! 2. loads the list pointer (a plain load);
//! 3. runs the list: for the common *plain* lists (nothing measured, queued,
//!    switched or replacing the default) from a shape computed at
//!    publication (no handler; one handler with the default as fallback,
//!    its guard fused into it when installed with [`Handler::guarded`];
//!    several) with guards and functions inline, and inlined where the
//!    event is raised; otherwise on the general path, out of line;
//! 4. subtracts one from the depth and, if a writer waits for this CPU,
//!    reports a quiescent state.
//!
//! No locked instruction, no fence, no write to a line another CPU writes.
//! A publisher swaps the pointer and waits until every other CPU has been
//! seen quiescent after the swap: idle, or reporting a quiescent state (a
//! locked add: the end of a raise while the writer waits, every timer tick
//! that did not land inside a raise, the kernel's wait loops, and the
//! publisher's own wait). Each report is a full fence on its CPU, which is
//! what lets raises go without one; the argument is in `spindle-grace`. A
//! removal therefore costs at least one pass of every busy CPU through the
//! end of a raise or a tick: microseconds when the other CPUs raise or idle,
//! up to a tick when one runs long code that never raises.
//!
//! **Per-CPU read locks** ([`Platform::new`], any CPU function). Every event
//! keeps, for every CPU, a slot on its own cache lines: two read-write locks
//! that both hold the current list. A raise read-locks its CPU's slot (the
//! first lock, or the second if a publisher is working on the first: one
//! atomic add on the CPU's own line), runs the list, releases (one atomic
//! subtract). A publisher, for each CPU and each of its two locks in turn,
//! sets the upgrade bit (new raises use the other lock), waits until the
//! raises already inside have left, swaps in the new list and releases: when
//! the last lock is done, no raise holds an earlier list.
//!
//! Either way a raise allocates nothing, takes no lock that another CPU's
//! raise takes, and raises on different CPUs never contend; clock reads
//! happen only for measured handlers. On the development host (AMD EPYC,
//! release build, `tests/benchmark.rs`, ignored) a raise with one guarded
//! handler costs about 10 ns with grace periods and 12 ns with read
//! locks, against 1.9 ns for an indirect call.
//!
//! Why it is correct with nesting, and never blocks or starves:
//!
//! * Sections count and read locks are shared: a handler that raises (the
//!   same event or another) and an interrupt that raises on a CPU already
//!   inside a raise open another section (take the read lock again); the
//!   CPU is quiescent only when the outermost one has ended.
//! * A raise never waits for a publisher: with grace periods it waits for
//!   nothing; with read locks one publisher at a time works on an event and
//!   holds at most one of a slot's two locks.
//! * A publisher is not starved by a CPU raising in a tight loop: the end of
//!   every raise reports while a publisher waits (grace periods), and once
//!   the upgrade bit is set no new raise enters a lock (read locks).
//! * A CPU inside a raise cannot wait for its own raise to end, so changes
//!   made there (from a handler, a guard, an overrun callback) are refused
//!   with [`InstallError::InsideRaise`] / [`RemoveError::InsideRaise`]
//!   instead of deadlocking. Make them from deferred work
//!   ([`Dispatcher::run_deferred`] is outside any raise).
//!
//! # Extensions
//!
//! An [`Extension`]'s handlers must appear and disappear together: a raise
//! on one CPU between two installations must not see the first without the
//! second. Each extension has a switch, a range `[enabled, disabled)` of
//! values of the dispatcher's *visibility sequence*; a raise whose list
//! holds extension handlers reads the sequence once (one Acquire load of a
//! line written only by extension commits) and runs an extension handler
//! only if the value it read is in the range. [`ExtensionPlan::install`]
//! installs every handler switched off, then one commit stores the next
//! sequence value as `enabled` and publishes that value (Release): every
//! raise that reads it or a later value sees all the handlers, every earlier
//! one none. If an installation is refused, the ones made are removed before
//! any raise could see them. [`Extension::uninstall`] commits `disabled`
//! first, then removes each handler with its grace period. The answer is the
//! same within one raise and across raises: once a raise saw the extension
//! off, every later raise does. An owner that evicts one handler of an
//! extension ([`EventOwner::evict`]) switches the whole extension off.
//!
//! # Deferred handlers
//!
//! A deferred handler owns a bounded queue of argument copies
//! (`crossbeam_queue::ArrayQueue`, allocated at installation; capacity
//! [`DEFAULT_DEFERRED_CAPACITY`] unless set). A raise clones the argument
//! into it (a raise of an event with deferred handlers therefore writes the
//! queue's shared line; a full queue drops the call and counts it) and calls
//! the platform's `deferred_ready` when pending work appears where there was
//! none. [`Dispatcher::run_deferred`] runs queued calls on whichever CPU
//! calls it: each call exactly once, one handler's calls one at a time in
//! queue order, charged and budget-checked like synchronous calls. Removing
//! a deferred handler stops it, waits for a call running on another CPU, and
//! drops the queued copies.
//!
//! # Budgets, accounting, quotas
//!
//! A handler with a budget, or every handler of an event with accounting on
//! ([`EventBuilder::accounting`]), is timed with the platform clock (two
//! reads per call; unmeasured calls never read it). The time and the call go
//! to the installing domain's per-CPU counters ([`Dispatcher::usage`]); a
//! call over budget is counted and reported to the owner's callback
//! ([`EventBuilder::on_overrun`]) with an [`OverrunReport`]. The dispatcher
//! cannot preempt a handler; the kernel's scheduler acts on the reports
//! (e.g. [`EventOwner::evict`]). Each domain may install at most
//! [`EventBuilder::quota`] handlers per event ([`DEFAULT_QUOTA`]).
//!
//! # Integrating with the kernel
//!
//! * Build the [`Platform`] from plain functions: `current_cpu` from the
//!   per-CPU block (GS), `now_nanoseconds` from the calibrated TSC,
//!   `deferred_ready` setting a flag or sending a wake-up IPI to an idle
//!   CPU, `relax` = `core::hint::spin_loop`. Keep the dispatcher in a
//!   `spin::Once<Dispatcher>`, created with the number of CPUs found.
//! * Raise with preemption disabled (a raise must stay on its CPU; nested
//!   raises from handlers and interrupts are fine).
//! * Do not install, remove or uninstall from interrupt handlers or from
//!   inside raises: they wait for grace periods (and the latter is refused).
//!   The overrun callback runs inside the raise: record the report, act on
//!   it later.
//! * Drive deferred work from the idle loop: while
//!   [`Dispatcher::has_deferred`], call [`Dispatcher::run_deferred`]; then,
//!   with interrupts disabled, check `has_deferred` once more before `hlt`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod accounting;
mod deferred;
mod dispatcher;
mod error;
mod event;
mod extension;
mod handler;
mod identity;
mod padded;
mod platform;

pub use accounting::{DomainUsage, OverrunReport};
pub use dispatcher::Dispatcher;
pub use error::{ExtensionInstallError, InstallError, RemoveError};
pub use event::{
    Combine, DefaultPolicy, Event, EventBuilder, EventOwner, DEFAULT_QUOTA, NO_AUTHORIZATION_REASON,
};
pub use extension::{Extension, ExtensionPlan};
pub use handler::{
    Authorization, Guard, Handler, HandlerHandle, HandlerInfo, InstallRequest, Order,
    DEFAULT_DEFERRED_CAPACITY,
};
pub use identity::{DomainId, HandlerId};
pub use platform::{GraceStall, Platform, StallReporting, MAX_CPUS};
pub use spindle_grace::{Awaited, CpuIdentity};
