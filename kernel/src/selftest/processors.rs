//! `selftest=processors`: processor allocation to an extension domain (grant, revocation given up in time, the abort protocol, release, refusals, and the ejection of a domain whose client panics), with default strands running throughout.
//!
//! The driver is CPU 0's own context. It grants every CPU but CPU 0 to a
//! test domain scheduled by its own `rr`, with one domain strand per
//! granted CPU, and takes them back four times:
//!
//! 1. *cooperative*: the domain's strands yield when their CPU's
//!    revocation notice arrives, so every revocation is `GivenUp`;
//! 2. *abort*: they ignore the notice, so every revocation is `Forced`
//!    after the deadline, naming a domain strand (they keep their state and
//!    run again at the next grant);
//! 3. *release*: they return their CPUs themselves (`Released`);
//! 4. *stop*: they exit; the now idle CPUs give themselves up at once.
//!
//! Then a second domain whose client panics in `processor_added` is
//! ejected: its strands move to the default domain and finish there. Every
//! strand, default or not, checks at every step that it runs on a CPU its
//! domain holds.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use spindle_sched_ext::{
    Context, CpuId, CpuSet, DomainId, Nanoseconds, ProcessorClient, Revocation, SchedParams,
    StrandId,
};

use super::compute_for;
use crate::arch::{cpu, tsc};
use crate::console;
use crate::metrics;
use crate::strand::{self, domains};

/// How long the driver waits for one phase.
const PHASE_TIMEOUT_NS: u64 = 20_000_000_000;
/// The notice of a revocation the domain meets.
const GENEROUS_NOTICE_NS: u64 = 200_000_000;
/// The notice of a revocation the domain ignores.
const SHORT_NOTICE_NS: u64 = 3_000_000;
/// One step of a strand's work.
const STEP_NS: u64 = 50_000;
/// Default strands per CPU.
const DEFAULT_STRANDS_PER_CPU: usize = 2;
/// How a default strand paces itself (so that CPU 0's own context, the
/// driver, gets the CPU often).
const DEFAULT_PAUSE_NS: u64 = 500_000;

/// What the domain's strands do (the phases).
const COOPERATE: u8 = 0;
const HOG: u8 = 1;
const RELEASE: u8 = 2;
const STOP: u8 = 3;

/// The test domain's client: counts the events and remembers the notices.
struct RecordingClient {
    added: AtomicU64,
    given_up: AtomicU64,
    forced: AtomicU64,
    released: AtomicU64,
    /// Per CPU: the deadline of the notice under way (0: none).
    notice: [AtomicU64; cpu::MAX_CPUS],
    /// Per CPU: when the last `processor_revoked` came.
    revoked_at: [AtomicU64; cpu::MAX_CPUS],
    /// The strands named by forced revocations, packed.
    forced_strands: spin::Mutex<Vec<StrandId>>,
}

impl ProcessorClient for RecordingClient {
    fn processor_added(&self, _ctx: &Context, _cpu: CpuId) {
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    fn revoke_requested(&self, _ctx: &Context, cpu: CpuId, deadline: Nanoseconds) {
        self.notice[cpu.index()].store(deadline, Ordering::Release);
    }

    fn processor_revoked(&self, ctx: &Context, cpu: CpuId, how: Revocation) {
        self.notice[cpu.index()].store(0, Ordering::Release);
        self.revoked_at[cpu.index()].store(ctx.now, Ordering::Release);
        match how {
            Revocation::GivenUp => &self.given_up,
            Revocation::Forced { preempted } => {
                self.forced_strands.lock().push(preempted);
                &self.forced
            }
            Revocation::Released => &self.released,
            Revocation::Ejected => return,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

impl RecordingClient {
    fn new() -> Self {
        Self {
            added: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            forced: AtomicU64::new(0),
            released: AtomicU64::new(0),
            notice: [const { AtomicU64::new(0) }; cpu::MAX_CPUS],
            revoked_at: [const { AtomicU64::new(0) }; cpu::MAX_CPUS],
            forced_strands: spin::Mutex::new(Vec::new()),
        }
    }
}

/// A client that panics when it is given a processor.
struct PanickingClient;

impl ProcessorClient for PanickingClient {
    fn processor_added(&self, _ctx: &Context, cpu: CpuId) {
        panic!("processor_added on {cpu}: this client is broken on purpose");
    }

    fn revoke_requested(&self, _ctx: &Context, _cpu: CpuId, _deadline: Nanoseconds) {}

    fn processor_revoked(&self, _ctx: &Context, _cpu: CpuId, _how: Revocation) {}
}

/// What the strands report.
#[derive(Default)]
struct Shared {
    mode: AtomicU8,
    /// Steps a strand took on a CPU its domain does not hold (must stay 0).
    misplaced: AtomicU64,
    /// Domain strands' steps so far.
    domain_steps: AtomicU64,
    /// Strands of each kind that finished their body.
    domain_finished: AtomicU64,
    default_finished: AtomicU64,
    broken_finished: AtomicU64,
    /// Set when the default strands should stop.
    stop_default: AtomicU8,
}

impl Shared {
    fn step(&self) {
        if !strand::on_own_domain_cpu() {
            self.misplaced.fetch_add(1, Ordering::Relaxed);
        }
        compute_for(STEP_NS);
    }
}

/// Runs the test; returns the problems found.
pub fn run() -> Vec<String> {
    let mut problems = Vec::new();
    let cpus = cpu::cpus_found();
    let all = CpuSet::all(cpus as u16);
    let shared = Arc::new(Shared::default());
    let client = Arc::new(RecordingClient::new());
    let given_up_latency = metrics::register("alloc.revoke.given_up", "ns");
    let forced_lateness = metrics::register("alloc.revoke.forced_lateness", "ns");
    let rr = spindle_sched_ext::find("rr").expect("rr is in the catalogue");
    let domain = match domains::register("alloc-test", rr, client.clone()) {
        Ok(domain) => domain,
        Err(error) => return alloc::vec![format!("register: {error}")],
    };
    let mut refusals = 0;
    if domains::grant(domain, CpuId(0)) == Err(domains::DomainError::BootstrapCpu) {
        refusals += 1;
    }
    if domains::grant(domain, CpuId(cpus as u16)) == Err(domains::DomainError::NoSuchCpu) {
        refusals += 1;
    }
    if domains::grant(DomainId(7), CpuId(1)) == Err(domains::DomainError::NoSuchDomain) {
        refusals += 1;
    }
    if domains::revoke(domain, CpuId(0), 1).is_err() {
        refusals += 1;
    }

    // Default strands run throughout, on every CPU they are given.
    let default_count = DEFAULT_STRANDS_PER_CPU * cpus;
    for _ in 0..default_count {
        let shared = Arc::clone(&shared);
        let body = Box::new(move || {
            while shared.stop_default.load(Ordering::Acquire) == 0 {
                shared.step();
                strand::sleep(DEFAULT_PAUSE_NS);
            }
            shared.default_finished.fetch_add(1, Ordering::Relaxed);
        });
        match strand::spawn_held(body, all, SchedParams::default()) {
            Ok(id) => {
                strand::start(id);
            }
            Err(error) => problems.push(format!("spawn a default strand: {error}")),
        }
    }

    let granted = cpus - 1;
    let domain_count = granted;
    for _ in 0..domain_count {
        let shared = Arc::clone(&shared);
        let client = Arc::clone(&client);
        let body = Box::new(move || loop {
            shared.step();
            shared.domain_steps.fetch_add(1, Ordering::Relaxed);
            let here = cpu::current_index();
            match shared.mode.load(Ordering::Acquire) {
                COOPERATE if client.notice[here].load(Ordering::Acquire) != 0 => {
                    strand::yield_now();
                }
                RELEASE => {
                    let _ = domains::release(domain, CpuId(here as u16));
                }
                STOP => {
                    shared.domain_finished.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {}
            }
        });
        match strand::spawn_in(domain, body, all, SchedParams::default()) {
            Ok(id) => {
                strand::start(id);
            }
            Err(error) => problems.push(format!("spawn a domain strand: {error}")),
        }
    }

    let mut grants = 0;
    let phases: [(u8, u64, &str); 4] = [
        (COOPERATE, GENEROUS_NOTICE_NS, "cooperative"),
        (HOG, SHORT_NOTICE_NS, "abort"),
        (RELEASE, GENEROUS_NOTICE_NS, "release"),
        (STOP, GENEROUS_NOTICE_NS, "stop"),
    ];
    for (mode, notice, name) in phases {
        if granted == 0 {
            break;
        }
        shared.mode.store(mode, Ordering::Release);
        let revoked_before = revocations(&client);
        let steps_before = shared.domain_steps.load(Ordering::Relaxed);
        // The CPUs of the last phase may still be on their way back (a
        // revocation completes before the next rendezvous returns the CPU).
        let mut got = 0;
        if !wait_until(|| {
            got += domains::request_processors(domain, granted - got);
            got == granted
        }) {
            let states: Vec<String> = (1..cpus)
                .map(|index| {
                    format!(
                        "cpu {index}: {:?} ({:?})",
                        domains::allocation(index),
                        domains::grant(domain, CpuId(index as u16)).err()
                    )
                })
                .collect();
            problems.push(format!(
                "{name}: {got} of {granted} processors granted; {}",
                states.join(", ")
            ));
        }
        grants += got;
        let added = grants as u64;
        if !wait_until(|| client.added.load(Ordering::Relaxed) >= added) {
            problems.push(format!(
                "{name}: processor_added came {} times of {added}",
                client.added.load(Ordering::Relaxed)
            ));
            continue;
        }
        // Let the domain's strands run a little on their processors.
        // (A releasing strand gives its processor back after one step.)
        if matches!(mode, COOPERATE | HOG)
            && !wait_until(|| shared.domain_steps.load(Ordering::Relaxed) > steps_before + 20)
        {
            problems.push(format!("{name}: the domain's strands did not run"));
        }
        if mode == RELEASE {
            let expected = revoked_before + granted as u64;
            if !wait_until(|| {
                revocations(&client) >= expected && domains::cpus_of(domain).is_empty()
            }) {
                problems.push(format!("{name}: the processors were not released"));
            }
            continue;
        }
        if mode == STOP
            && !wait_until(|| shared.domain_finished.load(Ordering::Relaxed) >= domain_count as u64)
        {
            problems.push(format!("{name}: the domain's strands did not finish"));
        }
        let mut deadlines = Vec::new();
        for index in 1..cpus {
            let asked = crate::kernel::nanoseconds_since_boot();
            match domains::revoke(domain, CpuId(index as u16), notice) {
                Ok(deadline) => deadlines.push((index, asked, deadline)),
                // A strand that read the release phase's mode just before it
                // ended may give its CPU back itself in the next phase.
                Err(domains::DomainError::Allocation(_)) if mode == STOP => {}
                Err(error) => problems.push(format!("{name}: revoke CPU {index}: {error}")),
            }
        }
        // Both: the CPUs are back, and the domain heard of every revocation
        // (`processor_revoked` comes just after a CPU stops running the
        // domain's strands; a phase must not start before it, or the next
        // phase would count it as its own).
        let expected = revoked_before + deadlines.len() as u64;
        if !wait_until(|| domains::cpus_of(domain).is_empty() && revocations(&client) >= expected) {
            problems.push(format!("{name}: revocations did not complete"));
        }
        for (index, asked, deadline) in deadlines {
            let at = client.revoked_at[index].load(Ordering::Acquire);
            if mode == HOG {
                forced_lateness.record(at.saturating_sub(deadline));
            } else {
                given_up_latency.record(at.saturating_sub(asked));
            }
        }
    }
    // Every domain strand the abort protocol preempted is one of its own.
    let forced_named = client.forced_strands.lock().len() as u64;

    // A domain whose client panics is ejected; its strands finish anyway.
    let broken = domains::register("alloc-broken", rr, Arc::new(PanickingClient));
    let mut broken_count = 0;
    if let (Ok(broken), true) = (broken, granted > 0) {
        for _ in 0..granted {
            let shared = Arc::clone(&shared);
            let body = Box::new(move || {
                for _ in 0..20 {
                    shared.step();
                    strand::yield_now();
                }
                shared.broken_finished.fetch_add(1, Ordering::Relaxed);
            });
            if let Ok(id) = strand::spawn_in(broken, body, all, SchedParams::default()) {
                strand::start(id);
                broken_count += 1;
            }
        }
        // Until every CPU is granted, or the domain is ejected already (its
        // client panics on the first one it gets).
        let mut got = 0;
        wait_until(|| {
            got += domains::request_processors(broken, granted - got);
            got == granted || domains::owner(broken).is_none()
        });
        if !wait_until(|| shared.broken_finished.load(Ordering::Relaxed) >= broken_count) {
            problems.push(String::from(
                "the ejected domain's strands did not finish in the default domain",
            ));
        }
        if strand::spawn_in(broken, Box::new(|| {}), all, SchedParams::default()).is_ok() {
            problems.push(String::from("an ejected domain could still create strands"));
        }
    }
    shared.stop_default.store(1, Ordering::Release);
    let none = AtomicU64::new(0);
    super::wait_for_strands(&none, 0, PHASE_TIMEOUT_NS);

    let counters = &strand::COUNTERS;
    let created = counters.created.load(Ordering::Relaxed);
    let exited = counters.exited.load(Ordering::Relaxed);
    if exited != created {
        problems.push(format!("{created} strands created, {exited} exited"));
    }
    let allocation = &domains::COUNTERS;
    console::with_console(|console| {
        let values = [
            ("alloc.cpus", granted as u64),
            ("alloc.grants", grants as u64),
            ("alloc.granted", allocation.granted.load(Ordering::Relaxed)),
            ("alloc.added", client.added.load(Ordering::Relaxed)),
            ("alloc.given_up", client.given_up.load(Ordering::Relaxed)),
            ("alloc.forced", client.forced.load(Ordering::Relaxed)),
            ("alloc.forced_named", forced_named),
            ("alloc.released", client.released.load(Ordering::Relaxed)),
            ("alloc.refusals", refusals),
            ("alloc.misplaced", shared.misplaced.load(Ordering::Relaxed)),
            (
                "alloc.domain_finished",
                shared.domain_finished.load(Ordering::Relaxed),
            ),
            (
                "alloc.default_finished",
                shared.default_finished.load(Ordering::Relaxed),
            ),
            (
                "alloc.ejected_finished",
                shared.broken_finished.load(Ordering::Relaxed),
            ),
            (
                "alloc.domain_ejections",
                allocation.domain_ejections.load(Ordering::Relaxed),
            ),
        ];
        for (name, value) in values {
            console::write_scalar_u64(console, name, value);
        }
    });
    super::report_scheduler_scalars(created, exited);
    problems
}

/// Revocations the test domain heard of so far.
fn revocations(client: &RecordingClient) -> u64 {
    client.given_up.load(Ordering::Relaxed)
        + client.forced.load(Ordering::Relaxed)
        + client.released.load(Ordering::Relaxed)
}

/// Halts CPU 0's own context until `done` holds (or the phase times out).
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tsc::now() + tsc::ns_to_cycles(PHASE_TIMEOUT_NS);
    while !done() {
        if tsc::now() > deadline {
            return false;
        }
        crate::extensions::halt_until_interrupt();
    }
    true
}
