//! Processor allocation to extension domains: a domain brings its own policy and a `ProcessorClient`, is granted CPUs on which only its strands run, and gives them back under the exokernel's revocation and abort protocol.
//!
//! * **Registration**: [`register`] gives a domain its own instance of a
//!   policy from the catalogue (its strands, created by [`super::spawn_in`],
//!   are scheduled by it and by nobody else) and a client for the
//!   allocation events.
//! * **Grant**: [`grant`] or [`request_processors`] marks a CPU for the
//!   domain; the CPU changes hands at the next rendezvous (swap.rs), with
//!   every CPU stopped, and the CPU raises `processor_added` at its next
//!   scheduling point. A default strand running there is preempted.
//! * **Revocation**: [`revoke`] tells the domain first (`revoke_requested`,
//!   with a deadline). The domain gives the CPU up by having its strand
//!   there yield or block; if it has not by the deadline, the CPU's next
//!   tick preempts the strand by force (the abort protocol). Either way the
//!   domain hears `processor_revoked` afterwards, on that CPU, saying how.
//!   The CPU idles until the next rendezvous gives it back to the default
//!   domain. [`release`] is the domain returning a CPU on its own.
//! * **Capabilities**: a CPU runs only strands of the domain that holds it,
//!   and a policy's answer naming a strand of another domain is refused and
//!   has the policy ejected (mod.rs, `claim`).
//! * **Hand-overs**: a policy sees each strand's *effective* affinity, the
//!   CPUs its domain holds. When CPUs change hands, each domain that gained
//!   or lost one (the default domain included) moves its strands into a
//!   fresh instance of its policy, exactly as in a live swap, so that no
//!   policy keeps a strand queued for a CPU it no longer has.
//! * **Ejection**: a domain whose policy or client faults is ejected at the
//!   next rendezvous: its CPUs and its strands go to the default domain, and
//!   the ejection is logged like a policy's.
//!
//! The default domain always keeps CPU 0, which runs swaps and the watchdog.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use spindle_sched_ext::{
    Allocation, AllocationError, CpuId, CpuSet, DomainId, Nanoseconds, PolicyInfo, ProcessorClient,
    Runner, DEFAULT_DOMAIN,
};

use super::calls::{self, Callback, Owner};
use super::{kick, policy_context, swap, with_interrupts_off, POLICY};
use crate::arch::cpu;
use crate::sync::{irq_mutex, IrqMutex};

/// Domains, the default one included.
pub const MAX_DOMAINS: usize = 8;
/// `RUNNER` value of a CPU that runs nobody's strands (on its way back).
const NOBODY: u16 = u16::MAX;

/// One extension domain.
struct Domain {
    name: &'static str,
    /// Where fresh instances of its policy come from (hand-overs).
    info: &'static PolicyInfo,
    policy: Arc<dyn spindle_sched_ext::Policy>,
    client: Arc<dyn ProcessorClient>,
    /// Why it was ejected, once it has been.
    ejected: Option<&'static str>,
}

/// Extension domains; domain `n` is at index `n - 1`.
static DOMAINS: IrqMutex<Vec<Domain>> = irq_mutex(Vec::new());
/// Each CPU's allocation state.
static ALLOCATION: [IrqMutex<Allocation>; cpu::MAX_CPUS] =
    [const { irq_mutex(Allocation::Shared) }; cpu::MAX_CPUS];
/// Whose strands each CPU runs (a domain number, or `NOBODY`): written at a
/// rendezvous and when a revocation completes, read on every scheduling
/// decision without a lock.
static RUNNER: [AtomicU16; cpu::MAX_CPUS] = [const { AtomicU16::new(0) }; cpu::MAX_CPUS];
/// Ejections of extension domains waiting for the next rendezvous.
static EJECTIONS: IrqMutex<Vec<(DomainId, &'static str)>> = irq_mutex(Vec::new());

/// What processor allocation counted.
pub struct AllocationCounters {
    /// CPUs that changed hands to an extension domain.
    pub granted: AtomicU64,
    /// Grants refused at the hand-over (the default policy refused to
    /// schedule its strands on fewer CPUs).
    pub grants_undone: AtomicU64,
    /// Revocations the domain met within the notice.
    pub given_up: AtomicU64,
    /// Revocations completed by force (the abort protocol).
    pub forced: AtomicU64,
    /// CPUs a domain returned on its own.
    pub released: AtomicU64,
    /// Extension domains ejected.
    pub domain_ejections: AtomicU64,
}

/// The counters of processor allocation.
pub static COUNTERS: AllocationCounters = AllocationCounters {
    granted: AtomicU64::new(0),
    grants_undone: AtomicU64::new(0),
    given_up: AtomicU64::new(0),
    forced: AtomicU64::new(0),
    released: AtomicU64::new(0),
    domain_ejections: AtomicU64::new(0),
};

/// Why a domain could not be registered or granted a processor.
#[derive(Debug, PartialEq, Eq)]
pub enum DomainError {
    /// Every domain slot is taken.
    TooManyDomains,
    /// No such domain, or it was ejected.
    NoSuchDomain,
    /// CPU 0 stays with the default domain.
    BootstrapCpu,
    /// No such CPU.
    NoSuchCpu,
    /// The CPU cannot change hands now.
    Allocation(AllocationError),
    /// A default strand may run only on CPUs that would all be granted.
    StrandsNeedIt,
}

impl fmt::Display for DomainError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::TooManyDomains => formatter.write_str("every domain slot is taken"),
            DomainError::NoSuchDomain => formatter.write_str("no such domain (or it was ejected)"),
            DomainError::BootstrapCpu => formatter.write_str("CPU 0 stays with the default domain"),
            DomainError::NoSuchCpu => formatter.write_str("no such CPU"),
            DomainError::Allocation(error) => write!(formatter, "{error}"),
            DomainError::StrandsNeedIt => formatter
                .write_str("a default strand may run on no CPU that the default domain would keep"),
        }
    }
}

/// Registers an extension domain scheduled by a fresh instance of `policy`
/// and told about its processors through `client`. A domain of the same
/// name that is idle (see [`is_idle`]) is reused, with the new policy
/// instance and client: a workload that runs a package many times does not
/// use up the domain slots.
pub fn register(
    name: &'static str,
    policy: &'static PolicyInfo,
    client: Arc<dyn ProcessorClient>,
) -> Result<DomainId, DomainError> {
    let instance: Arc<dyn spindle_sched_ext::Policy> =
        Arc::from((policy.create)(cpu::cpus_found() as u16));
    let reusable: Vec<DomainId> = {
        let domains = DOMAINS.lock();
        (1..=domains.len())
            .filter(|&number| {
                let entry = &domains[number - 1];
                entry.name == name && entry.ejected.is_none()
            })
            .map(|number| DomainId(number as u16))
            .collect()
    };
    // `is_idle` takes the strand table and the allocation locks, never
    // while `DOMAINS` is held.
    if let Some(domain) = reusable.into_iter().find(|&domain| is_idle(domain)) {
        let mut domains = DOMAINS.lock();
        let entry = &mut domains[usize::from(domain.0) - 1];
        entry.info = policy;
        entry.policy = instance;
        entry.client = client;
        return Ok(domain);
    }
    let mut domains = DOMAINS.lock();
    if domains.len() + 1 >= MAX_DOMAINS {
        return Err(DomainError::TooManyDomains);
    }
    domains.push(Domain {
        name,
        info: policy,
        policy: instance,
        client,
        ejected: None,
    });
    Ok(DomainId(domains.len() as u16))
}

/// Whether extension domain `domain` holds no CPU, has none on its way to
/// or from it, and has no live strand.
pub fn is_idle(domain: DomainId) -> bool {
    let allocated = ALLOCATION[..cpu::cpus_found()]
        .iter()
        .any(|allocation| allocation.lock().holder() == Some(domain));
    !allocated && super::strands_in(domain) == 0
}

/// The policy of `domain` (the running policy for the default domain);
/// `None` for an unknown or ejected domain.
pub fn owner(domain: DomainId) -> Option<Owner> {
    if domain == DEFAULT_DOMAIN {
        return POLICY.lock().clone().map(|policy| Owner { domain, policy });
    }
    let domains = DOMAINS.lock();
    let entry = domains.get(usize::from(domain.0).checked_sub(1)?)?;
    entry.ejected.is_none().then(|| Owner {
        domain,
        policy: Arc::clone(&entry.policy),
    })
}

/// The client of extension domain `domain`, unless it was ejected.
fn client(domain: DomainId) -> Option<Arc<dyn ProcessorClient>> {
    let domains = DOMAINS.lock();
    let entry = domains.get(usize::from(domain.0).checked_sub(1)?)?;
    entry.ejected.is_none().then(|| Arc::clone(&entry.client))
}

/// Whose strands CPU `index` runs now.
pub fn runner(index: usize) -> Runner {
    match RUNNER[index].load(Ordering::Acquire) {
        NOBODY => Runner::Nobody,
        0 => Runner::Default,
        domain => Runner::Domain(DomainId(domain)),
    }
}

/// Whether CPU `index` runs strands of `domain`.
pub fn runs(index: usize, domain: DomainId) -> bool {
    RUNNER[index].load(Ordering::Acquire) == domain.0
}

/// The CPUs whose strands are `domain`'s now.
pub fn cpus_of(domain: DomainId) -> CpuSet {
    (0..cpu::cpus_found())
        .filter(|&index| runs(index, domain))
        .map(|index| CpuId(index as u16))
        .collect()
}

/// CPU `index`'s allocation state (for diagnostics).
pub fn allocation(index: usize) -> Allocation {
    *ALLOCATION[index].lock()
}

/// Grants CPU `target` to `domain`; it changes hands at the next rendezvous.
pub fn grant(domain: DomainId, target: CpuId) -> Result<(), DomainError> {
    let index = usize::from(target.0);
    if domain == DEFAULT_DOMAIN || owner(domain).is_none() {
        return Err(DomainError::NoSuchDomain);
    }
    if index == 0 {
        return Err(DomainError::BootstrapCpu);
    }
    if index >= cpu::cpus_found() {
        return Err(DomainError::NoSuchCpu);
    }
    with_interrupts_off(|| {
        let mut keeps = cpus_of(DEFAULT_DOMAIN);
        keeps.remove(target);
        if super::default_strand_confined_outside(&keeps) {
            return Err(DomainError::StrandsNeedIt);
        }
        ALLOCATION[index]
            .lock()
            .grant(domain)
            .map_err(DomainError::Allocation)
    })?;
    swap::request_reallocation();
    Ok(())
}

/// Scheduler activations' "add more processors": grants `domain` up to
/// `count` CPUs the default domain may give; returns how many.
pub fn request_processors(domain: DomainId, count: usize) -> usize {
    (1..cpu::cpus_found())
        .filter(|&index| grant(domain, CpuId(index as u16)).is_ok())
        .take(count)
        .count()
}

/// Starts taking CPU `target` back from `domain`, which is told at once
/// (`revoke_requested`) and has `notice` nanoseconds to give it up.
/// Returns the deadline.
pub fn revoke(
    domain: DomainId,
    target: CpuId,
    notice: Nanoseconds,
) -> Result<Nanoseconds, DomainError> {
    let index = usize::from(target.0);
    if index >= cpu::cpus_found() {
        return Err(DomainError::NoSuchCpu);
    }
    let client = client(domain).ok_or(DomainError::NoSuchDomain)?;
    with_interrupts_off(|| {
        let context = policy_context();
        let deadline = ALLOCATION[index]
            .lock()
            .revoke(domain, context.now, notice)
            .map_err(DomainError::Allocation)?;
        calls::call_client(domain, &client, Callback::RevokeRequested, |client| {
            client.revoke_requested(&context, target, deadline)
        });
        // An idle CPU gives the processor up at once.
        kick(target);
        Ok(deadline)
    })
}

/// The domain returns CPU `target` (it leaves at the CPU's next
/// scheduling point; a caller running there yields at once).
pub fn release(domain: DomainId, target: CpuId) -> Result<(), DomainError> {
    release_then(domain, target, true)
}

/// [`release`], where a caller running on `target` yields only if
/// `yield_now` (else the CPU leaves at its next yield, block or exit: a
/// strand that releases its CPU and then exits is not left runnable on a
/// CPU its domain no longer holds).
pub fn release_then(domain: DomainId, target: CpuId, yield_now: bool) -> Result<(), DomainError> {
    let index = usize::from(target.0);
    if index >= cpu::cpus_found() {
        return Err(DomainError::NoSuchCpu);
    }
    with_interrupts_off(|| {
        let now = crate::kernel::nanoseconds_since_boot();
        ALLOCATION[index]
            .lock()
            .release(domain, now)
            .map_err(DomainError::Allocation)
    })?;
    if target.index() != cpu::current_index() {
        kick(target);
    } else if yield_now {
        super::yield_now();
    }
    Ok(())
}

/// The CPUs allocated to `domain` in any state (being granted, held, being
/// taken back, on their way back).
pub fn allocated(domain: DomainId) -> CpuSet {
    ALLOCATION[..cpu::cpus_found()]
        .iter()
        .enumerate()
        .filter(|(_, allocation)| allocation.lock().holder() == Some(domain))
        .map(|(index, _)| CpuId(index as u16))
        .collect()
}

/// The timer tick on CPU `index`: whether the strand of the holding domain
/// running there (`running`) must be preempted by force now.
pub(super) fn must_force(
    index: usize,
    now: Nanoseconds,
    running: Option<spindle_sched_ext::StrandId>,
) -> bool {
    ALLOCATION[index].lock().must_force(now, running)
}

/// A scheduling point on CPU `index`, the leaving strand gone (`voluntary`:
/// it yielded, blocked or exited, or there was none): completes a
/// revocation under way (a strand preempted before the deadline does not;
/// see `Allocation::complete_revocation_after`) and raises
/// `processor_revoked`, or raises `processor_added` once after a grant.
/// Returns whose strands the CPU runs.
pub(super) fn at_scheduling_point(index: usize, voluntary: bool) -> Runner {
    let (completed, added, runs) = {
        let mut allocation = ALLOCATION[index].lock();
        let completed = allocation.complete_revocation_after(voluntary);
        if completed.is_some() {
            RUNNER[index].store(NOBODY, Ordering::Release);
        }
        let added = allocation.announce();
        (completed, added, allocation.runs())
    };
    if completed.is_none() && added.is_none() {
        return runs;
    }
    let context = policy_context();
    if let Some((domain, how)) = completed {
        let counter = match how {
            spindle_sched_ext::Revocation::Released => &COUNTERS.released,
            spindle_sched_ext::Revocation::Forced { .. } => &COUNTERS.forced,
            _ => &COUNTERS.given_up,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(client) = client(domain) {
            calls::call_client(domain, &client, Callback::ProcessorRevoked, |client| {
                client.processor_revoked(&context, context.cpu, how)
            });
        }
        swap::request_reallocation();
    }
    if let Some(domain) = added {
        if let Some(client) = client(domain) {
            calls::call_client(domain, &client, Callback::ProcessorAdded, |client| {
                client.processor_added(&context, context.cpu)
            });
        }
    }
    runs
}

/// Asks for extension domain `domain` to be ejected at the next rendezvous.
pub(super) fn request_ejection(domain: DomainId, reason: &'static str) {
    let mut ejections = EJECTIONS.lock();
    if ejections.iter().all(|&(queued, _)| queued != domain) {
        ejections.push((domain, reason));
    }
}

/// At a rendezvous (every other CPU stopped): ejects the domains that
/// faulted, lets the CPUs that are changing hands change them, and hands
/// each domain whose CPUs changed over to a fresh instance of its policy.
/// Returns the ejections performed: (domain name, reason, strands moved).
pub(super) fn apply_stopped() -> Vec<(&'static str, &'static str, usize)> {
    let mut changed: Vec<DomainId> = Vec::new();
    let mut performed = Vec::new();
    let ejections = core::mem::take(&mut *EJECTIONS.lock());
    for (domain, reason) in ejections {
        let name = {
            let mut domains = DOMAINS.lock();
            let Some(entry) = usize::from(domain.0)
                .checked_sub(1)
                .and_then(|index| domains.get_mut(index))
            else {
                continue;
            };
            if entry.ejected.is_some() {
                continue;
            }
            entry.ejected = Some(reason);
            entry.name
        };
        for allocation in &ALLOCATION[..cpu::cpus_found()] {
            allocation.lock().eject(domain);
        }
        let moved = super::move_strands_to_default(domain);
        COUNTERS.domain_ejections.fetch_add(1, Ordering::Relaxed);
        performed.push((name, reason, moved));
        changed.push(DEFAULT_DOMAIN);
    }
    let mut granted_now = Vec::new();
    for (index, allocation) in ALLOCATION[..cpu::cpus_found()].iter().enumerate() {
        let mut allocation = allocation.lock();
        let was_granting = matches!(*allocation, Allocation::Granting { .. });
        if let Some(domain) = allocation.apply() {
            changed.push(domain);
            changed.push(DEFAULT_DOMAIN);
            if was_granting {
                granted_now.push(index);
            }
        }
        RUNNER[index].store(encode(allocation.runs()), Ordering::Release);
    }
    changed.sort();
    changed.dedup();
    for domain in changed {
        if !hand_over(domain) && domain == DEFAULT_DOMAIN && !granted_now.is_empty() {
            // The default policy cannot schedule its strands without those
            // CPUs: the grants are undone (the domains never got them).
            for &index in &granted_now {
                *ALLOCATION[index].lock() = Allocation::Shared;
                RUNNER[index].store(0, Ordering::Release);
                COUNTERS.grants_undone.fetch_add(1, Ordering::Relaxed);
            }
            granted_now.clear();
        }
    }
    COUNTERS
        .granted
        .fetch_add(granted_now.len() as u64, Ordering::Relaxed);
    for index in (0..cpu::cpus_found()).filter(|&index| index != cpu::current_index()) {
        kick(CpuId(index as u16));
    }
    performed
}

fn encode(runs: Runner) -> u16 {
    match runs {
        Runner::Default => 0,
        Runner::Domain(domain) => domain.0,
        Runner::Nobody => NOBODY,
    }
}

/// Moves `domain`'s strands into a fresh instance of its policy, each with
/// its effective affinity; false if the new instance refused them (the old
/// one stays).
fn hand_over(domain: DomainId) -> bool {
    let Some(old) = owner(domain) else {
        return true;
    };
    let info = if domain == DEFAULT_DOMAIN {
        swap::find_policy(swap::current_policy())
    } else {
        let domains = DOMAINS.lock();
        domains
            .get(usize::from(domain.0) - 1)
            .map(|entry| entry.info)
    };
    let Some(info) = info else { return false };
    let context = policy_context();
    let strands = swap::hand_over_strands(&old, &context);
    let fresh: Arc<dyn spindle_sched_ext::Policy> = Arc::from((info.create)(context.cpu_count));
    match calls::call_policy(domain, &fresh, Callback::Import, |policy| {
        policy.import(&context, strands)
    }) {
        Ok(Ok(())) => {
            if domain == DEFAULT_DOMAIN {
                *POLICY.lock() = Some(fresh);
            } else if let Some(entry) = DOMAINS.lock().get_mut(usize::from(domain.0) - 1) {
                entry.policy = fresh;
            }
            true
        }
        _ => false,
    }
}
