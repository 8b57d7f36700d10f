//! Extensions: all-or-nothing installation and uninstallation, also under concurrent raises.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_dispatch::{
    Authorization, Combine, DefaultPolicy, Dispatcher, DomainId, Event, EventOwner,
    ExtensionInstallError, ExtensionPlan, Handler, InstallError, RemoveError,
};

const EXTENSION_DOMAIN: DomainId = DomainId(5);
const REFUSED_DOMAIN: DomainId = DomainId(6);

/// A summing event whose default returns 0 when no handler ran; refuses
/// `REFUSED_DOMAIN`.
fn summing_event(
    dispatcher: &Dispatcher,
    name: &'static str,
) -> (Event<u64, u64>, EventOwner<u64, u64>) {
    dispatcher
        .event::<u64, u64>(name, |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .authorize(|request| {
            if request.domain == REFUSED_DOMAIN {
                Authorization::Refuse("refused domain")
            } else {
                Authorization::Accept
            }
        })
        .create()
}

/// An event of other argument and result types.
fn text_event(dispatcher: &Dispatcher) -> (Event<str, usize>, EventOwner<str, usize>) {
    dispatcher
        .event::<str, usize>("text", |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .quota(1)
        .accept_all()
        .create()
}

#[test]
fn an_extension_installs_on_events_of_different_types_and_uninstalls_together() {
    let dispatcher = common::dispatcher(1);
    let (numbers, numbers_owner) = summing_event(&dispatcher, "numbers");
    let (text, _text_owner) = text_event(&dispatcher);
    let mut plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "counter");
    plan.add(&numbers, Handler::new(|value| value + 1))
        .add(&numbers, Handler::new(|_| 10))
        .add(&text, Handler::new(|text: &str| text.len()));
    assert_eq!(plan.len(), 3);
    let extension = plan.install().unwrap();
    assert!(extension.is_enabled());
    assert_eq!(extension.name(), "counter");
    assert_eq!(extension.domain(), EXTENSION_DOMAIN);
    assert_eq!(extension.handler_ids().len(), 3);
    assert_eq!(numbers.raise(&5), 16);
    assert_eq!(text.raise("abc"), 3);
    let infos = numbers_owner.handlers();
    assert!(infos
        .iter()
        .all(|info| info.extension == Some("counter") && info.domain == EXTENSION_DOMAIN));

    extension.uninstall().unwrap();
    assert!(!extension.is_enabled());
    assert!(!extension.is_evicted());
    assert_eq!(numbers.raise(&5), 0);
    assert_eq!(text.raise("abc"), 0);
    assert_eq!(numbers.handler_count() + text.handler_count(), 0);
    assert_eq!(extension.uninstall(), Err(RemoveError::NotInstalled));
}

#[test]
fn a_refused_second_install_leaves_nothing_installed() {
    let dispatcher = common::dispatcher(1);
    let (numbers, _numbers_owner) = summing_event(&dispatcher, "numbers");
    let (text, _text_owner) = text_event(&dispatcher);
    // The text event's quota is 1: take it.
    let _occupant = text
        .install(EXTENSION_DOMAIN, Handler::new(|_: &str| 100))
        .unwrap();
    let state = Arc::new(());
    let held = Arc::clone(&state);
    let mut plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "greedy");
    plan.add(
        &numbers,
        Handler::new(move |_| {
            let _hold = &held;
            1
        }),
    )
    .add(&text, Handler::new(|_: &str| 1));
    let error = plan.install().unwrap_err();
    assert_eq!(
        error,
        ExtensionInstallError {
            extension: "greedy",
            index: 1,
            error: InstallError::QuotaExceeded {
                event: "text",
                domain: EXTENSION_DOMAIN,
                quota: 1,
            },
        }
    );
    assert!(error.to_string().contains("greedy"));
    assert_eq!(numbers.handler_count(), 0, "the first install was undone");
    assert_eq!(text.handler_count(), 1, "only the occupant is left");
    assert_eq!(numbers.raise(&0), 0);
    assert_eq!(
        Arc::strong_count(&state),
        1,
        "the undone handler was dropped"
    );

    // A refusal by the authorization procedure is undone the same way.
    let (closed, _closed_owner) = dispatcher.event::<u64, u64>("closed", |_| 0).create();
    let mut refused = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "refused");
    refused
        .add(&numbers, Handler::new(|_| 1))
        .add(&closed, Handler::new(|_| 1));
    assert!(matches!(
        refused.install(),
        Err(ExtensionInstallError {
            index: 1,
            error: InstallError::Refused {
                event: "closed",
                ..
            },
            ..
        })
    ));
    assert_eq!(numbers.handler_count(), 0);
    assert_eq!(numbers.raise(&0), 0);
}

#[test]
fn an_event_of_another_dispatcher_is_refused() {
    let dispatcher = common::dispatcher(1);
    let other_dispatcher = common::dispatcher(1);
    let (numbers, _owner) = summing_event(&dispatcher, "numbers");
    let (foreign, _foreign_owner) = summing_event(&other_dispatcher, "foreign");
    let mut plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "split");
    plan.add(&numbers, Handler::new(|_| 1))
        .add(&foreign, Handler::new(|_| 1));
    let error = plan.install().unwrap_err();
    assert_eq!(error.index, 1);
    assert_eq!(
        error.error,
        InstallError::ForeignDispatcher { event: "foreign" }
    );
    assert_eq!(numbers.handler_count() + foreign.handler_count(), 0);
}

#[test]
fn evicting_one_handler_switches_the_whole_extension_off() {
    let dispatcher = common::dispatcher(1);
    let (numbers, numbers_owner) = summing_event(&dispatcher, "numbers");
    let (others, _others_owner) = summing_event(&dispatcher, "others");
    let mut plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "evicted");
    plan.add(&numbers, Handler::new(|_| 1))
        .add(&others, Handler::new(|_| 2));
    let extension = plan.install().unwrap();
    assert_eq!(numbers.raise(&0) + others.raise(&0), 3);
    let first = extension.handler_ids()[0];
    numbers_owner.evict(first).unwrap();
    assert!(!extension.is_enabled());
    assert!(extension.is_evicted());
    assert_eq!(
        others.raise(&0),
        0,
        "the handler on the other event is off too"
    );
    assert_eq!(others.handler_count(), 1, "but installed until uninstalled");
    extension.uninstall().unwrap();
    assert_eq!(others.handler_count(), 0);
}

#[test]
fn an_empty_extension_installs_and_uninstalls() {
    let dispatcher = common::dispatcher(1);
    let plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "empty");
    assert!(plan.is_empty());
    let extension = plan.install().unwrap();
    assert!(extension.is_enabled());
    extension.uninstall().unwrap();
}

/// What the extension's two handlers on the watched event add up to.
const EXTENSION_SUM: u64 = 1 + 10;
/// What the handler of a plan that is always refused returns.
const DOOMED_RESULT: u64 = 1_000;
/// How long the installer runs (at least).
const CONCURRENT_DURATION: Duration = Duration::from_millis(500);
/// Fewest install/uninstall cycles the test must reach to mean something.
const MINIMUM_CYCLES: u64 = 10;
/// Longest the installer may take to reach `MINIMUM_CYCLES`.
const CONCURRENT_LIMIT: Duration = Duration::from_secs(60);

/// Raisers on several CPUs never see a partial extension: the two handlers
/// of the extension on one event run together or not at all (a sum of 0 or
/// 11, never 1 or 10), and the handler of a plan whose second install is
/// refused never runs at all.
#[test]
fn concurrent_raisers_never_observe_a_partial_extension() {
    let raisers = std::thread::available_parallelism()
        .map_or(2, |cores| cores.get().saturating_sub(1))
        .clamp(2, 8);
    let dispatcher = common::dispatcher(raisers + 1);
    let (watched, _watched_owner) = summing_event(&dispatcher, "watched");
    let (second, _second_owner) = summing_event(&dispatcher, "second");
    let stop = Arc::new(AtomicBool::new(false));
    let raiser_threads: Vec<_> = (0..raisers)
        .map(|cpu| {
            let (watched, stop) = (watched.clone(), Arc::clone(&stop));
            common::spawn_on_cpu(cpu, move || {
                let (mut complete, mut absent, mut partial) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match watched.raise(&0) {
                        EXTENSION_SUM => complete += 1,
                        0 => absent += 1,
                        _ => partial += 1,
                    }
                }
                (complete, absent, partial)
            })
        })
        .collect();

    let installer = {
        let (dispatcher, watched, second) = (dispatcher.clone(), watched.clone(), second.clone());
        common::spawn_on_cpu(raisers, move || {
            let (closed, _closed_owner) = dispatcher.event::<u64, u64>("closed", |_| 0).create();
            let start = Instant::now();
            let mut cycles = 0u64;
            while (start.elapsed() < CONCURRENT_DURATION || cycles < MINIMUM_CYCLES)
                && start.elapsed() < CONCURRENT_LIMIT
            {
                let mut plan = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "pair");
                plan.add(&watched, Handler::new(|_| 1))
                    .add(&second, Handler::new(|_| 0))
                    .add(&watched, Handler::new(|_| 10));
                let extension = plan.install().unwrap();
                std::thread::yield_now();
                extension.uninstall().unwrap();

                // Plans whose first install succeeds and whose second is
                // refused (by the authorization procedure; for its options).
                let mut refused = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "refused");
                refused
                    .add(&watched, Handler::new(|_| DOOMED_RESULT))
                    .add(&closed, Handler::new(|_| 0));
                let mut invalid = ExtensionPlan::new(&dispatcher, EXTENSION_DOMAIN, "invalid");
                invalid
                    .add(&watched, Handler::new(|_| DOOMED_RESULT))
                    .add(&second, Handler::deferred(|_: u64| {}).deferred_capacity(0));
                assert_eq!(refused.install().unwrap_err().index, 1);
                assert_eq!(invalid.install().unwrap_err().index, 1);
                cycles += 1;
            }
            cycles
        })
    };

    let cycles = installer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut complete, mut absent, mut partial) = (0, 0, 0);
    for raiser in raiser_threads {
        let (own_complete, own_absent, own_partial) = raiser.join().unwrap();
        complete += own_complete;
        absent += own_absent;
        partial += own_partial;
    }
    println!(
        "extensions: {cycles} install/uninstall cycles, raises: {complete} complete, {absent} absent, {partial} partial"
    );
    assert_eq!(partial, 0, "a raise saw part of an extension");
    assert!(
        cycles >= MINIMUM_CYCLES && complete > 0 && absent > 0,
        "too little happened"
    );
    assert_eq!(second.raise(&0), 0);
    assert_eq!(watched.handler_count() + second.handler_count(), 0);
}
