//! Identifiers: the protection domain that installs a handler and the handler itself.

use core::fmt;

/// A protection domain, as far as the dispatcher is concerned: a small number
/// that names who installed a handler (for authorization, quotas and time
/// accounting). The domains crate decides what a domain is; this crate only
/// compares and reports these numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u32);

impl DomainId {
    /// The kernel's own domain: the default owner of events and of their
    /// default handlers.
    pub const KERNEL: DomainId = DomainId(0);

    /// The identity with number `number` (for naming domains in authorization
    /// lists, logs and tests; knowing an identity grants nothing).
    pub const fn new(number: u32) -> DomainId {
        DomainId(number)
    }

    /// The identity's number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "domain {}", self.0)
    }
}

/// Names one installed handler, unique within a dispatcher. Identifiers grow
/// with installation time, so a smaller identifier was installed earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandlerId(pub(crate) u64);

impl HandlerId {
    /// The identifier reported for an event's default handler.
    pub const DEFAULT: HandlerId = HandlerId(0);

    /// The first identifier given to an installed handler.
    pub(crate) const FIRST_INSTALLED: u64 = 1;

    /// The identifier as a number (0 for the default handler).
    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for HandlerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == HandlerId::DEFAULT {
            formatter.write_str("default handler")
        } else {
            write!(formatter, "handler {}", self.0)
        }
    }
}
