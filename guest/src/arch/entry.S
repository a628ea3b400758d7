/*
 * Kernel entry points.
 *
 *  _start        64-bit entry (the ELF entry point). Contract: long mode,
 *                paging on with the kernel image reachable at -2 GiB,
 *                interrupts off, %rdi = physical address of the PVH
 *                hvm_start_info, %rsi = boot path ('D' direct from the VMM,
 *                'F' our real-mode firmware, 'P' the PVH 32-bit entry below).
 *  pvh_start32   32-bit PVH entry (Xen PVH ABI, used by qemu -kernel):
 *                protected mode, paging off, %ebx = hvm_start_info.
 *                Builds boot page tables, enters long mode, joins _start.
 *
 * Included by arch/mod.rs with `global_asm!`: the braced names are its
 * `const` operands, from mm-core's abi module (so no other braces may
 * appear here).
 */

.set KERNEL_VMA, {KERNEL_MAP}
/* Byte offsets of the kernel map's entries in the PML4 and the PDPT. */
.set KERNEL_PML4_SLOT, ((KERNEL_VMA >> 39) & 511) * 8
.set KERNEL_PDPT_SLOT, ((KERNEL_VMA >> 30) & 511) * 8
.set BOOT_STACK_SIZE, 262144  /* the buddy allocator (zones for 8 NUMA nodes, ~27 KiB) is built and moved on it in mm::init */

/* XEN_ELFNOTE_PHYS32_ENTRY: tells PVH loaders where the 32-bit entry is. */
.pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long {XEN_ELFNOTE_PHYS32_ENTRY}
    .asciz "Xen"
    .balign 4
    .long pvh_start32 - KERNEL_VMA
.popsection

.pushsection .text.boot, "ax"
.code32
.globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi

    /* boot_pd: 512 x 2 MiB identity entries covering the first 1 GiB */
    mov $(boot_pd - KERNEL_VMA), %edi
    mov $0x83, %eax
    mov $512, %ecx
1:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b

    /* The same PD serves the identity map and the -2 GiB kernel map. */
    mov $(boot_pd - KERNEL_VMA + 3), %eax
    mov %eax, (boot_pdpt_low - KERNEL_VMA)
    mov %eax, (boot_pdpt_high - KERNEL_VMA + KERNEL_PDPT_SLOT)
    mov $(boot_pdpt_low - KERNEL_VMA + 3), %eax
    mov %eax, (boot_pml4 - KERNEL_VMA)
    mov $(boot_pdpt_high - KERNEL_VMA + 3), %eax
    mov %eax, (boot_pml4 - KERNEL_VMA + KERNEL_PML4_SLOT)

    mov $(boot_pml4 - KERNEL_VMA), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or ${CR4_PAE}, %eax
    mov %eax, %cr4
    mov ${MSR_EFER}, %ecx
    rdmsr
    or ${EFER_LME}, %eax
    wrmsr
    mov %cr0, %eax
    or ${CR0_PG_PE}, %eax
    mov %eax, %cr0
    lgdt (boot_gdt_desc32 - KERNEL_VMA)
    ljmp $0x08, $(pvh_long - KERNEL_VMA)

.code64
pvh_long:
    mov %esi, %edi              /* zero-extends: hvm_start_info PA */
    mov ${PATH_PVH}, %esi
    movabs $_start, %rax
    jmp *%rax

.globl _start
_start:
    cli
    cld
    /* First sign of life on COM1, at the entry itself: a carriage return,
     * invisible on a terminal. The boot benchmark times process start to
     * this byte (vmm/benches/boot.rs). */
    mov ${COM1}, %dx
    mov $0x0d, %al
    out %al, %dx
    lea boot_stack_top(%rip), %rsp
    mov %rdi, %r12
    mov %rsi, %r13

    /* Our own GDT at its -2 GiB address; reload every segment register. */
    lgdt boot_gdt_desc64(%rip)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    lea 2f(%rip), %rax
    push $0x08
    push %rax
    lretq
2:
    /* GS base: the boot CPU's per-CPU area (arch/percpu.rs), before any
     * Rust code asks which CPU it runs on (after the selector loads
     * above, which reset it). */
    mov ${MSR_GS_BASE}, %ecx
    lea PERCPU_AREAS(%rip), %rax
    mov %rax, %rdx
    shr $32, %rdx
    wrmsr
    /* CR4.OSFXSR | OSXMMEXCPT, as Linux: SSE instructions are legal (the
     * kernel itself is built without them; see platform.md). */
    mov %cr4, %rax
    or ${CR4_SSE}, %rax
    mov %rax, %cr4

    /* Quadwords: KVM's emulator steps rep string instructions element by
     * element (both ends are 8-byte aligned by the linker script). */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq

    mov %r12, %rdi
    mov %r13, %rsi
    and $-16, %rsp
    call kmain
3:
    hlt
    jmp 3b
.popsection

.pushsection .rodata
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_desc32:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KERNEL_VMA
.balign 8
boot_gdt_desc64:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
.popsection

.pushsection .bss.boot, "aw", @nobits
.balign 4096
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4096
boot_stack:
    .skip BOOT_STACK_SIZE
boot_stack_top:
.popsection
