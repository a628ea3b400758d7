/*
 * probe_exec(addr) -> rax = 0 if `call addr` returned (the page there
 * starts with `ret`), 1 if the fetch faulted: the #PF handler, seeing the
 * fault at the called address while a probe is active, unwinds the call
 * and resumes at probe_exec_fixup.
 */
.pushsection .text
.globl probe_exec, probe_exec_fixup
probe_exec:
    xor %eax, %eax
    call *%rdi
    ret
probe_exec_fixup:
    mov $1, %eax
    ret
.popsection
