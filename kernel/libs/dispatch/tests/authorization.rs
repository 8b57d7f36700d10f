//! Authorization, quotas, guards and option checks: every refusal is a typed error.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use spindle_dispatch::{
    Authorization, Combine, DefaultPolicy, DomainId, Handler, InstallError, Order, RemoveError,
    DEFAULT_QUOTA, NO_AUTHORIZATION_REASON,
};

const TRUSTED: DomainId = DomainId(4);
const UNTRUSTED: DomainId = DomainId(3);
const UNTRUSTED_REASON: &str = "domain 3 is not trusted";

#[test]
fn an_event_without_authorization_procedure_refuses_everyone() {
    let dispatcher = common::dispatcher(1);
    let (event, owner) = dispatcher.event::<u32, u32>("closed", |_| 0).create();
    let refusal = event.install(TRUSTED, Handler::new(|_| 1)).unwrap_err();
    assert_eq!(
        refusal,
        InstallError::Refused {
            event: "closed",
            domain: TRUSTED,
            reason: NO_AUTHORIZATION_REASON,
        }
    );
    assert!(owner.handlers().is_empty());
    assert_eq!(event.raise(&7), 0);
}

#[test]
fn the_authorization_procedure_refuses_with_a_typed_error_and_accepts_others() {
    let dispatcher = common::dispatcher(1);
    let (event, owner) = dispatcher
        .event::<u32, u32>("guarded", |_| 0)
        .authorize(|request| {
            if request.domain == UNTRUSTED {
                Authorization::Refuse(UNTRUSTED_REASON)
            } else {
                Authorization::Accept
            }
        })
        .create();
    let refusal = event.install(UNTRUSTED, Handler::new(|_| 1)).unwrap_err();
    assert_eq!(
        refusal,
        InstallError::Refused {
            event: "guarded",
            domain: UNTRUSTED,
            reason: UNTRUSTED_REASON,
        }
    );
    assert_eq!(
        refusal.to_string(),
        "event guarded refused domain 3: domain 3 is not trusted"
    );
    assert_eq!(event.handler_count(), 0);
    assert_eq!(event.raise(&7), 0, "the refused handler never runs");

    let accepted = event.install(TRUSTED, Handler::new(|_| 1)).unwrap();
    assert_eq!(accepted.domain(), TRUSTED);
    assert_eq!(accepted.event_name(), "guarded");
    assert_eq!(owner.handlers().len(), 1);
    assert_eq!(owner.handlers()[0].id, accepted.id());
    assert_eq!(event.raise(&7), 1);
}

#[test]
fn the_authorization_procedure_sees_the_requested_options() {
    let dispatcher = common::dispatcher(1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let (event, _owner) = dispatcher
        .event::<u32, u32>("options", |_| 0)
        .default_policy(DefaultPolicy::Replaceable)
        .authorize(move |request| {
            recorder.lock().unwrap().push(*request);
            if request.order == Order::First {
                Authorization::Refuse("nobody goes first")
            } else {
                Authorization::Accept
            }
        })
        .create();
    let refusal = event
        .install(TRUSTED, Handler::new(|_| 1).order(Order::First))
        .unwrap_err();
    assert!(matches!(
        refusal,
        InstallError::Refused {
            reason: "nobody goes first",
            ..
        }
    ));
    let _accepted = event
        .install(
            TRUSTED,
            Handler::new(|_| 2)
                .order(Order::Last)
                .budget_nanoseconds(500)
                .replacing_default(),
        )
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].domain, TRUSTED);
    assert_eq!(seen[1].event, "options");
    assert_eq!(seen[1].order, Order::Last);
    assert_eq!(seen[1].budget_nanoseconds, Some(500));
    assert!(seen[1].replaces_default);
    assert!(!seen[1].deferred);
    assert_eq!(seen[1].extension, None);
}

#[test]
fn installing_beyond_the_quota_is_refused_per_domain() {
    const QUOTA: usize = 2;
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = dispatcher
        .event::<u32, u32>("limited", |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .quota(QUOTA)
        .accept_all()
        .create();
    let first = event.install(TRUSTED, Handler::new(|_| 1)).unwrap();
    let _second = event.install(TRUSTED, Handler::new(|_| 1)).unwrap();
    let refusal = event.install(TRUSTED, Handler::new(|_| 1)).unwrap_err();
    assert_eq!(
        refusal,
        InstallError::QuotaExceeded {
            event: "limited",
            domain: TRUSTED,
            quota: QUOTA,
        }
    );
    assert_eq!(
        refusal.to_string(),
        "domain 4 already has 2 handlers on event limited (its quota)"
    );
    assert_eq!(event.raise(&0), 2, "the refused handler never runs");

    // Another domain has its own quota.
    let _other = event.install(UNTRUSTED, Handler::new(|_| 10)).unwrap();
    assert_eq!(event.raise(&0), 12);

    // Removing one frees a place.
    first.remove().unwrap();
    let _again = event.install(TRUSTED, Handler::new(|_| 100)).unwrap();
    assert_eq!(event.raise(&0), 111);
}

#[test]
fn the_default_quota_is_sixteen_and_a_zero_quota_refuses_everything() {
    let dispatcher = common::dispatcher(1);
    let (event, _owner) = dispatcher
        .event::<u32, u32>("default quota", |_| 0)
        .accept_all()
        .create();
    let handles: Vec<_> = (0..DEFAULT_QUOTA)
        .map(|_| event.install(TRUSTED, Handler::new(|_| 1)).unwrap())
        .collect();
    assert_eq!(handles.len(), 16);
    assert!(matches!(
        event.install(TRUSTED, Handler::new(|_| 1)),
        Err(InstallError::QuotaExceeded { quota: 16, .. })
    ));

    let (closed, _owner) = dispatcher
        .event::<u32, u32>("zero quota", |_| 0)
        .quota(0)
        .accept_all()
        .create();
    assert!(matches!(
        closed.install(TRUSTED, Handler::new(|_| 1)),
        Err(InstallError::QuotaExceeded { quota: 0, .. })
    ));
}

#[test]
fn both_the_installer_guard_and_the_imposed_guard_must_accept() {
    let dispatcher = common::dispatcher(1);
    // The owner lets anyone in, but only for even arguments.
    let (event, _owner) = dispatcher
        .event::<u32, u32>("filtered", |_| 0)
        .combine(Combine::Reduce(|left, right| left + right))
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .authorize(|_request| {
            Authorization::with_guard(|argument: &u32| argument.is_multiple_of(2))
        })
        .create();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    // The installer only wants small arguments.
    let _small = event
        .install(
            TRUSTED,
            Handler::new(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                1
            })
            .guard(|argument| *argument < 10),
        )
        .unwrap();
    assert_eq!(event.raise(&4), 1, "both accept");
    assert_eq!(event.raise(&5), 0, "the imposed guard refuses");
    assert_eq!(event.raise(&12), 0, "the installer's guard refuses");
    assert_eq!(event.raise(&13), 0, "both refuse");
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    // An installer cannot get rid of the imposed guard: neither by a guard
    // that accepts everything nor by having no guard at all.
    let _permissive = event
        .install(TRUSTED, Handler::new(|_| 10).guard(|_| true))
        .unwrap();
    let _unguarded = event.install(TRUSTED, Handler::new(|_| 100)).unwrap();
    assert_eq!(event.raise(&3), 0);
    assert_eq!(event.raise(&20), 110);
    assert_eq!(event.raise(&2), 111);
}

#[test]
fn contradictory_options_are_refused() {
    let dispatcher = common::dispatcher(1);
    let (fixed, _owner) = dispatcher
        .event::<u32, u32>("fixed default", |_| 0)
        .accept_all()
        .create();
    let refusal = fixed
        .install(TRUSTED, Handler::new(|_| 1).replacing_default())
        .unwrap_err();
    assert_eq!(
        refusal,
        InstallError::DefaultNotReplaceable {
            event: "fixed default"
        }
    );

    let (replaceable, _owner) = dispatcher
        .event::<u32, u32>("replaceable", |_| 0)
        .default_policy(DefaultPolicy::Replaceable)
        .accept_all()
        .create();
    assert!(matches!(
        replaceable.install(
            TRUSTED,
            Handler::deferred(|_argument: u32| {}).replacing_default()
        ),
        Err(InstallError::InvalidOptions { .. })
    ));
    assert!(matches!(
        replaceable.install(
            TRUSTED,
            Handler::deferred(|_argument: u32| {}).deferred_capacity(0)
        ),
        Err(InstallError::InvalidOptions { .. })
    ));
    assert_eq!(replaceable.handler_count(), 0);
}

#[test]
fn every_error_displays_a_sentence() {
    let errors = [
        InstallError::Refused {
            event: "sample",
            domain: DomainId(1),
            reason: "no",
        },
        InstallError::QuotaExceeded {
            event: "sample",
            domain: DomainId(1),
            quota: 3,
        },
        InstallError::DefaultNotReplaceable { event: "sample" },
        InstallError::InvalidOptions {
            event: "sample",
            reason: "bad",
        },
        InstallError::InsideRaise { event: "sample" },
        InstallError::ForeignDispatcher { event: "sample" },
    ];
    for error in errors {
        let text = error.to_string();
        assert!(text.contains("sample") && text.len() > 30, "{text}");
    }
    assert_eq!(
        RemoveError::NotInstalled.to_string(),
        "the handler is not installed"
    );
    assert!(RemoveError::InsideRaise
        .to_string()
        .contains("inside a raise"));
}
