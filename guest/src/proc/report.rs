//! Figures user programs hand to the kernel's self-test (`SYS_REPORT`),
//! kept until the test reads them.

use crate::sync::{rank, SpinLock};
use alloc::string::String;
use alloc::vec::Vec;

/// (pid, key, value) in arrival order.
static REPORTS: SpinLock<Vec<(u64, String, u64)>> = SpinLock::new("the process reports", rank::MISC);

/// Sets up the store.
pub fn init() {
    REPORTS.set(Vec::new());
}

/// Stores one figure.
pub fn record(pid: u64, key: &str, value: u64) {
    let key = String::from(key);
    REPORTS.with(|r| r.push((pid, key, value)));
}

/// The last value reported under `key`.
pub fn get(key: &str) -> Option<u64> {
    REPORTS.with(|r| r.iter().rev().find(|(_, k, _)| k == key).map(|&(_, _, v)| v))
}

/// How many figures were reported under `key`.
pub fn count(key: &str) -> u64 {
    REPORTS.with(|r| r.iter().filter(|(_, k, _)| k == key).count() as u64)
}

/// Every (pid, value) reported under `key`.
pub fn all(key: &str) -> Vec<(u64, u64)> {
    REPORTS.with(|r| r.iter().filter(|(_, k, _)| k == key).map(|&(p, _, v)| (p, v)).collect())
}

/// Forgets everything (and gives the memory back).
pub fn clear() {
    let old = REPORTS.with(core::mem::take);
    drop(old);
}
