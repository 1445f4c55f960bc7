//! `azml-operator plan` (the dry run): reading the object to plan (a file, merged with the live object's metadata and
//! status, or the live object) the same way for every kind, asking its controller for the plan, and printing it.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::v1alpha1::{MlCompute, MlConnection, MlOnlineEndpoint, MlWorkspace};
use crate::cli::{PlanArgs, PlanKind, PlanOutput};
use crate::controller::{self, ControllerConfig};
use crate::run::{RunError, base_config};

/// The object to plan: from the file (`(shown name, text)`), with the live object's uid, next generation and status
/// when it exists (so operations in flight and ownership are judged as the controller would), else marked as not
/// created yet; or the live object named by `--name`.
pub async fn load<K>(client: &Client, args: &PlanArgs, file: Option<(String, String)>) -> Result<K, RunError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + HasStatus,
{
    let from_file: Option<K> = match file {
        Some((shown, text)) => {
            Some(serde_yaml::from_str(&text).map_err(|e| RunError::Input { path: shown, reason: e.to_string() })?)
        }
        None => None,
    };
    let namespace = args
        .namespace
        .clone()
        .or_else(|| from_file.as_ref().and_then(|o| o.namespace()))
        .unwrap_or_else(|| "default".to_owned());
    let name = from_file.as_ref().map(|o| o.name_any()).or_else(|| args.name.clone()).unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let live = api.get_opt(&name).await.map_err(RunError::Api)?;
    let kind = K::kind(&()).into_owned();
    match (from_file, live) {
        (None, Some(live)) => Ok(live),
        (None, None) => Err(RunError::NotFoundKind { kind, namespace, name }),
        (Some(mut obj), live) => {
            obj.meta_mut().namespace = Some(namespace);
            match live {
                Some(mut live) => {
                    obj.meta_mut().uid = live.meta().uid.clone();
                    obj.meta_mut().generation = live.meta().generation.map(|g| g + 1);
                    obj.take_status_from(&mut live);
                }
                // Not created yet: it gets a new uid, so an Azure resource tagged by an earlier object of this name
                // counts as a previous incarnation, as it will for the controller.
                None => obj.meta_mut().uid = Some("not-yet-created".to_owned()),
            }
            Ok(obj)
        }
    }
}

/// Kinds whose status a planned file takes from the live object.
pub trait HasStatus {
    /// Moves `live`'s status into `self`.
    fn take_status_from(&mut self, live: &mut Self);
}

impl HasStatus for MlWorkspace {
    fn take_status_from(&mut self, live: &mut Self) {
        self.status = live.status.take();
    }
}

impl HasStatus for MlCompute {
    fn take_status_from(&mut self, live: &mut Self) {
        self.status = live.status.take();
    }
}

impl HasStatus for MlOnlineEndpoint {
    fn take_status_from(&mut self, live: &mut Self) {
        self.status = live.status.take();
    }
}

/// Prints the plan of an MlOnlineEndpoint.
pub async fn plan_endpoint(
    client: &Client,
    config: &ControllerConfig,
    args: &PlanArgs,
    file: Option<(String, String)>,
) -> Result<(), RunError> {
    let ep: MlOnlineEndpoint = load(client, args, file).await?;
    let result =
        crate::endpoints::dry_run::dry_run(client, config, &ep).await.map_err(|e| RunError::Plan(Box::new(e)))?;
    match args.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&result).map_err(RunError::Output)?),
        PlanOutput::Text => print!("{}", result.render(&ep)),
    }
    Ok(())
}

impl HasStatus for MlConnection {
    fn take_status_from(&mut self, live: &mut Self) {
        self.status = live.status.take();
    }
}

/// Prints the plan of an MlConnection (whether its PUT would be sent, and why; never a credential).
pub async fn plan_connection(
    client: &Client,
    config: &ControllerConfig,
    args: &PlanArgs,
    file: Option<(String, String)>,
) -> Result<(), RunError> {
    let mc: MlConnection = load(client, args, file).await?;
    let result = crate::connection::dry_run(client, config, &mc).await.map_err(|e| RunError::Plan(Box::new(e)))?;
    match args.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&result).map_err(RunError::Output)?),
        PlanOutput::Text => print!("{}", result.render(&mc)),
    }
    Ok(())
}

/// Prints the plan for a workspace or compute from a file or a live object.
pub async fn plan(args: PlanArgs) -> Result<(), RunError> {
    let config = base_config(&args.azure)?;
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let file = read_plan_file(&args)?;
    let kind = match &file {
        Some((_, text)) => serde_yaml::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).and_then(PlanKind::from_kind))
            .unwrap_or(PlanKind::MlWorkspace),
        None => args.kind,
    };
    match kind {
        PlanKind::MlCompute => return plan_compute(&client, &config, &args, file).await,
        PlanKind::MlOnlineEndpoint => return plan_endpoint(&client, &config, &args, file).await,
        PlanKind::MlConnection => return plan_connection(&client, &config, &args, file).await,
        PlanKind::MlWorkspace => {}
    }
    let ws: MlWorkspace = load(&client, &args, file).await?;
    let planned = controller::dry_run(&client, &config, &ws).await.map_err(|e| RunError::Plan(Box::new(e)))?;
    match args.output {
        PlanOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&planned).map_err(RunError::Output)?);
        }
        PlanOutput::Text => print!("{}", planned.render(&ws)),
    }
    Ok(())
}

/// The file to plan, read once (`-`: standard input): (name shown, text).
fn read_plan_file(args: &PlanArgs) -> Result<Option<(String, String)>, RunError> {
    let Some(path) = &args.file else { return Ok(None) };
    let shown = path.display().to_string();
    let text = if shown == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) }
        .map_err(|e| RunError::Input { path: shown.clone(), reason: e.to_string() })?;
    Ok(Some((shown, text)))
}

/// Prints the plan of an MlCompute (from the file, with the live object's metadata and status when it exists).
async fn plan_compute(
    client: &Client,
    config: &ControllerConfig,
    args: &PlanArgs,
    file: Option<(String, String)>,
) -> Result<(), RunError> {
    let mc: MlCompute = load(client, args, file).await?;
    let result = crate::compute::dry_run(client, config, &mc).await.map_err(|e| RunError::Plan(Box::new(e)))?;
    match args.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&result).map_err(RunError::Output)?),
        PlanOutput::Text => print!("{}", result.render(&mc)),
    }
    Ok(())
}
