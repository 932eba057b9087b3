//! Tests make one of the calling thread's fallible allocations fail, as it
//! does when the system is out of memory, to check that a failed allocation
//! changes nothing. `HugePageArray::zeroed`, `HugePageVec::grow_to` (when it
//! needs a larger mapping) and the engine's reservations (`cache::fallible`)
//! ask it first.

use std::cell::Cell;

thread_local! {
    /// Allocations of this thread to let through before one fails.
    static SUCCESSES_BEFORE_FAILURE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Lets this thread's next `successes` fallible allocations through and makes
/// the one after fail, until the returned guard is dropped.
#[must_use]
pub(crate) fn arm(successes: usize) -> Armed {
    SUCCESSES_BEFORE_FAILURE.set(Some(successes));
    Armed
}

/// Disarms when dropped.
pub(crate) struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        SUCCESSES_BEFORE_FAILURE.set(None);
    }
}

/// Whether this thread's allocation is the one to fail; disarms when so.
pub(crate) fn take() -> bool {
    let left = SUCCESSES_BEFORE_FAILURE.get();
    SUCCESSES_BEFORE_FAILURE.set(left.and_then(|left| left.checked_sub(1)));
    left == Some(0)
}
