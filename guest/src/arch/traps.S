/*
 * Exception entry stubs: one per vector 0-31. Each makes the stack look
 * the same (an error code, then the vector) and joins trap_common, which
 * saves every general register into a TrapFrame, calls the Rust handler
 * with a pointer to it, and returns with iretq to whatever RIP the handler
 * left in the frame (a fix-up may move it).
 */

/*
 * Call-frame information, so gdb unwinds from a handler through the entry
 * into the interrupted code (kernel or user). Each entry is a signal frame
 * (the interrupted RIP is the faulting instruction, not a return address)
 * whose CFA is the address just past the hardware frame's SS slot; the
 * interrupted RIP and RSP are read from the frame, the general registers
 * from the TrapFrame as they are pushed. Offsets are from that CFA:
 *   ss -8, rsp -16, rflags -24, cs -32, rip -40, error -48, vector -56,
 *   r15 -64 ... rax -176 (TrapFrame order).
 */
.macro CFI_HW_FRAME cfa
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, \cfa
    .cfi_offset %rip, -40
    .cfi_offset %rsp, -16
.endm

.macro TRAP_NOERR vec
trap_\vec:
    CFI_HW_FRAME 40
    push $0
    .cfi_adjust_cfa_offset 8
    push $\vec
    .cfi_adjust_cfa_offset 8
    jmp trap_common
    .cfi_endproc
.endm

.macro TRAP_ERR vec
trap_\vec:
    CFI_HW_FRAME 48
    push $\vec
    .cfi_adjust_cfa_offset 8
    jmp trap_common
    .cfi_endproc
.endm

/* push REG with its save slot recorded (CFA offset given). */
.macro PUSH_CFI reg, off
    push %\reg
    .cfi_adjust_cfa_offset 8
    .cfi_offset %\reg, \off
.endm

.macro POP_CFI reg
    pop %\reg
    .cfi_adjust_cfa_offset -8
    .cfi_same_value %\reg
.endm

.pushsection .text
TRAP_NOERR 0
TRAP_NOERR 1
TRAP_NOERR 2
TRAP_NOERR 3
TRAP_NOERR 4
TRAP_NOERR 5
TRAP_NOERR 6
TRAP_NOERR 7
TRAP_ERR 8
TRAP_NOERR 9
TRAP_ERR 10
TRAP_ERR 11
TRAP_ERR 12
TRAP_ERR 13
TRAP_ERR 14
TRAP_NOERR 15
TRAP_NOERR 16
TRAP_ERR 17
TRAP_NOERR 18
TRAP_NOERR 19
TRAP_NOERR 20
TRAP_ERR 21
TRAP_NOERR 22
TRAP_NOERR 23
TRAP_NOERR 24
TRAP_NOERR 25
TRAP_NOERR 26
TRAP_NOERR 27
TRAP_NOERR 28
TRAP_ERR 29
TRAP_ERR 30
TRAP_NOERR 31

/* Device interrupts (proc/: the local APIC timer, the APIC's spurious
 * vector): the same frame, handled by proc::interrupt. */
TRAP_NOERR 32
TRAP_NOERR 255
TRAP_NOERR 240
TRAP_NOERR 241
/* The virtio block device (drivers/virtio/blk.rs), through the IOAPIC. */
TRAP_NOERR 48

/* Also the tail of the syscall entry (arch/syscall.rs). */
.globl trap_common
trap_common:
    CFI_HW_FRAME 56
    PUSH_CFI r15, -64
    PUSH_CFI r14, -72
    PUSH_CFI r13, -80
    PUSH_CFI r12, -88
    PUSH_CFI r11, -96
    PUSH_CFI r10, -104
    PUSH_CFI r9, -112
    PUSH_CFI r8, -120
    PUSH_CFI rbp, -128
    PUSH_CFI rdi, -136
    PUSH_CFI rsi, -144
    PUSH_CFI rdx, -152
    PUSH_CFI rcx, -160
    PUSH_CFI rbx, -168
    PUSH_CFI rax, -176
    mov %rsp, %rdi
    cld
    call trap_handler
    .cfi_endproc
/* Restores a TrapFrame on the stack and returns with iretq; a new task's
 * first run enters here too (usermode.rs, ret_to_user). */
.globl trap_return
trap_return:
    CFI_HW_FRAME 176
    .cfi_offset %r15, -64
    .cfi_offset %r14, -72
    .cfi_offset %r13, -80
    .cfi_offset %r12, -88
    .cfi_offset %r11, -96
    .cfi_offset %r10, -104
    .cfi_offset %r9, -112
    .cfi_offset %r8, -120
    .cfi_offset %rbp, -128
    .cfi_offset %rdi, -136
    .cfi_offset %rsi, -144
    .cfi_offset %rdx, -152
    .cfi_offset %rcx, -160
    .cfi_offset %rbx, -168
    .cfi_offset %rax, -176
    POP_CFI rax
    POP_CFI rbx
    POP_CFI rcx
    POP_CFI rdx
    POP_CFI rsi
    POP_CFI rdi
    POP_CFI rbp
    POP_CFI r8
    POP_CFI r9
    POP_CFI r10
    POP_CFI r11
    POP_CFI r12
    POP_CFI r13
    POP_CFI r14
    POP_CFI r15
    add $16, %rsp
    .cfi_adjust_cfa_offset -16
    iretq
    .cfi_endproc

/*
 * probe_read_u64(addr) -> rax = value, rdx = 0 on success; a fault at
 * probe_read_insn is fixed up by the #PF/#GP handler through the
 * exception table (it jumps to probe_read_fixup with rdx = 1), so a test
 * can touch an address that should fault and see that it did.
 */
.globl probe_read_u64, probe_read_insn, probe_read_fixup
probe_read_u64:
    xor %edx, %edx
probe_read_insn:
    mov (%rdi), %rax
    ret
probe_read_fixup:
    mov $1, %edx
    xor %eax, %eax
    ret
/* Exception-table entries (arch/traps.rs ExTableEntry; kind 0 = EX_TYPE_FAULT). */
.pushsection __ex_table, "a"
.balign 8
.quad probe_read_insn, probe_read_fixup, 0
.quad probe_write_insn, probe_write_fixup, 0
.popsection

/* probe_write_u64(addr, value): rax = 0 on success, 1 if it faulted. */
.globl probe_write_u64, probe_write_insn, probe_write_fixup
probe_write_u64:
    xor %eax, %eax
probe_write_insn:
    mov %rsi, (%rdi)
    ret
probe_write_fixup:
    mov $1, %eax
    ret
.popsection

.pushsection .rodata
.balign 8
.globl trap_table
trap_table:
    .quad trap_0, trap_1, trap_2, trap_3, trap_4, trap_5, trap_6, trap_7
    .quad trap_8, trap_9, trap_10, trap_11, trap_12, trap_13, trap_14, trap_15
    .quad trap_16, trap_17, trap_18, trap_19, trap_20, trap_21, trap_22, trap_23
    .quad trap_24, trap_25, trap_26, trap_27, trap_28, trap_29, trap_30, trap_31
.globl irq_table
irq_table:
    .quad trap_32, trap_255, trap_48, trap_240, trap_241
.popsection
