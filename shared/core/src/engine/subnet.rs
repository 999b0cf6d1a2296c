//! flotilla's NSGs on the subnets of an existing network (`attachNsgs`):
//! the subnet is read, and PUT back as read with only its
//! `networkSecurityGroup` changed; undo puts back the NSG it had.

use super::Engine;
use flotilla_azure::models::api;
use flotilla_azure::{AzureError, PollState, ResourceId};
use serde_json::{json, Value};

/// Properties of a subnet that ARM computes and a PUT does not take back.
const READ_ONLY: &[&str] = &["provisioningState", "ipConfigurations", "purpose"];

impl Engine {
    /// The subnet as ARM has it now; `SubnetNotFound` when it is gone.
    async fn subnet(&self, subnet: &ResourceId) -> Result<Value, AzureError> {
        self.azure
            .arm
            .get(subnet, None, api::NETWORK)
            .await?
            .ok_or_else(|| {
                AzureError::terminal("SubnetNotFound", format!("{subnet} does not exist"))
            })
    }

    /// The id of the NSG the subnet has now (`None`: none).
    pub(super) async fn subnet_nsg(
        &self,
        subnet: &ResourceId,
    ) -> Result<Option<String>, AzureError> {
        let body = self.subnet(subnet).await?;
        Ok(body
            .pointer("/properties/networkSecurityGroup/id")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// PUTs the subnet as read now with its NSG set to `nsg` (`None`: no
    /// NSG); `Some(poll)` while Azure works on it. A subnet that is gone
    /// gives `Ok(None)` when `gone_ok` (undo), `SubnetNotFound` otherwise.
    pub(super) async fn set_subnet_nsg(
        &self,
        subnet: &ResourceId,
        nsg: Option<&str>,
        gone_ok: bool,
    ) -> Result<Option<PollState>, AzureError> {
        let body = match self.subnet(subnet).await {
            Ok(body) => body,
            Err(e) if gone_ok && e.code == "SubnetNotFound" => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut properties = body
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for key in READ_ONLY {
            properties.remove(*key);
        }
        match nsg {
            Some(id) => properties.insert("networkSecurityGroup".into(), json!({ "id": id })),
            None => properties.remove("networkSecurityGroup"),
        };
        self.azure
            .arm
            .put(subnet, api::NETWORK, &json!({ "properties": properties }))
            .await
            .map(|started| started.poll)
    }
}
