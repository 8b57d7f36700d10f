//! Time budgets, per-domain accounting and overrun reports.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spindle_dispatch::{
    Combine, DefaultPolicy, Dispatcher, DomainId, DomainUsage, Event, EventOwner, Handler,
    HandlerId, OverrunReport,
};

const SLOW_DOMAIN: DomainId = DomainId(1);
const FAST_DOMAIN: DomainId = DomainId(2);
const OWNER_DOMAIN: DomainId = DomainId(9);
/// The slow handler's budget.
const BUDGET: Duration = Duration::from_millis(1);
/// How long the slow handler sleeps: well past its budget.
const SLOW_CALL: Duration = Duration::from_millis(3);
const RAISES: u64 = 3;

fn nanoseconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap()
}

/// An event recording overrun reports in `reports`.
fn event(
    dispatcher: &Dispatcher,
    accounting: bool,
    reports: &Arc<Mutex<Vec<OverrunReport>>>,
) -> (Event<u64, u64>, EventOwner<u64, u64>) {
    let reports = Arc::clone(reports);
    dispatcher
        .event::<u64, u64>("timed", |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .accounting(accounting)
        .owner_domain(OWNER_DOMAIN)
        .on_overrun(move |report| reports.lock().unwrap().push(*report))
        .accept_all()
        .create()
}

#[test]
fn an_overrun_is_charged_to_the_installing_domain_and_reported_to_the_owner() {
    let dispatcher = common::dispatcher(1);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (event, _owner) = event(&dispatcher, false, &reports);
    let slow = event
        .install(
            SLOW_DOMAIN,
            Handler::new(|_| {
                std::thread::sleep(SLOW_CALL);
                1
            })
            .budget_nanoseconds(nanoseconds(BUDGET)),
        )
        .unwrap();
    let _fast = event.install(FAST_DOMAIN, Handler::new(|_| 10)).unwrap();
    for argument in 0..RAISES {
        assert_eq!(event.raise(&argument), 11);
    }

    let usage = dispatcher.usage(SLOW_DOMAIN);
    assert_eq!(usage.calls, RAISES);
    assert_eq!(usage.overruns, RAISES);
    assert!(
        usage.nanoseconds >= RAISES * nanoseconds(SLOW_CALL),
        "{usage:?}"
    );
    assert_eq!(
        dispatcher.usage(FAST_DOMAIN),
        DomainUsage::default(),
        "without a budget or accounting, calls are not measured"
    );
    assert_eq!(dispatcher.usage(OWNER_DOMAIN), DomainUsage::default());

    let reports = reports.lock().unwrap();
    assert_eq!(reports.len() as u64, RAISES);
    for report in reports.iter() {
        assert_eq!(report.domain, SLOW_DOMAIN);
        assert_eq!(report.event, "timed");
        assert_eq!(report.handler, slow.id());
        assert_eq!(report.budget_nanoseconds, nanoseconds(BUDGET));
        assert!(report.elapsed_nanoseconds >= nanoseconds(SLOW_CALL));
        assert_eq!(report.cpu, 0);
        assert!(!report.deferred);
    }
}

#[test]
fn with_accounting_every_call_is_charged_including_the_default() {
    let dispatcher = common::dispatcher(1);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (event, _owner) = event(&dispatcher, true, &reports);
    assert_eq!(event.raise(&0), 0, "the default ran");
    let _fast = event.install(FAST_DOMAIN, Handler::new(|_| 10)).unwrap();
    for argument in 0..RAISES {
        event.raise(&argument);
    }
    let fast = dispatcher.usage(FAST_DOMAIN);
    assert_eq!(fast.calls, RAISES);
    assert_eq!(fast.overruns, 0);
    assert!(fast.nanoseconds < RAISES * nanoseconds(SLOW_CALL));
    assert_eq!(
        dispatcher.usage(OWNER_DOMAIN).calls,
        1,
        "the default's call"
    );
    assert!(reports.lock().unwrap().is_empty(), "nothing had a budget");
}

#[test]
fn unmeasured_calls_never_read_the_clock() {
    let dispatcher = common::dispatcher(1);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (event, _owner) = event(&dispatcher, false, &reports);
    let _guarded = event
        .install(
            FAST_DOMAIN,
            Handler::new(|_| 1).guard(|argument| *argument > 0),
        )
        .unwrap();
    let before = common::clock_reads();
    for argument in 0..100 {
        event.raise(&argument);
    }
    assert_eq!(common::clock_reads(), before);

    let _budgeted = event
        .install(
            SLOW_DOMAIN,
            Handler::new(|_| 1).budget_nanoseconds(u64::MAX),
        )
        .unwrap();
    let before = common::clock_reads();
    event.raise(&1);
    assert_eq!(
        common::clock_reads() - before,
        2,
        "one start and one end read"
    );
    assert_eq!(dispatcher.usage(SLOW_DOMAIN).overruns, 0);
}

#[test]
fn a_deferred_overrun_is_reported_when_it_runs() {
    let dispatcher = common::dispatcher(1);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (event, _owner) = event(&dispatcher, false, &reports);
    let slow = event
        .install(
            SLOW_DOMAIN,
            Handler::deferred(|_argument: u64| std::thread::sleep(SLOW_CALL))
                .budget_nanoseconds(nanoseconds(BUDGET)),
        )
        .unwrap();
    event.raise(&1);
    assert!(reports.lock().unwrap().is_empty(), "nothing ran yet");
    assert_eq!(dispatcher.usage(SLOW_DOMAIN).calls, 0);
    assert_eq!(dispatcher.run_deferred(), 1);
    let usage = dispatcher.usage(SLOW_DOMAIN);
    assert_eq!((usage.calls, usage.overruns), (1, 1));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].handler, slow.id());
    assert_ne!(reports[0].handler, HandlerId::DEFAULT);
    assert!(reports[0].deferred);
}

#[test]
fn usage_sums_over_cpus_and_events() {
    const CPUS: usize = 3;
    let dispatcher = common::dispatcher(CPUS);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (first, _first_owner) = event(&dispatcher, true, &reports);
    let (second, _second_owner) = event(&dispatcher, true, &reports);
    let _one = first.install(FAST_DOMAIN, Handler::new(|_| 1)).unwrap();
    let _two = second.install(FAST_DOMAIN, Handler::new(|_| 2)).unwrap();
    let threads: Vec<_> = (0..CPUS)
        .map(|cpu| {
            let (first, second) = (first.clone(), second.clone());
            common::spawn_on_cpu(cpu, move || {
                for argument in 0..RAISES {
                    first.raise(&argument);
                    second.raise(&argument);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        dispatcher.usage(FAST_DOMAIN).calls,
        2 * RAISES * CPUS as u64
    );
}
