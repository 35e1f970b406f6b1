//! `ue_decoder::fuzzing::event_fields` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ue_decoder::fuzzing::event_fields(data));
