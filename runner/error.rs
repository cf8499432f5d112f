//! The runner's own failures. What the guest did is never an error: see [`crate::Outcome`].

use std::path::PathBuf;

/// Bad input from the user: a file, a format, a size, a value. The CLI exits 2 for these.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is {}; the limit is {limit} bytes ({flag})", size_text(*.size, *.limit))]
    TooLarge {
        /// What is too large, naming its source where there is one: "`big.bin`: code".
        what: String,
        /// Its size, when known (a pipe's is not: only that it went past the limit).
        size: Option<usize>,
        limit: usize,
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
pub enum Error {
    /// The caller's code, input or options are unusable (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The runner itself failed: a mapping, a pipe, the fork (exit 125).
    #[error("{what}: {source}")]
    Runner {
        what: &'static str,
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
