/*
 * From the reset vector to the kernel, the historical way.
 *
 * 1. Real mode. The vCPU starts as any x86 CPU does: CS.base = 0xffff0000,
 *    IP = 0xfff0, so the first instruction is at 0xfffffff0, the top of
 *    this ROM. Segmentation is on: an address is segment * 16 + offset.
 * 2. Flat protected mode. Load a GDT whose code and data descriptors have
 *    base 0 and limit 4 GiB (as Linux's gdt_page) and set CR0.PE: from here
 *    segmentation is an identity and addresses are linear.
 * 3. Paging. Build 4-level tables (identity map of the first GiB, the
 *    same GiB at -2 GiB for the kernel image, and this ROM) with 2 MiB pages, set
 *    CR4.PAE, EFER.LME, CR3, then CR0.PG: the CPU is in long mode.
 * 4. Jump to the kernel's 64-bit entry, handed over in a block the VMM
 *    wrote at physical HANDOFF (magic, entry, hvm_start_info address).
 *
 * Progress goes to COM1 so a reader sees each step happen.
 *
 * Every address, port and register bit is one of main.rs's `const`
 * operands, from mm-core's abi module, the definition the VMM and the
 * kernel use too (so no other braces may appear in this file).
 */

.set ROM_BASE, {FIRMWARE_BASE}
.set HANDOFF, {HANDOFF}
.set HANDOFF_MAGIC, {HANDOFF_MAGIC}        /* "MMFW" */
.set HANDOFF_ENTRY, {HANDOFF_ENTRY}
.set HANDOFF_START_INFO, {HANDOFF_START_INFO}
.set PML4, {BOOT_PML4}
.set PDPT_LOW, {BOOT_PDPT_LOW}
.set PDPT_HIGH, {BOOT_PDPT_HIGH}
.set PD, {BOOT_PD}
.set PD_TOP, {BOOT_PD_TOP}                  /* maps the ROM itself, at 4 GiB - 2 MiB */
.set STACK_TOP, {FIRMWARE_STACK_TOP}
.set COM1, {COM1}
.set EXIT_PORT, {EXIT}
.set PATH_FIRMWARE, {PATH_FIRMWARE}
.set CR0_PE, {CR0_PE}
.set CR0_PG, {CR0_PG}
.set CR4_PAE, {CR4_PAE}
.set MSR_EFER, {MSR_EFER}
.set EFER_LME, {EFER_LME}
/* Byte offsets of the kernel map's (-2 GiB) entries in the PML4 and PDPT. */
.set KERNEL_PML4_SLOT, (({KERNEL_MAP} >> 39) & 511) * 8
.set KERNEL_PDPT_SLOT, (({KERNEL_MAP} >> 30) & 511) * 8

.pushsection .text.firmware, "ax"
.code16
start16:
    cli
    cld
    /* The GDT descriptor is read through CS, the one segment whose base
     * (0xffff0000) reaches this ROM in real mode. */
    lgdtl %cs:(gdt_desc - ROM_BASE)
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    /* A far jump loads CS from the GDT: now 32-bit, base 0, limit 4 GiB. */
    ljmpl $0x08, $start32

.code32
start32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %fs
    mov %eax, %gs
    mov %eax, %ss
    mov $STACK_TOP, %esp

    mov $msg_pmode, %esi
    call puts

    cmpl $HANDOFF_MAGIC, (HANDOFF)
    jne no_kernel

    /* Page tables: zero 5 pages, then fill. */
    mov $PML4, %edi
    mov $(5 * 4096 / 4), %ecx
    xor %eax, %eax
    rep stosl

    mov $PD, %edi
    mov $0x83, %eax                         /* P | RW | PS (2 MiB) */
    mov $512, %ecx
1:
    mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b

    movl $(PD + 3), (PDPT_LOW)
    movl $(PD + 3), (PDPT_HIGH + KERNEL_PDPT_SLOT) /* -2 GiB -> physical 0 */
    /* This code keeps running at 0xffffxxxx once paging is on, so the
     * last 2 MiB below 4 GiB must be identity-mapped too. */
    movl $((ROM_BASE & ~0x1fffff) + 0x83), (PD_TOP + 511 * 8)
    movl $(PD_TOP + 3), (PDPT_LOW + 3 * 8)
    movl $(PDPT_LOW + 3), (PML4)
    movl $(PDPT_HIGH + 3), (PML4 + KERNEL_PML4_SLOT)

    mov $PML4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr

    mov $msg_paging, %esi
    call puts

    mov %cr0, %eax
    or $CR0_PG, %eax                        /* long mode is active */
    mov %eax, %cr0
    ljmp $0x18, $start64

no_kernel:
    mov $msg_nokernel, %esi
    call puts
    mov $EXIT_PORT, %dx
    mov $3, %eax
    out %eax, %dx
2:
    hlt
    jmp 2b

/* Prints the NUL-terminated string at %esi on COM1. */
puts:
    mov $COM1, %dx
3:
    lodsb
    test %al, %al
    jz 4f
    out %al, %dx
    jmp 3b
4:
    ret

.code64
start64:
    mov (HANDOFF + HANDOFF_ENTRY), %rax     /* kernel 64-bit entry */
    mov (HANDOFF + HANDOFF_START_INFO), %rdi /* hvm_start_info */
    mov $PATH_FIRMWARE, %esi                /* 'F': came through firmware */
    jmp *%rax

.balign 16
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                /* 0x08: 32-bit code, base 0, 4 GiB */
    .quad 0x00cf92000000ffff                /* 0x10: data, base 0, 4 GiB */
    .quad 0x00af9a000000ffff                /* 0x18: 64-bit code */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

msg_pmode:
    .asciz "firmware: reset vector -> real mode -> flat protected mode (GDT base 0, limit 4 GiB)\r\n"
msg_paging:
    .asciz "firmware: page tables built (identity + -2 GiB, 2 MiB pages), PAE and EFER.LME on, enabling paging\r\n"
msg_nokernel:
    .asciz "firmware: no kernel handoff block; halting\r\n"
.popsection

.pushsection .resetvec, "ax"
.code16
.globl reset_vector
reset_vector:
    /* 0xfffffff0: 16 bytes to the end of the address space; jump back to
     * the start of the ROM (same segment, CS.base = 0xffff0000). */
    /* A near jump (E9 rel16): IP wraps around 64 KiB to the ROM start. */
    .byte 0xe9
    .word start16 - ROM_BASE + 0x10000 - 0xfff3
    .balign 16, 0xf4                        /* hlt */
.popsection
