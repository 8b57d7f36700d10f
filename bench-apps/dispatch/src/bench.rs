//! The dispatch benchmark: what a raise costs next to a direct and an indirect call of the same body.
//!
//! Every case calls [`handler_body`] (or raises an event whose handlers call
//! it) `calls` times in a loop; the caller reads its clock around
//! [`DispatchBench::run`] and divides by `calls`, so the clock's own cost
//! (a trapping `rdtsc` under nested virtualization costs microseconds) is
//! spread over many calls. The argument goes through `black_box`, so the
//! compiler can neither hoist the work out of the loop nor inline the
//! indirect call.

use alloc::vec::Vec;
use core::hint::black_box;

use spindle_dispatch::{
    Authorization, Combine, DefaultPolicy, Dispatcher, Event, EventOwner, Handler, HandlerHandle,
    InstallError, RemoveError,
};

use crate::BENCH_DOMAIN;

/// One measured case: its histogram is `dispatch.<case>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// A direct call of the handler body.
    Direct,
    /// A call of the handler body through a function pointer.
    Indirect,
    /// A raise with no handler: the default handler runs.
    RaiseNoHandler,
    /// A raise with one handler (the default does not run).
    RaiseOneHandler,
    /// A raise with one handler behind one guard, installed together
    /// (`Handler::guarded`: one call for both).
    RaiseOneGuardedHandler,
    /// The same handler and guard, the guard added with `.guard(..)` (two
    /// calls).
    RaiseOneSeparatelyGuardedHandler,
    /// A raise with four handlers.
    RaiseFourHandlers,
    /// A raise with sixteen handlers.
    RaiseSixteenHandlers,
    /// Installing a handler and removing it again (grace period included).
    InstallAndRemove,
}

impl Case {
    /// Every case, in the order the histograms are reported.
    pub const ALL: [Case; 9] = [
        Case::Direct,
        Case::Indirect,
        Case::RaiseNoHandler,
        Case::RaiseOneHandler,
        Case::RaiseOneGuardedHandler,
        Case::RaiseOneSeparatelyGuardedHandler,
        Case::RaiseFourHandlers,
        Case::RaiseSixteenHandlers,
        Case::InstallAndRemove,
    ];

    /// The name of the case's histogram.
    pub fn histogram_name(self) -> &'static str {
        match self {
            Case::Direct => "dispatch.direct",
            Case::Indirect => "dispatch.indirect",
            Case::RaiseNoHandler => "dispatch.raise.h0",
            Case::RaiseOneHandler => "dispatch.raise.h1",
            Case::RaiseOneGuardedHandler => "dispatch.raise.h1g",
            Case::RaiseOneSeparatelyGuardedHandler => "dispatch.raise.h1g.separate",
            Case::RaiseFourHandlers => "dispatch.raise.h4",
            Case::RaiseSixteenHandlers => "dispatch.raise.h16",
            Case::InstallAndRemove => "dispatch.install",
        }
    }

    /// How many calls one sample should time: enough that a slow clock read
    /// is a small part of the sample, few enough that an install sample
    /// (which waits for grace periods) stays short.
    pub fn calls_per_sample(self) -> u64 {
        match self {
            Case::InstallAndRemove => CALLS_PER_INSTALL_SAMPLE,
            _ => CALLS_PER_CALL_SAMPLE,
        }
    }
}

/// The histogram of the guarded raise measured while every other CPU raises
/// the same event in a loop.
pub const CONTENDED_HISTOGRAM: &str = "dispatch.raise.h1g.contended";
/// Calls timed together in one sample of a call or raise case.
pub const CALLS_PER_CALL_SAMPLE: u64 = 4096;
/// Install-and-remove pairs timed together in one sample.
pub const CALLS_PER_INSTALL_SAMPLE: u64 = 1;
/// Handlers on the event of the largest case.
const MOST_HANDLERS: usize = 16;

/// The body every handler, and the direct and indirect calls, run.
#[inline(never)]
pub fn handler_body(value: &u64) -> u64 {
    value.wrapping_add(1)
}

/// The guard of the guarded case: accepts every value the benchmark passes.
fn accepts_all_but_maximum(value: &u64) -> bool {
    *value != u64::MAX
}

/// Why the benchmark could not run.
#[derive(Debug)]
pub enum BenchError {
    /// Installing a benchmark handler was refused.
    Install(InstallError),
    /// Removing a benchmark handler failed.
    Remove(RemoveError),
}

impl core::fmt::Display for BenchError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BenchError::Install(error) => write!(formatter, "dispatch benchmark: {error}"),
            BenchError::Remove(error) => write!(formatter, "dispatch benchmark: {error}"),
        }
    }
}

/// How the handlers of a benchmark event are guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guarding {
    /// No guard.
    None,
    /// `Handler::guarded(guard, function)`.
    Fused,
    /// `Handler::new(function).guard(guard)`.
    Separate,
}

/// One event with `handlers` handlers; the default runs only when none does.
struct MeasuredEvent {
    event: Event<u64, u64>,
    _owner: EventOwner<u64, u64>,
    _handles: Vec<HandlerHandle>,
}

impl MeasuredEvent {
    fn new(
        dispatcher: &Dispatcher,
        name: &'static str,
        handlers: usize,
        guarding: Guarding,
    ) -> Result<MeasuredEvent, BenchError> {
        let (event, owner) = dispatcher
            .event::<u64, u64>(name, handler_body)
            .combine(Combine::Last)
            .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
            .quota(MOST_HANDLERS)
            .authorize(|request| {
                if request.domain == BENCH_DOMAIN {
                    Authorization::Accept
                } else {
                    Authorization::Refuse("only the benchmark installs here")
                }
            })
            .create();
        let mut handles = Vec::with_capacity(handlers);
        for _ in 0..handlers {
            let handler = match guarding {
                Guarding::None => Handler::new(handler_body),
                Guarding::Fused => Handler::guarded(accepts_all_but_maximum, handler_body),
                Guarding::Separate => Handler::new(handler_body).guard(accepts_all_but_maximum),
            };
            handles.push(
                event
                    .install(BENCH_DOMAIN, handler)
                    .map_err(BenchError::Install)?,
            );
        }
        Ok(MeasuredEvent {
            event,
            _owner: owner,
            _handles: handles,
        })
    }
}

/// The benchmark's events, built once and raised from any CPU.
pub struct DispatchBench {
    no_handler: MeasuredEvent,
    one_handler: MeasuredEvent,
    one_guarded_handler: MeasuredEvent,
    one_separately_guarded_handler: MeasuredEvent,
    four_handlers: MeasuredEvent,
    sixteen_handlers: MeasuredEvent,
    install_target: MeasuredEvent,
}

impl DispatchBench {
    /// Creates the events on `dispatcher` and installs their handlers.
    pub fn new(dispatcher: &Dispatcher) -> Result<DispatchBench, BenchError> {
        Ok(DispatchBench {
            no_handler: MeasuredEvent::new(dispatcher, "bench.h0", 0, Guarding::None)?,
            one_handler: MeasuredEvent::new(dispatcher, "bench.h1", 1, Guarding::None)?,
            one_guarded_handler: MeasuredEvent::new(dispatcher, "bench.h1g", 1, Guarding::Fused)?,
            one_separately_guarded_handler: MeasuredEvent::new(
                dispatcher,
                "bench.h1g.separate",
                1,
                Guarding::Separate,
            )?,
            four_handlers: MeasuredEvent::new(dispatcher, "bench.h4", 4, Guarding::None)?,
            sixteen_handlers: MeasuredEvent::new(
                dispatcher,
                "bench.h16",
                MOST_HANDLERS,
                Guarding::None,
            )?,
            install_target: MeasuredEvent::new(dispatcher, "bench.install", 0, Guarding::None)?,
        })
    }

    /// Runs `calls` calls of `case` and returns the folded results (which the
    /// caller may ignore: they exist so that no call can be optimized away).
    pub fn run(&self, case: Case, calls: u64) -> Result<u64, BenchError> {
        let mut folded = 0u64;
        match case {
            Case::Direct => {
                for call in 0..calls {
                    folded = folded.wrapping_add(handler_body(&black_box(call)));
                }
            }
            Case::Indirect => {
                let function: fn(&u64) -> u64 = black_box(handler_body);
                for call in 0..calls {
                    folded = folded.wrapping_add(function(&black_box(call)));
                }
            }
            Case::RaiseNoHandler => folded = raise_loop(&self.no_handler.event, calls),
            Case::RaiseOneHandler => folded = raise_loop(&self.one_handler.event, calls),
            Case::RaiseOneGuardedHandler => {
                folded = raise_loop(&self.one_guarded_handler.event, calls)
            }
            Case::RaiseOneSeparatelyGuardedHandler => {
                folded = raise_loop(&self.one_separately_guarded_handler.event, calls)
            }
            Case::RaiseFourHandlers => folded = raise_loop(&self.four_handlers.event, calls),
            Case::RaiseSixteenHandlers => folded = raise_loop(&self.sixteen_handlers.event, calls),
            Case::InstallAndRemove => {
                for _ in 0..calls {
                    let handle = self
                        .install_target
                        .event
                        .install(BENCH_DOMAIN, Handler::new(handler_body))
                        .map_err(BenchError::Install)?;
                    handle.remove().map_err(BenchError::Remove)?;
                    folded = folded.wrapping_add(1);
                }
            }
        }
        Ok(black_box(folded))
    }

    /// One raise of the guarded event: the load the other CPUs put on it
    /// while the contended case is measured.
    pub fn raise_guarded_once(&self, value: u64) -> u64 {
        self.one_guarded_handler.event.raise(&black_box(value))
    }
}

/// Raises `event` `calls` times.
#[inline(never)]
fn raise_loop(event: &Event<u64, u64>, calls: u64) -> u64 {
    let mut folded = 0u64;
    for call in 0..calls {
        folded = folded.wrapping_add(event.raise(&black_box(call)));
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_dispatch::Platform;

    fn dispatcher() -> Dispatcher {
        Dispatcher::new(Platform::new(|| 0, || 0), 1)
    }

    #[test]
    fn every_case_computes_the_same_sum_as_the_direct_call() {
        let bench = DispatchBench::new(&dispatcher()).unwrap();
        let calls = 100;
        let expected: u64 = (0..calls).map(|call| call + 1).sum();
        for case in Case::ALL {
            let folded = bench.run(case, calls).unwrap();
            if case == Case::InstallAndRemove {
                assert_eq!(folded, calls, "{case:?}");
            } else {
                // A raise with handlers returns the last handler's result,
                // with none the default's: the body either way.
                assert_eq!(folded, expected, "{case:?}");
            }
        }
    }

    #[test]
    fn the_events_have_the_handler_counts_their_names_promise() {
        let bench = DispatchBench::new(&dispatcher()).unwrap();
        assert_eq!(bench.no_handler.event.handler_count(), 0);
        assert_eq!(bench.one_handler.event.handler_count(), 1);
        assert_eq!(bench.one_guarded_handler.event.handler_count(), 1);
        assert_eq!(
            bench.one_separately_guarded_handler.event.handler_count(),
            1
        );
        assert_eq!(bench.four_handlers.event.handler_count(), 4);
        assert_eq!(bench.sixteen_handlers.event.handler_count(), 16);
        bench.run(Case::InstallAndRemove, 3).unwrap();
        assert_eq!(bench.install_target.event.handler_count(), 0);
    }

    #[test]
    fn histogram_names_are_the_documented_ones_and_distinct() {
        let names: Vec<&str> = Case::ALL.iter().map(|case| case.histogram_name()).collect();
        assert_eq!(
            names,
            [
                "dispatch.direct",
                "dispatch.indirect",
                "dispatch.raise.h0",
                "dispatch.raise.h1",
                "dispatch.raise.h1g",
                "dispatch.raise.h1g.separate",
                "dispatch.raise.h4",
                "dispatch.raise.h16",
                "dispatch.install"
            ]
        );
        assert!(Case::ALL.iter().all(|case| case.calls_per_sample() >= 1));
    }

    #[test]
    fn another_domain_cannot_install_on_the_benchmark_events() {
        let bench = DispatchBench::new(&dispatcher()).unwrap();
        let refused = bench.one_handler.event.install(
            spindle_dispatch::DomainId::new(1),
            Handler::new(handler_body),
        );
        assert!(matches!(refused, Err(InstallError::Refused { .. })));
    }
}
