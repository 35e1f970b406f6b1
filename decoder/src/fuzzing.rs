//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each takes arbitrary
//! bytes, drives one layer that reads untrusted input the way the decoder does, and panics
//! only when an invariant breaks (a lost item, a count that went down, a read outside
//! what was published). Not part of the decoder's API.

use std::path::Path;
use std::time::{Duration, Instant};

use ue_wire::layout;

use crate::batch::{Batch, BatchConfig, Batcher, Incoming};
use crate::capture::PerfDataReader;
use crate::decode::{
    EventHeaderDecoder, Request, Signal, TracepointNames, decode_event, is_eventheader_tracepoint,
    otlp_json_line, validate_request,
};
use crate::kernel::{Record, Ring, RingMemory, Sample};

/// A perf.data file: opened and read to the end or the first error, as `decode` does.
pub fn perf_data(bytes: &[u8]) {
    let names = TracepointNames::default();
    let Ok(mut reader) =
        PerfDataReader::from_bytes(bytes.to_vec(), Path::new("fuzz.perf.data"), &names)
    else {
        return;
    };
    let mut lost = 0;
    while let Ok(Some(event)) = reader.next_event() {
        let line = otlp_json_line(&event.request);
        assert!(!line.contains('\n'));
        let now = reader.stats().lost_total();
        assert!(now >= lost, "the loss count went down from {lost} to {now}");
        lost = now;
    }
    let _ = reader.stats().to_string();
}

/// An event's fields (`u32 protocol; char[8] version; __rel_loc u8[] buffer`), first byte
/// choosing the signal.
pub fn event_fields(bytes: &[u8]) {
    let Some((&signal, fields)) = bytes.split_first() else {
        return;
    };
    let signal = if signal & 1 == 0 {
        Signal::Metrics
    } else {
        Signal::Traces
    };
    if let Ok(request) = decode_event(signal, fields) {
        assert_eq!(request.signal(), signal);
        let _ = otlp_json_line(&request);
    }
}

/// An EventHeader event as the live reader hands it to the decoder: `name_len:u8`, the
/// tracepoint's name (`<provider>_L<level>K<keyword>`, as lossy UTF-8), then the event's
/// fields. Decoded twice by one decoder (its enumerator state is reused between events),
/// which must give the same request both times: a request whose items survive an encoding
/// round trip and the OTLP check the forwarding path applies.
pub fn eventheader(bytes: &[u8]) {
    let Some((&name_len, rest)) = bytes.split_first() else {
        return;
    };
    let (name, fields) = rest.split_at(usize::from(name_len).min(rest.len()));
    let name = String::from_utf8_lossy(name);
    // The reader only opens tracepoints with such names; others are decoded all the same.
    let _ = is_eventheader_tracepoint(&name);
    let mut decoder = EventHeaderDecoder::new();
    let first = decoder.decode(&name, fields);
    let again = decoder.decode(&name, fields);
    match (first, again) {
        (Ok(first), Ok(again)) => {
            // Compared encoded: a NaN field is not equal to itself.
            let encoded = first.request.encode_to_vec();
            assert_eq!(
                encoded,
                again.request.encode_to_vec(),
                "a reused decoder changed its mind"
            );
            assert_eq!(first.unmapped, again.unmapped);
            let request = first.request;
            assert_eq!(
                validate_request(request.signal(), &encoded),
                Ok(request.items()),
                "a decoded event encodes to a request the forwarding path rejects"
            );
            let _ = otlp_json_line(&request);
        }
        (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
        (a, b) => panic!("decoding the same event twice gave {a:?} then {b:?}"),
    }
}

/// An OTLP buffer inside a well-formed event of each signal.
pub fn otlp_buffer(buffer: &[u8]) {
    let Ok(len) = u16::try_from(buffer.len()) else {
        return;
    };
    let mut fields = layout::header(usize::from(len)).to_vec();
    fields.extend_from_slice(buffer);
    for signal in [Signal::Metrics, Signal::Traces] {
        if let Ok(request) = decode_event(signal, &fields) {
            assert!(
                request.items() > 0,
                "an empty request must be reported as empty"
            );
            let _ = otlp_json_line(&request);
        }
    }
}

/// A perf ring on fake mmap pages written by a hostile kernel (or a corrupted page):
/// bytes at the head, heads published anywhere, drains in between. Every sample is parsed
/// as the live reader does.
///
/// Input: one byte for the ring's size (64 B to 8 KiB), eight for the starting position,
/// then commands: `0 len:u8 bytes` writes at the head and publishes them, `1 head:u64`
/// publishes an arbitrary head, `2` drains.
pub fn ring(bytes: &[u8]) {
    let Some((&size, rest)) = bytes.split_first() else {
        return;
    };
    let Some((start, mut commands)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let data_size = 64usize << (size % 8);
    let mut memory = RingMemory::in_memory(data_size);
    let start = u64::from_ne_bytes(*start);
    memory.kernel_reset(start);
    let mut ring = Ring::new(memory);
    let mut head = start;
    let mut lost = 0;
    while let Some((&command, rest)) = commands.split_first() {
        commands = rest;
        match command % 3 {
            0 => {
                let Some((&len, rest)) = commands.split_first() else {
                    break;
                };
                let len = usize::from(len).min(rest.len());
                let (data, rest) = rest.split_at(len);
                commands = rest;
                let memory = ring_memory(&mut ring);
                memory.kernel_write(head, data);
                head = head.wrapping_add(len as u64);
                memory.kernel_publish(head);
            }
            1 => {
                let Some((new_head, rest)) = commands.split_first_chunk::<8>() else {
                    break;
                };
                commands = rest;
                head = u64::from_ne_bytes(*new_head);
                ring_memory(&mut ring).kernel_publish(head);
            }
            _ => drain(&mut ring, data_size),
        }
        assert!(ring.lost() >= lost, "the loss count went down");
        lost = ring.lost();
    }
    drain(&mut ring, data_size);
}

fn ring_memory(ring: &mut Ring) -> &mut RingMemory {
    ring.memory_mut()
}

fn drain(ring: &mut Ring, data_size: usize) {
    ring.drain(|record| match record {
        Record::Sample(body) => {
            assert!(body.len() < data_size);
            if let Ok(sample) = Sample::parse(body, false) {
                let _ = decode_event(Signal::Metrics, sample.fields());
            }
        }
        Record::Lost { .. } | Record::Other { .. } | Record::Corrupt(_) => {}
    });
}

/// Batching: OTLP buffers (`len:u16 signal:u8 bytes`) that decode are pushed into a
/// batcher with limits (and whether it merges) from the first bytes, as checked bytes or
/// decoded; every item must come out exactly once, in batches that check and decode to
/// their item counts.
pub fn batch(bytes: &[u8]) {
    let Some((limits, mut rest)) = bytes.split_first_chunk::<3>() else {
        return;
    };
    let config = BatchConfig {
        max_items: u64::from(limits[0]),
        max_bytes: usize::from(u16::from_ne_bytes([limits[1], limits[2]])),
        max_delay: Duration::from_millis(200),
        merge: limits[0] & 1 == 1,
    };
    let mut batcher = Batcher::new(config);
    let start = Instant::now();
    let (mut items_in, mut items_out) = (0u64, 0u64);
    let mut step = 0;
    while let Some((head, tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]])).min(tail.len());
        let (buffer, tail) = tail.split_at(len);
        rest = tail;
        let signal = Signal::ALL[usize::from(head[2] % 3)];
        let Ok(request) = Request::decode(signal, buffer) else {
            continue;
        };
        items_in += request.items();
        let incoming = if head[2] & 4 == 0 {
            Incoming::Decoded(request)
        } else {
            let items = validate_request(signal, buffer).expect("decodes, so it checks");
            assert_eq!(items, request.items());
            Incoming::Protobuf {
                signal,
                bytes: buffer.to_vec(),
                items,
            }
        };
        step += 1;
        let now = start + Duration::from_millis(50 * step);
        for batch in batcher
            .push(incoming, now)
            .into_iter()
            .chain(batcher.poll(now))
        {
            check(&batch);
            items_out += batch.items;
        }
    }
    for batch in batcher.flush() {
        check(&batch);
        items_out += batch.items;
    }
    assert_eq!(items_in, items_out, "batching lost or invented items");
}

fn check(batch: &Batch) {
    assert_eq!(batch.bytes, batch.protobuf().len());
    assert_eq!(
        validate_request(batch.signal(), batch.protobuf()),
        Ok(batch.items)
    );
    assert_eq!(
        batch.request().expect("a batch decodes").items(),
        batch.items
    );
}
