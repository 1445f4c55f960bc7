//! The azml-sandbox binary: the operator's commands and `sandbox`. Parse the command line once, then dispatch.

use std::process::ExitCode;

use clap::Parser;

use azml_operator::commands;
use azml_sandbox::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { log, command } = Cli::parse();
    let body = async move {
        match command {
            Command::Operator(command) => commands::execute(command).await,
            Command::Sandbox(args) => azml_sandbox::command::main(*args).await.map_err(Into::into),
        }
    };
    commands::main_with(&log, body).await
}
