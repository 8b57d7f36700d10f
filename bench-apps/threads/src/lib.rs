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

use spindle_activations::runtime::{Activations, Config, Report};
use spindle_sched_ext::{CpuId, CpuSet, SchedParams};
use spindle_services::contexts::Contexts;
use spindle_services::processors::Processors;
use spindle_services::strands::{pack, unpack, Strands};
use spindle_uthreads::runtime::{Runtime, Thread};

/// The kernel interfaces the benchmarks use.
#[derive(Clone, Copy)]
pub struct Kernel {
    /// Strand operations, the clock, histograms.
    pub strands: &'static dyn Strands,
    /// Execution contexts for threads.
    pub contexts: &'static dyn Contexts,
    /// Processor allocation (for scheduler activations).
    pub processors: &'static dyn Processors,
}

/// Which thread package runs a benchmark's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `uthreads`: carrier strands, pinned.
    Uthreads,
    /// Scheduler activations: processors granted to the package's domain.
    Activations,
}

impl Kind {
    /// The name in histograms and scalars.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Uthreads => "uthreads",
            Kind::Activations => "activations",
        }
    }
}

/// Where a package's threads run: `width` carriers from CPU `first_cpu`
/// (uthreads), or up to `width` processors from CPU 1 (activations, whose
/// processors never include CPU 0).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Carriers or processors.
    pub width: u16,
    /// The first carrier's CPU (uthreads only).
    pub first_cpu: u16,
    /// Revoke a processor this often (activations only).
    pub revoke_every_ns: Option<u64>,
}

impl Placement {
    /// One carrier on CPU 0, or one processor (CPU 1).
    pub const fn single() -> Placement {
        Placement {
            width: 1,
            first_cpu: 0,
            revoke_every_ns: None,
        }
    }

    /// Every CPU but CPU 0 (CPU 0 alone at `-smp 1`): the same CPUs for
    /// both packages, as processor allocation leaves CPU 0 to the kernel.
    pub fn all_but_cpu0(cpus: u16) -> Placement {
        Placement {
            width: cpus.saturating_sub(1).max(1),
            first_cpu: u16::from(cpus > 1),
            revoke_every_ns: None,
        }
    }

    /// The CPUs the threads run on.
    pub fn cpus(&self, kind: Kind, cpus: u16) -> impl Iterator<Item = u16> {
        let first = match kind {
            Kind::Uthreads => self.first_cpu,
            Kind::Activations => 1,
        };
        (first..first + self.width).map(move |cpu| cpu % cpus.max(1))
    }
}

/// What a package run left behind.
pub struct Ran {
    /// The `uthreads` core (counts, package).
    pub runtime: Arc<Runtime>,
    /// The activations' report (activations only).
    pub activations: Option<Report>,
}

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
/// carriers from CPU 0; a failure `main` reports comes back as the error.
fn in_threads(
    kernel: Kernel,
    carriers: NonZeroU16,
    main: impl FnOnce(&Thread<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Arc<Runtime>, String> {
    let placement = Placement {
        width: carriers.get(),
        first_cpu: 0,
        revoke_every_ns: None,
    };
    in_package(kernel, Kind::Uthreads, placement, main).map(|ran| ran.runtime)
}

/// Runs `main` as the first thread of a package of `kind` placed as
/// `placement`; a failure `main` reports comes back as the error. The
/// activations' invariant violations come back in the report (see
/// [`checked`]).
pub fn in_package(
    kernel: Kernel,
    kind: Kind,
    placement: Placement,
    main: impl FnOnce(&Thread<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Ran, String> {
    let outcome = Arc::new(spin::Mutex::new(None));
    let result = Arc::clone(&outcome);
    let main = move |thread: &Thread<'_>| *result.lock() = Some(main(thread));
    let width = NonZeroU16::new(placement.width).unwrap_or(NonZeroU16::MIN);
    let ran = match kind {
        Kind::Uthreads => {
            let runtime =
                Runtime::new_from_cpu(kernel.strands, kernel.contexts, width, placement.first_cpu);
            runtime
                .run(main, TIMEOUT_NS)
                .map_err(|error| format!("{error:?}"))?;
            Ran {
                runtime,
                activations: None,
            }
        }
        Kind::Activations => {
            let config = Config {
                revoke_every_ns: placement.revoke_every_ns,
                ..Config::new(width.get())
            };
            let package =
                Activations::new(kernel.strands, kernel.contexts, kernel.processors, config)
                    .map_err(|error| format!("{error:?}"))?;
            let finished = package.run(main, TIMEOUT_NS);
            let report = package.report();
            finished.map_err(|error| format!("{error:?}"))?;
            Ran {
                runtime: Arc::clone(package.runtime()),
                activations: Some(report),
            }
        }
    };
    let outcome = outcome.lock().take();
    outcome.unwrap_or_else(|| Err(String::from("the main thread left no result")))?;
    Ok(ran)
}

/// The run, or an error if the activations broke an invariant.
pub fn checked(ran: Ran) -> Result<Ran, String> {
    match &ran.activations {
        Some(report) if report.violations() > 0 => Err(format!(
            "scheduler-activation invariants broken: {report:?}"
        )),
        _ => Ok(ran),
    }
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

/// `forkjoin.uthreads` and `forkjoin.activations`: a thread creates a
/// thread that does nothing and joins it, `rounds` times, on one carrier on
/// CPU 0 (uthreads) or one granted processor, CPU 1 (activations).
pub fn forkjoin_threads(kernel: Kernel, kind: Kind, rounds: u64) -> Result<(), String> {
    let strands = kernel.strands;
    let histogram = strands.histogram(match kind {
        Kind::Uthreads => "forkjoin.uthreads",
        Kind::Activations => "forkjoin.activations",
    });
    in_package(kernel, kind, Placement::single(), move |thread| {
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
    .and_then(checked)
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

/// `pingpong.uthreads` and `pingpong.activations`: two threads on one
/// carrier on CPU 0 (one processor, CPU 1, for activations) hand a token
/// back and forth with two semaphores, `rounds` round trips.
pub fn pingpong_threads(kernel: Kernel, kind: Kind, rounds: u64) -> Result<(), String> {
    let strands = kernel.strands;
    let histogram = strands.histogram(match kind {
        Kind::Uthreads => "pingpong.uthreads",
        Kind::Activations => "pingpong.activations",
    });
    in_package(kernel, kind, Placement::single(), move |thread| {
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
    .and_then(checked)
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
    /// The activations' upcalls, downcalls and checks (activations only).
    pub activations: Option<Report>,
}

/// How often the activations stress test has the kernel take a processor
/// back, and the notice it gives.
const STRESS_REVOKE_EVERY_NS: u64 = 20_000_000;

/// `threads` threads spawned in batches and joined; each increments a
/// shared counter `increments` times under one mutex, yielding inside the
/// critical section, so only mutual exclusion keeps the count. Under
/// `uthreads`, one carrier per CPU and a competing strand on every CPU make
/// the kernel preempt the carriers; under activations, the package holds
/// every CPU but CPU 0 and the kernel takes one back every 20 ms
/// ("processor preempted", critical sections included).
pub fn stress(
    kernel: Kernel,
    kind: Kind,
    threads: u64,
    increments: u64,
) -> Result<StressReport, String> {
    if kind == Kind::Activations {
        return stress_activations(kernel, threads, increments);
    }
    let strands = kernel.strands;
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
    let runtime = in_threads(kernel, carriers, move |thread| {
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
        activations: None,
    })
}

/// [`stress`] under scheduler activations.
fn stress_activations(
    kernel: Kernel,
    threads: u64,
    increments: u64,
) -> Result<StressReport, String> {
    let counter = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&counter);
    let placement = Placement {
        revoke_every_ns: Some(STRESS_REVOKE_EVERY_NS),
        ..Placement::all_but_cpu0(kernel.strands.cpu_count())
    };
    let ran = in_package(kernel, Kind::Activations, placement, move |thread| {
        stress_threads(thread, threads, increments, &total)
    })?;
    let counts = ran.runtime.counts();
    Ok(StressReport {
        threads,
        counter: counter.load(Ordering::Relaxed),
        increments,
        finished: counts.finished.saturating_sub(1),
        contexts_made: counts.contexts_made,
        steals: ran.runtime.package().counters().steals,
        handed_back: counts.preemptions,
        recovered: counts.recoveries,
        activations: ran.activations,
    })
}

/// The stress test's main thread: spawns and joins `threads` threads in
/// batches, each incrementing `total` under one mutex.
fn stress_threads(
    thread: &Thread<'_>,
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
    /// Busy time of the package's CPUs over the time they were the
    /// package's, in tenths of a percent.
    pub utilisation_permille: u64,
    /// Blocking calls made.
    pub blocking_calls: u64,
    /// Threads run.
    pub threads: u64,
    /// The activations' upcalls, downcalls and checks (activations only).
    pub activations: Option<Report>,
}

/// Work between blocking calls, and how long a blocking call waits.
const BLOCKING_WORK_NS: u64 = 200_000;
const BLOCKING_WAIT_NS: u64 = 1_000_000;
/// One step in this many makes a blocking call.
const BLOCKING_EVERY: u64 = 4;

/// `blocking` under `kind`: `threads` threads on every CPU but CPU 0 (one
/// carrier per CPU, or one granted processor per CPU), each computing
/// `steps` times and making a blocking kernel call every fourth step.
/// Utilisation is the busy time of those CPUs over the time they were the
/// package's: the whole run for carriers, from each processor's grant to
/// its return for activations.
pub fn blocking(
    kernel: Kernel,
    kind: Kind,
    threads: u64,
    steps: u64,
) -> Result<BlockingReport, String> {
    let strands = kernel.strands;
    let cpus = strands.cpu_count();
    let placement = Placement::all_but_cpu0(cpus);
    let measured: Vec<u16> = placement.cpus(kind, cpus).collect();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let busy_before: Vec<u64> = measured
        .iter()
        .map(|&cpu| strands.busy_nanoseconds(CpuId(cpu)))
        .collect();
    let started = strands.now();
    let ran = in_package(kernel, kind, placement, move |thread| {
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
    let busy: u64 = measured
        .iter()
        .zip(&busy_before)
        .map(|(&cpu, before)| strands.busy_nanoseconds(CpuId(cpu)) - before)
        .sum();
    let available = match &ran.activations {
        Some(report) => report.granted_ns.max(1),
        None => wall * measured.len() as u64,
    };
    Ok(BlockingReport {
        utilisation_permille: (busy * 1000 / available).min(1000),
        blocking_calls: calls.load(Ordering::Relaxed),
        threads,
        activations: ran.activations,
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
pub fn preemption(kernel: Kernel) -> Result<PreemptionReport, String> {
    let strands = kernel.strands;
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
    let outcome = in_threads(kernel, NonZeroU16::MIN, move |thread| {
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

/// A producer and a consumer hand `CONDVAR_ROUNDS` values over one slot
/// guarded by a mutex, with two condition variables (slot full, slot
/// empty), on one carrier per CPU (uthreads) or every CPU but CPU 0
/// (activations). Returns the values the consumer received in order (each
/// round's value is its number, so a lost or doubled hand-over shows).
pub fn condvar_rounds(kernel: Kernel, kind: Kind) -> Result<u64, String> {
    let cpus = kernel.strands.cpu_count();
    let placement = match kind {
        Kind::Uthreads => Placement {
            width: cpus,
            first_cpu: 0,
            revoke_every_ns: None,
        },
        Kind::Activations => Placement::all_but_cpu0(cpus),
    };
    let received = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&received);
    in_package(kernel, kind, placement, move |thread| {
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
    })
    .and_then(checked)?;
    Ok(received.load(Ordering::Relaxed))
}
