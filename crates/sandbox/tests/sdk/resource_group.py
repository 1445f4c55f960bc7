"""Points the official Azure SDK for Python at the ARM + Entra ID simulator: create and get a resource group.

Run by tests/azure_integration.rs (`official_python_sdk_against_the_simulator`). Inputs come from the environment
(the client secret too, so it never shows in a process listing):

  SIM_ENDPOINT        https://127.0.0.1:PORT (ARM endpoint and Entra ID authority host)
  SIM_TENANT_ID, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SUBSCRIPTION_ID
  SIM_RESOURCE_GROUP, SIM_LOCATION
  REQUESTS_CA_BUNDLE / SSL_CERT_FILE   the simulator's CA (requests, used by MSAL and azure-core, reads these)

Prints one JSON object on stdout. Exit code 3 means the SDK packages are not installed.
"""

import json
import os
import sys

try:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"azure SDK not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    env = os.environ
    endpoint = env["SIM_ENDPOINT"].rstrip("/")
    credential = ClientSecretCredential(
        env["SIM_TENANT_ID"],
        env["SIM_CLIENT_ID"],
        env["SIM_CLIENT_SECRET"],
        authority=endpoint,
        # MSAL would otherwise ask login.microsoftonline.com whether the authority is a known cloud.
        disable_instance_discovery=True,
    )
    client = ResourceManagementClient(
        credential,
        env["SIM_SUBSCRIPTION_ID"],
        base_url=endpoint,
        credential_scopes=[f"{endpoint}/.default"],
        # Fail fast instead of the SDK's long default back-off if something is wrong.
        retry_total=1,
    )
    name = env["SIM_RESOURCE_GROUP"]
    created = client.resource_groups.create_or_update(
        name, {"location": env["SIM_LOCATION"], "tags": {"createdBy": "azure-sdk-for-python"}}
    )
    got = client.resource_groups.get(name)
    exists = client.resource_groups.check_existence(name)
    print(
        json.dumps(
            {
                "created": {"id": created.id, "name": created.name, "location": created.location},
                "got": {"id": got.id, "tags": got.tags, "provisioningState": got.properties.provisioning_state},
                "exists": exists,
            }
        )
    )


if __name__ == "__main__":
    main()
