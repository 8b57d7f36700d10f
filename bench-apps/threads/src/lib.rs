//! `--bench forkjoin,pingpong` and `selftest=uthreads`: the 1991 scheduler-activations paper's Null Fork and Signal-Wait, on kernel strands and on `uthreads` threads, and a stress test of the thread package.
//!
//! * `forkjoin.<kind>`: create a thread that does nothing and join it; one
//!   sample per round, in nanoseconds.
//! * `pingpong.<kind>`: two threads hand a token back and forth; one sample
//!   per round trip. Strands hand it over with Block/Unblock, uthreads
//!   threads with two semaphores.
//! * [`blocking`]: many threads on one carrier per CPU, each computing and
//!   sometimes making a blocking kernel call (`Thread::block_in_kernel`,
//!   a simulated I/O that waits on the kernel's timer); reports the busy
//!   time of the carriers' CPUs over their wall time. Under `uthreads` the
//!   call blocks the whole carrier strand, and its CPU idles meanwhile.
//! * [`stress`]: thousands of threads on every CPU, spawned and joined, each
//!   incrementing a shared counter under a mutex with a yield inside the
//!   critical section, so that only mutual exclusion keeps the count right.
//!
//! Everything runs on CPU 0 for the figures (both kinds pay the same
//! machine), and is written against the kernel's `Strands` and `Contexts`
//! interfaces only.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::num::NonZeroU16;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spindle_sched_ext::{CpuId, CpuSet, SchedParams};
use spindle_services::contexts::Contexts;
use spindle_services::strands::{pack, unpack, Strands};
use spindle_uthreads::runtime::Runtime;

/// How long one benchmark may take before it counts as hung.
const TIMEOUT_NS: u64 = 120_000_000_000;

/// The CPU the figures are taken on.
fn bench_cpu() -> CpuSet {
    CpuSet::single(CpuId(0))
}

/// Runs `work` in a strand on CPU 0 and waits for it (from a CPU's own
/// context): joins and blocks need a strand.
fn in_a_strand(
    strands: &'static dyn Strands,
    work: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let outcome = Arc::new(spin::Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let (result, finished) = (Arc::clone(&outcome), Arc::clone(&done));
    let driver = strands.spawn_held(
        Box::new(move || {
            *result.lock() = Some(work());
            finished.store(true, Ordering::Release);
        }),
        bench_cpu(),
        SchedParams::default(),
    )?;
    strands.start(driver);
    if !strands.wait_until(&|| done.load(Ordering::Acquire), TIMEOUT_NS) {
        return Err(String::from("the benchmark strand did not finish in time"));
    }
    let outcome = outcome.lock().take();
    outcome.unwrap_or_else(|| Err(String::from("the benchmark strand left no result")))
}

/// Runs `main` as the first thread of a `uthreads` runtime with `carriers`
/// carriers; a failure `main` reports comes back as the error.
fn in_threads(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    carriers: NonZeroU16,
    main: impl FnOnce(&spindle_uthreads::runtime::Thread<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Arc<Runtime>, String> {
    let runtime = Runtime::new(strands, contexts, carriers);
    let outcome = Arc::new(spin::Mutex::new(None));
    let result = Arc::clone(&outcome);
    runtime
        .run(
            move |thread| *result.lock() = Some(main(thread)),
            TIMEOUT_NS,
        )
        .map_err(|error| format!("{error:?}"))?;
    let outcome = outcome.lock().take();
    outcome.unwrap_or_else(|| Err(String::from("the main thread left no result")))?;
    Ok(runtime)
}

/// `forkjoin.strand`: a strand on CPU 0 creates a strand that does nothing
/// and joins it, `rounds` times.
pub fn forkjoin_strands(strands: &'static dyn Strands, rounds: u64) -> Result<(), String> {
    let histogram = strands.histogram("forkjoin.strand");
    in_a_strand(strands, move || {
        for _ in 0..rounds {
            let started = strands.now();
            let child = strands.spawn_held(Box::new(|| {}), bench_cpu(), SchedParams::default())?;
            strands.start(child);
            strands.join(child)?;
            histogram.record(strands.now() - started);
        }
        Ok(())
    })
}

/// `forkjoin.uthreads`: a thread creates a thread that does nothing and
/// joins it, `rounds` times, on one carrier on CPU 0.
pub fn forkjoin_uthreads(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    rounds: u64,
) -> Result<(), String> {
    let histogram = strands.histogram("forkjoin.uthreads");
    in_threads(strands, contexts, NonZeroU16::MIN, move |thread| {
        for _ in 0..rounds {
            let started = strands.now();
            let child = thread
                .spawn(|_| {})
                .map_err(|error| format!("spawn: {error:?}"))?;
            thread
                .join(child)
                .map_err(|error| format!("join: {error:?}"))?;
            histogram.record(strands.now() - started);
        }
        Ok(())
    })
    .map(drop)
}

/// `pingpong.strand`: two strands on CPU 0 hand a token back and forth with
/// Block/Unblock, `rounds` round trips.
pub fn pingpong_strands(strands: &'static dyn Strands, rounds: u64) -> Result<(), String> {
    let histogram = strands.histogram("pingpong.strand");
    in_a_strand(strands, move || {
        let me = strands.current().ok_or("no current strand")?;
        let stop = Arc::new(AtomicBool::new(false));
        let partner_stop = Arc::clone(&stop);
        let pinger = Arc::new(AtomicU64::new(pack(me)));
        let partner_pinger = Arc::clone(&pinger);
        let partner = strands.spawn_held(
            Box::new(move || loop {
                strands.block();
                if partner_stop.load(Ordering::Acquire) {
                    return;
                }
                strands.unblock(unpack(partner_pinger.load(Ordering::Acquire)));
            }),
            bench_cpu(),
            SchedParams::default(),
        )?;
        strands.start(partner);
        for _ in 0..rounds {
            let started = strands.now();
            strands.unblock(partner);
            strands.block();
            histogram.record(strands.now() - started);
        }
        stop.store(true, Ordering::Release);
        strands.unblock(partner);
        strands.join(partner)
    })
}

/// `pingpong.uthreads`: two threads on one carrier on CPU 0 hand a token
/// back and forth with two semaphores, `rounds` round trips.
pub fn pingpong_uthreads(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    rounds: u64,
) -> Result<(), String> {
    let histogram = strands.histogram("pingpong.uthreads");
    in_threads(strands, contexts, NonZeroU16::MIN, move |thread| {
        let fail = |error| format!("{error:?}");
        let ping = thread.new_semaphore(0).map_err(fail)?;
        let pong = thread.new_semaphore(0).map_err(fail)?;
        let partner = thread
            .spawn(move |thread| {
                for _ in 0..rounds {
                    if thread.down(ping).is_err() || thread.up(pong).is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| format!("{error:?}"))?;
        for _ in 0..rounds {
            let started = strands.now();
            thread.up(ping).map_err(fail)?;
            thread.down(pong).map_err(fail)?;
            histogram.record(strands.now() - started);
        }
        thread.join(partner).map_err(fail)
    })
    .map(drop)
}

/// What [`stress`] found.
#[derive(Debug, Default)]
pub struct StressReport {
    /// Threads spawned and joined.
    pub threads: u64,
    /// The shared counter at the end (must be `threads * increments`).
    pub counter: u64,
    /// Increments each thread made.
    pub increments: u64,
    /// Threads the runtime saw finish.
    pub finished: u64,
    /// Contexts made (the others were reused).
    pub contexts_made: u64,
    /// Stolen picks (a carrier took another carrier's thread).
    pub steals: u64,
    /// Threads handed back when the kernel preempted their carrier.
    pub handed_back: u64,
    /// Threads preempted inside the package's critical section and
    /// continued at once.
    pub recovered: u64,
}

/// `threads` threads on one carrier per CPU, spawned in batches and joined;
/// each increments a shared counter `increments` times under one mutex,
/// yielding inside the critical section (and preempted by the strands'
/// timer whenever it lands), so only mutual exclusion keeps the count.
pub fn stress(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    threads: u64,
    increments: u64,
) -> Result<StressReport, String> {
    let cpus = strands.cpu_count();
    let carriers = NonZeroU16::new(cpus).unwrap_or(NonZeroU16::MIN);
    let counter = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&counter);
    // A competing strand on every CPU, so that the kernel preempts the
    // carriers (and hands their threads back, critical sections included).
    let stop = Arc::new(AtomicBool::new(false));
    let mut competitors = Vec::new();
    for cpu in 0..cpus {
        let stop = Arc::clone(&stop);
        let competitor = strands.spawn_held(
            Box::new(move || {
                let give_up = strands.now() + SPIN_LIMIT_NS;
                while !stop.load(Ordering::Acquire) && strands.now() < give_up {
                    compute_for(strands, 100_000);
                    strands.sleep(1_000_000);
                }
            }),
            CpuSet::single(CpuId(cpu)),
            SchedParams::default(),
        )?;
        competitors.push(competitor);
    }
    let main_stop = Arc::clone(&stop);
    let runtime = in_threads(strands, contexts, carriers, move |thread| {
        for competitor in competitors {
            strands.start(competitor);
        }
        let outcome = stress_threads(thread, threads, increments, &total);
        main_stop.store(true, Ordering::Release);
        outcome
    });
    stop.store(true, Ordering::Release);
    let runtime = runtime?;
    let counts = runtime.counts();
    Ok(StressReport {
        threads,
        counter: counter.load(Ordering::Relaxed),
        increments,
        // The main thread is one of the finished threads.
        finished: counts.finished.saturating_sub(1),
        contexts_made: counts.contexts_made,
        steals: runtime.package().counters().steals,
        handed_back: counts.preemptions,
        recovered: counts.recoveries,
    })
}

/// The stress test's main thread: spawns and joins `threads` threads in
/// batches, each incrementing `total` under one mutex.
fn stress_threads(
    thread: &spindle_uthreads::runtime::Thread<'_>,
    threads: u64,
    increments: u64,
    total: &Arc<AtomicU64>,
) -> Result<(), String> {
    const BATCH: u64 = 256;
    {
        let fail = |error| format!("{error:?}");
        let mutex = thread.new_mutex().map_err(fail)?;
        let mut left = threads;
        while left > 0 {
            let batch = left.min(BATCH);
            let mut children = Vec::new();
            for _ in 0..batch {
                let counter = Arc::clone(total);
                let child = thread
                    .spawn(move |thread| {
                        for _ in 0..increments {
                            if thread.lock(mutex).is_err() {
                                return;
                            }
                            // A read, a switch, a write: without the mutex,
                            // another thread's increment would be lost.
                            let seen = counter.load(Ordering::Relaxed);
                            thread.yield_now();
                            counter.store(seen + 1, Ordering::Relaxed);
                            if thread.unlock(mutex).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(|error| format!("{error:?}"))?;
                children.push(child);
            }
            for child in children {
                thread.join(child).map_err(fail)?;
            }
            left -= batch;
        }
        Ok(())
    }
}

/// What [`blocking`] measured.
#[derive(Debug, Default)]
pub struct BlockingReport {
    /// Busy time of the carriers' CPUs over their wall time, in tenths of a
    /// percent.
    pub utilisation_permille: u64,
    /// Blocking calls made.
    pub blocking_calls: u64,
    /// Threads run.
    pub threads: u64,
}

/// Work between blocking calls, and how long a blocking call waits.
const BLOCKING_WORK_NS: u64 = 200_000;
const BLOCKING_WAIT_NS: u64 = 1_000_000;
/// One step in this many makes a blocking call.
const BLOCKING_EVERY: u64 = 4;

/// `blocking` under `uthreads`: `threads` threads on one carrier per CPU,
/// each computing `steps` times and making a blocking kernel call every
/// fourth step.
pub fn blocking_uthreads(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
    threads: u64,
    steps: u64,
) -> Result<BlockingReport, String> {
    let cpus = strands.cpu_count();
    let carriers = NonZeroU16::new(cpus).unwrap_or(NonZeroU16::MIN);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let busy_before: Vec<u64> = (0..cpus)
        .map(|cpu| strands.busy_nanoseconds(CpuId(cpu)))
        .collect();
    let started = strands.now();
    in_threads(strands, contexts, carriers, move |thread| {
        let mut children = Vec::new();
        for _ in 0..threads {
            let calls = Arc::clone(&counted);
            let child = thread
                .spawn(move |thread| {
                    for step in 1..=steps {
                        compute_for(thread.strands(), BLOCKING_WORK_NS);
                        if step % BLOCKING_EVERY == 0 {
                            thread.block_in_kernel(BLOCKING_WAIT_NS);
                            calls.fetch_add(1, Ordering::Relaxed);
                        } else {
                            thread.yield_now();
                        }
                    }
                })
                .map_err(|error| format!("{error:?}"))?;
            children.push(child);
        }
        for child in children {
            thread.join(child).map_err(|error| format!("{error:?}"))?;
        }
        Ok(())
    })?;
    let wall = strands.now().saturating_sub(started).max(1);
    let busy: u64 = (0..cpus)
        .map(|cpu| strands.busy_nanoseconds(CpuId(cpu)) - busy_before[usize::from(cpu)])
        .sum();
    Ok(BlockingReport {
        utilisation_permille: busy * 1000 / (wall * u64::from(cpus)),
        blocking_calls: calls.load(Ordering::Relaxed),
        threads,
    })
}

/// Computes (spins) for `nanoseconds` of wall time.
fn compute_for(strands: &dyn Strands, nanoseconds: u64) {
    let end = strands.now() + nanoseconds;
    let mut iterations = 0u64;
    while strands.now() < end {
        iterations = core::hint::black_box(iterations + 1);
    }
}

/// What [`preemption`] saw.
#[derive(Debug, Default)]
pub struct PreemptionReport {
    /// The spinning thread saw the flag the other thread set (it could only
    /// run because the spinner was handed back when the kernel preempted
    /// their one carrier).
    pub flag_seen: bool,
    /// Threads the kernel handed back to the package.
    pub handed_back: u64,
    /// Threads preempted inside the package's critical section and
    /// continued at once.
    pub recovered: u64,
}

/// How long the spinner waits for the flag before giving up.
const SPIN_LIMIT_NS: u64 = 10_000_000_000;

/// SPIN's Checkpoint and Resume for `uthreads`: one carrier on CPU 0 runs a
/// thread that spins until a flag is set, and a thread that sets it; a
/// strand competes for CPU 0, so the kernel preempts the carrier. The flag
/// is seen only if the preempted spinner is handed back to the package and
/// the package's own scheduler resumes the other thread.
pub fn preemption(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
) -> Result<PreemptionReport, String> {
    // The competitor stops when the threads are done (or after the spin
    // limit): until then CPU 0's own context, which waits for the threads,
    // does not run.
    let stop = Arc::new(AtomicBool::new(false));
    let (competitor_stop, main_stop) = (Arc::clone(&stop), Arc::clone(&stop));
    let competitor = strands.spawn_held(
        Box::new(move || {
            let give_up = strands.now() + SPIN_LIMIT_NS;
            while !competitor_stop.load(Ordering::Acquire) && strands.now() < give_up {
                compute_for(strands, 100_000);
            }
        }),
        bench_cpu(),
        SchedParams::default(),
    )?;
    let seen = Arc::new(AtomicBool::new(false));
    let spinner_saw = Arc::clone(&seen);
    let outcome = in_threads(strands, contexts, NonZeroU16::MIN, move |thread| {
        let flag = Arc::new(AtomicBool::new(false));
        let (watched, raised) = (Arc::clone(&flag), Arc::clone(&flag));
        let spinner = thread
            .spawn(move |thread| {
                let give_up = thread.strands().now() + SPIN_LIMIT_NS;
                while !watched.load(Ordering::Acquire) && thread.strands().now() < give_up {
                    core::hint::spin_loop();
                }
                spinner_saw.store(watched.load(Ordering::Acquire), Ordering::Release);
            })
            .map_err(|error| format!("{error:?}"))?;
        let setter = thread
            .spawn(move |_| raised.store(true, Ordering::Release))
            .map_err(|error| format!("{error:?}"))?;
        // Started from the carrier (a strand), not from CPU 0's own context,
        // which would give the CPU to the competitor before the carrier
        // even exists.
        strands.start(competitor);
        let joined = thread
            .join(spinner)
            .and_then(|()| thread.join(setter))
            .map_err(|error| format!("{error:?}"));
        main_stop.store(true, Ordering::Release);
        joined
    });
    stop.store(true, Ordering::Release);
    let runtime = outcome?;
    let counts = runtime.counts();
    Ok(PreemptionReport {
        flag_seen: seen.load(Ordering::Acquire),
        handed_back: counts.preemptions,
        recovered: counts.recoveries,
    })
}

/// Rounds of [`condvar_rounds`].
pub const CONDVAR_ROUNDS: u64 = 200;

/// A producer and a consumer on every carrier hand `CONDVAR_ROUNDS` values
/// over one slot guarded by a mutex, with two condition variables (slot
/// full, slot empty). Returns the values the consumer received in order
/// (each round's value is its number, so a lost or doubled hand-over shows).
pub fn condvar_rounds(
    strands: &'static dyn Strands,
    contexts: &'static dyn Contexts,
) -> Result<u64, String> {
    let carriers = NonZeroU16::new(strands.cpu_count()).unwrap_or(NonZeroU16::MIN);
    let received = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&received);
    in_threads(strands, contexts, carriers, move |thread| {
        let fail = |error| format!("{error:?}");
        let mutex = thread.new_mutex().map_err(fail)?;
        let full = thread.new_condvar().map_err(fail)?;
        let empty = thread.new_condvar().map_err(fail)?;
        // The slot: 0 when empty, else the value + 1.
        let slot = Arc::new(AtomicU64::new(0));
        let producer_slot = Arc::clone(&slot);
        let producer = thread
            .spawn(move |thread| {
                for round in 0..CONDVAR_ROUNDS {
                    let _ = thread.lock(mutex);
                    while producer_slot.load(Ordering::Acquire) != 0 {
                        let _ = thread.wait(empty, mutex);
                    }
                    producer_slot.store(round + 1, Ordering::Release);
                    let _ = thread.signal(full);
                    let _ = thread.unlock(mutex);
                }
            })
            .map_err(|error| format!("{error:?}"))?;
        for round in 0..CONDVAR_ROUNDS {
            thread.lock(mutex).map_err(fail)?;
            while slot.load(Ordering::Acquire) == 0 {
                thread.wait(full, mutex).map_err(fail)?;
            }
            if slot.swap(0, Ordering::AcqRel) == round + 1 {
                total.fetch_add(1, Ordering::Relaxed);
            }
            thread.signal(empty).map_err(fail)?;
            thread.unlock(mutex).map_err(fail)?;
        }
        thread.join(producer).map_err(fail)
    })?;
    Ok(received.load(Ordering::Relaxed))
}
