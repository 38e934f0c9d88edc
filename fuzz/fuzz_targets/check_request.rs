//! Fuzz target `check_request`: see `fuzz/entries.rs` for what it asserts.
#![no_main]

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = entries::check_request(concat!(env!("CARGO_MANIFEST_DIR"), "/.."), data);
});
