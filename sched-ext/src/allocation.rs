//! Processor allocation to extension domains: the per-CPU grant and revocation state machine, and the events a domain that holds processors handles.
//!
//! The trusted scheduler may *grant* a CPU to an extension domain: from
//! then on only that domain's strands run there, picked by the domain's own
//! policy. Taking it back follows the exokernel's visible revocation and
//! abort protocol:
//!
//! 1. The kernel raises [`ProcessorClient::revoke_requested`] with a
//!    deadline: the domain is told first.
//! 2. If the domain gives the processor up before the deadline (its strand
//!    on that CPU yields, blocks or exits, or the CPU is idle), the
//!    revocation completes as [`Revocation::GivenUp`].
//! 3. If not, the next tick after the deadline preempts the domain's strand
//!    by force (the *abort protocol*) and the domain is told afterwards,
//!    with [`Revocation::Forced`] naming the preempted strand, whose state
//!    the kernel saved.
//!
//! A domain may also return a processor on its own ([`Revocation::Released`]).
//!
//! [`Allocation`] is one CPU's state. The kernel keeps one per CPU and
//! applies these transitions under that CPU's lock. The changes of which
//! policy may run strands on the CPU ([`Allocation::runs`]) take effect only
//! in [`Allocation::apply`], which the kernel calls with every CPU stopped,
//! so that no policy ever sees a CPU change hands under it.

use core::fmt;

use crate::interface::{Context, CpuId, Nanoseconds, StrandId};

/// A scheduling domain: the kernel's default one (the swappable policy) or an
/// extension domain that holds processors of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

/// The default domain: the policy the kernel runs (and swaps) for all
/// strands that belong to no extension domain.
pub const DEFAULT_DOMAIN: DomainId = DomainId(0);

impl fmt::Display for DomainId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "domain {}", self.0)
    }
}

/// How a processor left an extension domain (told in [`ProcessorClient::processor_revoked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// The domain returned it on its own.
    Released,
    /// The domain gave it up within the revocation notice.
    GivenUp,
    /// The notice ran out and the kernel preempted `preempted` by force; the
    /// strand is runnable and its state saved, waiting for another of the
    /// domain's processors.
    Forced {
        /// The strand that was running on the processor.
        preempted: StrandId,
    },
    /// The domain was ejected (a fault): its processors and its strands went
    /// back to the default domain.
    Ejected,
}

/// Who may run strands on a CPU now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runner {
    /// The default domain's policy.
    Default,
    /// An extension domain's policy.
    Domain(DomainId),
    /// Nobody: the CPU is on its way back to the default domain and idles.
    Nobody,
}

/// Why an allocation request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocationError {
    /// The CPU is not the default domain's to give (granted, or changing hands).
    NotFree,
    /// The CPU is held by another domain (or by none).
    NotHolder,
    /// The CPU is changing hands; ask again once it has.
    InTransition,
}

impl fmt::Display for AllocationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            AllocationError::NotFree => "the processor is not free",
            AllocationError::NotHolder => "the domain does not hold the processor",
            AllocationError::InTransition => "the processor is changing hands",
        })
    }
}

/// Why a revocation is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The kernel takes the processor back.
    Revoked,
    /// The domain returns it.
    Released,
}

/// One CPU's allocation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// The default domain schedules it.
    Shared,
    /// Granted to `domain`, which gets it at the next [`apply`](Allocation::apply).
    Granting {
        /// The domain it goes to.
        domain: DomainId,
    },
    /// Held by `domain`.
    Granted {
        /// The holder.
        domain: DomainId,
        /// Whether `processor_added` was raised on the CPU yet.
        announced: bool,
    },
    /// Held by `domain`, which was told to give it up by `deadline`.
    Revoking {
        /// The holder.
        domain: DomainId,
        /// When the notice runs out.
        deadline: Nanoseconds,
        /// The kernel takes it, or the domain returns it.
        cause: Cause,
        /// The strand the kernel preempted by force, once it has.
        forced: Option<StrandId>,
    },
    /// Taken from `domain`; the default domain gets it at the next
    /// [`apply`](Allocation::apply), and the CPU idles until then.
    Returning {
        /// The domain it was taken from.
        domain: DomainId,
    },
}

impl Allocation {
    /// Who may run strands on the CPU now.
    pub const fn runs(&self) -> Runner {
        match *self {
            Allocation::Shared | Allocation::Granting { .. } => Runner::Default,
            Allocation::Granted { domain, .. } | Allocation::Revoking { domain, .. } => {
                Runner::Domain(domain)
            }
            Allocation::Returning { .. } => Runner::Nobody,
        }
    }

    /// Grants the CPU to `domain` (it changes hands at the next `apply`).
    pub fn grant(&mut self, domain: DomainId) -> Result<(), AllocationError> {
        if *self != Allocation::Shared || domain == DEFAULT_DOMAIN {
            return Err(AllocationError::NotFree);
        }
        *self = Allocation::Granting { domain };
        Ok(())
    }

    /// Applies a pending change of hands (every CPU is stopped): returns the
    /// domain whose processors changed, if any.
    pub fn apply(&mut self) -> Option<DomainId> {
        match *self {
            Allocation::Granting { domain } => {
                *self = Allocation::Granted {
                    domain,
                    announced: false,
                };
                Some(domain)
            }
            Allocation::Returning { domain } => {
                *self = Allocation::Shared;
                Some(domain)
            }
            _ => None,
        }
    }

    /// At a scheduling point on the CPU: the domain to raise
    /// `processor_added` for, once per grant.
    pub fn announce(&mut self) -> Option<DomainId> {
        match self {
            Allocation::Granted { domain, announced } if !*announced => {
                *announced = true;
                Some(*domain)
            }
            _ => None,
        }
    }

    /// Starts taking the CPU back from `domain`, with `notice` nanoseconds
    /// to give it up: returns the deadline to tell the domain.
    pub fn revoke(
        &mut self,
        domain: DomainId,
        now: Nanoseconds,
        notice: Nanoseconds,
    ) -> Result<Nanoseconds, AllocationError> {
        self.start_revocation(domain, now.saturating_add(notice), Cause::Revoked)
    }

    /// The domain returns the CPU (it completes at the CPU's next
    /// scheduling point, as [`Revocation::Released`]).
    pub fn release(&mut self, domain: DomainId, now: Nanoseconds) -> Result<(), AllocationError> {
        self.start_revocation(domain, now, Cause::Released)
            .map(|_| ())
    }

    fn start_revocation(
        &mut self,
        holder: DomainId,
        deadline: Nanoseconds,
        cause: Cause,
    ) -> Result<Nanoseconds, AllocationError> {
        match *self {
            Allocation::Granted { domain, announced } if domain == holder => {
                if !announced {
                    // The domain has not been told it has the CPU yet.
                    return Err(AllocationError::InTransition);
                }
                *self = Allocation::Revoking {
                    domain,
                    deadline,
                    cause,
                    forced: None,
                };
                Ok(deadline)
            }
            Allocation::Revoking {
                domain,
                deadline: current,
                cause: current_cause,
                forced,
            } if domain == holder => {
                // A second notice can only bring the deadline forward, and a
                // release during a revocation is still the domain's doing.
                let (deadline, cause) = match cause {
                    Cause::Released => (deadline.min(current), Cause::Released),
                    Cause::Revoked => (deadline.min(current), current_cause),
                };
                *self = Allocation::Revoking {
                    domain,
                    deadline,
                    cause,
                    forced,
                };
                Ok(deadline)
            }
            Allocation::Granting { .. } | Allocation::Returning { .. } => {
                Err(AllocationError::InTransition)
            }
            _ => Err(AllocationError::NotHolder),
        }
    }

    /// At the CPU's timer tick, with `running` the holder's strand on it:
    /// whether the kernel must preempt it by force now (the notice ran out).
    pub fn must_force(&mut self, now: Nanoseconds, running: Option<StrandId>) -> bool {
        match self {
            Allocation::Revoking {
                deadline,
                forced,
                cause: Cause::Revoked,
                ..
            } if now >= *deadline && forced.is_none() => match running {
                Some(strand) => {
                    *forced = Some(strand);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// At a scheduling point on the CPU, once the holder's strand (if any)
    /// has left it: completes a revocation under way, returning the domain
    /// and what to tell it. The CPU then runs nothing until `apply`.
    pub fn complete_revocation(&mut self) -> Option<(DomainId, Revocation)> {
        self.complete_revocation_after(true)
    }

    /// [`complete_revocation`](Allocation::complete_revocation), where
    /// `voluntary` says whether the holder's strand left on its own (a
    /// yield, a block, an exit; or the CPU had none). A strand preempted
    /// before the deadline has not given the CPU up: the revocation stays
    /// under way (the strand may be inside a critical section that others
    /// wait on; taking the CPU would strand it there), and so does a
    /// release (the releasing strand may still have work to finish there,
    /// such as exiting). The abort protocol's forced preemption completes
    /// either way.
    pub fn complete_revocation_after(&mut self, voluntary: bool) -> Option<(DomainId, Revocation)> {
        let Allocation::Revoking {
            domain,
            cause,
            forced,
            ..
        } = *self
        else {
            return None;
        };
        if !voluntary && forced.is_none() {
            return None;
        }
        let how = match (cause, forced) {
            (Cause::Released, _) => Revocation::Released,
            (Cause::Revoked, Some(preempted)) => Revocation::Forced { preempted },
            (Cause::Revoked, None) => Revocation::GivenUp,
        };
        *self = Allocation::Returning { domain };
        Some((domain, how))
    }

    /// The domain was ejected: a CPU it holds goes back at the next `apply`
    /// (and one granted to it is not handed over). Returns whether the
    /// domain held or was getting the CPU.
    pub fn eject(&mut self, ejected: DomainId) -> bool {
        match *self {
            Allocation::Granting { domain } if domain == ejected => {
                *self = Allocation::Shared;
                true
            }
            Allocation::Granted { domain, .. } | Allocation::Revoking { domain, .. }
                if domain == ejected =>
            {
                *self = Allocation::Returning { domain };
                true
            }
            _ => false,
        }
    }

    /// The domain that holds the CPU or is getting it, if any.
    pub const fn holder(&self) -> Option<DomainId> {
        match *self {
            Allocation::Shared => None,
            Allocation::Granting { domain }
            | Allocation::Granted { domain, .. }
            | Allocation::Revoking { domain, .. }
            | Allocation::Returning { domain } => Some(domain),
        }
    }
}

/// The events an extension domain that holds processors handles. The
/// kernel raises them under the same guard as policy calls (a fault ejects
/// the domain); they must return promptly.
pub trait ProcessorClient: Send + Sync {
    /// `cpu` is the domain's now; raised on that CPU before the domain's
    /// policy is first asked to pick there.
    fn processor_added(&self, ctx: &Context, cpu: CpuId);

    /// The kernel wants `cpu` back by `deadline`: the domain should have the
    /// strand running there yield or block before then (or do nothing if
    /// it accepts losing that strand's processor by force).
    fn revoke_requested(&self, ctx: &Context, cpu: CpuId, deadline: Nanoseconds);

    /// `cpu` is no longer the domain's, for the reason `how`; raised on that
    /// CPU once the domain's strand has left it.
    fn processor_revoked(&self, ctx: &Context, cpu: CpuId, how: Revocation);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preemption_before_the_deadline_does_not_complete_a_revocation() {
        let mut cpu = granted();
        let deadline = cpu.revoke(DOMAIN, 100, 50).unwrap();
        assert_eq!(cpu.complete_revocation_after(false), None);
        assert!(matches!(cpu, Allocation::Revoking { .. }));
        // The abort protocol's preemption completes it.
        assert!(cpu.must_force(deadline, Some(STRAND)));
        assert_eq!(
            cpu.complete_revocation_after(false),
            Some((DOMAIN, Revocation::Forced { preempted: STRAND }))
        );
        // A yield, block or exit completes it at once.
        let mut cpu = granted();
        cpu.revoke(DOMAIN, 100, 50).unwrap();
        assert_eq!(
            cpu.complete_revocation_after(true),
            Some((DOMAIN, Revocation::GivenUp))
        );
        // A release is never forced: it waits for the strand to leave.
        let mut cpu = granted();
        cpu.release(DOMAIN, 100).unwrap();
        assert!(!cpu.must_force(1_000, Some(STRAND)));
        assert_eq!(cpu.complete_revocation_after(false), None);
        assert_eq!(
            cpu.complete_revocation_after(true),
            Some((DOMAIN, Revocation::Released))
        );
    }

    const DOMAIN: DomainId = DomainId(1);
    const OTHER: DomainId = DomainId(2);
    const STRAND: StrandId = StrandId::new(3, 1);

    /// A CPU granted to `DOMAIN`, applied and announced.
    fn granted() -> Allocation {
        let mut cpu = Allocation::Shared;
        cpu.grant(DOMAIN).unwrap();
        assert_eq!(cpu.apply(), Some(DOMAIN));
        assert_eq!(cpu.announce(), Some(DOMAIN));
        cpu
    }

    #[test]
    fn a_grant_changes_hands_only_when_applied_and_is_announced_once() {
        let mut cpu = Allocation::Shared;
        assert_eq!(cpu.runs(), Runner::Default);
        cpu.grant(DOMAIN).unwrap();
        assert_eq!(cpu.runs(), Runner::Default, "not before the rendezvous");
        assert_eq!(cpu.announce(), None);
        assert_eq!(cpu.grant(OTHER), Err(AllocationError::NotFree));
        assert_eq!(cpu.apply(), Some(DOMAIN));
        assert_eq!(cpu.apply(), None, "applied once");
        assert_eq!(cpu.runs(), Runner::Domain(DOMAIN));
        assert_eq!(cpu.announce(), Some(DOMAIN));
        assert_eq!(cpu.announce(), None);
        assert_eq!(cpu.holder(), Some(DOMAIN));
    }

    #[test]
    fn the_default_domain_cannot_be_granted_what_it_has() {
        let mut cpu = Allocation::Shared;
        assert_eq!(cpu.grant(DEFAULT_DOMAIN), Err(AllocationError::NotFree));
        assert_eq!(cpu, Allocation::Shared);
    }

    #[test]
    fn a_processor_given_up_in_time_is_reported_as_given_up() {
        let mut cpu = granted();
        let deadline = cpu.revoke(DOMAIN, 1_000, 500).unwrap();
        assert_eq!(deadline, 1_500);
        assert_eq!(cpu.runs(), Runner::Domain(DOMAIN), "still the domain's");
        assert!(!cpu.must_force(1_200, Some(STRAND)), "notice still running");
        assert_eq!(
            cpu.complete_revocation(),
            Some((DOMAIN, Revocation::GivenUp))
        );
        assert_eq!(cpu.runs(), Runner::Nobody);
        assert_eq!(cpu.complete_revocation(), None);
        assert_eq!(cpu.apply(), Some(DOMAIN));
        assert_eq!(cpu, Allocation::Shared);
    }

    #[test]
    fn a_processor_kept_past_the_deadline_is_taken_by_force_once() {
        let mut cpu = granted();
        cpu.revoke(DOMAIN, 0, 100).unwrap();
        assert!(!cpu.must_force(150, None), "an idle CPU needs no force");
        assert!(cpu.must_force(150, Some(STRAND)));
        assert!(!cpu.must_force(160, Some(STRAND)), "forced once");
        assert_eq!(
            cpu.complete_revocation(),
            Some((DOMAIN, Revocation::Forced { preempted: STRAND }))
        );
    }

    #[test]
    fn a_release_is_reported_as_such_even_during_a_revocation() {
        let mut cpu = granted();
        cpu.release(DOMAIN, 10).unwrap();
        assert_eq!(
            cpu.complete_revocation(),
            Some((DOMAIN, Revocation::Released))
        );

        let mut cpu = granted();
        cpu.revoke(DOMAIN, 0, 1_000).unwrap();
        cpu.release(DOMAIN, 10).unwrap();
        assert_eq!(
            cpu.complete_revocation(),
            Some((DOMAIN, Revocation::Released))
        );
    }

    #[test]
    fn a_second_notice_only_brings_the_deadline_forward() {
        let mut cpu = granted();
        assert_eq!(cpu.revoke(DOMAIN, 0, 1_000), Ok(1_000));
        assert_eq!(cpu.revoke(DOMAIN, 10, 5_000), Ok(1_000));
        assert_eq!(cpu.revoke(DOMAIN, 20, 100), Ok(120));
        assert!(cpu.must_force(120, Some(STRAND)));
    }

    #[test]
    fn only_the_holder_may_give_a_processor_back_and_not_in_transition() {
        let mut cpu = Allocation::Shared;
        assert_eq!(cpu.revoke(DOMAIN, 0, 1), Err(AllocationError::NotHolder));
        cpu.grant(DOMAIN).unwrap();
        assert_eq!(cpu.revoke(DOMAIN, 0, 1), Err(AllocationError::InTransition));
        cpu.apply();
        assert_eq!(
            cpu.revoke(DOMAIN, 0, 1),
            Err(AllocationError::InTransition),
            "not before the domain was told it has it"
        );
        cpu.announce();
        assert_eq!(cpu.revoke(OTHER, 0, 1), Err(AllocationError::NotHolder));
        assert_eq!(cpu.release(OTHER, 0), Err(AllocationError::NotHolder));
        cpu.revoke(DOMAIN, 0, 1).unwrap();
        cpu.complete_revocation();
        assert_eq!(cpu.release(DOMAIN, 0), Err(AllocationError::InTransition));
        assert_eq!(cpu.grant(OTHER), Err(AllocationError::NotFree));
    }

    #[test]
    fn ejection_takes_back_every_state_of_the_domain_and_nothing_else() {
        let mut granting = Allocation::Shared;
        granting.grant(DOMAIN).unwrap();
        assert!(granting.eject(DOMAIN));
        assert_eq!(granting, Allocation::Shared);

        let mut held = granted();
        assert!(!held.eject(OTHER));
        assert!(held.eject(DOMAIN));
        assert_eq!(held.runs(), Runner::Nobody);
        assert_eq!(held.apply(), Some(DOMAIN));

        let mut revoking = granted();
        revoking.revoke(DOMAIN, 0, 10).unwrap();
        assert!(revoking.eject(DOMAIN));
        assert_eq!(revoking.complete_revocation(), None);

        assert!(!Allocation::Shared.eject(DOMAIN));
    }
}
