//! A real broker (and NameServer) on loopback, driven through the Remoting client API: send,
//! pull, routes and long polling, POP consumption, delayed and timed messages, transactions.

mod broker_e2e;
mod pop;
mod timer;
mod transaction;
