//! The PVH start-info structure (`hvm_start_info`, Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`): memory map, kernel
//! command line and RSDP address, copied out of guest memory at boot.

use core::mem::size_of;

/// `hvm_start_info.magic`: "xEn3" with the high bit of each byte cleared.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Most memory-map entries kept; QEMU passes a handful.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// Longest kernel command line kept, in bytes.
pub const MAX_COMMAND_LINE: usize = 1024;
/// `hvm_memmap_table_entry.type` of usable RAM (the E820 type).
pub const MEMORY_TYPE_RAM: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfoRaw {
    magic: u32,
    version: u32,
    flags: u32,
    module_count: u32,
    module_list_address: u64,
    command_line_address: u64,
    rsdp_address: u64,
    memory_map_address: u64,
    memory_map_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemoryMapEntryRaw {
    address: u64,
    size: u64,
    region_type: u32,
    reserved: u32,
}

/// One region of the physical memory map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryRegion {
    /// Physical start address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (`MEMORY_TYPE_RAM` is usable).
    pub region_type: u32,
}

/// What the boot loader told us, copied into kernel memory.
pub struct BootInfo {
    /// The memory map, `memory_region_count` entries used.
    pub memory_regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    /// Entries of `memory_regions` in use.
    pub memory_region_count: usize,
    command_line: [u8; MAX_COMMAND_LINE],
    command_line_length: usize,
    /// Physical address of the ACPI RSDP, or 0 when the loader gave none.
    pub rsdp_address: u64,
}

/// Why the start info could not be used.
#[derive(Debug, Clone, Copy)]
pub enum StartInfoError {
    /// The magic number is wrong: not booted through PVH.
    BadMagic(u32),
    /// The command line is not UTF-8.
    CommandLineNotUtf8,
    /// The command line is longer than `MAX_COMMAND_LINE`.
    CommandLineTooLong,
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::BadMagic(magic) => {
                write!(formatter, "start-info magic {magic:#x} is not {START_INFO_MAGIC:#x}: not booted through PVH")
            }
            StartInfoError::CommandLineNotUtf8 => {
                write!(formatter, "the kernel command line is not UTF-8")
            }
            StartInfoError::CommandLineTooLong => {
                write!(
                    formatter,
                    "the kernel command line is longer than {MAX_COMMAND_LINE} bytes"
                )
            }
        }
    }
}

impl BootInfo {
    /// The kernel command line.
    pub fn command_line(&self) -> &str {
        // The bytes were checked to be UTF-8 in `read`.
        core::str::from_utf8(&self.command_line[..self.command_line_length]).unwrap_or("")
    }

    /// The memory map.
    pub fn memory_regions(&self) -> &[MemoryRegion] {
        &self.memory_regions[..self.memory_region_count]
    }

    /// Copies the start info at `address` into a `BootInfo`.
    ///
    /// # Safety
    /// `address` must be the physical address QEMU passed in `%ebx` to the PVH
    /// entry, identity-mapped and not yet overwritten, and the addresses it
    /// contains (command line, memory map) must be identity-mapped too.
    pub unsafe fn read(address: u64) -> Result<BootInfo, StartInfoError> {
        // SAFETY: the caller guarantees `address` points at a live start-info
        // structure; `read_unaligned` copes with any alignment.
        let raw = unsafe { core::ptr::read_unaligned(address as *const StartInfoRaw) };
        if raw.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        let mut info = BootInfo {
            memory_regions: [MemoryRegion::default(); MAX_MEMORY_REGIONS],
            memory_region_count: 0,
            command_line: [0; MAX_COMMAND_LINE],
            command_line_length: 0,
            rsdp_address: raw.rsdp_address,
        };
        if raw.command_line_address != 0 {
            let mut length = 0;
            loop {
                // SAFETY: the loader stores a NUL-terminated string at the
                // command-line address (caller's guarantee); we stop at NUL or
                // at the buffer's end.
                let byte = unsafe {
                    core::ptr::read((raw.command_line_address + length as u64) as *const u8)
                };
                if byte == 0 {
                    break;
                }
                if length == MAX_COMMAND_LINE {
                    return Err(StartInfoError::CommandLineTooLong);
                }
                info.command_line[length] = byte;
                length += 1;
            }
            if core::str::from_utf8(&info.command_line[..length]).is_err() {
                return Err(StartInfoError::CommandLineNotUtf8);
            }
            info.command_line_length = length;
        }
        // The memory map exists from version 1 of the structure on.
        if raw.version >= 1 && raw.memory_map_address != 0 {
            let count = (raw.memory_map_entries as usize).min(MAX_MEMORY_REGIONS);
            for index in 0..count {
                let entry_address =
                    raw.memory_map_address + (index * size_of::<MemoryMapEntryRaw>()) as u64;
                // SAFETY: the loader's memory map has `memory_map_entries`
                // entries at this address (caller's guarantee).
                let entry =
                    unsafe { core::ptr::read_unaligned(entry_address as *const MemoryMapEntryRaw) };
                info.memory_regions[index] = MemoryRegion {
                    start: entry.address,
                    size: entry.size,
                    region_type: entry.region_type,
                };
            }
            info.memory_region_count = count;
        }
        Ok(info)
    }
}
