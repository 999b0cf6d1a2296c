//! The error of everything in this crate: what went wrong, and whether it was
//! the caller's input (exit 2, HTTP 400) or the run (exit 1).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a flag, a spec, a value the user gave.
    #[error("{0}")]
    Usage(String),
    /// An app setting that is missing or malformed.
    #[error("setting {name}: {why}")]
    Setting { name: String, why: String },
    /// A file, socket or process operation.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else that stopped the run, described.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Setting { .. } => 2,
            _ => 1,
        }
    }

    /// An I/O failure with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Runtime(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::Runtime(s.to_string())
    }
}
