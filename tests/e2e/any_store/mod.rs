//! Tests that serve from either store: SQLite by default, DynamoDB Local with `PRINCIPALD_TEST_STORE=dynamodb`
//! (`scripts/test` runs this module twice, selecting it by name).

mod agent;
mod audit;
mod auth;
mod auth_layer;
mod checkpoints;
mod crl;
mod enroll;
mod hardening;
mod limits;
mod metrics;
mod revocation;
mod service;
mod signers;
mod tokens;
