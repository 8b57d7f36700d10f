//! `--bench mixed`: CPU-bound strands with stride tickets 3:2:1 sharing one CPU, sleepers, wake-up ping-pongs on one CPU and across CPUs, a yielding pair, and periodic strands with deadlines, all at once under the running policy.
//!
//! Written against the kernel's [`Strands`] interface only. [`run`] returns
//! a [`Report`]: `cpu_utilisation` (percent of the CPUs' time spent in
//! strands during the run), `stride.share_error_pct` (the largest relative
//! error of the trio's CPU shares against 3:2:1), `edf.deadline_misses`
//! (jobs of the periodic strands that finished after their deadline) and
//! `edf.deadline_misses_in_stalls` (those of them whose lateness their CPU's
//! stalls cover, see [`job_outcome`]); it
//! fills `sched.switch`, and the scheduler itself fills `sched.wake.local`,
//! `sched.wake.remote` and `sched.timer_lateness`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spindle_sched_ext::{CpuId, CpuSet, SchedParams, StrandId};
use spindle_services::strands::{pack, unpack, Strands};

/// Tickets of the share trio.
pub const TRIO_TICKETS: [u32; 3] = [300, 200, 100];
/// Sleepers per CPU, and how long each sleep asks for.
const SLEEPERS_PER_CPU: usize = 2;
const SLEEP_NS: u64 = 1_000_000;
/// Periodic strands: period, budget (worst case), work per job, deadline.
const PERIODIC_STRANDS: usize = 2;
const PERIOD_NS: u64 = 10_000_000;
const BUDGET_NS: u64 = 2_000_000;
/// Work per periodic job unless asked otherwise: within the budget, so the
/// set is feasible. A job longer than the period makes it infeasible while
/// its declared budget still passes admission control, and EDF then
/// reports the misses.
pub const JOB_NS: u64 = 1_000_000;
/// How long the run may take beyond its duration before strands count as lost.
const GRACE_NS: u64 = 30_000_000_000;

/// What one run measured (the kernel writes it as scalars).
#[derive(Debug, Default)]
pub struct Report {
    /// What went wrong (strands that could not be created or did not exit).
    pub problems: Vec<String>,
    /// Strands' busy time over the CPUs' wall time, in tenths of a percent.
    pub utilisation_permille: u64,
    /// The largest relative error of the trio's shares, in tenths of a percent.
    pub share_error_permille: u64,
    /// Periodic jobs that finished after their deadline.
    pub deadline_misses: u64,
    /// Of those, the jobs whose lateness their CPU's stalls during the job
    /// cover (see [`job_outcome`]): time the machine took, not the policy.
    pub deadline_misses_in_stalls: u64,
    /// Periodic jobs run.
    pub jobs: u64,
}

/// Computes (spins) until `end`, in nanoseconds since boot.
pub fn compute_until(strands: &dyn Strands, end: u64) {
    let mut iterations = 0u64;
    while strands.now() < end {
        iterations = core::hint::black_box(iterations + 1);
    }
}

/// The largest relative error of the CPU times `run_times` against the
/// shares `tickets` ask for, in tenths of a percent.
pub fn share_error_permille(run_times: &[u64], tickets: &[u32]) -> u64 {
    let total_time: u64 = run_times.iter().sum::<u64>().max(1);
    let total_tickets: u64 = tickets.iter().map(|&tickets| u64::from(tickets)).sum();
    run_times
        .iter()
        .zip(tickets)
        .map(|(&time, &tickets)| {
            let expected = u64::from(tickets) * 1_000_000 / total_tickets.max(1);
            let actual = time * 1_000_000 / total_time;
            actual.abs_diff(expected) * 1000 / expected.max(1)
        })
        .max()
        .unwrap_or(0)
}

/// How a periodic job ended against its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Finished by its deadline.
    Met,
    /// Finished late, but by no more than its CPU was stalled meanwhile:
    /// the job would have met its deadline had the machine run the CPU.
    LateByStalls,
    /// Finished late beyond what the stalls explain (or moved CPUs, so
    /// that they cannot be told).
    Missed,
}

/// Judges a job that finished at `finished` against `deadline`, given the
/// time `stalled` its CPU could not take interrupts from before the job's
/// release to its end (`None`: the job changed CPUs).
pub fn job_outcome(deadline: u64, finished: u64, stalled: Option<u64>) -> JobOutcome {
    if finished <= deadline {
        JobOutcome::Met
    } else if stalled.is_some_and(|stalled| finished - deadline <= stalled) {
        JobOutcome::LateByStalls
    } else {
        JobOutcome::Missed
    }
}

/// What the strands share.
struct Shared {
    end: u64,
    trio_run_time: [AtomicU64; 3],
    deadline_misses: AtomicU64,
    deadline_misses_in_stalls: AtomicU64,
    jobs: AtomicU64,
    finished: AtomicU64,
}

fn spawn(
    strands: &dyn Strands,
    problems: &mut Vec<String>,
    held: &mut Vec<StrandId>,
    affinity: CpuSet,
    params: SchedParams,
    body: impl FnOnce() + Send + 'static,
) -> Option<StrandId> {
    match strands.spawn_held(alloc::boxed::Box::new(body), affinity, params) {
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

/// Runs the workload for `duration_ms` from a CPU's own context, the
/// periodic strands' jobs each computing `job_ns`.
pub fn run(strands: &'static dyn Strands, duration_ms: u64, job_ns: u64) -> Report {
    let mut problems = Vec::new();
    let cpus = strands.cpu_count();
    let last = CpuId(cpus - 1);
    let now = move || strands.now();
    let start = now();
    let shared = Arc::new(Shared {
        end: start + duration_ms * 1_000_000,
        trio_run_time: [const { AtomicU64::new(0) }; 3],
        deadline_misses: AtomicU64::new(0),
        deadline_misses_in_stalls: AtomicU64::new(0),
        jobs: AtomicU64::new(0),
        finished: AtomicU64::new(0),
    });
    let busy_before: Vec<u64> = (0..cpus)
        .map(|cpu| strands.busy_nanoseconds(CpuId(cpu)))
        .collect();
    let switch = strands.histogram("sched.switch");
    let mut held: Vec<StrandId> = Vec::new();
    // Strands are created held and started together at the end: this
    // context is the CPU's idle context, which no strand ever yields to.

    // The share trio, alone on the last CPU.
    for (index, tickets) in TRIO_TICKETS.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        spawn(
            strands,
            &mut problems,
            &mut held,
            CpuSet::single(last),
            SchedParams::default().with_tickets(tickets),
            move || {
                compute_until(strands, shared.end);
                // A yield ends the stint, so the run time includes it.
                strands.yield_now();
                if let Some(time) = strands.current().and_then(|me| strands.run_time(me)) {
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
            strands,
            &mut problems,
            &mut held,
            others,
            SchedParams::default(),
            move || {
                while now() < shared.end {
                    strands.sleep(SLEEP_NS);
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
                strands,
                &mut problems,
                &mut held,
                CpuSet::single(away),
                SchedParams::default(),
                move || {
                    loop {
                        strands.block();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let mut a = partner.load(Ordering::Acquire);
                        while a == u64::MAX {
                            // The partner is being created: its id follows.
                            strands.yield_now();
                            a = partner.load(Ordering::Acquire);
                        }
                        strands.unblock(unpack(a));
                    }
                    shared.finished.fetch_add(1, Ordering::Relaxed);
                },
            )
        };
        let Some(b) = b else { continue };
        let shared_a = Arc::clone(&shared);
        let stop = Arc::clone(&pair_stop);
        let a = spawn(
            strands,
            &mut problems,
            &mut held,
            CpuSet::single(home),
            SchedParams::default(),
            move || {
                while now() < shared_a.end {
                    strands.unblock(b);
                    strands.block();
                }
                stop.store(true, Ordering::Release);
                strands.unblock(b);
                shared_a.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
        if let Some(a) = a {
            partner_of_b.store(pack(a), Ordering::Release);
        }
    }

    // A yielding pair on one CPU: each sample is the time from one strand's
    // yield to the other's return from its yield.
    let last_yield = Arc::new(AtomicU64::new(0));
    for who in 1..=2u64 {
        let shared = Arc::clone(&shared);
        let last_yield = Arc::clone(&last_yield);
        spawn(
            strands,
            &mut problems,
            &mut held,
            CpuSet::single(first),
            SchedParams::default(),
            move || {
                while now() < shared.end {
                    let before = now();
                    last_yield.store(before << 2 | who, Ordering::Release);
                    strands.yield_now();
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
            strands,
            &mut problems,
            &mut held,
            others,
            SchedParams::default().periodic(PERIOD_NS, BUDGET_NS, PERIOD_NS),
            move || {
                let mut release = now();
                // Readings of the CPU's stalls (time, CPU, stalled so far),
                // taken at the first release and after each job, before its
                // sleep: a job is judged against the stalls since the last
                // reading at or before its release, so that a late tick that
                // delays its wake-up counts, and so does a stall that made
                // an earlier job overrun into this one's period.
                let mut readings = VecDeque::new();
                let read = |readings: &mut VecDeque<(u64, CpuId, u64)>| {
                    let cpu = strands.current_cpu();
                    readings.push_back((now(), cpu, strands.stalled_nanoseconds(cpu)));
                };
                read(&mut readings);
                while release < shared.end {
                    compute_until(strands, now() + job_ns);
                    let finished = now();
                    shared.jobs.fetch_add(1, Ordering::Relaxed);
                    while readings.get(1).is_some_and(|&(time, _, _)| time <= release) {
                        readings.pop_front();
                    }
                    let here = strands.current_cpu();
                    let stalled = readings.front().filter(|&&(_, cpu, _)| cpu == here).map(
                        |&(_, _, before)| strands.stalled_nanoseconds(here).saturating_sub(before),
                    );
                    match job_outcome(release + PERIOD_NS, finished, stalled) {
                        JobOutcome::Met => {}
                        JobOutcome::LateByStalls => {
                            shared.deadline_misses.fetch_add(1, Ordering::Relaxed);
                            shared
                                .deadline_misses_in_stalls
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        JobOutcome::Missed => {
                            shared.deadline_misses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    release += PERIOD_NS;
                    read(&mut readings);
                    let current = now();
                    if release > current {
                        strands.sleep(release - current);
                    }
                }
                shared.finished.fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    let spawned = held.len() as u64;
    for id in held {
        strands.start(id);
    }
    let all_done = || {
        let (created, exited) = strands.strand_counts();
        shared.finished.load(Ordering::Relaxed) >= spawned && exited >= created
    };
    strands.wait_until(&all_done, duration_ms * 1_000_000 + GRACE_NS);
    let wall = now().saturating_sub(start).max(1);
    let busy: u64 = (0..cpus)
        .map(|index| strands.busy_nanoseconds(CpuId(index)) - busy_before[usize::from(index)])
        .sum();
    let utilisation_permille = busy * 1000 / (wall * u64::from(cpus));
    let trio: Vec<u64> = shared
        .trio_run_time
        .iter()
        .map(|time| time.load(Ordering::Relaxed))
        .collect();
    let (created, exited) = strands.strand_counts();
    if exited != created {
        problems.push(format!(
            "mixed: {} of {created} strands did not exit",
            created - exited
        ));
    }
    Report {
        problems,
        utilisation_permille,
        share_error_permille: share_error_permille(&trio, &TRIO_TICKETS),
        deadline_misses: shared.deadline_misses.load(Ordering::Relaxed),
        deadline_misses_in_stalls: shared.deadline_misses_in_stalls.load(Ordering::Relaxed),
        jobs: shared.jobs.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_shares_have_no_error_and_skewed_ones_report_the_worst() {
        assert_eq!(share_error_permille(&[300, 200, 100], &TRIO_TICKETS), 0);
        // 40/40/20 against 50/33.3/16.7: the middle share is 20 % over.
        assert_eq!(share_error_permille(&[40, 40, 20], &TRIO_TICKETS), 200);
        assert_eq!(share_error_permille(&[0, 0, 0], &TRIO_TICKETS), 1000);
    }

    #[test]
    fn a_late_job_is_excused_only_by_stalls_that_cover_its_lateness_on_one_cpu() {
        assert_eq!(job_outcome(100, 100, None), JobOutcome::Met);
        assert_eq!(job_outcome(100, 90, Some(0)), JobOutcome::Met);
        // 5 late with 5 stalled: the machine took the time.
        assert_eq!(job_outcome(100, 105, Some(5)), JobOutcome::LateByStalls);
        assert_eq!(job_outcome(100, 105, Some(50)), JobOutcome::LateByStalls);
        // 5 late with 4 stalled: the policy lost at least 1.
        assert_eq!(job_outcome(100, 105, Some(4)), JobOutcome::Missed);
        assert_eq!(job_outcome(100, 101, Some(0)), JobOutcome::Missed);
        // A job that moved CPUs cannot be excused.
        assert_eq!(job_outcome(100, 101, None), JobOutcome::Missed);
    }
}
