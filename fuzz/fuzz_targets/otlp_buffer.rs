//! `ue_decoder::fuzzing::otlp_buffer` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ue_decoder::fuzzing::otlp_buffer(data));
