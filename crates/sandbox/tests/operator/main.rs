//! The operator's integration tests, in one test binary: the real controllers against the Kubernetes API emulator
//! and the ARM + Entra ID simulator, in-process (`cargo test --test operator`, one module:
//! `cargo test --test operator storage_keys::`).
//!
//! One binary links once, and its tests run in parallel threads of one process. Each test builds its own
//! [`env::TestEnv`] (`TestEnv::builder()...start().await`): its own emulators on port 0, world, configuration and
//! controller, so tests share no state but the process's log subscriber ([`common::LogCapture`] records only for
//! environments built with `capture_logs()`).
//!
//! To add a test module: put `foo.rs` beside this file, add `mod foo;` below, and in it
//! `use crate::env::{TestEnv, OPERATOR_NS, TEAM_A};` (and `crate::common::...` for the polling and event helpers).
//! Process-wide state (environment variables, the global subscriber, a fixed port) must not be changed by a test.

mod common;
mod env;

mod access;
mod computes;
mod connections;
mod controller;
mod crash_matrix;
mod exports;
mod moves;
mod online_endpoints;
mod operations;
mod real_azure;
mod scale;
mod security;
mod soak;
mod storage_keys;
mod tenancy;
