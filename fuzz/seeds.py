#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the committed perf.data fixtures: the captures
themselves, and the events' fields and OTLP buffers found in their samples, laid out the
way each target reads its input (see decoder/src/fuzzing.rs). The outputs are committed;
run it again when the fixtures change."""
import glob
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
VERSION = b"v0.19.00"


def save(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def event_fields(capture):
    """The fields (protocol, version, rel_loc, buffer) of every OTLP sample in `capture`,
    found by the version string inside uncompressed SAMPLE records."""
    offset, size = struct.unpack_from("<QQ", capture, 40)
    pos, out = offset, []
    while pos < offset + size:
        kind, _misc, rsize = struct.unpack_from("<IHH", capture, pos)
        body = capture[pos + 8 : pos + rsize]
        at = body.find(VERSION)
        if kind == 9 and at >= 4:
            start = at - 4
            rel_loc = struct.unpack_from("<I", body, start + 12)[0]
            end = start + 16 + (rel_loc & 0xFFFF) + (rel_loc >> 16)
            out.append(bytes(body[start:end]))
        pos += rsize
    return out


def eventheader_events(capture):
    """`(tracepoint name, fields)` of every EventHeader sample in `capture`: names from its
    HEADER_EVENT_DESC feature, samples as `perf record` writes them (sample_type
    IDENTIFIER|IP|TID|TIME|CPU|PERIOD|RAW)."""
    data_offset, data_size = struct.unpack_from("<QQ", capture, 40)
    features = int.from_bytes(capture[72:104], "little")
    bits = [b for b in range(256) if features >> b & 1]
    names = {}
    if 12 in bits:  # HEADER_EVENT_DESC
        pos, _ = struct.unpack_from("<QQ", capture, data_offset + data_size + 16 * bits.index(12))
        count, attr_size = struct.unpack_from("<II", capture, pos)
        pos += 8
        for _ in range(count):
            pos += attr_size
            nr_ids, name_len = struct.unpack_from("<II", capture, pos)
            pos += 8
            name = capture[pos : pos + name_len].split(b"\0")[0].decode()
            pos += name_len
            for sample_id in struct.unpack_from(f"<{nr_ids}Q", capture, pos):
                names[sample_id] = name.split(":", 1)[-1]
            pos += 8 * nr_ids
    pos, out = data_offset, []
    while pos < data_offset + data_size:
        kind, _misc, rsize = struct.unpack_from("<IHH", capture, pos)
        if kind == 9:
            sample_id = struct.unpack_from("<Q", capture, pos + 8)[0]
            name = names.get(sample_id, "")
            if "_L" in name and "K" in name.rsplit("_L", 1)[1]:
                raw_size = struct.unpack_from("<I", capture, pos + 8 + 48)[0]
                raw = capture[pos + 8 + 52 : pos + 8 + 52 + raw_size]
                out.append((name, bytes(raw[8:])))
        pos += rsize
    return out


def sample_record(fields, cpu):
    """A PERF_RECORD_SAMPLE as the live reader's perf events write it."""
    raw = struct.pack("<HBBi", 1520, 0, 0, 4242) + fields
    padded = -(-(4 + len(raw)) // 8) * 8 - 4
    body = struct.pack("<QIIQIII", 10, 4242, 4243, 1000 + cpu, cpu, 0, padded)
    body += raw + bytes(padded - len(raw))
    return struct.pack("<IHH", 9, 0, 8 + len(body)) + body


def main():
    captures = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "**", "*.perf.data"), recursive=True))
    # A million records per input: seconds per run, which would starve the fuzzer.
    captures = [c for c in captures if not c.endswith("sorter-flood.perf.data")]
    fields = []
    eventheader = []
    for path in captures:
        data = open(path, "rb").read()
        save("perf_data", os.path.basename(path), data)
        fields += event_fields(data)
        eventheader += eventheader_events(data)
    # eventheader: name_len:u8, the tracepoint's name, the event's fields.
    for i, (name, f) in enumerate(eventheader):
        save("eventheader", f"event-{i}", bytes([len(name)]) + name.encode() + f)
    for i, f in enumerate(fields):
        buffer = f[16:]
        save("event_fields", f"metrics-{i}", b"\x00" + f)
        save("event_fields", f"traces-{i}", b"\x01" + f)
        save("otlp_buffer", f"buffer-{i}", buffer)
        # batch: limits (max_items 8, max_bytes 4096), then len:u16 signal:u8 bytes.
        signal = 1 if b"span" in buffer or b"Span" in buffer else 0
        entry = struct.pack("<HB", len(buffer), signal) + buffer
        save("batch", f"twice-{i}", bytes([8]) + struct.pack("<H", 4096) + entry + entry)
        # ring: 4 KiB ring (size byte 6), starting just before the end of the data area so
        # the record wraps, one write of the record, a drain.
        record = sample_record(f, i)
        cmds = b""
        for at in range(0, len(record), 255):
            chunk = record[at : at + 255]
            cmds += bytes([0, len(chunk)]) + chunk
        save("ring", f"sample-{i}", bytes([6]) + struct.pack("<Q", 4096 - 24) + cmds + b"\x02")
    lost = struct.pack("<IHHQQ", 2, 0, 24, 10, 7)
    save("ring", "lost", bytes([0]) + struct.pack("<Q", 0) + bytes([0, len(lost)]) + lost + b"\x02")
    print(f"{len(captures)} captures, {len(fields)} events, {len(eventheader)} EventHeader events")


if __name__ == "__main__":
    main()
