//! Safe removal: grace periods, dropping handler state, nesting, and the multithreaded stress test.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use spindle_dispatch::{
    Combine, DefaultPolicy, Dispatcher, DomainId, Event, EventOwner, Handler, HandlerHandle,
    InstallError, Platform, RemoveError,
};

const INSTALLER: DomainId = DomainId(1);

fn summing_event(
    dispatcher: &Dispatcher,
    name: &'static str,
) -> (Event<u64, u64>, EventOwner<u64, u64>) {
    dispatcher
        .event::<u64, u64>(name, |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .accept_all()
        .create()
}

#[test]
fn a_removed_handler_is_not_called_and_its_state_is_dropped() {
    let dispatcher = common::dispatcher(2);
    let (event, _owner) = summing_event(&dispatcher, "drop");
    let state = Arc::new(AtomicU64::new(0));
    let captured = Arc::clone(&state);
    let handle = event
        .install(
            INSTALLER,
            Handler::new(move |_| {
                captured.fetch_add(1, Ordering::SeqCst);
                1
            }),
        )
        .unwrap();
    assert_eq!(event.raise(&0), 1);
    assert_eq!(
        Arc::strong_count(&state),
        2,
        "the installed closure holds it"
    );
    handle.remove().unwrap();
    assert_eq!(
        Arc::strong_count(&state),
        1,
        "the closure was dropped when remove returned"
    );
    assert_eq!(event.raise(&0), 0);
    assert_eq!(state.load(Ordering::SeqCst), 1);
    assert_eq!(handle.remove(), Err(RemoveError::NotInstalled));
}

#[test]
fn removal_waits_for_a_raise_in_progress_on_another_cpu() {
    removal_waits_for_a_raise_in_progress(common::dispatcher(2));
}

#[test]
fn removal_waits_for_a_raise_in_progress_under_read_locks() {
    removal_waits_for_a_raise_in_progress(common::locked_dispatcher(2));
}

fn removal_waits_for_a_raise_in_progress(dispatcher: Dispatcher) {
    assert!(dispatcher.cpus() == 2);
    let (event, _owner) = summing_event(&dispatcher, "slow");
    let inside = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (inside_flag, finished_flag) = (Arc::clone(&inside), Arc::clone(&finished));
    let handle = event
        .install(
            INSTALLER,
            Handler::new(move |_| {
                inside_flag.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                finished_flag.store(true, Ordering::SeqCst);
                1
            }),
        )
        .unwrap();
    let raiser_event = event.clone();
    let raiser = common::spawn_on_cpu(1, move || raiser_event.raise(&0));
    while !inside.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    handle.remove().unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "remove returned only after the raise that was running the handler ended"
    );
    assert_eq!(raiser.join().unwrap(), 1);
}

#[test]
fn changing_handlers_inside_a_raise_is_refused_instead_of_deadlocking() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = summing_event(&dispatcher, "outer");
    let (other, _other_owner) = summing_event(&dispatcher, "other");
    let other_handle = other.install(INSTALLER, Handler::new(|_| 1)).unwrap();
    let own_handle: Arc<OnceLock<HandlerHandle>> = Arc::new(OnceLock::new());
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (handle_cell, record, inner_other) = (
        Arc::clone(&own_handle),
        Arc::clone(&outcomes),
        other.clone(),
    );
    let handle = event
        .install(
            INSTALLER,
            Handler::new(move |_| {
                let mut record = record.lock().unwrap();
                if let Some(handle) = handle_cell.get() {
                    record.push(format!("{:?}", handle.remove()));
                }
                record.push(format!("{:?}", other_handle.remove()));
                record.push(format!(
                    "{:?}",
                    inner_other
                        .install(INSTALLER, Handler::new(|_| 2))
                        .map(|_| ())
                ));
                10
            }),
        )
        .unwrap();
    assert!(own_handle.set(handle).is_ok());
    assert_eq!(event.raise(&0), 10);
    let expected_install = format!(
        "{:?}",
        Err::<(), _>(InstallError::InsideRaise { event: "other" })
    );
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![
            "Err(InsideRaise)".to_string(),
            "Err(InsideRaise)".to_string(),
            expected_install
        ]
    );
    assert_eq!(other.raise(&0), 1, "nothing changed");
    assert_eq!(event.raise(&0), 10);
    // Outside the raise it works.
    own_handle.get().unwrap().remove().unwrap();
    assert_eq!(event.raise(&0), 0);
}

#[test]
fn raises_nest_on_one_cpu() {
    const DEPTH: u64 = 5;
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = summing_event(&dispatcher, "recursive");
    let cell: Arc<OnceLock<Event<u64, u64>>> = Arc::new(OnceLock::new());
    let inner = Arc::clone(&cell);
    let _handle = event
        .install(
            INSTALLER,
            Handler::new(move |depth: &u64| match inner.get() {
                Some(event) if *depth < DEPTH => 1 + event.raise(&(depth + 1)),
                _ => 1,
            }),
        )
        .unwrap();
    assert!(cell.set(event.clone()).is_ok());
    assert_eq!(event.raise(&0), DEPTH + 1);
    // After the nested raises unwound, the CPU is outside again.
    let late = event.install(DomainId(2), Handler::new(|_| 100)).unwrap();
    late.remove().unwrap();
}

#[test]
fn the_owner_can_evict_any_handler() {
    let dispatcher = common::dispatcher(1);
    let (event, owner) = summing_event(&dispatcher, "evicting");
    let handle = event.install(INSTALLER, Handler::new(|_| 1)).unwrap();
    let _kept = event.install(DomainId(2), Handler::new(|_| 10)).unwrap();
    assert_eq!(event.raise(&0), 11);
    owner.evict(handle.id()).unwrap();
    assert_eq!(event.raise(&0), 10);
    assert_eq!(handle.remove(), Err(RemoveError::NotInstalled));
    assert_eq!(owner.evict(handle.id()), Err(RemoveError::NotInstalled));
}

fn far_away_cpu() -> usize {
    1_000
}

#[test]
fn an_out_of_range_cpu_index_is_folded_into_range() {
    let dispatcher = Dispatcher::new(Platform::new(far_away_cpu, common::now_nanoseconds), 4);
    assert_eq!(dispatcher.cpus(), 4);
    let (event, _owner) = summing_event(&dispatcher, "folded");
    let handle = event.install(INSTALLER, Handler::new(|_| 3)).unwrap();
    assert_eq!(event.raise(&0), 3);
    handle.remove().unwrap();
    assert_eq!(event.raise(&0), 0);
    let clamped = Dispatcher::new(common::HOST, 0);
    assert_eq!(clamped.cpus(), 1);
    let huge = Dispatcher::new(common::HOST, 100_000);
    assert_eq!(huge.cpus(), spindle_dispatch::MAX_CPUS);
}

/// Result of the handler that stays installed for the whole stress test.
const PERSISTENT_RESULT: u64 = 1;
/// Result of the handlers installed and removed during the stress test.
const TRANSIENT_RESULT: u64 = 1_000;
/// How long the remover runs.
const STRESS_DURATION: Duration = Duration::from_secs(1);
/// Fewest install/remove cycles a stress run must reach to mean something
/// (on an oversubscribed host the remover keeps going past the duration
/// until it has them: it waits for raisers the host preempted mid-raise).
const MINIMUM_CYCLES: usize = 10;
/// Longest the remover may take to reach `MINIMUM_CYCLES`.
const STRESS_LIMIT: Duration = Duration::from_secs(60);

/// Number of raising threads: one per core but one (for the remover), at
/// least two, so that the host also preempts raisers in the middle of raises.
fn raisers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |cores| cores.get().saturating_sub(1))
        .clamp(2, 8)
}

/// One installation of the stress test's transient handler.
struct Transient {
    calls: Arc<AtomicU64>,
    calls_when_removed: u64,
    state: Arc<()>,
}

/// Totals of one raising thread.
#[derive(Default)]
struct RaiserTotals {
    raises: u64,
    transient_results: u64,
    wrong_results: u64,
}

/// Raisers raise in a loop (each raise nested one level deep on the same
/// event when `nested`) while another thread installs and removes a handler.
/// Checks: no call of a handler after its removal returned, its state
/// dropped by then, no call lost (the persistent handler saw every raise),
/// no call doubled (every raise's sum decodes to one persistent call per
/// level and at most one transient call per level, and the transient calls
/// equal the transient results the raisers saw).
fn stress(nested: bool, locked: bool) {
    let levels = if nested { 2 } else { 1 };
    let raisers = raisers();
    let dispatcher = if locked {
        common::locked_dispatcher(raisers + 1)
    } else {
        common::dispatcher(raisers + 1)
    };
    assert_eq!(dispatcher.uses_grace_periods(), !locked);
    let (event, _owner) = summing_event(&dispatcher, "stress");
    let cell: Arc<OnceLock<Event<u64, u64>>> = Arc::new(OnceLock::new());
    let persistent_calls = Arc::new(AtomicU64::new(0));
    let (counter, inner) = (Arc::clone(&persistent_calls), Arc::clone(&cell));
    let _persistent = event
        .install(
            DomainId(9),
            Handler::new(move |level: &u64| {
                counter.fetch_add(1, Ordering::Relaxed);
                match inner.get() {
                    Some(event) if *level + 1 < levels => {
                        PERSISTENT_RESULT + event.raise(&(level + 1))
                    }
                    _ => PERSISTENT_RESULT,
                }
            }),
        )
        .unwrap();
    assert!(cell.set(event.clone()).is_ok());
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));

    let raiser_threads: Vec<_> = (0..raisers)
        .map(|cpu| {
            let (event, stop) = (event.clone(), Arc::clone(&stop));
            common::spawn_on_cpu(cpu, move || {
                let mut totals = RaiserTotals::default();
                while !stop.load(Ordering::Relaxed) {
                    let result = event.raise(&0);
                    let transients = result / TRANSIENT_RESULT;
                    let persistents = result % TRANSIENT_RESULT;
                    if persistents != levels || transients > levels {
                        totals.wrong_results += 1;
                    }
                    totals.transient_results += transients;
                    totals.raises += 1;
                }
                totals
            })
        })
        .collect();

    let remover = {
        let (event, violations) = (event.clone(), Arc::clone(&violations));
        common::spawn_on_cpu(raisers, move || {
            let start = Instant::now();
            let mut transients = Vec::new();
            while (start.elapsed() < STRESS_DURATION || transients.len() < MINIMUM_CYCLES)
                && start.elapsed() < STRESS_LIMIT
            {
                let removed = Arc::new(AtomicBool::new(false));
                let calls = Arc::new(AtomicU64::new(0));
                let state = Arc::new(());
                let (removed_flag, counter, violation_counter, held) = (
                    Arc::clone(&removed),
                    Arc::clone(&calls),
                    Arc::clone(&violations),
                    Arc::clone(&state),
                );
                let handle = event
                    .install(
                        INSTALLER,
                        Handler::new(move |_| {
                            let _hold = &held;
                            if removed_flag.load(Ordering::SeqCst) {
                                violation_counter.fetch_add(1, Ordering::SeqCst);
                            }
                            counter.fetch_add(1, Ordering::SeqCst);
                            TRANSIENT_RESULT
                        }),
                    )
                    .unwrap();
                // Let some raises see it.
                std::thread::yield_now();
                handle.remove().unwrap();
                removed.store(true, Ordering::SeqCst);
                transients.push(Transient {
                    calls_when_removed: calls.load(Ordering::SeqCst),
                    calls,
                    state,
                });
            }
            transients
        })
    };

    let transients = remover.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut totals = RaiserTotals::default();
    for raiser in raiser_threads {
        let own = raiser.join().unwrap();
        totals.raises += own.raises;
        totals.transient_results += own.transient_results;
        totals.wrong_results += own.wrong_results;
    }

    let transient_calls: u64 = transients
        .iter()
        .map(|transient| transient.calls.load(Ordering::SeqCst))
        .sum();
    println!(
        "stress (nested: {nested}): {} raises on {raisers} CPUs, {} install/remove cycles, {transient_calls} transient calls",
        totals.raises,
        transients.len()
    );
    assert_eq!(violations.load(Ordering::SeqCst), 0, "called after removal");
    for transient in &transients {
        assert_eq!(
            transient.calls.load(Ordering::SeqCst),
            transient.calls_when_removed,
            "a handler was called after remove returned"
        );
        assert_eq!(
            Arc::strong_count(&transient.state),
            1,
            "a removed handler's state outlived its removal"
        );
    }
    assert_eq!(totals.wrong_results, 0, "a raise lost or doubled a call");
    assert_eq!(
        persistent_calls.load(Ordering::Relaxed),
        totals.raises * levels,
        "a raise lost or doubled the persistent handler's call"
    );
    assert_eq!(
        transient_calls, totals.transient_results,
        "transient calls do not match the raises that saw them"
    );
    assert!(
        totals.raises > 0 && transients.len() >= MINIMUM_CYCLES,
        "too little happened"
    );
    assert!(
        totals.transient_results > 0,
        "no raise saw a transient handler"
    );
}

#[test]
fn stress_removed_handlers_are_never_called_and_no_call_is_lost_or_doubled() {
    stress(false, false);
}

#[test]
fn stress_with_nested_raises() {
    stress(true, false);
}

#[test]
fn stress_under_read_locks() {
    stress(false, true);
}

#[test]
fn stress_with_nested_raises_under_read_locks() {
    stress(true, true);
}

/// Grace-period stalls reported by the platform below: (event, waited ns,
/// awaited CPUs).
static STALLS: std::sync::Mutex<Vec<(&'static str, u64, Vec<usize>)>> =
    std::sync::Mutex::new(Vec::new());

fn record_stall(stall: &spindle_dispatch::GraceStall<'_>) {
    STALLS.lock().unwrap().push((
        stall.event,
        stall.waited_nanoseconds,
        stall.awaited.cpus().collect(),
    ));
}

/// After 20 ms of waiting, a publisher reports its grace period.
const STALL_REPORTING: spindle_dispatch::Platform =
    common::HOST.with_grace_stall_report(20_000_000, record_stall);

#[test]
fn an_install_held_up_by_a_raise_that_does_not_end_is_reported_with_its_cpu() {
    let dispatcher = spindle_dispatch::Dispatcher::new(STALL_REPORTING, 3);
    let (event, _owner) = dispatcher
        .event::<u32, u32>("stalled", |value| *value)
        .accept_all()
        .create();
    let event = Arc::new(event);
    let release = Arc::new(AtomicBool::new(false));
    let (inside, inside_seen) = std::sync::mpsc::channel();
    let _blocking = event
        .install(
            DomainId(1),
            Handler::new({
                let release = Arc::clone(&release);
                let inside = std::sync::Mutex::new(inside);
                move |value: &u32| {
                    if *value == 7 {
                        inside.lock().unwrap().send(()).unwrap();
                        while !release.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                    *value
                }
            }),
        )
        .unwrap();
    // CPU 2 raises an event whose handler does not return until released.
    let raiser = {
        let event = Arc::clone(&event);
        common::spawn_on_cpu(2, move || event.raise(&7))
    };
    inside_seen.recv().unwrap();
    // CPU 1 installs: its grace period waits for CPU 2, and is reported.
    let installer = {
        let event = Arc::clone(&event);
        common::spawn_on_cpu(1, move || {
            event
                .install(DomainId(1), Handler::new(|value: &u32| *value))
                .map(|_handle| ())
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while STALLS.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    release.store(true, Ordering::SeqCst);
    assert_eq!(raiser.join().unwrap(), 7);
    installer.join().unwrap().unwrap();
    let stalls = STALLS.lock().unwrap().clone();
    assert!(!stalls.is_empty(), "the stalled grace period was reported");
    for (name, waited, cpus) in &stalls {
        assert_eq!(*name, "stalled");
        assert!(*waited >= 20_000_000, "reported after {waited} ns");
        assert_eq!(cpus, &[2], "CPU 2 held the grace period");
    }
    // Reports come when the wait doubles, not at every check.
    assert!(stalls.len() <= 12, "{} reports", stalls.len());
}
