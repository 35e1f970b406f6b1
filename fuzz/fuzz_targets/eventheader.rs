//! `ue_decoder::fuzzing::eventheader` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ue_decoder::fuzzing::eventheader(data));
