#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrovisor_fuzz::target_evtchn(data));
