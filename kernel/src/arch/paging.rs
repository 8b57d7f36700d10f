//! Edits of the boot identity map: splitting a 2 MiB page into 4 KiB pages
//! and unmapping guard pages below kernel stacks, so that a stack overflow
//! faults (and, since the fault cannot push on the overflowed stack, becomes
//! a double fault reported from its own IST stack) instead of silently
//! corrupting memory (Intel SDM Vol. 3A §4.5, §6.15 "#DF").
//!
//! Used by the bootstrap processor before the application processors start,
//! so only its own TLB needs flushing.

use alloc::alloc::{alloc_zeroed, Layout};
use core::fmt;

use super::cpu;

/// Size of a small page.
pub const PAGE_SIZE: u64 = 4096;
const ENTRIES: usize = 512;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const LARGE_PAGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// The boot identity map covers 0..4 GiB.
const IDENTITY_MAPPED_END: u64 = 1 << 32;

/// Why a page could not be unmapped.
#[derive(Debug, Clone, Copy)]
pub enum PagingError {
    /// The address is not 4 KiB aligned.
    Unaligned(u64),
    /// The address lies outside the identity map.
    NotMapped(u64),
    /// No memory for a page table.
    OutOfMemory,
}

impl fmt::Display for PagingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::Unaligned(address) => {
                write!(formatter, "address {address:#x} is not page aligned")
            }
            PagingError::NotMapped(address) => {
                write!(formatter, "address {address:#x} is not in the identity map")
            }
            PagingError::OutOfMemory => write!(formatter, "no memory for a page table"),
        }
    }
}

fn table_index(address: u64, level: u32) -> usize {
    const INDEX_BITS: u32 = 9;
    const PAGE_SHIFT: u32 = 12;
    ((address >> (PAGE_SHIFT + INDEX_BITS * level)) as usize) & (ENTRIES - 1)
}

/// Makes the 4 KiB page at `address` not present.
///
/// # Safety
/// Nothing may use the page afterwards (it is leaked to be a guard), and
/// no other CPU may be running yet (only this CPU's TLB is flushed).
pub unsafe fn unmap_page(address: u64) -> Result<(), PagingError> {
    if !address.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Unaligned(address));
    }
    if address >= IDENTITY_MAPPED_END {
        return Err(PagingError::NotMapped(address));
    }
    let root = cpu::read_cr3() & ADDRESS_MASK;
    // SAFETY: CR3 holds the boot page tables (arch/boot.rs), identity-mapped
    // RAM; walking them level by level only follows present entries, and
    // the caller guarantees no other CPU uses them concurrently.
    unsafe {
        let pml4 = root as *mut u64;
        let pml4_entry = *pml4.add(table_index(address, 3));
        if pml4_entry & PRESENT == 0 {
            return Err(PagingError::NotMapped(address));
        }
        let pdpt = (pml4_entry & ADDRESS_MASK) as *mut u64;
        let pdpt_entry = *pdpt.add(table_index(address, 2));
        if pdpt_entry & PRESENT == 0 {
            return Err(PagingError::NotMapped(address));
        }
        let directory = (pdpt_entry & ADDRESS_MASK) as *mut u64;
        let directory_slot = directory.add(table_index(address, 1));
        let directory_entry = *directory_slot;
        if directory_entry & PRESENT == 0 {
            return Err(PagingError::NotMapped(address));
        }
        let table = if directory_entry & LARGE_PAGE != 0 {
            // Split the 2 MiB page into 512 small pages with the same
            // caching attributes.
            let layout = Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize)
                .expect("page layout");
            let table = alloc_zeroed(layout) as *mut u64;
            if table.is_null() {
                return Err(PagingError::OutOfMemory);
            }
            let base = directory_entry & ADDRESS_MASK & !(ENTRIES as u64 * PAGE_SIZE - 1);
            let attributes = directory_entry & (WRITE_THROUGH | CACHE_DISABLE);
            for entry in 0..ENTRIES {
                *table.add(entry) =
                    (base + entry as u64 * PAGE_SIZE) | PRESENT | WRITABLE | attributes;
            }
            *directory_slot = table as u64 | PRESENT | WRITABLE;
            table
        } else {
            (directory_entry & ADDRESS_MASK) as *mut u64
        };
        *table.add(table_index(address, 0)) = 0;
        // Reloading CR3 flushes every non-global translation, the old 2 MiB
        // one included.
        x86::controlregs::cr3_write(root);
    }
    Ok(())
}

/// Allocates a kernel stack of `size` bytes (a multiple of 4 KiB) with an
/// unmapped guard page below it; returns the stack's top.
///
/// # Safety
/// As `unmap_page`: no other CPU may be running yet.
pub unsafe fn allocate_guarded_stack(size: usize) -> Result<u64, PagingError> {
    let layout = Layout::from_size_align(size + PAGE_SIZE as usize, PAGE_SIZE as usize)
        .expect("stack layout");
    // SAFETY: the layout has a non-zero size.
    let base = unsafe { alloc_zeroed(layout) } as u64;
    if base == 0 {
        return Err(PagingError::OutOfMemory);
    }
    // SAFETY: the guard page is the allocation's first page, never used as
    // stack (the stack grows down to base + PAGE_SIZE); caller's contract
    // for the TLB.
    unsafe { unmap_page(base)? };
    Ok(base + PAGE_SIZE + size as u64)
}
