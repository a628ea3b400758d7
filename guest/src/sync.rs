//! The one primitive for kernel-global mutable state while the kernel runs
//! on a single CPU with interrupts off during initialisation.

use core::cell::UnsafeCell;

/// A static the boot CPU initialises and then owns.
pub struct BootCell<T>(UnsafeCell<T>);

// SAFETY: the kernel runs on one CPU; every `get_mut` caller documents why
// no other reference is live (boot-time init, or interrupts disabled).
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    /// Wraps a value.
    pub const fn new(v: T) -> Self {
        BootCell(UnsafeCell::new(v))
    }

    /// Exclusive access.
    ///
    /// # Safety
    /// No other reference to the value may be live.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusivity.
        unsafe { &mut *self.0.get() }
    }

    /// Shared access.
    ///
    /// # Safety
    /// No mutable reference may be live.
    pub unsafe fn get(&self) -> &T {
        // SAFETY: the caller guarantees no concurrent mutation.
        unsafe { &*self.0.get() }
    }
}

/// Kernel-global state behind a re-entrancy check, used with interrupts
/// masked: `with` hands out `&mut T` once at a time, and a nested `with` on
/// the same cell (say, the heap asked for memory while the heap is busy)
/// is a kernel bug that panics with the cell's name instead of aliasing.
pub struct KCell<T> {
    name: &'static str,
    busy: core::sync::atomic::AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: one CPU, and `busy` serialises every access to `value`.
unsafe impl<T> Sync for KCell<T> {}

impl<T> KCell<T> {
    /// An empty cell.
    pub const fn new(name: &'static str) -> Self {
        KCell { name, busy: core::sync::atomic::AtomicBool::new(false), value: UnsafeCell::new(None) }
    }

    /// Stores the value (once, at init).
    pub fn set(&self, v: T) {
        self.with_slot(|slot| *slot = Some(v));
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        use core::sync::atomic::Ordering;
        let flags = crate::arch::irq_save();
        if self.busy.swap(true, Ordering::Acquire) {
            crate::arch::irq_restore(flags);
            panic!("re-entrant use of {}", self.name);
        }
        // SAFETY: `busy` was false and is now true: no other reference to
        // the value exists until it is cleared below.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        crate::arch::irq_restore(flags);
        r
    }

    /// Runs `f` on the value; panics if the cell is empty or already in use.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let name = self.name;
        self.with_slot(|slot| match slot {
            Some(v) => f(v),
            None => panic!("{} used before it was initialised", name),
        })
    }

    /// Like `with`, but `None` when empty or busy (fault handlers use this:
    /// they may interrupt a holder).
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        use core::sync::atomic::Ordering;
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        self.with_slot(|slot| slot.as_mut().map(f))
    }
}
