//! Errors of building an exporter.

use crate::layout::LayoutError;

/// Why an exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The buffer limit is above what user_events can carry at all.
    #[error(
        "max buffer size {requested} exceeds {max} bytes, the most a user_events event can carry \
         (and anything above 8168 bytes reaches ftrace readers only, never perf)"
    )]
    BufferTooLarge {
        /// The size asked for.
        requested: usize,
        /// The largest size accepted.
        max: usize,
    },
    /// The buffer limit is too small to hold a request.
    #[error("max buffer size {requested} is below the minimum of {min} bytes")]
    BufferTooSmall {
        /// The size asked for.
        requested: usize,
        /// The smallest size accepted.
        min: usize,
    },
    /// A delay of zero would write every span in an event of its own.
    #[error("max delay must be above zero")]
    ZeroDelay,
    /// The background thread could not be started.
    #[error("could not start the background thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The tracepoint name is not usable.
    #[error(transparent)]
    InvalidName(#[from] LayoutError),
}
