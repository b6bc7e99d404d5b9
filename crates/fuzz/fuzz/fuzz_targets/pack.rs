#![no_main]
// The `pack` target of tidemark-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_fuzz::run(tidemark_fuzz::Target::from_name("pack").expect("a known target"), data);
});
