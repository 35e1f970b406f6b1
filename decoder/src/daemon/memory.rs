//! [`MemorySource`]: an [`EventSource`] in memory, so the daemon's orchestration (drain after
//! stop, back-pressure, shutdown, self-metrics, sinks) is tested without a kernel.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ue_wire::layout;

use super::EventSource;
use crate::decode::Signal;
use crate::kernel::Event;

/// Events written to memory and read by the daemon as if from perf rings: one ring per CPU
/// holding at most `capacity` events, beyond which a write is lost and counted per CPU, as
/// the kernel does when a ring is full. Clones share the rings: give one to
/// [`run`](crate::run), write through another.
#[derive(Clone, Debug)]
pub struct MemorySource(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    written: Condvar,
}

/// One CPU's ring: each event's signal and fields.
type Ring = VecDeque<(Signal, Vec<u8>)>;

#[derive(Debug, Default)]
struct State {
    capacity: usize,
    rings: BTreeMap<u32, Ring>,
    lost: BTreeMap<u32, u64>,
    drained: u64,
}

impl MemorySource {
    /// Empty rings of `capacity` events each.
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State {
                capacity,
                ..State::default()
            }),
            written: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes an event carrying the OTLP request `otlp` of `signal` on `cpu`, as an exporter
    /// would (the layout's header, then the bytes). Returns false if the ring was full and
    /// the event was lost.
    pub fn write(&self, cpu: u32, signal: Signal, otlp: &[u8]) -> bool {
        let mut fields = layout::header(otlp.len()).to_vec();
        fields.extend_from_slice(otlp);
        self.write_fields(cpu, signal, fields)
    }

    /// Writes an event with these fields as they are, valid or not.
    pub fn write_fields(&self, cpu: u32, signal: Signal, fields: Vec<u8>) -> bool {
        let mut state = self.lock();
        let capacity = state.capacity;
        let ring = state.rings.entry(cpu).or_default();
        let kept = ring.len() < capacity;
        if kept {
            ring.push_back((signal, fields));
        } else {
            *state.lost.entry(cpu).or_default() += 1;
        }
        drop(state);
        self.0.written.notify_all();
        kept
    }

    /// Events written and not drained yet.
    pub fn pending(&self) -> usize {
        self.lock().rings.values().map(VecDeque::len).sum()
    }

    /// Events drained so far.
    pub fn drained(&self) -> u64 {
        self.lock().drained
    }

    /// Events lost because a ring was full, all CPUs.
    pub fn lost(&self) -> u64 {
        self.lock().lost.values().sum()
    }
}

impl EventSource for MemorySource {
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let state = self.lock();
        if state.rings.values().all(VecDeque::is_empty) {
            let _ = self
                .0
                .written
                .wait_timeout(state, timeout)
                .unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    fn drain(&mut self, f: &mut dyn FnMut(Signal, Event<'_>)) {
        // Taken out first: `f` may block (a full channel) while writers go on writing.
        let taken: Vec<(u32, Ring)> = {
            let mut state = self.lock();
            let taken: Vec<_> = state
                .rings
                .iter_mut()
                .map(|(cpu, ring)| (*cpu, std::mem::take(ring)))
                .collect();
            state.drained += taken.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
            taken
        };
        for (cpu, ring) in taken {
            for (signal, fields) in ring {
                f(
                    signal,
                    Event {
                        tracepoint: signal.default_tracepoint(),
                        index: Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0),
                        cpu,
                        time_ns: 0,
                        pid: std::process::id(),
                        tid: 0,
                        cgroup_id: None,
                        fields: &fields,
                        eventheader: false,
                    },
                );
            }
        }
    }

    fn lost_by_cpu(&self) -> Vec<(u32, u64)> {
        self.lock().lost.iter().map(|(c, n)| (*c, *n)).collect()
    }

    fn malformed_records(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::new()
    }
}
