//! End to end: real principald servers (in process and as processes) over real mTLS on loopback, principalctl, the
//! README walkthrough, store faults and replicas. One test binary, a module per subject; `any_store` holds what runs
//! on both stores.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod any_store;
mod cli;
mod faults;
mod readme;
mod replicas;
