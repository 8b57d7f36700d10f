//! Per-CPU state: the `PerCpu` block each CPU finds through its GS base, and
//! each CPU's own GDT and TSS (with IST stacks for double fault, NMI and
//! machine check), built with the `x86` crate (Intel SDM Vol. 3A §3.4.5, §7.7).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86::bits64::segmentation::Descriptor64;
use x86::bits64::task::TaskStateSegment;
use x86::dtables::DescriptorTablePointer;
use x86::segmentation::{
    BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder, SegmentSelector,
};
use x86::Ring;

/// Most CPUs Spindle runs on (the xAPIC's 8-bit ID space; QEMU allows 255
/// with `-machine q35` without an IOMMU).
pub const MAX_CPUS: usize = 256;
/// IST slot (1-based, as in the IDT gate) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the NMI stack.
pub const IST_NMI: u8 = 2;
/// IST slot of the machine-check stack.
pub const IST_MACHINE_CHECK: u8 = 3;
/// Size of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Size of each CPU's interrupt stack.
pub const INTERRUPT_STACK_SIZE: usize = 32 * 1024;
/// Where `interrupt_common` finds the interrupt stack's top (`gs:[8]`).
pub const INTERRUPT_STACK_TOP_OFFSET: usize = 8;
const _: () =
    assert!(core::mem::offset_of!(PerCpu, interrupt_stack_top) == INTERRUPT_STACK_TOP_OFFSET);

/// Kernel code segment selector (GDT index 1).
pub const KERNEL_CODE_SELECTOR: SegmentSelector = SegmentSelector::new(1, Ring::Ring0);
/// Kernel data segment selector (GDT index 2).
pub const KERNEL_DATA_SELECTOR: SegmentSelector = SegmentSelector::new(2, Ring::Ring0);
/// TSS selector (GDT index 3; a 64-bit TSS descriptor takes indices 3 and 4).
pub const TSS_SELECTOR: SegmentSelector = SegmentSelector::new(3, Ring::Ring0);

/// Flat 64-bit code segment: present, DPL 0, executable, readable, long mode.
const CODE_SEGMENT_64: u64 = 0x00AF_9A00_0000_FFFF;
/// Flat data segment: present, DPL 0, writable.
const DATA_SEGMENT: u64 = 0x00CF_9200_0000_FFFF;
/// IA32_GS_BASE (SDM Vol. 4, table 2-2).
const MSR_GS_BASE: u32 = 0xC000_0101;
/// "No CPU" in lock-owner fields.
pub const NO_CPU: u32 = u32::MAX;

#[repr(C, align(16))]
struct Gdt {
    null: u64,
    code: u64,
    data: u64,
    tss: Descriptor64,
}

/// Everything one CPU owns. `#[repr(C)]` with `self_address` first, so that
/// `gs:[0]` yields the block's own address.
#[repr(C)]
pub struct PerCpu {
    self_address: AtomicUsize,
    /// Top of the stack external interrupts run their handlers and the
    /// scheduler on (read by `interrupt_common` at `gs:[8]`; 0: not yet).
    pub interrupt_stack_top: AtomicU64,
    /// Dense CPU index (0 = the bootstrap processor), in MADT order.
    pub index: AtomicU32,
    /// The CPU's local APIC ID (not dense, not ordered).
    pub apic_id: AtomicU32,
    /// Set once the CPU has its tables, APIC and timer.
    pub online: AtomicBool,
    /// Timer interrupts taken in tick (deadline) mode.
    pub ticks: AtomicU64,
    /// Timer interrupts taken in the periodic-mode self-test.
    pub periodic_ticks: AtomicU64,
    /// Summed lateness of the ticks that came more than
    /// `timer::STALL_THRESHOLD_NS` late (see `timer::stalled_nanoseconds`).
    pub stalled_ns: AtomicU64,
    /// TSC value the armed one-shot/deadline timer is due at (0: none).
    pub timer_deadline_tsc: AtomicU64,
    /// Tick period in TSC cycles while ticking (0: not ticking).
    pub tick_period_tsc: AtomicU64,
    /// Times this CPU stopped its tick to idle (tickless idle).
    pub tickless_entries: AtomicU64,
    /// IPIs this CPU answered in the IPI round-trip benchmark.
    pub ipi_answered: AtomicU64,
    /// Work posted to this CPU by `smp::run_on` (a `fn()` address, 0: none).
    pub mailbox: AtomicUsize,
    /// Bumped each time this CPU finishes mailbox work.
    pub mailbox_done: AtomicU64,
    /// Interrupt nesting depth (exceptions inside handlers are reported).
    pub interrupt_depth: AtomicU32,
    /// Tops of this CPU's IST stacks (double fault, NMI, machine check),
    /// allocated with guard pages by the bootstrap processor.
    pub ist_stack_tops: [AtomicU64; 3],
    gdt: UnsafeCell<Gdt>,
    tss: UnsafeCell<TaskStateSegment>,
    pub(crate) local_apic: UnsafeCell<Option<x2apic::lapic::LocalApic>>,
}

// SAFETY: the atomics are shared freely. `gdt`, `tss` and `local_apic` are
// only touched by the CPU that owns the block: `gdt`/`tss` while that CPU
// initialises itself (before anybody else looks), `local_apic` through
// `apic::with_local_apic`, which runs with interrupts off on the owning CPU.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            self_address: AtomicUsize::new(0),
            interrupt_stack_top: AtomicU64::new(0),
            index: AtomicU32::new(NO_CPU),
            apic_id: AtomicU32::new(NO_CPU),
            online: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            periodic_ticks: AtomicU64::new(0),
            stalled_ns: AtomicU64::new(0),
            timer_deadline_tsc: AtomicU64::new(0),
            tick_period_tsc: AtomicU64::new(0),
            tickless_entries: AtomicU64::new(0),
            ipi_answered: AtomicU64::new(0),
            mailbox: AtomicUsize::new(0),
            mailbox_done: AtomicU64::new(0),
            interrupt_depth: AtomicU32::new(0),
            ist_stack_tops: [const { AtomicU64::new(0) }; 3],
            gdt: UnsafeCell::new(Gdt {
                null: 0,
                code: 0,
                data: 0,
                tss: Descriptor64::NULL,
            }),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            local_apic: UnsafeCell::new(None),
        }
    }

    /// This CPU's dense index.
    pub fn cpu_index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }
}

static PER_CPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
/// Number of CPUs the MADT listed (and that we try to start).
static CPUS_FOUND: AtomicUsize = AtomicUsize::new(1);
/// Whether GS points at a `PerCpu` block on the bootstrap processor yet.
static GS_READY: AtomicBool = AtomicBool::new(false);

/// The block of CPU `index`.
pub fn per_cpu(index: usize) -> &'static PerCpu {
    &PER_CPU[index]
}

/// Number of CPUs found in the MADT (online or not).
pub fn cpus_found() -> usize {
    CPUS_FOUND.load(Ordering::Relaxed)
}

/// Records how many CPUs the MADT listed.
pub fn set_cpus_found(count: usize) {
    CPUS_FOUND.store(count.min(MAX_CPUS), Ordering::Relaxed);
}

/// The calling CPU's block.
pub fn current() -> &'static PerCpu {
    if !GS_READY.load(Ordering::Relaxed) {
        return &PER_CPU[0];
    }
    let address: usize;
    // SAFETY: once GS_READY is set, every CPU's GS base points at its own
    // `PerCpu`, whose first field holds the block's address (`bind_to_gs`).
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) address, options(nostack, readonly, preserves_flags));
    }
    // SAFETY: `address` is the address of an element of the static `PER_CPU`.
    unsafe { &*(address as *const PerCpu) }
}

/// Where a CPU's dense index sits in its block (`gs:[INDEX_OFFSET]` once
/// bound), for readers that load it inline.
pub const INDEX_OFFSET: u32 = core::mem::offset_of!(PerCpu, index) as u32;

/// The calling CPU's dense index.
pub fn current_index() -> usize {
    current().cpu_index()
}

/// Makes `PER_CPU[index]` the calling CPU's block: sets its identity and
/// points the GS base at it.
pub fn bind_to_gs(index: usize, apic_id: u32) {
    let block = &PER_CPU[index];
    block
        .self_address
        .store(block as *const PerCpu as usize, Ordering::Relaxed);
    block.index.store(index as u32, Ordering::Relaxed);
    block.apic_id.store(apic_id, Ordering::Relaxed);
    // SAFETY: writing IA32_GS_BASE only changes where `gs:` operands point;
    // the kernel uses GS for nothing but the per-CPU block.
    unsafe { x86::msr::wrmsr(MSR_GS_BASE, block as *const PerCpu as u64) };
    GS_READY.store(true, Ordering::Release);
}

/// Builds and loads the calling CPU's GDT and TSS, with the IST stacks in
/// its `ist_stack_tops`, and reloads every segment register.
///
/// # Safety
/// Must run once per CPU, on the CPU whose block is bound to GS, with
/// interrupts disabled, after its `ist_stack_tops` were filled with stacks
/// that stay allocated forever.
pub unsafe fn load_descriptor_tables() {
    let block = current();
    let ist_stack_tops = block
        .ist_stack_tops
        .each_ref()
        .map(|top| top.load(Ordering::Acquire));
    // SAFETY: only this CPU touches its `tss` and `gdt`, and only here
    // (function contract), so the exclusive references are unique.
    let (tss, gdt) = unsafe { (&mut *block.tss.get(), &mut *block.gdt.get()) };
    for (slot, top) in ist_stack_tops.iter().enumerate() {
        tss.set_ist(slot, *top);
    }
    let tss_base = tss as *const TaskStateSegment as u64;
    let tss_limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    gdt.code = CODE_SEGMENT_64;
    gdt.data = DATA_SEGMENT;
    gdt.tss = <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(
        tss_base, tss_limit, true,
    )
    .present()
    .dpl(Ring::Ring0)
    .finish();
    let pointer = DescriptorTablePointer::new(&*gdt);
    // SAFETY: the GDT just built is static and lives forever; its code, data
    // and TSS descriptors are valid, so reloading CS, the data segments and
    // TR with their selectors (below) cannot fault.
    unsafe {
        x86::dtables::lgdt(&pointer);
    }
    // SAFETY: see above; index 1 is a valid 64-bit code segment.
    unsafe {
        x86::bits64::segmentation::load_cs(KERNEL_CODE_SELECTOR);
    }
    // SAFETY: see above; index 2 is a valid data segment.
    unsafe {
        x86::segmentation::load_ss(KERNEL_DATA_SELECTOR);
        x86::segmentation::load_ds(KERNEL_DATA_SELECTOR);
        x86::segmentation::load_es(KERNEL_DATA_SELECTOR);
    }
    // SAFETY: index 3 holds an available 64-bit TSS descriptor for this
    // CPU's TSS, loaded exactly once per CPU.
    unsafe {
        x86::task::load_tr(TSS_SELECTOR);
    }
}

/// Finds the dense index of the CPU with `apic_id`.
pub fn index_of_apic_id(apic_id: u32) -> Option<usize> {
    (0..cpus_found()).find(|&index| PER_CPU[index].apic_id.load(Ordering::Relaxed) == apic_id)
}

/// Reserves `PER_CPU[index]` for `apic_id` before that CPU starts, so an
/// application processor can find its block from its APIC ID.
pub fn assign_apic_id(index: usize, apic_id: u32) {
    PER_CPU[index].apic_id.store(apic_id, Ordering::Relaxed);
    PER_CPU[index].index.store(index as u32, Ordering::Relaxed);
}

/// The calling CPU's initial APIC ID from CPUID (leaf 0xB's x2APIC ID when
/// the leaf exists, else leaf 1 EBX[31:24]; SDM Vol. 3A §10.4.6, §10.12.8).
pub fn apic_id_from_cpuid() -> u32 {
    if raw_cpuid_max_leaf() >= 0xB {
        let leaf = cpuid(0xB, 0);
        if leaf.ebx != 0 {
            return leaf.edx;
        }
    }
    let leaf = cpuid(1, 0);
    leaf.ebx >> 24
}

/// The highest basic CPUID leaf.
pub fn raw_cpuid_max_leaf() -> u32 {
    cpuid(0, 0).eax
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// The hypervisor's vendor signature (CPUID 0x4000_0000), e.g. `KVMKVMKVM`
/// or `TCGTCGTCGTCG`, or `none` on bare metal.
pub fn hypervisor_signature(buffer: &mut [u8; 12]) -> &str {
    let feature = cpuid(1, 0);
    const HYPERVISOR_PRESENT_BIT: u32 = 1 << 31;
    if feature.ecx & HYPERVISOR_PRESENT_BIT == 0 {
        return "none";
    }
    let leaf = cpuid(0x4000_0000, 0);
    buffer[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    buffer[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    buffer[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
    let length = buffer.iter().position(|&byte| byte == 0).unwrap_or(12);
    core::str::from_utf8(&buffer[..length]).unwrap_or("unknown")
}

/// Enables interrupts on the calling CPU.
pub fn enable_interrupts() {
    // SAFETY: the IDT is loaded before any CPU enables interrupts.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// RFLAGS.IF (Intel SDM Vol. 1 §3.4.3.3).
const INTERRUPT_FLAG: u64 = 1 << 9;

/// Disables interrupts on the calling CPU; returns whether they were on.
pub fn disable_interrupts() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS and clearing IF have no memory effects.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) };
    flags & INTERRUPT_FLAG != 0
}

/// Whether interrupts are enabled on this CPU (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no memory effects.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags))
    };
    flags & INTERRUPT_FLAG != 0
}

/// Restores the interrupt flag saved by `disable_interrupts`.
pub fn restore_interrupts(were_enabled: bool) {
    if were_enabled {
        enable_interrupts();
    }
}

/// Enables interrupts and halts until the next one, atomically (the `sti`
/// shadow covers `hlt`, so a wake-up cannot slip in between).
pub fn enable_interrupts_and_halt() {
    // SAFETY: `sti; hlt` only waits for an interrupt; the IDT is loaded.
    unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
}

/// Stops the calling CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` parks the CPU; nothing depends on it waking up.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Reads CR2, the faulting linear address of the last page fault.
pub fn read_cr2() -> u64 {
    // SAFETY: reading CR2 has no side effects.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// Reads CR3, the current page-table root.
pub fn read_cr3() -> u64 {
    // SAFETY: reading CR3 has no side effects.
    unsafe { x86::controlregs::cr3() }
}
