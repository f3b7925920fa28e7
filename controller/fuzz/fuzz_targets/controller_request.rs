//! Feeds arbitrary bytes to the controller's request decoding: as the body, as the values of
//! every header field and as a whole Remoting frame, for every CONTROLLER_* code and
//! BROKER_HEARTBEAT; decoded requests go through the pure state machine, which must keep its
//! invariants, and the JSON bodies must round-trip. Run with `cargo fuzz run
//! controller_request` in `controller/` (nightly, or `RUSTC_BOOTSTRAP=1`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rocketraft_controller::wire::fuzz_controller_request(data);
});
