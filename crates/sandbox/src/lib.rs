//! The sandbox: the Kubernetes API emulator, the ARM + Entra ID simulator and the operator composed into one
//! process (`azml-sandbox sandbox`, or `cargo run --release -- sandbox` from the repository root), with a seeded
//! Azure world and crash-safe state. Development and test only: the production image is `azml-operator`, which
//! contains none of this.
#![forbid(unsafe_code)]

pub mod cli;
pub mod command;
pub mod persist;
pub mod world;
