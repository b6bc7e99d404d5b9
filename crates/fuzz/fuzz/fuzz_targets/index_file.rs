#![no_main]
// The `index_file` target of tidemark-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_fuzz::run(tidemark_fuzz::Target::from_name("index_file").expect("a known target"), data);
});
