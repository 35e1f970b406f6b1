//! A thread that does periodic work until stopped: the span processor's flusher and the
//! listener-aware reader's timer.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A named thread running `work` on a schedule that `work` itself sets.
#[derive(Debug)]
pub(crate) struct Background {
    signal: Arc<Signal>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Signal {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Background {
    /// Starts thread `name`: it waits `first`, then runs `work`, which returns how long to
    /// wait before it runs again, until [`stop`](Self::stop).
    pub(crate) fn spawn(
        name: &str,
        first: Duration,
        mut work: impl FnMut() -> Duration + Send + 'static,
    ) -> io::Result<Self> {
        let signal = Arc::new(Signal::default());
        let handle = {
            let signal = signal.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    let mut wait = first;
                    while signal.sleep(wait) {
                        wait = work();
                    }
                })?
        };
        Ok(Self {
            signal,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Stops the thread and waits for it: work under way finishes first. Later calls do
    /// nothing.
    pub(crate) fn stop(&self) {
        *self.signal.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.wake.notify_all();
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Signal {
    /// Sleeps `wait` unless stopped; whether to go on. The flag is checked before waiting, so
    /// a stop that came before this thread first took the lock does not wait out a period,
    /// and spurious wake-ups sleep again until the deadline.
    fn sleep(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stop {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            stop = self
                .wake
                .wait_timeout(stop, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
