//! Edits of the boot identity map: splitting a 2 MiB page into 4 KiB pages
//! and unmapping guard pages below kernel stacks, so that a stack overflow
//! faults (and, since the fault cannot push on the overflowed stack, becomes
//! a double fault reported from its own IST stack) instead of silently
//! corrupting memory (Intel SDM Vol. 3A §4.5, §6.15 "#DF").
//!
//! Used by the bootstrap processor before the application processors start,
//! so only its own TLB needs flushing.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
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

/// Serializes edits of the page tables between CPUs.
static PAGE_TABLE_LOCK: crate::sync::IrqMutex<()> = crate::sync::irq_mutex(());

/// Sets the 4 KiB page-table entry of `address` to `value` (splitting its
/// 2 MiB page into 4 KiB pages first if needed) and flushes this CPU's TLB
/// entry for it.
///
/// # Safety
/// The new entry must not take memory away from anything that still uses
/// it, and other CPUs' TLBs are not flushed (there is no shootdown yet): a
/// CPU that cached the old translation may keep using it.
unsafe fn set_leaf_entry(address: u64, value: u64) -> Result<(), PagingError> {
    if !address.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Unaligned(address));
    }
    if address >= IDENTITY_MAPPED_END {
        return Err(PagingError::NotMapped(address));
    }
    let _serialized = PAGE_TABLE_LOCK.lock();
    let root = cpu::read_cr3() & ADDRESS_MASK;
    // SAFETY: CR3 holds the boot page tables (arch/boot.rs), identity-mapped
    // RAM; walking them level by level only follows present entries, and
    // PAGE_TABLE_LOCK keeps other CPUs from editing them meanwhile.
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
        *table.add(table_index(address, 0)) = value;
        x86::tlb::flush(address as usize);
    }
    Ok(())
}

/// Makes the 4 KiB page at `address` not present.
///
/// # Safety
/// Nothing may use the page afterwards (it becomes a guard), and other
/// CPUs' TLBs are not flushed: call it before the other CPUs run, or accept
/// that a CPU which cached the page may still reach it.
pub unsafe fn unmap_page(address: u64) -> Result<(), PagingError> {
    // SAFETY: the caller's contract.
    unsafe { set_leaf_entry(address, 0) }
}

/// A kernel stack with an unmapped guard page below it, freed (guard page
/// mapped again first) when dropped.
pub struct GuardedStack {
    /// The allocation's start: the guard page.
    base: u64,
    /// Usable bytes above the guard page.
    size: usize,
}

impl GuardedStack {
    /// Allocates a stack of `size` bytes (a multiple of 4 KiB) and unmaps
    /// the page below it. Other CPUs' TLBs are not shot down (see
    /// `set_leaf_entry`): on a CPU that had cached that page as part of a
    /// larger heap mapping, the guard may not fault.
    pub fn new(size: usize) -> Result<GuardedStack, PagingError> {
        let layout = Self::layout(size);
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) } as u64;
        if base == 0 {
            return Err(PagingError::OutOfMemory);
        }
        // SAFETY: the guard page is the allocation's first page, which this
        // type never hands out (the stack grows down to base + PAGE_SIZE).
        if let Err(error) = unsafe { unmap_page(base) } {
            // SAFETY: allocated above with this layout, never handed out.
            unsafe { dealloc(base as *mut u8, layout) };
            return Err(error);
        }
        Ok(GuardedStack { base, size })
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size + PAGE_SIZE as usize, PAGE_SIZE as usize)
            .expect("stack layout")
    }

    /// The stack's top (its highest address plus one, 16-byte aligned).
    pub fn top(&self) -> u64 {
        self.base + PAGE_SIZE + self.size as u64
    }

    /// Keeps the stack forever and returns its top.
    pub fn leak(self) -> u64 {
        let top = self.top();
        core::mem::forget(self);
        top
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        // SAFETY: mapping the guard page back (identity, writable) gives
        // the heap back its own page; nothing runs on this stack any more
        // (its owner drops it only after the last switch away from it).
        let remapped = unsafe { set_leaf_entry(self.base, self.base | PRESENT | WRITABLE) };
        if remapped.is_ok() {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.base as *mut u8, Self::layout(self.size)) };
        }
        // If the page could not be mapped again, the allocation is leaked
        // rather than handed back with a hole in it.
    }
}

/// Allocates a kernel stack of `size` bytes (a multiple of 4 KiB) with an
/// unmapped guard page below it, kept forever; returns the stack's top.
///
/// # Safety
/// As `unmap_page`: call it before the other CPUs run, or accept that a CPU
/// which cached the guard page may still reach it.
pub unsafe fn allocate_guarded_stack(size: usize) -> Result<u64, PagingError> {
    GuardedStack::new(size).map(GuardedStack::leak)
}
