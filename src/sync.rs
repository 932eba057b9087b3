//! The primitives of the counter and sink protocols in `stats.rs`, replaced by
//! loom's under `--cfg loom` so that loom can check every interleaving of them
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`).

#[cfg(not(loom))]
mod imp {
    /// A mutex that can be a `static` also under loom, whose own cannot; for
    /// critical sections that do nothing loom models (no atomic, no other lock).
    pub(crate) use parking_lot::Mutex as ShortMutex;
    pub(crate) use parking_lot::{Mutex, RwLock};
    pub(crate) use portable_atomic::AtomicU128;
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::thread_local as protocol_thread_local;

    /// The value if `arc` was its last reference; else lets go of `arc`.
    pub(crate) fn arc_into_inner<T>(arc: Arc<T>) -> Option<T> {
        Arc::into_inner(arc)
    }

    /// Waits a little longer each time: sink calls are short, a long one (a
    /// blocking host sink) is waited for without burning a core.
    pub(crate) fn back_off(attempt: u32) {
        if attempt < 64 {
            std::hint::spin_loop();
        } else if attempt < 128 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread_local as protocol_thread_local;
    use std::sync::atomic::Ordering;

    /// std's mutex, which can be a `static`, with parking_lot's signature. Its
    /// critical sections contain no loom operation, so a model thread never
    /// switches while holding it.
    pub(crate) struct ShortMutex<T>(std::sync::Mutex<T>);

    impl<T> ShortMutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            ShortMutex(std::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// loom's mutex with parking_lot's signature.
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("no model thread panics holding it")
        }
    }

    /// loom's reader-writer lock with parking_lot's signature.
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("no model thread panics holding it")
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("no model thread panics holding it")
        }
    }

    /// loom has no 128-bit atomic; a mutex around the value is a linearizable
    /// stand-in, which is all the counter protocol assumes of it.
    pub(crate) struct AtomicU128(loom::sync::Mutex<u128>);

    impl AtomicU128 {
        pub(crate) fn new(value: u128) -> Self {
            AtomicU128(loom::sync::Mutex::new(value))
        }

        pub(crate) fn fetch_add(&self, value: u128, _: Ordering) -> u128 {
            let mut current = self.0.lock().expect("no model thread panics holding it");
            let before = *current;
            *current = before.wrapping_add(value);
            before
        }

        pub(crate) fn load(&self, _: Ordering) -> u128 {
            *self.0.lock().expect("no model thread panics holding it")
        }
    }

    /// loom's `Arc` has no `into_inner`, and `try_unwrap` is not atomic with
    /// letting go: where two holders fail it together, the second drop drops
    /// the value whole. The models do not tell that apart from taking it
    /// (their sinks' drops do not panic).
    pub(crate) fn arc_into_inner<T>(arc: Arc<T>) -> Option<T> {
        Arc::try_unwrap(arc).ok()
    }

    pub(crate) fn back_off(_attempt: u32) {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;
