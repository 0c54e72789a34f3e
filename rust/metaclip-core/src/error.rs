//! One error type for the core; the Python glue maps each variant to an exception.

use thiserror::Error;

/// Everything the core reports as an error.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file, as shown to users.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line of a metadata, mapping or count file.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file, as shown to users.
        path: String,
        /// 1-based line number (0 when the file is not read by lines).
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// A language-identification model file that is corrupt, truncated or of a kind we
    /// cannot predict with.
    #[error("{path}:0: fastText model, byte {byte}: {msg}")]
    Model {
        /// The file, as shown to users.
        path: String,
        /// Where in the file reading stopped.
        byte: usize,
        /// What is wrong.
        msg: String,
    },
    /// A metadata list holds the same entry more than once.
    #[error("duplicate metadata entries ({count} in all), first ones: {examples}")]
    Duplicates {
        /// Number of repeated entries.
        count: usize,
        /// The first few, each with its ids.
        examples: String,
    },
    /// A saved file (a matcher file) that cannot be used: another format version,
    /// built from other metadata or mode, or not such a file at all. Rebuild it.
    #[error("{path}: {msg}")]
    StaleFile {
        /// The file, as shown to users.
        path: String,
        /// Why it is refused.
        msg: String,
    },
    /// An argument out of its domain (a bad mode name, offsets that do not fit, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A long call stopped because the caller asked it to (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] naming `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
