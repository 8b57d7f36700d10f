//! Result combination, default-handler policies and handler ordering.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use spindle_dispatch::{
    Authorization, Combine, DefaultPolicy, DomainId, Event, EventOwner, Handler, Order,
};

const INSTALLER: DomainId = DomainId(1);
const DEFAULT_RESULT: u32 = 100;

/// An event returning `DEFAULT_RESULT` from its default handler.
fn event(
    dispatcher: &spindle_dispatch::Dispatcher,
    combine: Combine<u32>,
    policy: DefaultPolicy,
) -> (Event<u32, u32>, EventOwner<u32, u32>) {
    dispatcher
        .event::<u32, u32>("numbers", |_| DEFAULT_RESULT)
        .combine(combine)
        .default_policy(policy)
        .accept_all()
        .create()
}

/// Every result of one raise, in order.
fn all_results(event: &Event<u32, u32>, argument: u32) -> Vec<u32> {
    let mut results = Vec::new();
    event.raise_each(&argument, |result| results.push(result));
    results
}

#[test]
fn results_combine_as_the_owner_chose() {
    let dispatcher = common::dispatcher(1);
    let cases: [(Combine<u32>, u32); 4] = [
        (Combine::First, 1),
        (Combine::Last, 3),
        (Combine::Reduce(|left, right| left * 10 + right), 123),
        (Combine::All, 3),
    ];
    for (combine, expected) in cases {
        let (event, _owner) = event(&dispatcher, combine, DefaultPolicy::OnlyIfNoHandlerRan);
        let handles: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|value| {
                event
                    .install(INSTALLER, Handler::new(move |_| value))
                    .unwrap()
            })
            .collect();
        assert_eq!(event.raise(&0), expected, "{combine:?}");
        let combined = all_results(&event, 0);
        match combine {
            Combine::All => assert_eq!(combined, vec![1, 2, 3]),
            _ => assert_eq!(combined, vec![expected], "{combine:?}"),
        }
        assert_eq!(handles.len(), 3);
    }
}

#[test]
fn every_accepting_handler_runs_even_when_only_the_first_result_is_kept() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher, Combine::First, DefaultPolicy::Always);
    let calls = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..5)
        .map(|value| {
            let calls = Arc::clone(&calls);
            event
                .install(
                    INSTALLER,
                    Handler::new(move |_| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        value
                    })
                    .guard(move |argument| *argument != value),
                )
                .unwrap()
        })
        .collect();
    assert_eq!(event.raise(&2), DEFAULT_RESULT, "the default runs first");
    assert_eq!(calls.load(Ordering::Relaxed), 4, "all but the refusing one");
    assert_eq!(handles.len(), 5);
}

#[test]
fn the_default_always_runs_between_first_and_other_handlers() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher, Combine::All, DefaultPolicy::Always);
    assert_eq!(all_results(&event, 0), vec![DEFAULT_RESULT]);
    let _any = event.install(INSTALLER, Handler::new(|_| 1)).unwrap();
    let _first = event
        .install(INSTALLER, Handler::new(|_| 5).order(Order::First))
        .unwrap();
    assert_eq!(all_results(&event, 0), vec![5, DEFAULT_RESULT, 1]);
    assert_eq!(
        event.raise(&0),
        1,
        "All through raise gives the last result"
    );
}

#[test]
fn the_default_as_fallback_runs_only_if_no_handler_ran() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher, Combine::All, DefaultPolicy::OnlyIfNoHandlerRan);
    assert_eq!(all_results(&event, 0), vec![DEFAULT_RESULT], "no handler");
    let _odd = event
        .install(
            INSTALLER,
            Handler::new(|argument| *argument).guard(|argument| argument % 2 == 1),
        )
        .unwrap();
    assert_eq!(all_results(&event, 3), vec![3], "a handler ran");
    assert_eq!(
        all_results(&event, 4),
        vec![DEFAULT_RESULT],
        "its guard refused"
    );
    // A deferred handler produces no result, so the fallback still runs.
    let _deferred = event
        .install(INSTALLER, Handler::deferred(|_argument: u32| {}))
        .unwrap();
    assert_eq!(all_results(&event, 4), vec![DEFAULT_RESULT]);
    assert_eq!(event.raise(&4), DEFAULT_RESULT);
}

#[test]
fn a_replaceable_default_is_suppressed_only_by_a_replacing_handler_that_ran() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = event(&dispatcher, Combine::All, DefaultPolicy::Replaceable);
    let _observer = event.install(INSTALLER, Handler::new(|_| 1)).unwrap();
    assert_eq!(
        all_results(&event, 0),
        vec![1, DEFAULT_RESULT],
        "observing does not replace"
    );
    let replacement = event
        .install(
            INSTALLER,
            Handler::new(|_| 2)
                .replacing_default()
                .guard(|argument| *argument < 10),
        )
        .unwrap();
    assert_eq!(all_results(&event, 5), vec![1, 2], "replaced");
    assert_eq!(event.raise(&5), 2);
    assert_eq!(
        all_results(&event, 50),
        vec![1, DEFAULT_RESULT],
        "the replacing handler's guard refused, so the default runs"
    );
    replacement.remove().unwrap();
    assert_eq!(all_results(&event, 5), vec![1, DEFAULT_RESULT]);
}

#[test]
fn handlers_run_first_any_last_and_ties_keep_installation_order() {
    let dispatcher = common::dispatcher(1);
    let (event, owner) = event(&dispatcher, Combine::All, DefaultPolicy::Always);
    let installs = [
        (Order::Any, 11),
        (Order::Last, 31),
        (Order::First, 1),
        (Order::Any, 12),
        (Order::First, 2),
        (Order::Last, 32),
    ];
    let handles: Vec<_> = installs
        .into_iter()
        .map(|(order, value)| {
            event
                .install(INSTALLER, Handler::new(move |_| value).order(order))
                .unwrap()
        })
        .collect();
    assert_eq!(
        all_results(&event, 0),
        vec![1, 2, DEFAULT_RESULT, 11, 12, 31, 32],
        "earliest First runs first, latest Last runs last"
    );
    let listed: Vec<_> = owner.handlers().iter().map(|info| info.order).collect();
    assert_eq!(
        listed,
        [
            Order::First,
            Order::First,
            Order::Any,
            Order::Any,
            Order::Last,
            Order::Last
        ]
    );
    // Removing one keeps the others' order.
    handles[2].remove().unwrap();
    assert_eq!(
        all_results(&event, 0),
        vec![2, DEFAULT_RESULT, 11, 12, 31, 32]
    );
}

#[test]
fn the_owner_can_replace_the_default_handler_and_the_old_one_is_dropped() {
    let dispatcher = common::dispatcher(1);
    let token = Arc::new(());
    let captured = Arc::clone(&token);
    let (event, owner) = dispatcher
        .event::<u32, u32>("replaced default", move |_| {
            let _keep = &captured;
            1
        })
        .create();
    assert_eq!(event.raise(&0), 1);
    assert_eq!(Arc::strong_count(&token), 2);
    owner.set_default_handler(|_| 2).unwrap();
    assert_eq!(event.raise(&0), 2);
    assert_eq!(Arc::strong_count(&token), 1, "the old default was dropped");
    assert_eq!(owner.event().name(), "replaced default");
}

#[test]
fn an_unsized_argument_is_passed_by_reference() {
    let dispatcher = common::dispatcher(1);
    let (length, _owner) = dispatcher
        .event::<str, usize>("length", str::len)
        .combine(Combine::Reduce(|left, right| left + right))
        .accept_all()
        .create();
    let _twice = length
        .install(INSTALLER, Handler::new(|text: &str| text.len()))
        .unwrap();
    assert_eq!(length.raise("four"), 8);
    let (sum, _owner) = dispatcher
        .event::<[u32], u32>("sum", |values| values.iter().sum())
        .create();
    assert_eq!(sum.raise(&[1, 2, 3]), 6);
}

/// Installs handlers `(order, result, guarded)` on an event with the given
/// choices; `measured` switches accounting on, which sends every raise down
/// the general path instead of a plain shape; `fused` installs the guarded
/// handlers with `Handler::guarded` instead of `Handler::new(..).guard(..)`.
fn event_with_handlers(
    combine: Combine<u32>,
    policy: DefaultPolicy,
    handlers: &[(Order, u32, bool)],
    measured: bool,
    fused: bool,
) -> (
    Event<u32, u32>,
    EventOwner<u32, u32>,
    Vec<spindle_dispatch::HandlerHandle>,
) {
    let dispatcher = common::dispatcher(1);
    let (event, owner) = dispatcher
        .event::<u32, u32>("numbers", |_| DEFAULT_RESULT)
        .combine(combine)
        .default_policy(policy)
        .accounting(measured)
        .accept_all()
        .create();
    let handles = handlers
        .iter()
        .map(|&(order, result, guarded)| {
            let function = move |argument: &u32| result + argument;
            // The guard refuses odd arguments.
            let even = |argument: &u32| argument.is_multiple_of(2);
            let handler = match (guarded, fused) {
                (false, _) => Handler::new(function),
                (true, false) => Handler::new(function).guard(even),
                (true, true) => Handler::guarded(even, function),
            };
            event.install(INSTALLER, handler.order(order)).unwrap()
        })
        .collect();
    (event, owner, handles)
}

#[test]
fn plain_shapes_give_the_same_results_as_the_general_path() {
    let combines: [Combine<u32>; 4] = [
        Combine::First,
        Combine::Last,
        Combine::All,
        Combine::Reduce(|left, right| left.wrapping_mul(31).wrapping_add(right)),
    ];
    let policies = [
        DefaultPolicy::Always,
        DefaultPolicy::OnlyIfNoHandlerRan,
        DefaultPolicy::Replaceable,
    ];
    let handler_sets: Vec<Vec<(Order, u32, bool)>> = vec![
        vec![],
        vec![(Order::Any, 1, false)],
        vec![(Order::First, 1, false)],
        vec![(Order::Last, 1, true)],
        vec![(Order::First, 1, true)],
        vec![(Order::Any, 1, true), (Order::Last, 2, false)],
        vec![
            (Order::First, 1, false),
            (Order::Any, 2, true),
            (Order::Last, 3, false),
            (Order::First, 4, true),
        ],
    ];
    let mut compared = 0;
    for combine in combines {
        for policy in policies {
            for handlers in &handler_sets {
                let (general, _general_owner, _general_handles) =
                    event_with_handlers(combine, policy, handlers, true, false);
                for fused in [false, true] {
                    let (plain, _plain_owner, _plain_handles) =
                        event_with_handlers(combine, policy, handlers, false, fused);
                    for argument in [0u32, 1, 2, 7] {
                        let case = format!(
                            "{combine:?} {policy:?} {handlers:?} fused {fused} argument {argument}"
                        );
                        assert_eq!(plain.raise(&argument), general.raise(&argument), "{case}");
                        assert_eq!(
                            all_results(&plain, argument),
                            all_results(&general, argument),
                            "{case}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 4 * 3 * 7 * 2 * 4);
}

#[test]
fn a_fused_guard_still_runs_after_the_owners_imposed_guard() {
    for measured in [false, true] {
        let dispatcher = common::dispatcher(1);
        let (event, _owner) = dispatcher
            .event::<u32, u32>("numbers", |_| DEFAULT_RESULT)
            .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
            .accounting(measured)
            .authorize(|_| Authorization::with_guard(|argument: &u32| *argument < 10))
            .create();
        let _handle = event
            .install(
                INSTALLER,
                Handler::guarded(
                    |argument: &u32| argument.is_multiple_of(2),
                    |argument| argument + 100,
                ),
            )
            .unwrap();
        let results: Vec<u32> = [2u32, 3, 12, 13].iter().map(|a| event.raise(a)).collect();
        assert_eq!(
            results,
            [102, DEFAULT_RESULT, DEFAULT_RESULT, DEFAULT_RESULT],
            "measured {measured}: both guards must accept"
        );
    }
}

#[test]
fn a_guard_given_after_guarded_replaces_the_fused_one() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = dispatcher
        .event::<u32, u32>("numbers", |_| DEFAULT_RESULT)
        .accept_all()
        .create();
    let handler = Handler::guarded(|_: &u32| false, |argument: &u32| argument + 100)
        .guard(|argument: &u32| *argument == 5);
    let _handle = event.install(INSTALLER, handler).unwrap();
    assert_eq!(event.raise(&5), 105);
    assert_eq!(event.raise(&6), DEFAULT_RESULT);
}
