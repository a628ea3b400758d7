//! Pipes (Linux's fs/pipe.c): a 64 KiB ring the two ends share. A read
//! of an empty pipe sleeps until data come or the last writer closes
//! (then it returns 0: end of file); a write to a full pipe sleeps until
//! a reader makes room; a write with no reader left fails with EPIPE
//! (Linux also sends SIGPIPE, which needs the signal machinery). Sleeping
//! is the scheduler's (`sched::sleep_current`), woken by the other end.

use crate::proc::sched;
use crate::sync::{rank, SpinLock};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Bytes a pipe holds (Linux's default: 16 pages).
pub const PIPE_SIZE: usize = 16 * 4096;
const EAGAIN: i64 = 11;
const EPIPE: i64 = 32;

struct Inner {
    buf: VecDeque<u8>,
    readers: u32,
    writers: u32,
    /// Tasks sleeping on this pipe (either end: Linux's `pipe->rd_wait`
    /// and `wr_wait` in one list; a woken task checks again).
    waiters: Vec<u64>,
}

/// A pipe.
pub struct Pipe {
    inner: SpinLock<Inner>,
}

impl core::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("pipe")
    }
}

/// One end of a pipe, counted: the last reader's or writer's drop (close,
/// exit) is what the other end sees.
#[derive(Debug)]
pub struct PipeEnd {
    pipe: Arc<Pipe>,
    /// The write end (else the read end).
    pub write: bool,
}

impl PipeEnd {
    /// A pointer identifying the pipe (for fstat's inode number).
    pub fn id(&self) -> u64 {
        Arc::as_ptr(&self.pipe) as u64
    }
}

impl Clone for PipeEnd {
    fn clone(&self) -> Self {
        self.pipe.inner.with(|i| {
            if self.write {
                i.writers += 1;
            } else {
                i.readers += 1;
            }
        });
        PipeEnd { pipe: self.pipe.clone(), write: self.write }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let waiters = self.pipe.inner.with(|i| {
            if self.write {
                i.writers -= 1;
            } else {
                i.readers -= 1;
            }
            core::mem::take(&mut i.waiters)
        });
        waiters.into_iter().for_each(sched::wake);
    }
}

/// `pipe2`: a new pipe's (read end, write end).
pub fn new_pipe() -> (PipeEnd, PipeEnd) {
    let inner = Inner { buf: VecDeque::new(), readers: 1, writers: 1, waiters: Vec::new() };
    let pipe = Arc::new(Pipe { inner: SpinLock::new_with("a pipe", rank::MISC, inner) });
    (PipeEnd { pipe: pipe.clone(), write: false }, PipeEnd { pipe, write: true })
}

/// Sleeps on `end`'s pipe (registered under its lock by the caller's
/// check). Dies here if killed meanwhile.
fn wait() {
    sched::sleep_current();
    sched::exit_if_killed();
}

/// Reads up to `max` bytes (blocking for the first unless `nonblock`);
/// empty at end of file.
pub fn read(end: &PipeEnd, max: usize, nonblock: bool) -> Result<Vec<u8>, i64> {
    let me = sched::current_pid();
    loop {
        let (got, waiters) = end.pipe.inner.with(|i| {
            if !i.buf.is_empty() {
                let n = max.min(i.buf.len());
                let out: Vec<u8> = i.buf.drain(..n).collect();
                return (Some(Ok(out)), core::mem::take(&mut i.waiters));
            }
            if i.writers == 0 || max == 0 {
                return (Some(Ok(Vec::new())), Vec::new());
            }
            if nonblock {
                return (Some(Err(-EAGAIN)), Vec::new());
            }
            if !i.waiters.contains(&me) {
                i.waiters.push(me);
            }
            (None, Vec::new())
        });
        // Writers waiting for room.
        waiters.into_iter().for_each(sched::wake);
        match got {
            Some(r) => return r,
            None => wait(),
        }
    }
}

/// Writes all of `data` (blocking while the pipe is full unless
/// `nonblock`); bytes written, or -EPIPE with no reader left.
pub fn write(end: &PipeEnd, data: &[u8], nonblock: bool) -> Result<usize, i64> {
    let me = sched::current_pid();
    let mut done = 0;
    loop {
        let (r, waiters) = end.pipe.inner.with(|i| {
            if i.readers == 0 {
                return (Some(if done > 0 { Ok(done) } else { Err(-EPIPE) }), Vec::new());
            }
            let room = PIPE_SIZE - i.buf.len();
            let n = room.min(data.len() - done);
            i.buf.extend(&data[done..done + n]);
            done += n;
            let waiters = if n > 0 { core::mem::take(&mut i.waiters) } else { Vec::new() };
            if done == data.len() {
                return (Some(Ok(done)), waiters);
            }
            if nonblock {
                return (Some(if done > 0 { Ok(done) } else { Err(-EAGAIN) }), waiters);
            }
            i.waiters.push(me);
            (None, waiters)
        });
        waiters.into_iter().for_each(sched::wake);
        match r {
            Some(r) => return r,
            None => wait(),
        }
    }
}

/// Bytes waiting in the pipe (FIONREAD, fstat's size).
pub fn pending(end: &PipeEnd) -> usize {
    end.pipe.inner.with(|i| i.buf.len())
}
