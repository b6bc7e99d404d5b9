#![no_main]
// The `blob` target of tidemark-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_fuzz::run(tidemark_fuzz::Target::from_name("blob").expect("a known target"), data);
});
