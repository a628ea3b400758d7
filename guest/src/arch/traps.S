/*
 * Exception entry stubs: one per vector 0-31. Each makes the stack look
 * the same (an error code, then the vector) and joins trap_common, which
 * saves every general register into a TrapFrame, calls the Rust handler
 * with a pointer to it, and returns with iretq to whatever RIP the handler
 * left in the frame (a fix-up may move it).
 */

.macro TRAP_NOERR vec
trap_\vec:
    push $0
    push $\vec
    jmp trap_common
.endm

.macro TRAP_ERR vec
trap_\vec:
    push $\vec
    jmp trap_common
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
/* The virtio block device (drivers/virtio/blk.rs), through the IOAPIC. */
TRAP_NOERR 48

/* Also the tail of the syscall entry (arch/syscall.rs). */
.globl trap_common
trap_common:
    push %r15
    push %r14
    push %r13
    push %r12
    push %r11
    push %r10
    push %r9
    push %r8
    push %rbp
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rbx
    push %rax
    mov %rsp, %rdi
    cld
    call trap_handler
/* Restores a TrapFrame on the stack and returns with iretq; a new task's
 * first run enters here too (usermode.rs, ret_to_user). */
.globl trap_return
trap_return:
    pop %rax
    pop %rbx
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    pop %rbp
    pop %r8
    pop %r9
    pop %r10
    pop %r11
    pop %r12
    pop %r13
    pop %r14
    pop %r15
    add $16, %rsp
    iretq

/*
 * probe_read_u64(addr) -> rax = value, rdx = 0 on success; a fault at
 * probe_read_insn is fixed up by the #PF/#GP handler (it jumps to
 * probe_read_fixup with rdx = 1), so a test can touch an address that
 * should fault and see that it did.
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
    .quad trap_32, trap_255, trap_48
.popsection
