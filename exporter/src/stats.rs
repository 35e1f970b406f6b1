//! Counters every exporter keeps about itself, readable at any time through a cloned handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A handle on an exporter's counters; clone it before handing the exporter to the SDK.
#[derive(Clone, Debug, Default)]
pub struct ExporterStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    events_written: AtomicU64,
    bytes_written: AtomicU64,
    items_written: AtomicU64,
    items_dropped_oversize: AtomicU64,
    items_dropped_write_error: AtomicU64,
    exports_skipped_no_listener: AtomicU64,
    // Errors are rare; a map behind a mutex keeps every errno without a fixed table.
    write_errors: Mutex<BTreeMap<i32, u64>>,
}

/// A point-in-time copy of an exporter's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Events the kernel accepted.
    pub events_written: u64,
    /// OTLP bytes in those events (the `buffer` field only).
    pub bytes_written: u64,
    /// Data points (metrics) or spans (traces) in those events.
    pub items_written: u64,
    /// Items dropped because even alone they exceed the buffer limit.
    pub items_dropped_oversize: u64,
    /// Items lost in events whose write failed.
    pub items_dropped_write_error: u64,
    /// Exports that did nothing because no reader listened.
    pub exports_skipped_no_listener: u64,
    /// Failed writes by errno (9, EBADF: the reader left during the export).
    pub write_errors: BTreeMap<i32, u64>,
}

impl ExporterStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        StatsSnapshot {
            events_written: c.events_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            items_written: c.items_written.load(Ordering::Relaxed),
            items_dropped_oversize: c.items_dropped_oversize.load(Ordering::Relaxed),
            items_dropped_write_error: c.items_dropped_write_error.load(Ordering::Relaxed),
            exports_skipped_no_listener: c.exports_skipped_no_listener.load(Ordering::Relaxed),
            write_errors: c
                .write_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(crate) fn written(&self, bytes: usize, items: usize) {
        self.0.events_written.fetch_add(1, Ordering::Relaxed);
        self.0
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.0
            .items_written
            .fetch_add(items as u64, Ordering::Relaxed);
    }

    pub(crate) fn write_failed(&self, errno: i32, items: usize) {
        self.0
            .items_dropped_write_error
            .fetch_add(items as u64, Ordering::Relaxed);
        *self
            .0
            .write_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(errno)
            .or_default() += 1;
    }

    pub(crate) fn oversize(&self, items: usize) {
        self.0
            .items_dropped_oversize
            .fetch_add(items as u64, Ordering::Relaxed);
    }

    /// A plain load and store rather than an atomic add: this is the whole cost of an export
    /// while nobody listens, and the SDK does not export concurrently through one exporter
    /// (if it did, a concurrent skip could go uncounted; nothing else is affected).
    #[inline]
    pub(crate) fn skipped_no_listener(&self) {
        let c = &self.0.exports_skipped_no_listener;
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}
