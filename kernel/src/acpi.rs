//! ACPI: finds the MADT with the `acpi` crate (5.2, no allocation) and walks
//! its entries for processors and I/O APICs (ACPI 6.5 §5.2.12). Tables are
//! read through the boot identity map.

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;

/// Most I/O APICs recorded.
pub const MAX_IO_APICS: usize = 8;
/// Most processors recorded (more are reported and ignored).
pub const MAX_PROCESSORS: usize = crate::arch::cpu::MAX_CPUS;
/// Highest physical address the boot identity map covers.
const IDENTITY_MAPPED_LIMIT: usize = 1 << 32;
/// MADT processor flags: enabled (ACPI 6.5 table 5.23).
const PROCESSOR_ENABLED: u32 = 1;

/// Maps ACPI tables through the boot identity map of 0..4 GiB.
#[derive(Clone, Copy)]
struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        assert!(
            physical_address.saturating_add(size) <= IDENTITY_MAPPED_LIMIT,
            "ACPI table at {physical_address:#x} lies above the identity map"
        );
        let virtual_start =
            NonNull::new(physical_address as *mut T).expect("ACPI table at address 0");
        // SAFETY: the region is identity-mapped (checked above) and the
        // `acpi` crate only reads tables the firmware placed there.
        unsafe { PhysicalMapping::new(physical_address, virtual_start, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// An I/O APIC from the MADT.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// MMIO base address.
    pub address: u32,
    /// First global system interrupt it serves.
    pub interrupt_base: u32,
}

/// What the MADT says about the machine.
pub struct Topology {
    /// APIC IDs of the enabled processors, in MADT order.
    pub apic_ids: [u32; MAX_PROCESSORS],
    /// Entries of `apic_ids` in use.
    pub processor_count: usize,
    /// Processors listed beyond `MAX_PROCESSORS` (ignored).
    pub processors_ignored: usize,
    /// Processors listed as disabled (not started).
    pub processors_disabled: usize,
    /// The I/O APICs.
    pub io_apics: [IoApic; MAX_IO_APICS],
    /// Entries of `io_apics` in use.
    pub io_apic_count: usize,
    /// The local APIC physical address the MADT gives.
    pub local_apic_address: u64,
}

/// Why the MADT could not be read.
#[derive(Debug)]
pub enum AcpiError {
    /// No RSDP was found.
    NoRsdp,
    /// The `acpi` crate refused the tables.
    Tables(acpi::AcpiError),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::NoRsdp => write!(
                formatter,
                "no ACPI RSDP (neither from PVH nor in the BIOS area)"
            ),
            AcpiError::Tables(error) => write!(formatter, "ACPI tables unusable: {error:?}"),
        }
    }
}

/// Reads the MADT, starting from `rsdp_address` (0: search the BIOS area).
pub fn read_topology(rsdp_address: u64) -> Result<Topology, AcpiError> {
    let tables = if rsdp_address != 0 {
        // SAFETY: the PVH loader gave this RSDP address; it is identity-mapped.
        unsafe { AcpiTables::from_rsdp(IdentityMapped, rsdp_address as usize) }
    } else {
        // SAFETY: the BIOS area (EBDA, 0xE0000..0xFFFFF) is identity-mapped.
        unsafe { AcpiTables::search_for_rsdp_bios(IdentityMapped) }
    }
    .map_err(|error| {
        if rsdp_address == 0 {
            AcpiError::NoRsdp
        } else {
            AcpiError::Tables(error)
        }
    })?;
    let madt = tables.find_table::<Madt>().map_err(AcpiError::Tables)?;
    let mut topology = Topology {
        apic_ids: [0; MAX_PROCESSORS],
        processor_count: 0,
        processors_ignored: 0,
        processors_disabled: 0,
        io_apics: [IoApic::default(); MAX_IO_APICS],
        io_apic_count: 0,
        local_apic_address: u64::from(madt.get().local_apic_address),
    };
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(local) => {
                let flags = local.flags;
                topology.add_processor(u32::from(local.apic_id), flags);
            }
            MadtEntry::LocalX2Apic(local) => {
                let (apic_id, flags) = (local.x2apic_id, local.flags);
                topology.add_processor(apic_id, flags);
            }
            MadtEntry::IoApic(io_apic) if topology.io_apic_count < MAX_IO_APICS => {
                topology.io_apics[topology.io_apic_count] = IoApic {
                    id: io_apic.io_apic_id,
                    address: io_apic.io_apic_address,
                    interrupt_base: io_apic.global_system_interrupt_base,
                };
                topology.io_apic_count += 1;
            }
            MadtEntry::LocalApicAddressOverride(address_override) => {
                topology.local_apic_address = address_override.local_apic_address;
            }
            _ => {}
        }
    }
    Ok(topology)
}

impl Topology {
    fn add_processor(&mut self, apic_id: u32, flags: u32) {
        if flags & PROCESSOR_ENABLED == 0 {
            self.processors_disabled += 1;
            return;
        }
        if self.apic_ids[..self.processor_count].contains(&apic_id) {
            return; // listed both as xAPIC and x2APIC entry
        }
        if self.processor_count == MAX_PROCESSORS {
            self.processors_ignored += 1;
            return;
        }
        self.apic_ids[self.processor_count] = apic_id;
        self.processor_count += 1;
    }

    /// The enabled processors' APIC IDs.
    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids[..self.processor_count]
    }

    /// The I/O APICs.
    pub fn io_apics(&self) -> &[IoApic] {
        &self.io_apics[..self.io_apic_count]
    }
}
