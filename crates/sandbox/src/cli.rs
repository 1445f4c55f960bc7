//! The sandbox binary's command line: every command of the operator, plus `sandbox`.

use clap::{Parser, Subcommand};

use azml_operator::cli::LogArgs;

use crate::command::SandboxArgs;

/// azml-sandbox: the operator's commands, plus `sandbox` (the whole system on this machine, with emulators).
#[derive(Parser, Debug)]
#[command(name = "azml-sandbox", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Operator(azml_operator::cli::Command),
    /// Run the whole system on this machine: a Kubernetes API emulator, a simulated Azure (ARM + Entra ID over
    /// HTTPS with its own CA) seeded with a subscription, resource group, storage account, key vault and principals,
    /// and the controller, until Ctrl-C. `sandbox azure ...` changes the simulated Azure of a running sandbox.
    Sandbox(Box<SandboxArgs>),
}
