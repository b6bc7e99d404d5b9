#![no_main]
// The `snapshot` target of tidemark-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_fuzz::run(tidemark_fuzz::Target::from_name("snapshot").expect("a known target"), data);
});
