//! The azml-operator binary (the production image): parse the command line once, then dispatch.

use std::process::ExitCode;

use clap::Parser;

use azml_operator::cli::Cli;
use azml_operator::commands;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { log, command } = Cli::parse();
    commands::main_with(&log, commands::execute(command)).await
}
