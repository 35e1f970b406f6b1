//! Support for the project's integration tests: comparing OTLP requests whatever the way
//! they were split into events, and exporters that hand one SDK export to several exporters
//! while keeping the reference conversion of it.

pub mod daemon;
pub mod eventheader;
#[cfg(feature = "kernel")]
pub mod kernel;
pub mod otlp;
pub mod receiver;
pub mod sdk;
pub mod tee;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future to completion on the current thread. The exporters' futures are ready at
/// once; anything else spins, which is fine in tests.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// A program of the workspace built next to the running test (`target/<profile>/PATH`, e.g.
/// `ue-decoder` or `examples/metrics`), for tests that run it as a user would.
pub fn built(path: &str) -> PathBuf {
    // The test runs as target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    let program = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join(path);
    assert!(
        program.exists(),
        "{} is not built: scripts/test.sh builds it (cargo build --workspace --bins --examples)",
        program.display()
    );
    program
}

/// A two-worker tokio runtime with timers and I/O, for tests that run the decoder or the
/// receiver next to synchronous code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
