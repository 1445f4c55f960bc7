//! What each command of the operator does, shared by the production binary and the sandbox's binary (which adds
//! `sandbox` to these).

use std::error::Error;
use std::process::ExitCode;

use crate::cli::{Command, LogArgs};

/// Runs one command to its end.
pub async fn execute(command: Command) -> Result<(), Box<dyn Error>> {
    match command {
        Command::Crd => crate::api::crds_yaml().map(|yaml| print!("{yaml}")).map_err(Into::into),
        Command::Run(args) => crate::run::run(*args).await.map_err(Into::into),
        Command::Plan(args) => crate::plan_command::plan(*args).await.map_err(Into::into),
    }
}

/// The process prologue and epilogue of a binary: TLS provider and logging first, then `body`; an error is printed
/// with its causes and becomes a failing exit code.
pub async fn main_with<F>(log: &LogArgs, body: F) -> ExitCode
where
    F: Future<Output = Result<(), Box<dyn Error>>>,
{
    crate::tls_provider::install();
    if let Err(err) = crate::telemetry::init(log) {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", crate::reconciler::error::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
