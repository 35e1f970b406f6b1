//! [`TracepointReader`]: the exporters' tracepoints read live through perf ring buffers.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use ue_wire::layout::{self, LayoutError, Payload};

use crate::kernel::perf::{self, CpuEvents, Tracepoint};
use crate::kernel::ring::Record;
use crate::kernel::sys::{self, Epoll};
use crate::kernel::{ReaderError, Registration, Sample, Tracefs};

/// What to read and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderConfig {
    /// The tracefs mount point; `None` finds it in `/proc/mounts`.
    pub tracefs: Option<PathBuf>,
    /// The user_events tracepoints to read, e.g. `otlp_metrics` and `otlp_traces`.
    pub tracepoints: Vec<String>,
    /// Size of each CPU's ring buffer in KiB, rounded up to a power of two of pages.
    pub ring_kib: usize,
    /// [`TracepointReader::wait`] wakes once a ring holds more than this many bytes;
    /// 0 leaves the kernel's default, half the ring. [`wait`](TracepointReader::wait)'s
    /// timeout bounds the latency either way.
    pub wakeup_bytes: usize,
    /// Register the tracepoints from the reader (see [`Registration`]), so they exist
    /// before any application starts and survive applications exiting. Otherwise an
    /// application must have registered them before [`TracepointReader::open`].
    pub register: bool,
    /// EventHeader providers to read too (`--eventheader`): their tracepoints at levels 1
    /// to 5 with keyword 1, which the upstream `opentelemetry-user-events-logs` and `-trace`
    /// crates use (registered by the reader when [`register`](Self::register) is set, so
    /// it attaches before the applications start), and every other
    /// `<provider>_L<level>K<keyword>` tracepoint that exists when the reader opens.
    pub eventheader_providers: Vec<String>,
}

impl Default for ReaderConfig {
    /// Both exporters' tracepoints, 1 MiB rings, woken by every event, registered by the
    /// reader.
    fn default() -> Self {
        Self {
            tracefs: None,
            tracepoints: vec![
                layout::METRICS_TRACEPOINT.to_owned(),
                layout::TRACES_TRACEPOINT.to_owned(),
            ],
            ring_kib: 1024,
            wakeup_bytes: 1,
            register: true,
            eventheader_providers: Vec::new(),
        }
    }
}

/// One event read from a tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event<'a> {
    /// The tracepoint's name.
    pub tracepoint: &'a str,
    /// The tracepoint's index in [`ReaderConfig::tracepoints`], or past them for the
    /// EventHeader tracepoints (see [`TracepointReader::tracepoints`]).
    pub index: usize,
    /// The CPU it was written on.
    pub cpu: u32,
    /// When it was written, in nanoseconds of CLOCK_MONOTONIC.
    pub time_ns: u64,
    /// The writer's process id.
    pub pid: u32,
    /// The writer's thread id.
    pub tid: u32,
    /// The writer's cgroup id ([`WRITER_CGROUP_ID`](crate::WRITER_CGROUP_ID)), if the
    /// kernel samples it ([`TracepointReader::samples_cgroup`]).
    pub cgroup_id: Option<u64>,
    /// The event's fields (after the 8-byte `trace_entry`), possibly followed by up to 7
    /// bytes of padding; [`payload`](Self::payload) decodes them.
    pub fields: &'a [u8],
    /// An EventHeader event ([`ReaderConfig::eventheader_providers`]), not OTLP.
    pub eventheader: bool,
}

impl<'a> Event<'a> {
    /// Decodes the fields with [`layout::decode`]: protocol, version and the OTLP bytes.
    pub fn payload(&self) -> Result<Payload<'a>, LayoutError> {
        layout::decode(self.fields)
    }
}

/// Reads the exporters' tracepoints live: one perf event per online CPU and tracepoint,
/// each CPU's events sharing one ring buffer.
///
/// Once [`open`](Self::open) returns, every event written to the tracepoints is captured
/// or counted as lost: all perf events are enabled before it returns. (A writer's enable
/// bit turns on as soon as perf *opens* an event, before it is enabled, so a writer's
/// enable bit alone does not say that the reader is ready.)
#[derive(Debug)]
pub struct TracepointReader {
    demux: Demux,
    epoll: Epoll,
    tracefs: Tracefs,
    // Dropped last: the perf events go before the registrations that keep them alive.
    registrations: Vec<Registration>,
}

impl TracepointReader {
    /// Finds tracefs, registers the tracepoints (if asked), checks their layout, opens and
    /// maps the perf events on every online CPU and enables them.
    pub fn open(config: &ReaderConfig) -> Result<Self, ReaderError> {
        let page_size = sys::page_size();
        let data_pages = perf::ring_pages(config.ring_kib, page_size)?;
        let wakeup_bytes = check_config(config, data_pages * page_size)?;

        let tracefs = Tracefs::locate(config.tracefs.as_deref())?;
        tracefs.require_user_events()?;
        let mut registrations = if config.register {
            config
                .tracepoints
                .iter()
                .map(|name| Registration::register(name))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let mut eventheader = Vec::new();
        for provider in &config.eventheader_providers {
            for level in 1..=5 {
                let name = format!("{provider}_L{level}K1");
                if config.register {
                    registrations.push(Registration::register_eventheader(&name)?);
                }
                eventheader.push(name);
            }
            for name in tracefs.eventheader_tracepoints(provider) {
                if !eventheader.contains(&name) {
                    eventheader.push(name);
                }
            }
        }
        let mut tracepoints = config
            .tracepoints
            .iter()
            .map(|name| {
                Ok(Tracepoint {
                    name: name.clone(),
                    id: tracefs.otlp_event_id(name)?,
                    eventheader: false,
                })
            })
            .collect::<Result<Vec<_>, ReaderError>>()?;
        for name in eventheader {
            if tracepoints.iter().any(|t| t.name == name) {
                continue;
            }
            tracepoints.push(Tracepoint {
                id: tracefs.eventheader_event_id(&name)?,
                name,
                eventheader: true,
            });
        }

        let epoll = Epoll::new().map_err(|source| ReaderError::Syscall {
            call: "epoll_create1",
            source,
        })?;
        let mut cpus = Vec::new();
        // The writer's cgroup where the kernel can sample it (5.7 and later).
        let mut cgroup = true;
        for cpu in perf::online_cpus()? {
            let events = match perf::open_cpu(cpu, &tracepoints, data_pages, wakeup_bytes, cgroup) {
                Err(ReaderError::PerfOpen { source, .. })
                    if cgroup && cpus.is_empty() && source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    tracing::warn!(
                        "this kernel does not sample the writer's cgroup (PERF_SAMPLE_CGROUP, \
                         Linux 5.7): events carry the writer's pid only"
                    );
                    cgroup = false;
                    perf::open_cpu(cpu, &tracepoints, data_pages, wakeup_bytes, cgroup)?
                }
                other => other?,
            };
            epoll
                .add(events.fds[0].as_fd(), u64::from(cpu))
                .map_err(|source| ReaderError::Syscall {
                    call: "epoll_ctl(EPOLL_CTL_ADD) for a ring buffer",
                    source,
                })?;
            cpus.push(events);
        }
        let demux = Demux::new(tracepoints, cpus, cgroup);
        for cpu in &demux.cpus {
            cpu.enable()?;
        }
        Ok(Self {
            demux,
            epoll,
            tracefs,
            registrations,
        })
    }

    /// Sleeps until a ring buffer has [`ReaderConfig::wakeup_bytes`] to read or `timeout`
    /// passes; returns whether one has. A signal ends the wait early with `false`. Call
    /// [`drain`](Self::drain) afterwards either way: events below the wakeup threshold
    /// are only read then.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.epoll.wait(timeout).map(|n| n > 0)
    }

    /// Calls `f` with every event read so far, CPU by CPU in time order within a CPU, and
    /// returns how many there were. Lost and malformed records are counted, not passed.
    pub fn drain(&mut self, f: impl FnMut(Event<'_>)) -> usize {
        self.demux.drain(f)
    }

    /// Events the kernel dropped because a CPU's ring was full, per CPU, so far.
    pub fn lost_by_cpu(&self) -> Vec<(u32, u64)> {
        self.demux.lost_by_cpu()
    }

    /// The sum of [`lost_by_cpu`](Self::lost_by_cpu).
    pub fn lost_total(&self) -> u64 {
        self.demux.lost_total()
    }

    /// Records that could not be read, by reason (the `reason()` labels of the ring's and
    /// [`SampleError`](crate::SampleError)'s problems, plus `unknown_sample_id` and
    /// `unexpected_common_type`), so far.
    pub fn malformed_records(&self) -> &BTreeMap<&'static str, u64> {
        &self.demux.malformed
    }

    /// The CPUs read, in order.
    pub fn cpus(&self) -> Vec<u32> {
        self.demux.cpus.iter().map(|c| c.cpu).collect()
    }

    /// The tracepoints read and their tracefs ids, in [`ReaderConfig::tracepoints`] order,
    /// then the EventHeader tracepoints of [`ReaderConfig::eventheader_providers`].
    pub fn tracepoints(&self) -> impl Iterator<Item = (&str, u64)> {
        self.demux
            .tracepoints
            .iter()
            .map(|t| (t.name.as_str(), t.id))
    }

    /// Whether the events carry their writer's cgroup id (`PERF_SAMPLE_CGROUP`, which
    /// kernels before 5.7 refuse).
    pub fn samples_cgroup(&self) -> bool {
        self.demux.cgroup
    }

    /// The tracefs in use.
    pub fn tracefs(&self) -> &Tracefs {
        &self.tracefs
    }

    /// The reader's own registrations (empty unless [`ReaderConfig::register`]).
    pub fn registrations(&self) -> &[Registration] {
        &self.registrations
    }
}

/// Checks what `open` cannot find out from the kernel; returns `wakeup_bytes` as a u32.
fn check_config(config: &ReaderConfig, ring_bytes: usize) -> Result<u32, ReaderError> {
    let problem = |p: String| Err(ReaderError::Config { problem: p });
    if config.tracepoints.is_empty() && config.eventheader_providers.is_empty() {
        return problem("no tracepoints to read".to_owned());
    }
    for provider in &config.eventheader_providers {
        if provider.is_empty()
            || provider.len() > 200
            || !provider
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return problem(format!(
                "EventHeader provider {provider:?}: a provider name is 1 to 200 ASCII letters, \
                 digits and underscores"
            ));
        }
    }
    for (i, name) in config.tracepoints.iter().enumerate() {
        if let Err(e) = layout::validate_name(name) {
            return problem(e.to_string());
        }
        if config.tracepoints[..i].contains(name) {
            return problem(format!("tracepoint {name} is listed twice"));
        }
    }
    if config.wakeup_bytes >= ring_bytes {
        return problem(format!(
            "wakeup_bytes {} must be smaller than the ring ({ring_bytes} bytes), or the reader \
             would never wake",
            config.wakeup_bytes
        ));
    }
    Ok(u32::try_from(config.wakeup_bytes).expect("smaller than the ring, which fits a u32"))
}

/// Turns the records of every CPU's ring into [`Event`]s: the part of the reader that needs
/// no kernel once the rings exist.
#[derive(Debug)]
struct Demux {
    tracepoints: Vec<Tracepoint>,
    cpus: Vec<CpuEvents>,
    /// Sample id (`PERF_EVENT_IOC_ID`) to tracepoint index.
    by_sample_id: HashMap<u64, usize>,
    malformed: BTreeMap<&'static str, u64>,
    /// The events were opened with `PERF_SAMPLE_CGROUP`.
    cgroup: bool,
}

impl Demux {
    fn new(tracepoints: Vec<Tracepoint>, cpus: Vec<CpuEvents>, cgroup: bool) -> Self {
        let by_sample_id = cpus.iter().flat_map(|c| c.ids.iter().copied()).collect();
        Self {
            tracepoints,
            cpus,
            by_sample_id,
            malformed: BTreeMap::new(),
            cgroup,
        }
    }

    fn drain(&mut self, mut f: impl FnMut(Event<'_>)) -> usize {
        let Self {
            tracepoints,
            cpus,
            by_sample_id,
            malformed,
            cgroup,
        } = self;
        let mut count = 0;
        for cpu in cpus {
            cpu.ring.drain(|record| {
                let problem = match record {
                    Record::Sample(body) => match Sample::parse(body, *cgroup) {
                        Ok(sample) => match by_sample_id.get(&sample.id) {
                            Some(&index)
                                if u64::from(sample.common_type()) == tracepoints[index].id =>
                            {
                                count += 1;
                                f(Event {
                                    tracepoint: &tracepoints[index].name,
                                    index,
                                    cpu: sample.cpu,
                                    time_ns: sample.time_ns,
                                    pid: sample.pid,
                                    tid: sample.tid,
                                    cgroup_id: sample.cgroup_id,
                                    fields: sample.fields(),
                                    eventheader: tracepoints[index].eventheader,
                                });
                                None
                            }
                            Some(_) => Some("unexpected_common_type"),
                            None => Some("unknown_sample_id"),
                        },
                        Err(e) => Some(e.reason()),
                    },
                    Record::Corrupt(c) => Some(c.reason()),
                    // Counted per CPU by the ring.
                    Record::Lost { .. } => None,
                    Record::Other { .. } => None,
                };
                if let Some(reason) = problem {
                    *malformed.entry(reason).or_default() += 1;
                }
            });
        }
        count
    }

    fn lost_by_cpu(&self) -> Vec<(u32, u64)> {
        self.cpus.iter().map(|c| (c.cpu, c.ring.lost())).collect()
    }

    /// Each ring's count saturates; so does their sum, rather than wrap to a small number.
    fn lost_total(&self) -> u64 {
        self.cpus
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.ring.lost()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ring::Ring;
    use crate::kernel::ring::tests::{lost, publish, record};
    use crate::kernel::sample::{raw_event, sample_body};
    use crate::kernel::sys::RingMemory;
    use perf_event_open_sys::bindings::PERF_RECORD_SAMPLE;

    const METRICS_ID: u64 = 1520;
    const TRACES_ID: u64 = 1521;

    /// Two CPUs, each with a metrics event (sample id 10 + cpu) and a traces event
    /// (sample id 20 + cpu) writing into one in-memory ring.
    fn demux() -> Demux {
        let tracepoints = vec![
            Tracepoint {
                name: "otlp_metrics".into(),
                id: METRICS_ID,
                eventheader: false,
            },
            Tracepoint {
                name: "otlp_traces".into(),
                id: TRACES_ID,
                eventheader: false,
            },
        ];
        let cpus = (0..2)
            .map(|cpu| CpuEvents {
                cpu,
                ring: Ring::new(RingMemory::in_memory(4096)),
                ids: vec![(10 + u64::from(cpu), 0), (20 + u64::from(cpu), 1)],
                fds: Vec::new(),
            })
            .collect();
        Demux::new(tracepoints, cpus, false)
    }

    fn sample(id: u64, common_type: u64, cpu: u32, time: u64, otlp: &[u8]) -> Vec<u8> {
        let mut fields = layout::header(otlp.len()).to_vec();
        fields.extend_from_slice(otlp);
        let raw = raw_event(common_type as u16, 4242, &fields);
        record(PERF_RECORD_SAMPLE, &sample_body(id, 4242, time, cpu, &raw))
    }

    #[derive(Debug, PartialEq)]
    struct Seen {
        tracepoint: String,
        index: usize,
        cpu: u32,
        time_ns: u64,
        pid: u32,
        otlp: Vec<u8>,
    }

    fn drain(d: &mut Demux) -> Vec<Seen> {
        let mut seen = Vec::new();
        d.drain(|e| {
            seen.push(Seen {
                tracepoint: e.tracepoint.to_owned(),
                index: e.index,
                cpu: e.cpu,
                time_ns: e.time_ns,
                pid: e.pid,
                otlp: e.payload().unwrap().buffer.to_vec(),
            })
        });
        seen
    }

    #[test]
    fn samples_are_told_apart_by_sample_id() {
        let mut d = demux();
        publish(
            &mut d.cpus[0].ring,
            &[
                sample(10, METRICS_ID, 0, 100, b"metrics"),
                sample(20, TRACES_ID, 0, 101, b"spans!"),
            ],
        );
        publish(
            &mut d.cpus[1].ring,
            &[sample(21, TRACES_ID, 1, 99, b"more spans")],
        );
        let seen = drain(&mut d);
        let brief: Vec<_> = seen
            .iter()
            .map(|s| {
                (
                    s.tracepoint.as_str(),
                    s.index,
                    s.cpu,
                    s.time_ns,
                    &s.otlp[..],
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("otlp_metrics", 0, 0, 100, &b"metrics"[..]),
                ("otlp_traces", 1, 0, 101, &b"spans!"[..]),
                ("otlp_traces", 1, 1, 99, &b"more spans"[..]),
            ]
        );
        assert!(seen.iter().all(|s| s.pid == 4242));
        assert!(d.malformed.is_empty());
        assert_eq!(d.lost_by_cpu(), [(0, 0), (1, 0)]);
    }

    #[test]
    fn loss_counts_saturate_instead_of_wrapping() {
        let mut d = demux();
        publish(&mut d.cpus[0].ring, &[lost(10, 1 << 63), lost(10, 1 << 63)]);
        publish(&mut d.cpus[1].ring, &[lost(11, u64::MAX)]);
        drain(&mut d);
        assert_eq!(d.lost_by_cpu(), [(0, u64::MAX), (1, u64::MAX)]);
        assert_eq!(d.lost_total(), u64::MAX);
    }

    #[test]
    fn lost_records_are_counted_per_cpu() {
        let mut d = demux();
        publish(&mut d.cpus[1].ring, &[lost(11, 5), lost(21, 2)]);
        publish(&mut d.cpus[0].ring, &[lost(10, 1)]);
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.lost_by_cpu(), [(0, 1), (1, 7)]);
        publish(&mut d.cpus[1].ring, &[lost(11, 3)]);
        drain(&mut d);
        assert_eq!(d.lost_by_cpu(), [(0, 1), (1, 10)]);
    }

    #[test]
    fn bad_records_are_counted_by_reason_and_good_ones_still_arrive() {
        let mut d = demux();
        let mut truncated = sample(10, METRICS_ID, 0, 1, b"x");
        truncated.truncate(8 + 20);
        truncated[6..8].copy_from_slice(&28u16.to_ne_bytes());
        let mut raw_past_end = sample(10, METRICS_ID, 0, 2, b"x");
        raw_past_end[8 + 32..8 + 36].copy_from_slice(&5000u32.to_ne_bytes());
        publish(
            &mut d.cpus[0].ring,
            &[
                sample(99, METRICS_ID, 0, 3, b"who?"),
                sample(10, TRACES_ID, 0, 4, b"wrong type"),
                truncated,
                raw_past_end,
                sample(10, METRICS_ID, 0, 5, b"fine"),
            ],
        );
        let seen = drain(&mut d);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].otlp, b"fine");
        let malformed: Vec<_> = d.malformed.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            malformed,
            [
                ("sample_raw_past_end", 1),
                ("sample_truncated", 1),
                ("unexpected_common_type", 1),
                ("unknown_sample_id", 1),
            ]
        );
    }

    #[test]
    fn a_corrupt_ring_is_counted_and_skipped() {
        let mut d = demux();
        let mut bad = sample(10, METRICS_ID, 0, 1, b"x");
        bad[6..8].copy_from_slice(&0u16.to_ne_bytes());
        publish(&mut d.cpus[0].ring, &[bad]);
        publish(&mut d.cpus[1].ring, &[sample(11, METRICS_ID, 1, 2, b"ok")]);
        let seen = drain(&mut d);
        assert_eq!(seen.len(), 1);
        assert_eq!(d.malformed.get("ring_bad_record_size"), Some(&1));
        // The corrupt ring reads normally afterwards.
        publish(
            &mut d.cpus[0].ring,
            &[sample(10, METRICS_ID, 0, 3, b"again")],
        );
        assert_eq!(drain(&mut d)[0].otlp, b"again");
    }

    #[test]
    fn the_reader_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<TracepointReader>();
    }

    #[test]
    fn config_is_checked_before_touching_the_kernel() {
        let base = ReaderConfig::default();
        let check = |c: &ReaderConfig| check_config(c, 1 << 20);
        assert_eq!(check(&base).unwrap(), 1);
        let errors = [
            ReaderConfig {
                tracepoints: vec![],
                ..base.clone()
            },
            ReaderConfig {
                tracepoints: vec!["bad name".into()],
                ..base.clone()
            },
            ReaderConfig {
                tracepoints: vec!["a".into(), "a".into()],
                ..base.clone()
            },
            ReaderConfig {
                wakeup_bytes: 1 << 20,
                ..base.clone()
            },
        ];
        for c in errors {
            let err = check(&c).unwrap_err();
            assert!(matches!(err, ReaderError::Config { .. }), "{err}");
        }
    }
}
