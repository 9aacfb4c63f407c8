//! One error type for the crate: every failure a user can cause or meet is a value, never a panic.

use std::fmt;

/// Everything that can go wrong, with enough context to act on.
#[derive(Debug)]
pub enum Error {
    /// No GPU adapter at all (or none for the requested backends).
    NoAdapter { backends: String },
    /// `WGPU_ADAPTER_NAME` matched nothing.
    AdapterNotFound {
        wanted: String,
        available: Vec<String>,
    },
    /// The adapter lacks a limit or feature the kernels need.
    Unsupported {
        what: String,
        need: String,
        have: String,
    },
    /// A configuration value outside what the kernels can handle.
    RunConfig {
        field: String,
        value: String,
        allowed: String,
    },
    /// A validation error, out-of-memory or lost device reported by wgpu during a run.
    Gpu(String),
    /// A file could not be read or written.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A malformed or truncated input file: where (line, byte offset) and what is wrong.
    Parse {
        what: String,
        line: usize,
        offset: usize,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(field: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        Error::RunConfig {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter { backends } => write!(
                f,
                "no GPU adapter found (backends tried: {backends}).\n\
                 To run on the CPU, install a software Vulkan driver:\n    \
                 sudo apt-get install -y mesa-vulkan-drivers libvulkan1\n\
                 then run with WGPU_BACKEND=vulkan"
            ),
            Error::AdapterNotFound { wanted, available } => write!(
                f,
                "WGPU_ADAPTER_NAME={wanted:?} matches no adapter; available: {}",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            Error::Unsupported { what, need, have } => {
                write!(
                    f,
                    "the adapter does not support {what}: need {need}, have {have}"
                )
            }
            Error::RunConfig {
                field,
                value,
                allowed,
            } => {
                write!(
                    f,
                    "invalid configuration: {field} = {value}; allowed: {allowed}"
                )
            }
            Error::Gpu(msg) => write!(f, "GPU error: {msg}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Parse {
                what,
                line,
                offset,
                message,
            } => {
                write!(f, "{what}: line {line} (byte offset {offset}): {message}")
            }
        }
    }
}

impl std::error::Error for Error {}
