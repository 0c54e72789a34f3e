//! The thread pool used by batch calls.
//!
//! One cached rayon pool per (process, thread count). After `fork()` the child has the
//! parent's memory but not its threads, so a pool made by another pid is never reused
//! (DataLoader workers fork); it is leaked rather than dropped, since its threads are gone.

use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

struct Cached {
    pid: u32,
    threads: usize,
    pool: Arc<ThreadPool>,
}

static POOL: Mutex<Option<Cached>> = Mutex::new(None);

/// Threads to use for `requested` (0 = all available cores).
pub fn resolve(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn get(threads: usize) -> Option<Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = guard.as_ref() {
        if c.pid == pid && c.threads == threads {
            return Some(c.pool.clone());
        }
    }
    let pool = Arc::new(ThreadPoolBuilder::new().num_threads(threads).build().ok()?);
    if let Some(old) = guard.replace(Cached {
        pid,
        threads,
        pool: pool.clone(),
    }) {
        if old.pid != pid {
            std::mem::forget(old);
        }
    }
    Some(pool)
}

/// Run `f` inside a pool of `threads` workers (0 = all cores); inline if one thread.
pub fn install<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let threads = resolve(threads);
    if threads <= 1 {
        return f();
    }
    match get(threads) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}
