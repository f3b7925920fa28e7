//! The linearizability checker without a cluster: the `rocketraft-jepsen check` command line,
//! hand-made anomalies, the public histories of `tests/histories`, and randomized histories of
//! a simulated store.

mod cli;
mod handmade;
mod long_controller;
mod shared_histories;
mod simulated;
mod versions;
