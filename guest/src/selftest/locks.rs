//! Self-tests of the kernel's spinlock (sync.rs): the guard releases, a
//! lock taken twice on one CPU and an out-of-order acquisition are caught
//! (through `lock_checked`, which reports instead of panicking, so the run
//! goes on), irq-safe locks mask interrupts; and per-CPU bookkeeping.

use super::check;
use crate::arch::percpu::this_cpu;
use crate::detail;
use crate::sync::{rank, LockError, SpinLock};

static OUTER: SpinLock<u64> = SpinLock::new_with("the self-test outer lock", rank::TEST_OUTER, 0);
static INNER: SpinLock<u64> = SpinLock::new_with("the self-test inner lock", rank::TEST_INNER, 0);
static IRQ: SpinLock<u64> = SpinLock::new_irqsafe("the self-test irq-safe lock", rank::TEST_INNER);

/// The locks group.
pub fn locks() {
    let before = this_cpu().locks_held();
    let g = OUTER.lock();
    let busy = OUTER.try_lock().is_none();
    let during = this_cpu().locks_held();
    drop(g);
    let free = OUTER.try_with(|v| *v += 1).is_some();
    check(
        "locks",
        "guard_releases",
        busy && free && during == before + 1 && this_cpu().locks_held() == before,
        &detail!(
            "try_lock refused while held, succeeded after the guard dropped; locks held {} -> {} -> {}",
            crate::fmt::Dec(before as u64),
            crate::fmt::Dec(during as u64),
            crate::fmt::Dec(this_cpu().locks_held() as u64)
        ),
    );

    // A second acquisition on the same CPU: `lock` would panic with this
    // message (with one CPU the alternative is spinning for ever).
    let g = INNER.lock();
    let again = INNER.lock_checked().err();
    drop(g);
    let mut msg = crate::fmt::StackString::<160>::new();
    if let Some(e) = again {
        let _ = core::fmt::Write::write_fmt(&mut msg, format_args!("{}", e));
    }
    check(
        "locks",
        "self_deadlock_detected",
        again == Some(LockError::SelfDeadlock { name: INNER.name() }) && msg.as_str().contains(INNER.name()),
        &detail!("{}", msg.as_str()),
    );

    // Inner then outer is against the order; outer then inner is fine.
    let g = INNER.lock();
    let wrong = OUTER.lock_checked().err();
    drop(g);
    let g = OUTER.lock();
    let right = INNER.lock_checked().map(drop).is_ok();
    drop(g);
    let mut msg = crate::fmt::StackString::<200>::new();
    if let Some(e) = wrong {
        let _ = core::fmt::Write::write_fmt(&mut msg, format_args!("{}", e));
    }
    check(
        "locks",
        "lock_order_checked",
        matches!(wrong, Some(LockError::Order { name, .. }) if name == OUTER.name()) && right,
        &detail!("{}; outer then inner allowed", msg.as_str()),
    );

    // An irq-safe lock masks interrupts while held and restores the flag
    // after. Interrupts are enabled for the few instructions this takes (a
    // timer tick landing in ring 0 is only counted).
    IRQ.set(0);
    crate::arch::irq_restore(mm_core::abi::cpu::RFLAGS_IF);
    let on_before = crate::arch::irqs_enabled();
    let g = IRQ.lock();
    let on_inside = crate::arch::irqs_enabled();
    drop(g);
    let on_after = crate::arch::irqs_enabled();
    let _ = crate::arch::irq_save();
    check(
        "locks",
        "irqsave_masks_interrupts",
        on_before && !on_inside && on_after,
        "interrupts off while an irq-safe lock is held, back on after",
    );
    check(
        "locks",
        "none_held_after",
        this_cpu().locks_held() == 0,
        "the self-test (and the kernel around it) holds no lock between checks",
    );
}
