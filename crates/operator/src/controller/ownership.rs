//! Who owns a workspace found in Azure: the custom resource its owner tag names, if that one still exists.
//!
//! Adoption (`azml.dev/adopt: "true"`) may take only what nobody owns. When the workspace found under the spec's
//! name carries another resource's owner tag, this step reads that MlWorkspace (one Kubernetes GET, no Azure call);
//! the plan then refuses the adoption while it exists ([`ForeignOwner::Live`], Stalled `OwnedElsewhere`) and allows
//! it, with the annotation, once it is gone.

use kube::{Api, Client};
use tracing::{debug, instrument};

use super::plan::{Desired, ForeignOwner, Observed, Owner, Ownership};
use crate::api::v1alpha1::{MlWorkspace, owner_tag_value};
use crate::reconciler::error::Error;

/// Fills `observed.foreign_owner` when the observed workspace carries another resource's owner tag.
#[instrument(skip_all)]
pub async fn check_foreign_owner(client: &Client, desired: &Desired, observed: &mut Observed) -> Result<(), Error> {
    let Some(tag) = foreign_tag(desired, observed) else {
        return Ok(());
    };
    observed.foreign_owner = liveness(client, &tag).await?;
    debug!(owner = %tag, state = ?observed.foreign_owner, "workspace owned by another resource");
    Ok(())
}

/// The owner tag of the observed workspace when it names someone else.
fn foreign_tag(desired: &Desired, observed: &Observed) -> Option<String> {
    let tags = observed.workspace.as_ref()?.tags.as_ref()?;
    match desired.owner.classify(owner_tag_value(tags)) {
        Ownership::Foreign(tag) => Some(tag),
        _ => None,
    }
}

/// Whether the MlWorkspace a tag names exists. Any object of that namespace and name counts (a later incarnation
/// takes its workspace back); a tag that is no operator's `<namespace>/<name>/<uid>` names nobody. When the
/// operator may not read there (403), the owner is unknown and adoption is refused.
async fn liveness(client: &Client, tag: &str) -> Result<ForeignOwner, Error> {
    let Some(Owner { namespace, name, .. }) = Owner::parse(tag) else {
        return Ok(ForeignOwner::Gone);
    };
    if !crate::policy::is_kube_name(&namespace) || !crate::policy::is_kube_name(&name) {
        return Ok(ForeignOwner::Gone);
    }
    let api: Api<MlWorkspace> = Api::namespaced(client.clone(), &namespace);
    match api.get_opt(&name).await {
        Ok(Some(_)) => Ok(ForeignOwner::Live),
        Ok(None) => Ok(ForeignOwner::Gone),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(ForeignOwner::Unknown),
        Err(e) => Err(Error::kube("read the MlWorkspace named by the owner tag")(e)),
    }
}
