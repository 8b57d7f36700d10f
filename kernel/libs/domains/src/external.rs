//! Externalized references: a per-domain table turning capabilities into plain `(index, generation)` data and back.
//!
//! Code outside the kernel cannot hold a [`Capability`]; SPIN hands it an
//! index into a per-application table instead. An [`ExternalTable`] stores
//! capabilities of any type and gives out [`ExternalReference`]s; resolving a
//! reference checks, in this order:
//!
//! 1. that the table issued it ([`ExternalError::Forged`] otherwise: index out
//!    of range, or a generation the slot never had),
//! 2. that it is still current ([`ExternalError::Stale`]: the entry was
//!    released, and the slot perhaps reused),
//! 3. that the slot holds the requested type ([`ExternalError::WrongType`]),
//! 4. that the capability was not revoked ([`ExternalError::Revoked`]).
//!
//! # Generations
//!
//! Each slot has a generation. An entry is issued with the slot's current
//! generation; releasing the entry bumps it, so the released reference is
//! stale at once, and the slot is reused with the new generation. A slot
//! whose generation reaches `u32::MAX` is *retired* when released: it is never
//! reused, so a generation never repeats. Every table starts its generations
//! at its own first value (distinct among the first 2^31 tables made, and at
//! most `2^31 - 1`, leaving every slot at least 2^31 uses), so a reference
//! copied from another domain's table is usually [`ExternalError::Forged`] or
//! [`ExternalError::Stale`] here. Even when the numbers happen to match, it
//! can only name a capability that *this* table's domain already holds: a
//! reference carries no authority outside the table that issued it.
//!
//! # Limits and locking
//!
//! A table holds at most [`TableConfiguration::limit`] slots (live, free and
//! retired together); [`ExternalError::TableFull`] reports the limit. Every
//! method takes `&self`: the table is guarded by a spin lock held only for the
//! slot bookkeeping, never while a capability's object is dropped.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::{type_name, Any, TypeId};
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::capability::Capability;
use crate::domain::DomainId;

/// A reference to a capability in one [`ExternalTable`]: plain data that code outside the kernel can hold.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ExternalReference {
    /// The slot in the table.
    pub index: u32,
    /// The slot's generation when the entry was issued.
    pub generation: u32,
}

impl fmt::Display for ExternalReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "reference {} (generation {})",
            self.index, self.generation
        )
    }
}

/// Why an externalized reference could not be issued, resolved or released.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExternalError {
    /// The table never issued this reference: the index is out of range or the slot never had this generation.
    Forged {
        /// The offending reference.
        reference: ExternalReference,
    },
    /// The table issued this reference, but its entry has since been released (and the slot perhaps reused).
    Stale {
        /// The offending reference.
        reference: ExternalReference,
    },
    /// The capability was revoked by its owner (when resolving) or already was (when externalizing).
    Revoked {
        /// The reference, or `None` when externalizing a revoked capability.
        reference: Option<ExternalReference>,
    },
    /// The slot holds a capability to another type.
    WrongType {
        /// The offending reference.
        reference: ExternalReference,
        /// The type that was asked for.
        expected: &'static str,
        /// The type the slot holds.
        found: &'static str,
    },
    /// The table has no room for another slot.
    TableFull {
        /// The table's slot limit.
        limit: u32,
    },
}

impl fmt::Display for ExternalError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalError::Forged { reference } => {
                write!(formatter, "{reference} was never issued by this table")
            }
            ExternalError::Stale { reference } => {
                write!(formatter, "{reference} is stale: its entry was released")
            }
            ExternalError::Revoked {
                reference: Some(reference),
            } => write!(formatter, "the capability behind {reference} was revoked"),
            ExternalError::Revoked { reference: None } => {
                formatter.write_str("cannot externalize a revoked capability")
            }
            ExternalError::WrongType {
                reference,
                expected,
                found,
            } => write!(
                formatter,
                "{reference} holds a capability to `{found}`, not to `{expected}`"
            ),
            ExternalError::TableFull { limit } => {
                write!(formatter, "the table is full ({limit} slots)")
            }
        }
    }
}

impl core::error::Error for ExternalError {}

/// How an [`ExternalTable`] is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableConfiguration {
    /// The most slots the table may have (live, free and retired together).
    pub limit: u32,
    /// The generation every slot starts at; `None` picks a value distinct from other tables'.
    pub first_generation: Option<u32>,
}

impl TableConfiguration {
    /// The default slot limit.
    pub const DEFAULT_LIMIT: u32 = 1 << 16;
}

impl Default for TableConfiguration {
    fn default() -> Self {
        TableConfiguration {
            limit: Self::DEFAULT_LIMIT,
            first_generation: None,
        }
    }
}

/// A capability of some type, with its revocation check reachable without knowing the type.
trait StoredCapability: Any + Send + Sync {
    /// Whether the stored capability was revoked.
    fn is_revoked(&self) -> bool;
}

impl<T: ?Sized + Send + Sync + 'static> StoredCapability for Capability<T> {
    fn is_revoked(&self) -> bool {
        Capability::is_revoked(self)
    }
}

/// A live entry: a capability and the type it refers to.
struct Entry {
    /// `TypeId` of the object type `T` of the `Capability<T>` held.
    type_id: TypeId,
    /// Name of `T`, for error messages.
    type_name: &'static str,
    /// The capability itself.
    capability: Box<dyn StoredCapability>,
}

/// What a slot holds.
enum SlotState {
    /// An entry issued with the slot's current generation.
    Live(Entry),
    /// Nothing; the next entry gets the slot's current generation.
    Free,
    /// Nothing, and never again: its last generation was `u32::MAX`.
    Retired,
}

/// One slot of the table.
struct Slot {
    /// The generation of the live entry, or of the next entry when free.
    generation: u32,
    /// What the slot holds.
    state: SlotState,
}

/// The lock-protected part of the table.
struct TableState {
    /// All slots; a reference's index points here.
    slots: Vec<Slot>,
    /// Indices of free slots, most recently freed last.
    free: Vec<u32>,
    /// Number of live entries.
    live: usize,
    /// Number of retired slots.
    retired: usize,
}

/// Counts the tables made, to give each its own first generation.
static TABLES_MADE: AtomicU32 = AtomicU32::new(0);

/// A first generation for a new table: the table's serial number times an odd constant,
/// modulo 2^31 (a bijection, so the first 2^31 tables all differ).
fn distinct_first_generation() -> u32 {
    let serial = TABLES_MADE.fetch_add(1, Ordering::Relaxed);
    serial.wrapping_mul(0x9E37_79B9) & 0x7FFF_FFFF
}

/// A per-domain table of externalized capabilities.
pub struct ExternalTable {
    /// The domain the table belongs to.
    owner: DomainId,
    /// The generation every slot starts at.
    first_generation: u32,
    /// The most slots the table may have.
    limit: u32,
    /// Slots and free list.
    state: spin::Mutex<TableState>,
}

impl ExternalTable {
    /// An empty table for `owner` with the default configuration.
    pub fn new(owner: DomainId) -> ExternalTable {
        ExternalTable::with_configuration(owner, TableConfiguration::default())
    }

    /// An empty table for `owner` configured by `configuration`.
    pub fn with_configuration(owner: DomainId, configuration: TableConfiguration) -> ExternalTable {
        ExternalTable {
            owner,
            first_generation: configuration
                .first_generation
                .unwrap_or_else(distinct_first_generation),
            limit: configuration.limit,
            state: spin::Mutex::new(TableState {
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                retired: 0,
            }),
        }
    }

    /// The domain the table belongs to.
    pub fn owner(&self) -> DomainId {
        self.owner
    }

    /// The generation every slot starts at.
    pub fn first_generation(&self) -> u32 {
        self.first_generation
    }

    /// The most slots the table may have.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Stores `capability` and returns the reference that names it.
    ///
    /// Reuses the most recently freed slot if any. Fails with
    /// [`ExternalError::Revoked`] for a revoked capability and
    /// [`ExternalError::TableFull`] when no slot is free and the limit is reached.
    pub fn externalize<T: ?Sized + Send + Sync + 'static>(
        &self,
        capability: Capability<T>,
    ) -> Result<ExternalReference, ExternalError> {
        if capability.is_revoked() {
            return Err(ExternalError::Revoked { reference: None });
        }
        let entry = Entry {
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            capability: Box::new(capability),
        };
        let mut state = self.state.lock();
        let index = match state.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(state.slots.len())
                    .ok()
                    .filter(|&index| index < self.limit)
                    .ok_or(ExternalError::TableFull { limit: self.limit })?;
                state.slots.push(Slot {
                    generation: self.first_generation,
                    state: SlotState::Free,
                });
                index
            }
        };
        let Some(slot) = state.slots.get_mut(index as usize) else {
            // The free list only holds indices of existing slots.
            return Err(ExternalError::TableFull { limit: self.limit });
        };
        slot.state = SlotState::Live(entry);
        let generation = slot.generation;
        state.live += 1;
        Ok(ExternalReference { index, generation })
    }

    /// The capability `reference` names, if it is current, of type `T` and not revoked.
    pub fn resolve<T: ?Sized + Send + Sync + 'static>(
        &self,
        reference: ExternalReference,
    ) -> Result<Capability<T>, ExternalError> {
        let capability = {
            let state = self.state.lock();
            let entry = self.live_entry(&state, reference)?;
            let wrong_type = ExternalError::WrongType {
                reference,
                expected: type_name::<T>(),
                found: entry.type_name,
            };
            if entry.type_id != TypeId::of::<T>() {
                return Err(wrong_type);
            }
            let stored: &dyn Any = entry.capability.as_ref();
            stored
                .downcast_ref::<Capability<T>>()
                .ok_or(wrong_type)?
                .clone()
        };
        if capability.is_revoked() {
            return Err(ExternalError::Revoked {
                reference: Some(reference),
            });
        }
        Ok(capability)
    }

    /// Releases the entry `reference` names; the reference (and any copy of it) becomes stale.
    ///
    /// Works whatever the entry's type and whether or not it was revoked.
    pub fn release(&self, reference: ExternalReference) -> Result<(), ExternalError> {
        let released = {
            let mut state = self.state.lock();
            self.live_entry(&state, reference)?;
            Self::free_slot(&mut state, reference.index)
        };
        // Dropped outside the lock: the object's destructor may run here.
        drop(released);
        Ok(())
    }

    /// Releases every entry whose capability was revoked; returns how many.
    pub fn purge_revoked(&self) -> usize {
        let mut released = Vec::new();
        {
            let mut state = self.state.lock();
            let revoked: Vec<u32> = state
                .slots
                .iter()
                .zip(0_u32..)
                .filter_map(|(slot, index)| match &slot.state {
                    SlotState::Live(entry) if entry.capability.is_revoked() => Some(index),
                    _ => None,
                })
                .collect();
            for index in revoked {
                released.extend(Self::free_slot(&mut state, index));
            }
        }
        released.len()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.state.lock().live
    }

    /// Whether the table holds no live entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots made so far (live, free and retired).
    pub fn slot_count(&self) -> usize {
        self.state.lock().slots.len()
    }

    /// Number of retired slots (never reused again).
    pub fn retired_slot_count(&self) -> usize {
        self.state.lock().retired
    }

    /// The live entry `reference` names, or why there is none.
    fn live_entry<'state>(
        &self,
        state: &'state TableState,
        reference: ExternalReference,
    ) -> Result<&'state Entry, ExternalError> {
        let forged = ExternalError::Forged { reference };
        let slot = state.slots.get(reference.index as usize).ok_or(forged)?;
        let generation = reference.generation;
        // Generations this slot has issued before its current one.
        let issued_earlier = |through_current: bool| {
            generation >= self.first_generation
                && (generation < slot.generation
                    || (through_current && generation == slot.generation))
        };
        match &slot.state {
            SlotState::Live(entry) if generation == slot.generation => Ok(entry),
            SlotState::Live(_) | SlotState::Free if issued_earlier(false) => {
                Err(ExternalError::Stale { reference })
            }
            SlotState::Retired if issued_earlier(true) => Err(ExternalError::Stale { reference }),
            _ => Err(forged),
        }
    }

    /// Empties the live slot at `index`, bumping its generation or retiring it; returns the entry.
    fn free_slot(state: &mut TableState, index: u32) -> Option<Entry> {
        let slot = state.slots.get_mut(index as usize)?;
        let SlotState::Live(_) = slot.state else {
            return None;
        };
        let next = match slot.generation.checked_add(1) {
            Some(next) => {
                slot.generation = next;
                SlotState::Free
            }
            None => SlotState::Retired,
        };
        let SlotState::Live(entry) = core::mem::replace(&mut slot.state, next) else {
            return None;
        };
        state.live -= 1;
        if matches!(slot.state, SlotState::Retired) {
            state.retired += 1;
        } else {
            state.free.push(index);
        }
        Some(entry)
    }
}

impl fmt::Debug for ExternalTable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        formatter
            .debug_struct("ExternalTable")
            .field("owner", &self.owner)
            .field("live", &state.live)
            .field("slots", &state.slots.len())
            .field("retired", &state.retired)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{CapabilityError, Owner, Rights};
    use alloc::string::{String, ToString};

    fn table() -> ExternalTable {
        ExternalTable::with_configuration(
            DomainId::new(1),
            TableConfiguration {
                limit: 8,
                first_generation: Some(10),
            },
        )
    }

    #[test]
    fn externalized_capability_resolves_back() {
        let table = table();
        let owner = Owner::new(String::from("strand"));
        let reference = table.externalize(owner.grant(Rights::READ)).unwrap();
        assert_eq!(
            reference,
            ExternalReference {
                index: 0,
                generation: 10
            }
        );
        let capability = table.resolve::<String>(reference).unwrap();
        assert_eq!(capability.get().unwrap(), "strand");
        assert_eq!(capability.rights(), Rights::READ);
        assert!(owner.owns(&capability));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn forged_references_are_refused() {
        let table = table();
        let owner = Owner::new(1_u32);
        let issued = table.externalize(owner.grant(Rights::READ)).unwrap();

        let out_of_range = ExternalReference {
            index: 5,
            generation: 10,
        };
        assert_eq!(
            table.resolve::<u32>(out_of_range).unwrap_err(),
            ExternalError::Forged {
                reference: out_of_range
            }
        );
        for generation in [9, 11, u32::MAX, 0] {
            let never_issued = ExternalReference {
                index: issued.index,
                generation,
            };
            assert_eq!(
                table.resolve::<u32>(never_issued).unwrap_err(),
                ExternalError::Forged {
                    reference: never_issued
                }
            );
        }
        assert!(matches!(
            table.release(out_of_range),
            Err(ExternalError::Forged { .. })
        ));
    }

    #[test]
    fn stale_references_are_refused_and_slots_reused_with_new_generation() {
        let table = table();
        let owner = Owner::new(1_u32);
        let first = table.externalize(owner.grant(Rights::READ)).unwrap();
        table.release(first).unwrap();
        assert_eq!(
            table.resolve::<u32>(first).unwrap_err(),
            ExternalError::Stale { reference: first }
        );
        assert_eq!(
            table.release(first),
            Err(ExternalError::Stale { reference: first })
        );
        // The next generation has not been issued yet.
        let not_yet = ExternalReference {
            index: first.index,
            generation: first.generation + 1,
        };
        assert!(matches!(
            table.resolve::<u32>(not_yet),
            Err(ExternalError::Forged { .. })
        ));

        let second = table.externalize(owner.grant(Rights::READ)).unwrap();
        assert_eq!(second.index, first.index);
        assert_eq!(second.generation, first.generation + 1);
        assert_eq!(table.slot_count(), 1);
        assert!(table.resolve::<u32>(second).is_ok());
        assert_eq!(
            table.resolve::<u32>(first).unwrap_err(),
            ExternalError::Stale { reference: first }
        );
    }

    #[test]
    fn revoked_capability_is_refused_through_the_table() {
        let table = table();
        let owner = Owner::new(1_u32);
        let capability = owner.grant(Rights::READ);
        let reference = table.externalize(capability.clone()).unwrap();
        owner.revoke_grant(&capability).unwrap();
        assert_eq!(
            table.resolve::<u32>(reference).unwrap_err(),
            ExternalError::Revoked {
                reference: Some(reference)
            }
        );
        assert!(matches!(
            capability.get(),
            Err(CapabilityError::Revoked { .. })
        ));
        assert_eq!(
            table.externalize(capability).unwrap_err(),
            ExternalError::Revoked { reference: None }
        );
        assert_eq!(table.purge_revoked(), 1);
        assert!(table.is_empty());
        assert!(matches!(
            table.resolve::<u32>(reference),
            Err(ExternalError::Stale { .. })
        ));
    }

    #[test]
    fn wrong_type_is_refused_through_the_table() {
        let table = table();
        let owner = Owner::new(1_u32);
        let reference = table.externalize(owner.grant(Rights::READ)).unwrap();
        let error = table.resolve::<u64>(reference).unwrap_err();
        assert_eq!(
            error,
            ExternalError::WrongType {
                reference,
                expected: "u64",
                found: "u32"
            }
        );
        assert_eq!(
            error.to_string(),
            "reference 0 (generation 10) holds a capability to `u32`, not to `u64`"
        );
    }

    #[test]
    fn slot_retires_when_generation_is_exhausted() {
        let table = ExternalTable::with_configuration(
            DomainId::new(1),
            TableConfiguration {
                limit: 8,
                first_generation: Some(u32::MAX - 1),
            },
        );
        let owner = Owner::new(1_u32);
        let first = table.externalize(owner.grant(Rights::READ)).unwrap();
        table.release(first).unwrap();
        let last = table.externalize(owner.grant(Rights::READ)).unwrap();
        assert_eq!(last.index, first.index);
        assert_eq!(last.generation, u32::MAX);
        table.release(last).unwrap();
        assert_eq!(table.retired_slot_count(), 1);
        assert_eq!(
            table.resolve::<u32>(last).unwrap_err(),
            ExternalError::Stale { reference: last }
        );
        assert_eq!(
            table.resolve::<u32>(first).unwrap_err(),
            ExternalError::Stale { reference: first }
        );
        // The retired slot is not reused.
        let fresh = table.externalize(owner.grant(Rights::READ)).unwrap();
        assert_eq!(fresh.index, 1);
        assert_eq!(fresh.generation, u32::MAX - 1);
        assert_eq!(table.slot_count(), 2);
    }

    #[test]
    fn table_limit_is_enforced() {
        let table = ExternalTable::with_configuration(
            DomainId::new(1),
            TableConfiguration {
                limit: 2,
                first_generation: None,
            },
        );
        let owner = Owner::new(1_u32);
        let first = table.externalize(owner.grant(Rights::READ)).unwrap();
        table.externalize(owner.grant(Rights::READ)).unwrap();
        assert_eq!(
            table.externalize(owner.grant(Rights::READ)).unwrap_err(),
            ExternalError::TableFull { limit: 2 }
        );
        table.release(first).unwrap();
        assert!(table.externalize(owner.grant(Rights::READ)).is_ok());
    }

    #[test]
    fn reference_from_another_table_does_not_resolve_there() {
        let table_a = ExternalTable::new(DomainId::new(1));
        let table_b = ExternalTable::new(DomainId::new(2));
        assert_ne!(table_a.first_generation(), table_b.first_generation());
        let secret = Owner::new(String::from("a's secret"));
        let mine = Owner::new(String::from("b's own"));
        let from_a = table_a.externalize(secret.grant(Rights::READ)).unwrap();
        table_b.externalize(mine.grant(Rights::READ)).unwrap();
        assert_eq!(from_a.index, 0);
        assert!(matches!(
            table_b.resolve::<String>(from_a),
            Err(ExternalError::Forged { .. } | ExternalError::Stale { .. })
        ));
    }

    #[test]
    fn dropping_the_table_releases_capabilities() {
        let owner = Owner::new(1_u32);
        let object = owner.grant(Rights::READ);
        {
            let table = table();
            table.externalize(object.clone()).unwrap();
        }
        assert_eq!(object.get(), Ok(&1));
    }
}
