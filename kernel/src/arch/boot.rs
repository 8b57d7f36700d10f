//! PVH boot entry: the Xen ELF note, the 32-bit entry QEMU jumps to, the
//! identity map of the first 4 GiB, and the switch to long mode.
//!
//! QEMU's `-kernel` loader finds the `XEN_ELFNOTE_PHYS32_ENTRY` note (type 18)
//! and enters `pvh_entry` in 32-bit protected mode with paging off and `%ebx`
//! holding the physical address of the `hvm_start_info` structure (Xen's
//! `arch-x86/hvm/start_info.h`). The code below clears `.bss`, builds page
//! tables that identity-map 0..4 GiB with 2 MiB pages (the local APIC, I/O APIC
//! and HPET window at 0xFE00_0000.. uncached, Intel SDM Vol. 3A §4.9/§11.12),
//! enables PAE and long mode (SDM Vol. 3A §9.8.5) and calls
//! `kernel_main(start_info)` on the boot stack.

use core::arch::global_asm;

/// Size of the bootstrap processor's boot stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .set XEN_ELFNOTE_PHYS32_ENTRY, 18
    .set CR4_PAE, 0x20
    .set MSR_EFER, 0xC0000080
    .set EFER_LONG_MODE_ENABLE, 0x100
    .set EFER_NO_EXECUTE_ENABLE, 0x800
    .set CR0_PROTECTED_PAGING_WRITE_PROTECT, 0x80010001
    # CR0.CD (bit 30) and CR0.NW (bit 29): a CPU leaves reset and INIT with
    # both set, i.e. with its caches disabled (Intel SDM Vol. 3A, 9.1.1 and
    # Table 9-1). Clear them, or the kernel runs uncached.
    .set CR0_CACHE_DISABLE_NOT_WRITE_THROUGH, 0x60000000
    .set PAGE_PRESENT_WRITABLE, 0x3
    .set PAGE_PRESENT_WRITABLE_LARGE, 0x83
    .set PAGE_CACHE_DISABLE_WRITE_THROUGH, 0x18
    .set FIRST_UNCACHED_2MIB_PAGE, 2032   /* 0xFE000000 / 2 MiB */
    .set IDENTITY_MAPPED_2MIB_PAGES, 2048 /* 4 GiB */

    .section .note.Xen, "a"
    .balign 4
    .long 4                      /* name size: "Xen\0" */
    .long 4                      /* descriptor size: 32-bit entry address */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long pvh_entry
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_entry
pvh_entry:
    cli
    cld
    movl %ebx, %esi              /* hvm_start_info, kept across the clearing of .bss */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %esi, boot_start_info
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
    movl $boot_pdpt, %eax
    orl $PAGE_PRESENT_WRITABLE, %eax
    movl %eax, boot_pml4
    movl $boot_page_directories, %eax
    orl $PAGE_PRESENT_WRITABLE, %eax
    movl %eax, boot_pdpt
    addl $0x1000, %eax
    movl %eax, boot_pdpt + 8
    addl $0x1000, %eax
    movl %eax, boot_pdpt + 16
    addl $0x1000, %eax
    movl %eax, boot_pdpt + 24

    /* 2048 entries of 2 MiB: identity map 0..4 GiB. */
    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $21, %eax
    orl $PAGE_PRESENT_WRITABLE_LARGE, %eax
    cmpl $FIRST_UNCACHED_2MIB_PAGE, %ecx
    jb 2f
    orl $PAGE_CACHE_DISABLE_WRITE_THROUGH, %eax
2:
    movl %eax, boot_page_directories(,%ecx,8)
    incl %ecx
    cmpl $IDENTITY_MAPPED_2MIB_PAGES, %ecx
    jb 1b

    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LONG_MODE_ENABLE, %eax
    wrmsr
    movl %cr0, %eax
    andl $~CR0_CACHE_DISABLE_NOT_WRITE_THROUGH, %eax
    orl $CR0_PROTECTED_PAGING_WRITE_PROTECT, %eax
    movl %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x8, $boot_long_mode_entry

    .code64
boot_long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    movl boot_start_info(%rip), %edi
    xorl %ebp, %ebp
    call kernel_main
3:
    cli
    hlt
    jmp 3b

    .section .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF     /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF     /* 0x10: data */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_page_directories:
    .skip 4096 * 4
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {boot_stack_size}
    .global boot_stack_top
boot_stack_top:
boot_start_info:
    .long 0
    .code64
    .text
"#,
    boot_stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
