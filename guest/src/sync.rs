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
