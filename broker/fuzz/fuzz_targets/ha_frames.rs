//! Feeds arbitrary bytes to the HA frame parsers (slave handshake, master handshake and its
//! epoch entries, slave report, a stream of transfer frames); nothing may panic and whatever
//! parses must encode back to the same bytes. Run with `cargo fuzz run ha_frames` in
//! `broker/` (nightly, or `RUSTC_BOOTSTRAP=1`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rocketraft_broker::ha::fuzz_ha_frames(data);
});
