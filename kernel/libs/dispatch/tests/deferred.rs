//! Deferred (asynchronous) handlers: queued during the raise, run exactly once later.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use spindle_dispatch::{Combine, DomainId, Event, EventOwner, Handler, HandlerHandle, RemoveError};

const INSTALLER: DomainId = DomainId(1);
const DEFAULT_RESULT: u64 = 7;

fn event(dispatcher: &spindle_dispatch::Dispatcher) -> (Event<u64, u64>, EventOwner<u64, u64>) {
    dispatcher
        .event::<u64, u64>("deferred", |_| DEFAULT_RESULT)
        .combine(Combine::Reduce(|left, right| left + right))
        .accept_all()
        .create()
}

/// A deferred handler recording its arguments.
fn recording_handler(record: &Arc<Mutex<Vec<u64>>>) -> Handler<u64, u64> {
    let record = Arc::clone(record);
    Handler::deferred(move |argument: u64| record.lock().unwrap().push(argument))
}

#[test]
fn deferred_calls_run_later_with_their_argument_exactly_once() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let raising = Arc::new(AtomicBool::new(false));
    let ran_inside_raise = Arc::new(AtomicBool::new(false));
    let (flag, witness) = (Arc::clone(&raising), Arc::clone(&ran_inside_raise));
    let recorder = Arc::clone(&record);
    let _handle = event
        .install(
            INSTALLER,
            Handler::deferred(move |argument: u64| {
                if flag.load(Ordering::SeqCst) {
                    witness.store(true, Ordering::SeqCst);
                }
                recorder.lock().unwrap().push(argument);
            }),
        )
        .unwrap();
    let notifications = common::deferred_notifications();

    raising.store(true, Ordering::SeqCst);
    assert_eq!(
        event.raise(&5),
        DEFAULT_RESULT,
        "no deferred result is combined"
    );
    assert_eq!(event.raise(&6), DEFAULT_RESULT);
    raising.store(false, Ordering::SeqCst);

    assert!(
        record.lock().unwrap().is_empty(),
        "nothing ran during the raises"
    );
    assert!(dispatcher.has_deferred());
    assert_eq!(dispatcher.pending_deferred(), 2);
    assert_eq!(
        common::deferred_notifications() - notifications,
        1,
        "one notification when work became pending"
    );

    assert_eq!(dispatcher.run_deferred(), 2);
    assert_eq!(*record.lock().unwrap(), vec![5, 6]);
    assert!(!ran_inside_raise.load(Ordering::SeqCst));
    assert!(!dispatcher.has_deferred());
    assert_eq!(dispatcher.run_deferred(), 0, "each call runs once");
    assert_eq!(record.lock().unwrap().len(), 2);

    event.raise(&8);
    assert_eq!(common::deferred_notifications() - notifications, 2);
    assert_eq!(dispatcher.run_deferred(), 1);
    assert_eq!(*record.lock().unwrap(), vec![5, 6, 8]);
}

#[test]
fn guards_filter_deferred_calls_at_raise_time() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let _handle = event
        .install(
            INSTALLER,
            recording_handler(&record).guard(|argument| *argument > 10),
        )
        .unwrap();
    for argument in [3, 30, 4, 40] {
        event.raise(&argument);
    }
    assert_eq!(dispatcher.pending_deferred(), 2);
    assert_eq!(dispatcher.run_deferred(), 2);
    assert_eq!(*record.lock().unwrap(), vec![30, 40]);
}

#[test]
fn a_full_queue_drops_and_counts_calls() {
    const CAPACITY: usize = 2;
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let handle = event
        .install(
            INSTALLER,
            recording_handler(&record).deferred_capacity(CAPACITY),
        )
        .unwrap();
    for argument in 1..=3 {
        event.raise(&argument);
    }
    assert_eq!(handle.dropped_deferred(), 1);
    assert_eq!(dispatcher.pending_deferred(), CAPACITY);
    assert_eq!(dispatcher.run_deferred(), CAPACITY);
    assert_eq!(*record.lock().unwrap(), vec![1, 2]);
}

#[test]
fn removing_a_deferred_handler_drops_its_queued_calls() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let handle = event
        .install(INSTALLER, recording_handler(&record))
        .unwrap();
    for argument in 1..=3 {
        event.raise(&argument);
    }
    assert_eq!(dispatcher.pending_deferred(), 3);
    handle.remove().unwrap();
    assert_eq!(dispatcher.pending_deferred(), 0);
    assert_eq!(dispatcher.run_deferred(), 0);
    assert!(record.lock().unwrap().is_empty());
    assert_eq!(handle.remove(), Err(RemoveError::NotInstalled));
}

#[test]
fn deferred_work_runs_on_whichever_cpu_drains_it_and_each_call_once() {
    const CALLS: u64 = 20_000;
    const RUNNERS: usize = 2;
    let dispatcher = common::dispatcher(RUNNERS + 1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let _handle = event
        .install(
            INSTALLER,
            recording_handler(&record).deferred_capacity(CALLS as usize),
        )
        .unwrap();
    for argument in 0..CALLS {
        event.raise(&argument);
    }
    let runners: Vec<_> = (1..=RUNNERS)
        .map(|cpu| {
            let dispatcher = dispatcher.clone();
            common::spawn_on_cpu(cpu, move || {
                let mut ran = 0;
                while dispatcher.has_deferred() {
                    ran += dispatcher.run_deferred();
                }
                ran
            })
        })
        .collect();
    let ran: usize = runners
        .into_iter()
        .map(|runner| runner.join().unwrap())
        .sum();
    assert_eq!(ran as u64, CALLS);
    let record = record.lock().unwrap();
    assert_eq!(record.len() as u64, CALLS);
    let distinct: BTreeSet<u64> = record.iter().copied().collect();
    assert_eq!(distinct.len() as u64, CALLS, "no call ran twice");
    assert!(
        record.windows(2).all(|pair| pair[0] < pair[1]),
        "one handler's calls run one at a time, in order"
    );
}

#[test]
fn run_deferred_does_nothing_inside_a_raise() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let record = Arc::new(Mutex::new(Vec::new()));
    let _deferred = event
        .install(INSTALLER, recording_handler(&record))
        .unwrap();
    event.raise(&1);
    let inner_dispatcher = dispatcher.clone();
    let ran_inside = Arc::new(AtomicU64::new(u64::MAX));
    let witness = Arc::clone(&ran_inside);
    let _synchronous = event
        .install(
            DomainId(2),
            Handler::new(move |_| {
                witness.store(inner_dispatcher.run_deferred() as u64, Ordering::SeqCst);
                0
            }),
        )
        .unwrap();
    event.raise(&2);
    assert_eq!(ran_inside.load(Ordering::SeqCst), 0);
    assert!(record.lock().unwrap().is_empty());
    assert_eq!(dispatcher.run_deferred(), 2);
    assert_eq!(*record.lock().unwrap(), vec![1, 2]);
}

#[test]
fn a_deferred_handler_can_remove_itself() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher);
    let own_handle: Arc<OnceLock<HandlerHandle>> = Arc::new(OnceLock::new());
    let removal = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicU64::new(0));
    let (handle_cell, result_cell, counter) = (
        Arc::clone(&own_handle),
        Arc::clone(&removal),
        Arc::clone(&calls),
    );
    let handle = event
        .install(
            INSTALLER,
            Handler::deferred(move |_argument: u64| {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Some(handle) = handle_cell.get() {
                    *result_cell.lock().unwrap() = Some(handle.remove());
                }
            }),
        )
        .unwrap();
    assert!(own_handle.set(handle).is_ok());
    for argument in 0..3 {
        event.raise(&argument);
    }
    assert_eq!(dispatcher.run_deferred(), 1, "the later calls were dropped");
    assert_eq!(*removal.lock().unwrap(), Some(Ok(())));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(event.handler_count(), 0);
    assert_eq!(dispatcher.pending_deferred(), 0);
    event.raise(&9);
    assert_eq!(dispatcher.run_deferred(), 0);
}

#[test]
fn removal_waits_for_a_deferred_call_running_on_another_cpu() {
    let dispatcher = common::dispatcher(2);
    let (event, _owner) = event(&dispatcher);
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (start_flag, finish_flag) = (Arc::clone(&started), Arc::clone(&finished));
    let handle = event
        .install(
            INSTALLER,
            Handler::deferred(move |_argument: u64| {
                start_flag.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(100));
                finish_flag.store(true, Ordering::SeqCst);
            }),
        )
        .unwrap();
    event.raise(&1);
    let runner_dispatcher = dispatcher.clone();
    let runner = common::spawn_on_cpu(1, move || runner_dispatcher.run_deferred());
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    handle.remove().unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "remove returned only after the running call ended"
    );
    assert_eq!(runner.join().unwrap(), 1);
}
