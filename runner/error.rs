//! The runner's own failures. What the guest did is never an error: see [`crate::Outcome`].

use std::path::PathBuf;

/// Bad input from the user: a file, a format, a size, a value. The CLI exits 2 for these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Unusable input, with the one line that says why (naming the thing and the limit).
    #[error("{0}")]
    Invalid(String),
    /// A file that could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Code, input or a value over its limit.
    #[error("{what} is {}; the limit is {limit} bytes ({flag})", size_text(*.size, *.limit))]
    TooLarge {
        /// What is too large, naming its source where there is one: "`big.bin`: code".
        what: String,
        /// Its size, when known (a pipe's is not: only that it went past the limit).
        size: Option<usize>,
        /// The limit, in bytes.
        limit: usize,
        /// The flag that sets the limit, e.g. `--max-code`.
        flag: &'static str,
    },
}

fn size_text(size: Option<usize>, limit: usize) -> String {
    match size {
        Some(size) => format!("{size} bytes"),
        None => format!("over {limit} bytes"),
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's code, input or options are unusable (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The runner itself failed: a mapping, a pipe, the fork (exit 125).
    #[error("{what}: {source}")]
    Runner {
        /// What the runner was doing, e.g. `fork`.
        what: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A runner failure with its cause.
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Error::Runner { what, source }
    }
}

impl From<crate::abi::RegisterError> for InputError {
    fn from(error: crate::abi::RegisterError) -> Self {
        InputError::Invalid(error.to_string())
    }
}
