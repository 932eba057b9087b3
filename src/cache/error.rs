//! The engine's error type. Messages name the argument and the value, because
//! the C boundary hands them to hosts as they are.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value out of range, a buffer of the wrong size.
    InvalidArgument,
    /// An allocation failed; nothing was changed.
    OutOfMemory,
    /// `max_rows` or `max_memory_bytes` leaves no room; nothing was changed.
    CapacityExceeded,
    /// An unknown sink id.
    NotFound,
    /// Waiting, as the call must, would never end; nothing was changed.
    WouldDeadlock,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn invalid_argument(message: String) -> Error {
        Error {
            kind: ErrorKind::InvalidArgument,
            message,
        }
    }

    pub(crate) fn out_of_memory(what: String) -> Error {
        Error {
            kind: ErrorKind::OutOfMemory,
            message: format!("could not allocate {what}"),
        }
    }

    pub(crate) fn capacity_exceeded(message: String) -> Error {
        Error {
            kind: ErrorKind::CapacityExceeded,
            message,
        }
    }

    pub(crate) fn not_found(message: String) -> Error {
        Error {
            kind: ErrorKind::NotFound,
            message,
        }
    }

    pub(crate) fn would_deadlock(message: String) -> Error {
        Error {
            kind: ErrorKind::WouldDeadlock,
            message,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
