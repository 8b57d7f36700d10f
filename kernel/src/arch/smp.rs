//! Application-processor start-up: the real-mode trampoline, INIT-SIPI-SIPI
//! (Intel SDM Vol. 3A §8.4.4), and a per-CPU mailbox to run work on another
//! CPU.
//!
//! All APs start in parallel. Each AP takes the next slot of a stack table
//! with `lock xadd`, so no two share a stack, then finds its `PerCpu` block
//! from its own APIC ID: nothing assumes dense or ordered APIC IDs.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::{apic, cpu, paging, pit, tsc};

/// Physical address the trampoline is copied to (page 8: SIPI vector 0x08).
pub const TRAMPOLINE_ADDRESS: u64 = 0x8000;
/// Stack size of each application processor's boot stack.
pub const AP_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .set TRAMPOLINE_BASE, {trampoline}
    .set CR4_PAE, 0x20
    .set MSR_EFER, 0xC0000080
    .set EFER_LONG_MODE_ENABLE, 0x100
    .set CR0_PROTECTED_PAGING_WRITE_PROTECT, 0x80010001
    # CR0.CD (bit 30) and CR0.NW (bit 29): a CPU leaves reset and INIT with
    # both set, i.e. with its caches disabled (Intel SDM Vol. 3A, 9.1.1 and
    # Table 9-1). Clear them, or the kernel runs uncached.
    .set CR0_CACHE_DISABLE_NOT_WRITE_THROUGH, 0x60000000

    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (ap_trampoline_gdt_pointer - ap_trampoline_start + TRAMPOLINE_BASE)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(ap_trampoline_32 - ap_trampoline_start + TRAMPOLINE_BASE)

    .code32
ap_trampoline_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl (ap_trampoline_cr3 - ap_trampoline_start + TRAMPOLINE_BASE), %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LONG_MODE_ENABLE, %eax
    wrmsr
    movl %cr0, %eax
    andl $~CR0_CACHE_DISABLE_NOT_WRITE_THROUGH, %eax
    orl $CR0_PROTECTED_PAGING_WRITE_PROTECT, %eax
    movl %eax, %cr0
    ljmp $0x18, $(ap_trampoline_64 - ap_trampoline_start + TRAMPOLINE_BASE)

    .code64
ap_trampoline_64:
    movw $0x20, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, (ap_trampoline_next_slot - ap_trampoline_start + TRAMPOLINE_BASE)
    movq (ap_trampoline_stack_table - ap_trampoline_start + TRAMPOLINE_BASE), %rbx
    movq (%rbx,%rax,8), %rsp
    movl %eax, %edi
    movq (ap_trampoline_entry - ap_trampoline_start + TRAMPOLINE_BASE), %rax
    xorl %ebp, %ebp
    call *%rax
1:
    cli
    hlt
    jmp 1b

    .balign 8
ap_trampoline_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF     /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF     /* 0x10: 32-bit data */
    .quad 0x00AF9A000000FFFF     /* 0x18: 64-bit code */
    .quad 0x00CF92000000FFFF     /* 0x20: data */
ap_trampoline_gdt_end:
ap_trampoline_gdt_pointer:
    .word ap_trampoline_gdt_end - ap_trampoline_gdt - 1
    .long ap_trampoline_gdt - ap_trampoline_start + TRAMPOLINE_BASE
    .balign 8
    .global ap_trampoline_cr3
ap_trampoline_cr3:
    .quad 0
    .global ap_trampoline_stack_table
ap_trampoline_stack_table:
    .quad 0
    .global ap_trampoline_entry
ap_trampoline_entry:
    .quad 0
    .global ap_trampoline_next_slot
ap_trampoline_next_slot:
    .quad 0
    .global ap_trampoline_end
ap_trampoline_end:
    .text
"#,
    trampoline = const TRAMPOLINE_ADDRESS,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_stack_table: u8;
    static ap_trampoline_entry: u8;
    static ap_trampoline_next_slot: u8;
}

/// Offset of a trampoline symbol from the trampoline's start.
fn offset_of(symbol: *const u8) -> u64 {
    let start = core::ptr::addr_of!(ap_trampoline_start) as u64;
    symbol as u64 - start
}

/// Writes a u64 into the copied trampoline at `symbol`'s offset.
///
/// # Safety
/// The trampoline page must have been copied to `TRAMPOLINE_ADDRESS` and no
/// AP may be running it yet.
unsafe fn patch(symbol: *const u8, value: u64) {
    let address = TRAMPOLINE_ADDRESS + offset_of(symbol);
    // SAFETY: `address` lies inside the trampoline copy (caller's contract),
    // which is identity-mapped RAM reserved for it.
    unsafe { core::ptr::write_volatile(address as *mut u64, value) };
}

/// Result of `start_application_processors`.
pub struct Bringup {
    /// CPUs online at the end, the bootstrap processor included.
    pub online: usize,
    /// Nanoseconds from the first INIT to the last AP online.
    pub elapsed_ns: u64,
}

/// Starts every CPU listed (index ≥ 1) and waits until each is online or
/// `timeout_ns` has passed. `entry` is the AP's Rust entry point.
///
/// # Safety
/// Call once, on the bootstrap processor, after the heap, the IDT, the local
/// APIC and TSC calibration are ready; the trampoline page must be free RAM.
pub unsafe fn start_application_processors(
    entry: extern "C" fn(u32) -> !,
    timeout_ns: u64,
) -> Bringup {
    let count = cpu::cpus_found();
    if count <= 1 {
        return Bringup {
            online: 1,
            elapsed_ns: 0,
        };
    }
    let stack_tops: Vec<u64> = (1..count)
        .map(|_| {
            // SAFETY: only this CPU runs yet (caller's contract).
            unsafe { paging::allocate_guarded_stack(AP_STACK_SIZE) }
                .expect("memory for AP boot stacks")
        })
        .collect();
    let stack_table = stack_tops.leak();
    // SAFETY: copying the trampoline's bytes (a linker-delimited range in
    // .rodata) to the reserved low page (caller's contract).
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let length = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE_ADDRESS as *mut u8, length);
    }
    // SAFETY: the page was just copied and no AP runs yet.
    unsafe {
        patch(core::ptr::addr_of!(ap_trampoline_cr3), cpu::read_cr3());
        patch(
            core::ptr::addr_of!(ap_trampoline_stack_table),
            stack_table.as_ptr() as u64,
        );
        patch(
            core::ptr::addr_of!(ap_trampoline_entry),
            entry as usize as u64,
        );
        patch(core::ptr::addr_of!(ap_trampoline_next_slot), 0);
    }
    let start = tsc::now();
    let apic_ids: Vec<u32> = (1..count)
        .map(|index| cpu::per_cpu(index).apic_id.load(Ordering::Relaxed))
        .collect();
    for &apic_id in &apic_ids {
        apic::send_init(apic_id);
    }
    // INIT needs 10 ms before the first SIPI (SDM §8.4.4.1).
    pit::wait_ms(10);
    let page = (TRAMPOLINE_ADDRESS >> 12) as u8;
    for &apic_id in &apic_ids {
        apic::send_startup(apic_id, page);
    }
    tsc::delay_ns(200_000);
    for (offset, &apic_id) in apic_ids.iter().enumerate() {
        if !cpu::per_cpu(offset + 1).online.load(Ordering::Acquire) {
            apic::send_startup(apic_id, page);
        }
    }
    let timeout_cycles = tsc::ns_to_cycles(timeout_ns);
    loop {
        let online = (0..count)
            .filter(|&index| cpu::per_cpu(index).online.load(Ordering::Acquire))
            .count();
        if online == count || tsc::now() - start > timeout_cycles {
            return Bringup {
                online,
                elapsed_ns: tsc::cycles_to_ns(tsc::now() - start),
            };
        }
        crate::extensions::relax();
    }
}

/// Runs `work` on CPU `index` (through its mailbox and a wake-up IPI) and
/// waits until it is done or `timeout_ns` passes. Returns whether it ran.
pub fn run_on(index: usize, work: fn(), timeout_ns: u64) -> bool {
    if index == cpu::current_index() {
        work();
        return true;
    }
    match post(index, work) {
        Some(posted) => wait_done(posted, timeout_ns),
        None => false,
    }
}

/// Work posted to another CPU's mailbox, to wait for with [`wait_done`].
#[derive(Clone, Copy, Debug)]
pub struct Posted {
    index: usize,
    done_before: u64,
}

/// Posts `work` to CPU `index`'s mailbox and wakes it, without waiting.
/// `None` if the mailbox is busy or `index` is the calling CPU.
pub fn post(index: usize, work: fn()) -> Option<Posted> {
    if index == cpu::current_index() {
        return None;
    }
    let block = cpu::per_cpu(index);
    let done_before = block.mailbox_done.load(Ordering::Acquire);
    block
        .mailbox
        .compare_exchange(0, work as usize, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    apic::send_ipi(block.apic_id.load(Ordering::Relaxed), apic::VECTOR_IPI_WAKE);
    Some(Posted { index, done_before })
}

/// Waits until posted work is done or `timeout_ns` passes. Returns whether
/// it finished.
pub fn wait_done(posted: Posted, timeout_ns: u64) -> bool {
    let block = cpu::per_cpu(posted.index);
    let start = tsc::now();
    let timeout = tsc::ns_to_cycles(timeout_ns);
    while block.mailbox_done.load(Ordering::Acquire) == posted.done_before {
        if tsc::now() - start > timeout {
            return false;
        }
        crate::extensions::relax();
    }
    true
}

/// Called by a CPU's idle loop with interrupts off: runs posted work, if any.
pub fn run_mailbox() {
    let block = cpu::current();
    let work = block.mailbox.load(Ordering::Acquire);
    if work != 0 {
        // SAFETY: `mailbox` only ever holds 0 or a `fn()` stored by `run_on`.
        let work: fn() = unsafe { core::mem::transmute::<usize, fn()>(work) };
        cpu::enable_interrupts();
        work();
        cpu::disable_interrupts();
        block.mailbox.store(0, Ordering::Release);
        block.mailbox_done.fetch_add(1, Ordering::AcqRel);
    }
}
