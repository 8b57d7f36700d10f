//! Unforgeable typed capabilities: an [`Owner`] mints them, holders use them, the owner revokes them.
//!
//! A [`Capability<T>`] is a reference to a kernel object of type `T` together
//! with a set of [`Rights`] and a link to the *grant* it came from. The only
//! way to obtain one is [`Owner::grant`] (or cloning / narrowing an existing
//! one); there is no constructor from raw parts, so a capability is proof that
//! the owner handed it out, directly or through delegation.
//!
//! # Revocation
//!
//! Revocation works at two granularities, both owned by the [`Owner`]:
//!
//! * [`Owner::revoke_grant`] revokes one *grant*: every capability returned by
//!   one call to [`Owner::grant`], together with all its clones and
//!   narrowings, whoever holds them now.
//! * [`Owner::revoke_all`] revokes every capability granted so far for the
//!   object. Grants made afterwards are valid again (a new epoch starts).
//!
//! A revoked capability is not destroyed (holders still hold it); every use
//! through [`Capability::get`] or [`Capability::require`] returns
//! [`CapabilityError::Revoked`] instead of the object. A use that passed the
//! check before the revocation finishes normally: revocation stops *future*
//! uses, as in SPIN. Dropping the [`Owner`] does not revoke anything; it only
//! gives up the power to revoke.
//!
//! ```
//! use spindle_domains::{CapabilityError, Owner, Rights};
//!
//! let owner = Owner::new(42_u64);
//! let capability = owner.grant(Rights::READ | Rights::WRITE);
//! let delegated = capability.narrow(Rights::READ)?;
//! assert_eq!(*delegated.require(Rights::READ)?, 42);
//! assert!(matches!(
//!     delegated.require(Rights::WRITE),
//!     Err(CapabilityError::InsufficientRights { .. })
//! ));
//!
//! owner.revoke_grant(&capability)?;
//! assert!(matches!(delegated.get(), Err(CapabilityError::Revoked { .. })));
//! # Ok::<(), CapabilityError>(())
//! ```

use alloc::sync::Arc;
use core::fmt;
use core::ops::{BitAnd, BitOr};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A set of rights a capability carries: any combination of read, write and schedule.
///
/// Written by hand as a bit set over a `u8`; only the bits of [`Rights::ALL`]
/// are ever set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights at all.
    pub const NONE: Rights = Rights(0);
    /// The right to read the object's state.
    pub const READ: Rights = Rights(1 << 0);
    /// The right to change the object's state.
    pub const WRITE: Rights = Rights(1 << 1);
    /// The right to schedule the object (for strands and other schedulable objects).
    pub const SCHEDULE: Rights = Rights(1 << 2);
    /// Every right.
    pub const ALL: Rights = Rights(Self::READ.0 | Self::WRITE.0 | Self::SCHEDULE.0);

    /// Each single right with its name, in display order.
    const NAMED: [(Rights, &'static str); 3] = [
        (Rights::READ, "read"),
        (Rights::WRITE, "write"),
        (Rights::SCHEDULE, "schedule"),
    ];

    /// The raw bits of this set.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set with exactly these bits, or `None` when a bit outside [`Rights::ALL`] is set.
    pub const fn from_bits(bits: u8) -> Option<Rights> {
        if bits & !Self::ALL.0 == 0 {
            Some(Rights(bits))
        } else {
            None
        }
    }

    /// Whether every right in `other` is also in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in either set.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights in both sets.
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The rights in `self` but not in `other`.
    pub const fn difference(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    /// Whether the set holds no right.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Rights {
    type Output = Rights;

    fn bitor(self, other: Rights) -> Rights {
        self.union(other)
    }
}

impl BitAnd for Rights {
    type Output = Rights;

    fn bitand(self, other: Rights) -> Rights {
        self.intersection(other)
    }
}

impl fmt::Display for Rights {
    /// Writes the rights joined by `|`, such as `read|write`, or `none`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return formatter.write_str("none");
        }
        let mut first = true;
        for (right, name) in Self::NAMED {
            if self.contains(right) {
                if !first {
                    formatter.write_str("|")?;
                }
                formatter.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Rights({self})")
    }
}

/// Identifies one grant of one object: the calls to [`Owner::grant`] are numbered from 0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GrantId(u64);

impl GrantId {
    /// The grant's number among its object's grants.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "grant#{}", self.0)
    }
}

/// Why a capability could not be used, narrowed or revoked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CapabilityError {
    /// The capability's grant, or every capability of its object, was revoked by the owner.
    Revoked {
        /// The grant the capability came from.
        grant: GrantId,
    },
    /// The capability lacks rights the operation requires.
    InsufficientRights {
        /// The rights the capability carries.
        held: Rights,
        /// The rights the operation requires.
        required: Rights,
    },
    /// Narrowing asked for rights the capability does not carry (rights can only shrink).
    RightsEscalation {
        /// The rights the capability carries.
        held: Rights,
        /// The rights that were asked for.
        requested: Rights,
    },
    /// An owner was asked to revoke a capability for an object it does not own.
    ForeignCapability {
        /// The grant the foreign capability came from.
        grant: GrantId,
    },
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapabilityError::Revoked { grant } => {
                write!(formatter, "capability revoked ({grant})")
            }
            CapabilityError::InsufficientRights { held, required } => write!(
                formatter,
                "capability holds rights {held} but the operation requires {required}"
            ),
            CapabilityError::RightsEscalation { held, requested } => write!(
                formatter,
                "cannot narrow a capability holding {held} to {requested}: rights can only shrink"
            ),
            CapabilityError::ForeignCapability { grant } => write!(
                formatter,
                "capability ({grant}) refers to an object this owner does not own"
            ),
        }
    }
}

impl core::error::Error for CapabilityError {}

/// Per-object bookkeeping shared by the owner and every grant.
struct ObjectRecord {
    /// The revocation cell of the current epoch; [`Owner::revoke_all`] sets it and installs a fresh one.
    current_epoch: spin::Mutex<Arc<AtomicBool>>,
    /// The number the next grant gets.
    next_grant: AtomicU64,
}

/// The shared state of one grant: every capability derived from it points here.
struct GrantState {
    /// The grant's number.
    id: GrantId,
    /// Set by [`Owner::revoke_grant`].
    revoked: AtomicBool,
    /// The epoch cell current when the grant was made; set by [`Owner::revoke_all`].
    epoch: Arc<AtomicBool>,
    /// The object the grant belongs to (for the owner's identity check).
    record: Arc<ObjectRecord>,
}

impl GrantState {
    /// Whether the grant, or its whole epoch, was revoked.
    fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire)
    }
}

/// An unforgeable typed reference to a kernel object of type `T`, carrying [`Rights`].
///
/// Obtained only from [`Owner::grant`], [`Capability::clone`] (delegation with
/// the same rights, revoked together with the original) or
/// [`Capability::narrow`] (delegation with fewer rights, also revoked
/// together). Every access checks revocation first.
pub struct Capability<T: ?Sized> {
    /// The object.
    object: Arc<T>,
    /// The grant this capability derives from.
    grant: Arc<GrantState>,
    /// The rights this capability carries.
    rights: Rights,
}

impl<T: ?Sized> Clone for Capability<T> {
    /// Delegates the capability: the clone carries the same rights and grant.
    fn clone(&self) -> Self {
        Capability {
            object: Arc::clone(&self.object),
            grant: Arc::clone(&self.grant),
            rights: self.rights,
        }
    }
}

impl<T: ?Sized> Capability<T> {
    /// The object, unless the capability was revoked. Rights are not checked.
    pub fn get(&self) -> Result<&T, CapabilityError> {
        if self.grant.is_revoked() {
            return Err(CapabilityError::Revoked {
                grant: self.grant.id,
            });
        }
        Ok(&self.object)
    }

    /// The object, unless the capability was revoked or lacks any of `required`.
    pub fn require(&self, required: Rights) -> Result<&T, CapabilityError> {
        let object = self.get()?;
        if !self.rights.contains(required) {
            return Err(CapabilityError::InsufficientRights {
                held: self.rights,
                required,
            });
        }
        Ok(object)
    }

    /// A delegated capability with only `rights`, revoked together with this one.
    ///
    /// Fails with [`CapabilityError::RightsEscalation`] when `rights` is not a
    /// subset of this capability's rights, and with [`CapabilityError::Revoked`]
    /// when this capability was revoked.
    pub fn narrow(&self, rights: Rights) -> Result<Capability<T>, CapabilityError> {
        self.get()?;
        if !self.rights.contains(rights) {
            return Err(CapabilityError::RightsEscalation {
                held: self.rights,
                requested: rights,
            });
        }
        Ok(Capability {
            object: Arc::clone(&self.object),
            grant: Arc::clone(&self.grant),
            rights,
        })
    }

    /// The rights this capability carries.
    pub fn rights(&self) -> Rights {
        self.rights
    }

    /// The grant this capability derives from.
    pub fn grant_id(&self) -> GrantId {
        self.grant.id
    }

    /// Whether the capability was revoked (its grant, or all capabilities of its object).
    pub fn is_revoked(&self) -> bool {
        self.grant.is_revoked()
    }

    /// Whether both capabilities refer to the same registered object (same [`Owner`]).
    pub fn same_object(&self, other: &Capability<T>) -> bool {
        Arc::ptr_eq(&self.grant.record, &other.grant.record)
    }
}

impl<T: ?Sized> fmt::Debug for Capability<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Capability")
            .field("type", &core::any::type_name::<T>())
            .field("grant", &self.grant.id)
            .field("rights", &self.rights)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// The owner of a registered kernel object: the only party that can grant and revoke capabilities to it.
///
/// Registering an object ([`Owner::new`] / [`Owner::from_arc`]) yields its
/// owner. `Owner` is deliberately not `Clone`; share it (for example in an
/// `Arc`) only with code that may revoke.
pub struct Owner<T: ?Sized> {
    /// The object.
    object: Arc<T>,
    /// Epochs and grant numbering, shared with every grant.
    record: Arc<ObjectRecord>,
}

impl<T> Owner<T> {
    /// Registers `object` and returns its owner.
    pub fn new(object: T) -> Owner<T> {
        Owner::from_arc(Arc::new(object))
    }
}

impl<T: ?Sized> Owner<T> {
    /// Registers an object that is already shared (for example an `Arc<dyn Trait>`) and returns its owner.
    ///
    /// Whoever still holds another clone of `object` can use it without a
    /// capability; register objects before handing them to anyone else.
    pub fn from_arc(object: Arc<T>) -> Owner<T> {
        Owner {
            object,
            record: Arc::new(ObjectRecord {
                current_epoch: spin::Mutex::new(Arc::new(AtomicBool::new(false))),
                next_grant: AtomicU64::new(0),
            }),
        }
    }

    /// Makes a new grant: a capability carrying `rights`, revocable on its own with [`Owner::revoke_grant`].
    pub fn grant(&self, rights: Rights) -> Capability<T> {
        // 2^64 grants cannot happen in practice; wrapping keeps this panic-free regardless.
        let id = GrantId(self.record.next_grant.fetch_add(1, Ordering::Relaxed));
        let epoch = Arc::clone(&self.record.current_epoch.lock());
        Capability {
            object: Arc::clone(&self.object),
            grant: Arc::new(GrantState {
                id,
                revoked: AtomicBool::new(false),
                epoch,
                record: Arc::clone(&self.record),
            }),
            rights,
        }
    }

    /// Revokes the grant `capability` derives from: it, its clones and its narrowings all stop working.
    ///
    /// Revoking an already revoked grant succeeds. Fails with
    /// [`CapabilityError::ForeignCapability`] when `capability` refers to an
    /// object this owner did not register.
    pub fn revoke_grant(&self, capability: &Capability<T>) -> Result<(), CapabilityError> {
        if !Arc::ptr_eq(&capability.grant.record, &self.record) {
            return Err(CapabilityError::ForeignCapability {
                grant: capability.grant.id,
            });
        }
        capability.grant.revoked.store(true, Ordering::Release);
        Ok(())
    }

    /// Revokes every capability granted so far for the object; later grants work again.
    pub fn revoke_all(&self) {
        let mut current = self.record.current_epoch.lock();
        current.store(true, Ordering::Release);
        *current = Arc::new(AtomicBool::new(false));
    }

    /// The object itself (the owner needs no capability).
    pub fn object(&self) -> &T {
        &self.object
    }

    /// How many grants were made so far.
    pub fn grants_made(&self) -> u64 {
        self.record.next_grant.load(Ordering::Relaxed)
    }

    /// Whether `capability` refers to this owner's object.
    pub fn owns(&self, capability: &Capability<T>) -> bool {
        Arc::ptr_eq(&capability.grant.record, &self.record)
    }
}

impl<T: ?Sized> fmt::Debug for Owner<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Owner")
            .field("type", &core::any::type_name::<T>())
            .field("grants_made", &self.grants_made())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn rights_set_operations_and_display() {
        let read_write = Rights::READ | Rights::WRITE;
        assert!(read_write.contains(Rights::READ));
        assert!(!read_write.contains(Rights::SCHEDULE));
        assert_eq!(read_write & Rights::WRITE, Rights::WRITE);
        assert_eq!(read_write.difference(Rights::READ), Rights::WRITE);
        assert_eq!(read_write.to_string(), "read|write");
        assert_eq!(Rights::NONE.to_string(), "none");
        assert_eq!(Rights::ALL.to_string(), "read|write|schedule");
        assert_eq!(Rights::from_bits(0b111), Some(Rights::ALL));
        assert_eq!(Rights::from_bits(0b1000), None);
    }

    #[test]
    fn granted_capability_reaches_the_object() {
        let owner = Owner::new(7_u32);
        let capability = owner.grant(Rights::READ);
        assert_eq!(capability.get(), Ok(&7));
        assert_eq!(capability.require(Rights::READ), Ok(&7));
        assert_eq!(capability.rights(), Rights::READ);
        assert_eq!(capability.grant_id().get(), 0);
        assert_eq!(owner.grants_made(), 1);
        assert!(owner.owns(&capability));
    }

    #[test]
    fn missing_rights_are_refused() {
        let owner = Owner::new(7_u32);
        let capability = owner.grant(Rights::READ);
        assert_eq!(
            capability.require(Rights::READ | Rights::WRITE),
            Err(CapabilityError::InsufficientRights {
                held: Rights::READ,
                required: Rights::READ | Rights::WRITE,
            })
        );
    }

    #[test]
    fn narrowing_only_shrinks_rights() {
        let owner = Owner::new(7_u32);
        let capability = owner.grant(Rights::READ | Rights::SCHEDULE);
        let narrowed = capability.narrow(Rights::SCHEDULE).unwrap();
        assert_eq!(narrowed.rights(), Rights::SCHEDULE);
        assert_eq!(narrowed.grant_id(), capability.grant_id());
        assert_eq!(
            narrowed.narrow(Rights::READ).unwrap_err(),
            CapabilityError::RightsEscalation {
                held: Rights::SCHEDULE,
                requested: Rights::READ,
            }
        );
    }

    #[test]
    fn revoked_capability_is_refused_directly() {
        let owner = Owner::new(7_u32);
        let capability = owner.grant(Rights::ALL);
        owner.revoke_grant(&capability).unwrap();
        let expected = CapabilityError::Revoked {
            grant: capability.grant_id(),
        };
        assert_eq!(capability.get(), Err(expected));
        assert_eq!(capability.require(Rights::READ), Err(expected));
        assert_eq!(capability.narrow(Rights::READ).unwrap_err(), expected);
        assert!(capability.is_revoked());
        // Revoking twice is fine.
        assert_eq!(owner.revoke_grant(&capability), Ok(()));
        // The owner still reaches its object.
        assert_eq!(*owner.object(), 7);
    }

    #[test]
    fn capabilities_from_one_grant_are_revoked_together() {
        let owner = Owner::new(7_u32);
        let first_grant = owner.grant(Rights::ALL);
        let clone = first_grant.clone();
        let narrowed = first_grant.narrow(Rights::READ).unwrap();
        let narrowed_clone = narrowed.clone();
        let second_grant = owner.grant(Rights::READ);

        owner.revoke_grant(&narrowed_clone).unwrap();

        for capability in [&first_grant, &clone, &narrowed, &narrowed_clone] {
            assert!(matches!(
                capability.get(),
                Err(CapabilityError::Revoked { .. })
            ));
        }
        assert_eq!(second_grant.get(), Ok(&7));
    }

    #[test]
    fn revoke_all_revokes_every_grant_but_not_later_ones() {
        let owner = Owner::new(7_u32);
        let first = owner.grant(Rights::READ);
        let second = owner.grant(Rights::WRITE);
        owner.revoke_all();
        assert!(first.is_revoked());
        assert!(second.is_revoked());
        let later = owner.grant(Rights::READ);
        assert_eq!(later.get(), Ok(&7));
        owner.revoke_all();
        assert!(later.is_revoked());
    }

    #[test]
    fn owner_cannot_revoke_another_objects_capability() {
        let owner = Owner::new(7_u32);
        let other_owner = Owner::new(7_u32);
        let capability = other_owner.grant(Rights::READ);
        assert_eq!(
            owner.revoke_grant(&capability),
            Err(CapabilityError::ForeignCapability {
                grant: capability.grant_id(),
            })
        );
        assert!(!capability.is_revoked());
        assert!(!owner.owns(&capability));
        assert!(!capability.same_object(&owner.grant(Rights::READ)));
        assert!(capability.same_object(&other_owner.grant(Rights::READ)));
    }

    #[test]
    fn trait_objects_can_be_owned() {
        trait Counter: Send + Sync {
            fn value(&self) -> u32;
        }
        struct Fixed;
        impl Counter for Fixed {
            fn value(&self) -> u32 {
                3
            }
        }
        let owner: Owner<dyn Counter> = Owner::from_arc(Arc::new(Fixed));
        let capability = owner.grant(Rights::READ);
        assert_eq!(capability.get().unwrap().value(), 3);
    }

    #[test]
    fn errors_display_their_cause() {
        let owner = Owner::new(7_u32);
        let capability = owner.grant(Rights::READ);
        owner.revoke_grant(&capability).unwrap();
        assert_eq!(
            capability.get().unwrap_err().to_string(),
            "capability revoked (grant#0)"
        );
    }
}
