/*
 * probe_exec(addr) -> rax = 0 if `call addr` returned (the page there
 * starts with `ret`), 1 if the fetch faulted: the #PF handler finds the
 * call's return address in the exception table, unwinds the call and
 * resumes at probe_exec_fixup.
 */
.pushsection .text
.globl probe_exec, probe_exec_fixup
probe_exec:
    xor %eax, %eax
    call *%rdi
probe_exec_ret:
    ret
probe_exec_fixup:
    mov $1, %eax
    ret
/* kind 1 = EX_TYPE_CALL_FETCH (arch/traps.rs): a fetch fault at the
 * target of the call returning to probe_exec_ret. */
.pushsection __ex_table, "a"
.balign 8
.quad probe_exec_ret, probe_exec_fixup, 1
.popsection
.popsection
