#![no_main]
// The `update_offer` target of tidemark-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_fuzz::run(tidemark_fuzz::Target::from_name("update_offer").expect("a known target"), data);
});
