//! The fuzz targets (`ue_decoder::fuzzing`, run under libFuzzer by `scripts/fuzz.sh`) on
//! stable Rust, bounded: every seed in `fuzz/seeds/TARGET/` and every input committed under
//! `fuzz/regressions/TARGET/` (crashes the fuzzers found), then a fixed number of
//! deterministic mutations of each seed. A short, repeatable stand-in for the long
//! libFuzzer runs, so that CI exercises every target on every change.

use std::fs;
use std::path::{Path, PathBuf};

/// Mutations tried per seed and target.
const MUTATIONS: usize = 200;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files.sort();
    files
}

/// xorshift64*: deterministic, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Sizes and counts a hostile writer would try.
const INTERESTING: [u64; 10] = [
    0,
    1,
    7,
    8,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            data.push(0);
        }
        let at = rng.below(data.len());
        match rng.below(5) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.next() as u8,
            2 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].to_ne_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(data.len());
                data[at..end].copy_from_slice(&value[..end - at]);
            }
            3 => data.truncate(at),
            _ => {
                let len = rng.below(64).min(data.len() - at);
                let chunk = data[at..at + len].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
        }
    }
    data
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds for {target}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (path, bytes) in &inputs {
        run(bytes);
        for i in 0..MUTATIONS {
            let input = mutate(&mut rng, bytes);
            let result = std::panic::catch_unwind(|| run(&input));
            assert!(
                result.is_ok(),
                "{target}: mutation {i} of {} panicked; input: {input:?}",
                path.display()
            );
        }
    }
}

#[test]
fn perf_data() {
    replay("perf_data", ue_decoder::fuzzing::perf_data);
}

#[test]
fn event_fields() {
    replay("event_fields", ue_decoder::fuzzing::event_fields);
}

#[test]
fn otlp_buffer() {
    replay("otlp_buffer", ue_decoder::fuzzing::otlp_buffer);
}

#[test]
fn ring() {
    replay("ring", ue_decoder::fuzzing::ring);
}

#[test]
fn batch() {
    replay("batch", ue_decoder::fuzzing::batch);
}

#[test]
fn eventheader() {
    replay("eventheader", ue_decoder::fuzzing::eventheader);
}
