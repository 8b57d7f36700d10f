//! `--bench mixed`: CPU-bound strands with stride tickets 3:2:1 sharing one CPU, sleepers, wake-up ping-pongs on one CPU and across CPUs, a yielding pair, and periodic strands with deadlines, all at once under the running policy.
//!
//! Reports the scheduler's scalars plus `cpu_utilisation` (percent of the
//! CPUs' time spent in strands during the run), `stride.share_error_pct`
//! (the largest relative error of the trio's CPU shares against 3:2:1) and
//! `edf.deadline_misses` (jobs of the periodic strands that finished after
//! their deadline), and fills `sched.switch`; the scheduler itself fills
//! `sched.wake.local`, `sched.wake.remote` and `sched.timer_lateness`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spindle_sched_ext::{CpuId, CpuSet, SchedParams, StrandId};

use crate::arch::cpu;
use crate::console;
use crate::metrics;
use crate::selftest::{compute_until, wait_for_strands};
use crate::strand;

/// Tickets of the share trio.
const TRIO_TICKETS: [u32; 3] = [300, 200, 100];
/// Sleepers per CPU, and how long each sleep asks for.
const SLEEPERS_PER_CPU: usize = 2;
const SLEEP_NS: u64 = 1_000_000;
/// Periodic strands: period, budget (worst case), work per job, deadline.
const PERIODIC_STRANDS: usize = 2;
const PERIOD_NS: u64 = 10_000_000;
const BUDGET_NS: u64 = 2_000_000;
const JOB_NS: u64 = 1_000_000;
/// How long the run may take beyond its duration before strands count as lost.
const GRACE_NS: u64 = 30_000_000_000;

fn now() -> u64 {
    crate::kernel::nanoseconds_since_boot()
}

/// What the strands share.
struct Shared {
    end: u64,
    trio_run_time: [AtomicU64; 3],
    deadline_misses: AtomicU64,
    jobs: AtomicU64,
    finished: AtomicU64,
}

fn spawn(
    problems: &mut Vec<String>,
    held: &mut Vec<StrandId>,
    affinity: CpuSet,
    params: SchedParams,
    body: impl FnOnce() + Send + 'static,
) -> Option<StrandId> {
    match strand::spawn_held(Box::new(body), affinity, params) {
        Ok(id) => {
            held.push(id);
            Some(id)
        }
        Err(error) => {
            problems.push(format!("mixed: {error}"));
            None
        }
    }
}

/// Runs the workload for `duration_ms` and reports it; returns problems.
pub fn run(duration_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let cpus = cpu::cpus_found() as u16;
    let last = CpuId(cpus - 1);
    let start = now();
    let shared = Arc::new(Shared {
        end: start + duration_ms * 1_000_000,
        trio_run_time: [const { AtomicU64::new(0) }; 3],
        deadline_misses: AtomicU64::new(0),
        jobs: AtomicU64::new(0),
        finished: AtomicU64::new(0),
    });
    let busy_before: Vec<u64> = (0..cpus as usize).map(strand::busy_nanoseconds).collect();
    let switch = metrics::register("sched.switch", "ns");
    let mut held: Vec<StrandId> = Vec::new();
    // Strands are created held and started together at the end: this
    // context is the CPU's idle context, which no strand ever yields to.

    // The share trio, alone on the last CPU.
    for (index, tickets) in TRIO_TICKETS.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        spawn(
            &mut problems,
            &mut held,
            CpuSet::single(last),
            SchedParams::default().with_tickets(tickets),
            move || {
                compute_until(shared.end);
                // A yield ends the stint, so the run time includes it.
                strand::yield_now();
                if let Some(time) = strand::current_id().and_then(strand::run_time) {
                    shared.trio_run_time[index].store(time, Ordering::Relaxed);
                }
                shared.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
    }
    // Everything else avoids the trio's CPU when there is another.
    let others = if cpus > 1 {
        let mut set = CpuSet::all(cpus);
        set.remove(last);
        set
    } else {
        CpuSet::all(cpus)
    };
    let first = others.first().unwrap_or(CpuId(0));

    // Sleepers.
    for _ in 0..SLEEPERS_PER_CPU * usize::from(cpus) {
        let shared = Arc::clone(&shared);
        spawn(
            &mut problems,
            &mut held,
            others,
            SchedParams::default(),
            move || {
                while now() < shared.end {
                    strand::sleep(SLEEP_NS);
                }
                shared.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    // Wake-up ping-pongs: one pair on one CPU, one pair across CPUs.
    let remote_partner = others.iter().nth(1).unwrap_or(first);
    for (home, away) in [(first, first), (first, remote_partner)] {
        let partner_of_b = Arc::new(AtomicU64::new(u64::MAX));
        // Each pair has its own stop flag: A sets it when its time is up.
        let pair_stop = Arc::new(AtomicBool::new(false));
        let b = {
            let shared = Arc::clone(&shared);
            let partner = Arc::clone(&partner_of_b);
            let stop = Arc::clone(&pair_stop);
            spawn(
                &mut problems,
                &mut held,
                CpuSet::single(away),
                SchedParams::default(),
                move || {
                    loop {
                        strand::block();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let mut a = partner.load(Ordering::Acquire);
                        while a == u64::MAX {
                            // The partner is being created: its id follows.
                            strand::yield_now();
                            a = partner.load(Ordering::Acquire);
                        }
                        strand::unblock(strand::unpack_id(a));
                    }
                    shared.finished.fetch_add(1, Ordering::Relaxed);
                },
            )
        };
        let Some(b) = b else { continue };
        let shared_a = Arc::clone(&shared);
        let stop = Arc::clone(&pair_stop);
        let a = spawn(
            &mut problems,
            &mut held,
            CpuSet::single(home),
            SchedParams::default(),
            move || {
                while now() < shared_a.end {
                    strand::unblock(b);
                    strand::block();
                }
                stop.store(true, Ordering::Release);
                strand::unblock(b);
                shared_a.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
        if let Some(a) = a {
            partner_of_b.store(strand::pack_id(a), Ordering::Release);
        }
    }

    // A yielding pair on one CPU: each sample is the time from one strand's
    // yield to the other's return from its yield.
    let last_yield = Arc::new(AtomicU64::new(0));
    for who in 1..=2u64 {
        let shared = Arc::clone(&shared);
        let last_yield = Arc::clone(&last_yield);
        spawn(
            &mut problems,
            &mut held,
            CpuSet::single(first),
            SchedParams::default(),
            move || {
                while now() < shared.end {
                    let before = now();
                    last_yield.store(before << 2 | who, Ordering::Release);
                    strand::yield_now();
                    let previous = last_yield.load(Ordering::Acquire);
                    if previous & 3 != who && previous != 0 {
                        switch.record(now().saturating_sub(previous >> 2));
                    }
                }
                shared.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    // Periodic strands with deadlines.
    for _ in 0..PERIODIC_STRANDS {
        let shared = Arc::clone(&shared);
        spawn(
            &mut problems,
            &mut held,
            others,
            SchedParams::default().periodic(PERIOD_NS, BUDGET_NS, PERIOD_NS),
            move || {
                let mut release = now();
                while release < shared.end {
                    compute_until(now() + JOB_NS);
                    shared.jobs.fetch_add(1, Ordering::Relaxed);
                    if now() > release + PERIOD_NS {
                        shared.deadline_misses.fetch_add(1, Ordering::Relaxed);
                    }
                    release += PERIOD_NS;
                    let current = now();
                    if release > current {
                        strand::sleep(release - current);
                    }
                }
                shared.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    let spawned = held.len() as u64;
    for id in held {
        strand::start(id);
    }
    let counters = &strand::COUNTERS;
    wait_for_strands(
        &shared.finished,
        spawned,
        duration_ms * 1_000_000 + GRACE_NS,
    );
    let wall = now().saturating_sub(start).max(1);
    let busy: u64 = (0..cpus as usize)
        .map(|index| strand::busy_nanoseconds(index) - busy_before[index])
        .sum();
    let utilisation_permille = busy * 1000 / (wall * u64::from(cpus));
    let trio: Vec<u64> = shared
        .trio_run_time
        .iter()
        .map(|time| time.load(Ordering::Relaxed))
        .collect();
    let trio_total: u64 = trio.iter().sum::<u64>().max(1);
    let tickets_total: u64 = TRIO_TICKETS.iter().map(|&tickets| u64::from(tickets)).sum();
    // Relative error of each share against its ticket share, in tenths of a
    // percent; the largest is reported.
    let share_error_permille = trio
        .iter()
        .zip(TRIO_TICKETS)
        .map(|(&time, tickets)| {
            let expected = u64::from(tickets) * 1_000_000 / tickets_total;
            let actual = time * 1_000_000 / trio_total;
            actual.abs_diff(expected) * 1000 / expected.max(1)
        })
        .max()
        .unwrap_or(0);
    let created = counters.created.load(Ordering::Relaxed);
    let exited = counters.exited.load(Ordering::Relaxed);
    if exited != created {
        strand::dump_live_strands();
        problems.push(format!(
            "mixed: {} of {created} strands did not exit",
            created - exited
        ));
    }
    crate::selftest::report_scheduler_scalars(created, exited);
    console::with_console(|console| {
        console::write_record(console, "scalar", |record| {
            record
                .str("name", "cpu_utilisation")?
                .fixed("value", utilisation_permille, 1)?;
            Ok(())
        });
        console::write_record(console, "scalar", |record| {
            record.str("name", "stride.share_error_pct")?.fixed(
                "value",
                share_error_permille,
                1,
            )?;
            Ok(())
        });
        console::write_scalar_u64(
            console,
            "edf.deadline_misses",
            shared.deadline_misses.load(Ordering::Relaxed),
        );
        console::write_scalar_u64(console, "edf.jobs", shared.jobs.load(Ordering::Relaxed));
    });
    problems
}
