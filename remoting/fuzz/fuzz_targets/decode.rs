//! Feeds arbitrary bytes to the frame decoder; every decoded command must survive an
//! encode/decode round trip unchanged. Run with `cargo fuzz run decode` (nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rocketraft_remoting::codec::fuzz_decode_roundtrip(data);
});
