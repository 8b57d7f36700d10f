//! The kernel heap: `talc` (a well-kept allocator; see docs/architecture.md),
//! fed with the usable RAM of the PVH memory map that lies in the boot
//! identity map, minus the kernel image and the low 1 MiB.

use talc::{ErrOnOom, Span, Talc, Talck};

use crate::arch::pvh::{BootInfo, MEMORY_TYPE_RAM};

#[global_allocator]
static ALLOCATOR: Talck<crate::sync::IrqSafeRawSpinlock, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Memory below this stays out of the heap (BIOS data, the AP trampoline).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// The boot page tables identity-map up to here.
const IDENTITY_MAPPED_END: u64 = 1 << 32;
/// Regions smaller than this are not worth claiming.
const SMALLEST_REGION: u64 = 64 * 1024;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Hands every usable RAM range to the allocator. Returns the bytes claimed.
///
/// # Safety
/// Call once, on the bootstrap processor, before any allocation; the memory
/// map must describe this machine, and nothing else may use usable RAM above
/// 1 MiB outside the kernel image.
pub unsafe fn init(boot_info: &BootInfo) -> u64 {
    let (kernel_start, kernel_end) = (
        core::ptr::addr_of!(__kernel_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    );
    let mut claimed = 0;
    for region in boot_info
        .memory_regions()
        .iter()
        .filter(|region| region.region_type == MEMORY_TYPE_RAM)
    {
        let start = region.start.max(LOW_MEMORY_END);
        let end = region
            .start
            .saturating_add(region.size)
            .min(IDENTITY_MAPPED_END);
        // Cut the kernel image out: up to two pieces remain.
        for (piece_start, piece_end) in
            [(start, end.min(kernel_start)), (start.max(kernel_end), end)]
        {
            if piece_end > piece_start && piece_end - piece_start >= SMALLEST_REGION {
                let span = Span::from_base_size(
                    piece_start as *mut u8,
                    (piece_end - piece_start) as usize,
                );
                // SAFETY: the span is usable RAM (memory map), identity-mapped,
                // outside the kernel image and low memory, and claimed once
                // (function contract).
                if unsafe { ALLOCATOR.lock().claim(span) }.is_ok() {
                    claimed += piece_end - piece_start;
                }
            }
        }
    }
    claimed
}
