//! Without a server: the store conformance suites on both backends, property tests of the parsers, what requests
//! cost the store, and terraform/ checked against the code.

#[path = "../common/mod.rs"]
mod common;

mod costs;
mod layers;
mod properties;
mod store_dynamodb;
mod store_sqlite;
mod terraform;
mod terraform_keys;
