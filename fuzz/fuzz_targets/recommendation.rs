//! Fuzz target `recommendation`: see `fuzz/entries.rs` for what it asserts.
#![no_main]

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    entries::recommendation(concat!(env!("CARGO_MANIFEST_DIR"), "/.."), data);
});
