//! Provenance of a domain's code, certified only by the kernel's single [`Attestation`] authority.
//!
//! Every domain records whether its code is [`Provenance::CompilerChecked`]
//! (a crate whose root carries `#![forbid(unsafe_code)]`, so the Rust
//! compiler vouches for its memory safety) or
//! [`Provenance::TrustedByAssertion`] (the kernel and anything else that uses
//! `unsafe`, trusted because we say so).
//!
//! # Who decides
//!
//! A module cannot state its own provenance: [`Module`](crate::Module) has no
//! field or method for it. [`Domain::create_from_module`](crate::Domain::create_from_module)
//! takes a [`ProvenanceCertificate`], and the only way to make one is
//! [`Attestation::certify`]. The single [`Attestation`] value is handed out
//! once per program by [`Attestation::establish`]; the kernel calls it during
//! boot, before any extension code runs, and treats a failure as fatal.
//! Extension code therefore can neither build a certificate (its fields are
//! private) nor get the authority (it is already taken).
//!
//! ```compile_fail
//! use spindle_domains::{Provenance, ProvenanceCertificate};
//! // Private fields: no code outside this crate can write a certificate.
//! let forged = ProvenanceCertificate { domain: spindle_domains::DomainId::new(1), provenance: Provenance::TrustedByAssertion };
//! ```
//!
//! ```compile_fail
//! // Nor write the authority itself.
//! let authority = spindle_domains::Attestation { _private: () };
//! ```
//!
//! # How the kernel establishes the fact
//!
//! The kernel's build script reads the root file (`src/lib.rs`) of each
//! extension crate linked into the kernel, checks that it contains
//! `#![forbid(unsafe_code)]`, and emits the list of crates that do. At boot
//! the kernel certifies the domain of each listed module as
//! [`Provenance::CompilerChecked`] and everything else (itself included) as
//! [`Provenance::TrustedByAssertion`]. `forbid` (unlike `deny`) cannot be
//! overridden by an inner `#[allow(unsafe_code)]`, so the check on the root
//! file covers the whole crate.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::domain::{allocate_domain_id, DomainId};

/// Whether a domain's code was checked by the compiler or is trusted by assertion.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Provenance {
    /// The code is in a crate with `#![forbid(unsafe_code)]`: the compiler checked its safety.
    CompilerChecked,
    /// The code may use `unsafe` (the kernel itself): it is trusted by assertion.
    TrustedByAssertion,
}

impl Provenance {
    /// The provenance of code made of both parts: compiler-checked only when both are.
    pub const fn combined_with(self, other: Provenance) -> Provenance {
        match (self, other) {
            (Provenance::CompilerChecked, Provenance::CompilerChecked) => {
                Provenance::CompilerChecked
            }
            _ => Provenance::TrustedByAssertion,
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Provenance::CompilerChecked => "compiler-checked",
            Provenance::TrustedByAssertion => "trusted by assertion",
        })
    }
}

/// Why the attestation authority could not be had or could not certify.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttestationError {
    /// [`Attestation::establish`] was already called in this program.
    AlreadyEstablished,
    /// Every [`DomainId`] has been handed out.
    IdentifiersExhausted,
}

impl fmt::Display for AttestationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            AttestationError::AlreadyEstablished => {
                "the attestation authority was already established"
            }
            AttestationError::IdentifiersExhausted => "every domain identifier is in use",
        })
    }
}

impl core::error::Error for AttestationError {}

/// Set once the authority has been handed out.
static ESTABLISHED: AtomicBool = AtomicBool::new(false);

/// The kernel's single authority over provenance: the only maker of [`ProvenanceCertificate`]s.
///
/// Not `Clone`; the kernel keeps it (for example in a `spin::Once`) and
/// never hands it to extension code.
pub struct Attestation {
    /// Keeps the type unconstructible outside this module.
    _private: (),
}

impl Attestation {
    /// Hands out the authority; succeeds once per program, then returns [`AttestationError::AlreadyEstablished`].
    ///
    /// The kernel calls this during boot before running any extension code.
    pub fn establish() -> Result<Attestation, AttestationError> {
        ESTABLISHED
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Attestation { _private: () })
            .map_err(|_| AttestationError::AlreadyEstablished)
    }

    /// An authority for this crate's unit tests, which run many kernels in one process.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Attestation {
        Attestation { _private: () }
    }

    /// Certifies that the next domain created with the certificate has `provenance`, and assigns its [`DomainId`].
    pub fn certify(
        &self,
        provenance: Provenance,
    ) -> Result<ProvenanceCertificate, AttestationError> {
        let domain = allocate_domain_id().ok_or(AttestationError::IdentifiersExhausted)?;
        Ok(ProvenanceCertificate { domain, provenance })
    }
}

impl fmt::Debug for Attestation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Attestation")
    }
}

/// The kernel's statement of one future domain's provenance and identity; consumed by
/// [`Domain::create_from_module`](crate::Domain::create_from_module).
///
/// Made only by [`Attestation::certify`]; neither `Clone` nor `Copy`, so each
/// certificate creates exactly one domain.
#[derive(Debug)]
pub struct ProvenanceCertificate {
    /// The identity the domain will have.
    domain: DomainId,
    /// The provenance the domain will report.
    provenance: Provenance,
}

impl ProvenanceCertificate {
    /// The identity the domain created with this certificate will have.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The provenance the domain created with this certificate will report.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_established_only_once() {
        // This is the only test in the unit-test binary that calls `establish`.
        let first = Attestation::establish();
        assert!(first.is_ok());
        assert_eq!(
            Attestation::establish().unwrap_err(),
            AttestationError::AlreadyEstablished
        );
    }

    #[test]
    fn certificates_carry_distinct_identities() {
        let authority = Attestation::for_tests();
        let first = authority.certify(Provenance::CompilerChecked).unwrap();
        let second = authority.certify(Provenance::TrustedByAssertion).unwrap();
        assert_ne!(first.domain(), second.domain());
        assert_eq!(first.provenance(), Provenance::CompilerChecked);
        assert_eq!(second.provenance(), Provenance::TrustedByAssertion);
    }

    #[test]
    fn combined_provenance_is_checked_only_when_both_are() {
        use Provenance::{CompilerChecked, TrustedByAssertion};
        assert_eq!(
            CompilerChecked.combined_with(CompilerChecked),
            CompilerChecked
        );
        assert_eq!(
            CompilerChecked.combined_with(TrustedByAssertion),
            TrustedByAssertion
        );
        assert_eq!(
            TrustedByAssertion.combined_with(CompilerChecked),
            TrustedByAssertion
        );
    }
}
