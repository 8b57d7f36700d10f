//! Ignored micro-benchmark: nanoseconds per raise against direct and indirect call baselines.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use spindle_dispatch::{
    Combine, CpuIdentity, DefaultPolicy, Dispatcher, DomainId, Event, Handler, HandlerHandle,
    Platform,
};

/// Calls per measurement.
const ITERATIONS: u64 = 200_000;
/// Measurements per case; the fastest is reported (least disturbed).
const REPEATS: usize = 500;

/// Nanoseconds per iteration of `body`, the best of `REPEATS`.
fn nanoseconds_per_call(mut body: impl FnMut(u64) -> u64) -> f64 {
    (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            let mut accumulated = 0u64;
            for iteration in 0..ITERATIONS {
                accumulated = accumulated.wrapping_add(body(black_box(iteration)));
            }
            black_box(accumulated);
            start.elapsed().as_secs_f64() * 1e9 / ITERATIONS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// A function returning CPU 0, called through a pointer like the kernel's
/// CPU identity.
fn cpu_zero() -> usize {
    0
}

/// One guarded handler and a default behind a pointer.
struct FloorList {
    guard: Box<dyn Fn(&u64) -> bool>,
    handler: Box<dyn Fn(&u64) -> u64>,
    default: Box<dyn Fn(&u64) -> u64>,
}

/// What a guarded raise must do at least, hand-written: ask a function for
/// the CPU, count a read section on its counter, load the list, call the
/// guard and the handler through pointers, end the section and look whether
/// a writer waits. The dispatcher's `h1g` raise is measured against it.
struct Floor {
    current_cpu: fn() -> usize,
    depths: Vec<(AtomicU64, std::sync::atomic::AtomicBool)>,
    list: Box<FloorList>,
}

impl Floor {
    fn new() -> Floor {
        Floor {
            current_cpu: black_box(cpu_zero),
            depths: vec![(AtomicU64::new(0), std::sync::atomic::AtomicBool::new(false))],
            list: Box::new(FloorList {
                guard: Box::new(|value| *value != u64::MAX),
                handler: Box::new(|value| value.wrapping_add(1)),
                default: Box::new(|value| *value),
            }),
        }
    }

    #[inline(always)]
    fn raise(&self, value: u64) -> u64 {
        let (depth, wanted) = &self.depths[(self.current_cpu)()];
        depth.store(depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let list = black_box(&*self.list);
        let result = if (list.guard)(&value) {
            (list.handler)(&value)
        } else {
            (list.default)(&value)
        };
        let left = depth.load(Ordering::Relaxed) - 1;
        depth.store(left, Ordering::Relaxed);
        if left == 0 && wanted.load(Ordering::Relaxed) {
            wanted.store(false, Ordering::Relaxed);
        }
        result
    }
}

#[inline(never)]
fn add_one(value: u64) -> u64 {
    value.wrapping_add(1)
}

/// The kernel's raise path: grace-period read sections on a trusted
/// identity (here the benchmark's one thread, checked at every call).
const GRACE: Platform = Platform::per_cpu(CpuIdentity::one_thread(), common::now_nanoseconds);

/// How the benchmark's handlers are guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guards {
    None,
    /// `Handler::guarded`: guard and function in one call.
    Fused,
    /// `Handler::new(..).guard(..)`: two calls.
    Separate,
}

/// An event whose default (returning its argument) runs only when no handler ran.
fn event_with(
    platform: Platform,
    handlers: usize,
    guards: Guards,
) -> (Event<u64, u64>, Vec<HandlerHandle>) {
    let dispatcher = Dispatcher::new(platform, 1);
    let (event, _owner) = dispatcher
        .event::<u64, u64>("benchmark", |value| *value)
        .combine(Combine::Last)
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .quota(handlers.max(1))
        .accept_all()
        .create();
    let handles = (0..handlers)
        .map(|_| {
            let function = |value: &u64| value.wrapping_add(1);
            let guard = |value: &u64| *value != u64::MAX;
            let handler = match guards {
                Guards::None => Handler::new(function),
                Guards::Fused => Handler::guarded(guard, function),
                Guards::Separate => Handler::new(function).guard(guard),
            };
            event.install(DomainId(1), handler).unwrap()
        })
        .collect();
    (event, handles)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn raise_cost() {
    common::set_cpu(0);
    let direct = nanoseconds_per_call(add_one);
    let indirect_function: &dyn Fn(u64) -> u64 = black_box(&|value: u64| value.wrapping_add(1));
    let indirect = nanoseconds_per_call(|value| black_box(indirect_function)(value));
    let counter = AtomicU64::new(0);
    let atomic = nanoseconds_per_call(|value| counter.fetch_add(value, Ordering::AcqRel));
    println!("baseline direct call        {direct:6.2} ns");
    println!("baseline indirect call      {indirect:6.2} ns");
    // The raise's only synchronisation: one read-lock acquire and release.
    let lock = spin::RwLock::new(1u64);
    let read_lock = nanoseconds_per_call(|value| {
        let guard = lock.try_read();
        guard.map_or(0, |inside| *inside + value)
    });
    println!("baseline locked fetch_add   {atomic:6.2} ns");
    println!("baseline read-lock pair     {read_lock:6.2} ns");
    let floor = Floor::new();
    let floor_cost = nanoseconds_per_call(|value| floor.raise(value));
    println!(
        "floor of a guarded raise    {floor_cost:6.2} ns  ({:.1}x indirect)",
        floor_cost / indirect
    );

    let cases = [
        ("raise h0 (default only)", 0, Guards::None),
        ("raise h1", 1, Guards::None),
        ("raise h1g (1 guard, fused)", 1, Guards::Fused),
        ("raise h1g (guard separate)", 1, Guards::Separate),
        ("raise h4", 4, Guards::None),
        ("raise h4g", 4, Guards::Fused),
        ("raise h16", 16, Guards::None),
        ("raise h16g", 16, Guards::Fused),
    ];
    let mut h1g = f64::NAN;
    for (mode, platform) in [
        ("grace periods (kernel)", GRACE),
        ("read locks", common::HOST_LOCKED),
    ] {
        println!("-- {mode}");
        for (name, handlers, guards) in cases {
            let (event, handles) = event_with(platform, handlers, guards);
            let cost = nanoseconds_per_call(|value| event.raise(&value));
            println!(
                "{name:<27} {cost:6.2} ns  ({:.1}x indirect)",
                cost / indirect
            );
            if handlers == 1 && guards == Guards::Fused && platform.identity.is_some() {
                h1g = cost;
            }
            assert_eq!(handles.len(), handlers);
        }
    }
    assert!(h1g.is_finite() && h1g > 0.0);

    // Scaling: the same h1g raise on several threads at once.
    let threads = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    let dispatcher = common::locked_dispatcher(threads);
    let (event, _owner) = dispatcher
        .event::<u64, u64>("scaling", |value| *value)
        .default_policy(DefaultPolicy::OnlyIfNoHandlerRan)
        .accept_all()
        .create();
    let _handle = event
        .install(
            DomainId(1),
            Handler::guarded(
                |value: &u64| *value != u64::MAX,
                |value: &u64| value.wrapping_add(1),
            ),
        )
        .unwrap();
    let event = Arc::new(event);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|cpu| {
            let event = Arc::clone(&event);
            common::spawn_on_cpu(cpu, move || {
                nanoseconds_per_call(|value| event.raise(&value))
            })
        })
        .collect();
    let per_thread: Vec<f64> = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .collect();
    println!(
        "raise h1g (read locks) on {threads} threads at once: {} ns per raise per thread ({:.1} s)",
        per_thread
            .iter()
            .map(|cost| format!("{cost:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        start.elapsed().as_secs_f64()
    );
}
