//! The azml-operator binary: parse the command line once, then dispatch.

use std::process::ExitCode;

use clap::Parser;

use azml_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    azml_operator::tls_provider::install();
    if let Err(err) = azml_operator::telemetry::init(&cli.log) {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Crd => azml_operator::api::crds_yaml().map(|yaml| print!("{yaml}")).map_err(Into::into),
        Command::Run(args) => azml_operator::run::run(*args).await.map_err(Into::into),
        Command::Plan(args) => azml_operator::run::plan(*args).await.map_err(Into::into),
        Command::Sandbox(args) => azml_operator::sandbox::command::main(*args).await.map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", azml_operator::reconciler::error::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
