//! The Azure ports ([`crate::ports::Arm`], [`Secrets`], [`Blobs`]) on the
//! `flotilla_azure` clients: ARM REST, Key Vault and Blob Storage; and
//! [`KubeApi`] on the minimal Kubernetes client.

use crate::ports::{
    Arm, Blobs, KubeApi, KubeNode, Listed, Permission, Purge, ResourceSku, Secrets, Usage,
};
use async_trait::async_trait;
use flotilla_azure::arm::{DeleteStart, PollOutcome};
use flotilla_azure::blob::Staging;
use flotilla_azure::kube::KubeClient;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureError, PollState, ResourceId};
use serde_json::Value;
use std::collections::BTreeMap;

#[async_trait]
impl Arm for ArmClient {
    async fn put(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<flotilla_azure::PutStart, AzureError> {
        ArmClient::put(self, id, api_version, body).await
    }

    async fn patch(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<Option<PollState>, AzureError> {
        Ok(ArmClient::patch(self, id, api_version, body).await?.poll)
    }

    async fn delete(&self, id: &ResourceId, api_version: &str) -> Result<DeleteStart, AzureError> {
        ArmClient::delete(self, id, api_version).await
    }

    async fn poll(&self, poll: &PollState) -> Result<PollOutcome, AzureError> {
        ArmClient::poll(self, poll).await
    }

    async fn get(
        &self,
        id: &ResourceId,
        sub_path: Option<&str>,
        api_version: &str,
    ) -> Result<Option<Value>, AzureError> {
        ArmClient::get_sub(self, id, sub_path, api_version).await
    }

    async fn action(
        &self,
        id: &ResourceId,
        action: &str,
        api_version: &str,
    ) -> Result<Value, AzureError> {
        ArmClient::post_action(self, id, action, api_version, None).await
    }

    async fn list_resources(
        &self,
        resource_group: &str,
        tag: Option<(&str, &str)>,
    ) -> Result<Vec<Listed>, AzureError> {
        ArmClient::list_resources(self, resource_group, tag).await
    }

    async fn list_named(
        &self,
        resource_group: &str,
        fragment: &str,
    ) -> Result<Vec<Listed>, AzureError> {
        ArmClient::list_named(self, resource_group, fragment).await
    }

    async fn list_vnets(
        &self,
        resource_group: &str,
    ) -> Result<Vec<flotilla_azure::VnetPrefixes>, AzureError> {
        ArmClient::list_vnets(self, resource_group).await
    }

    async fn resource_skus(&self, location: &str) -> Result<Vec<ResourceSku>, AzureError> {
        ArmClient::resource_skus(self, location).await
    }

    async fn compute_usages(&self, location: &str) -> Result<Vec<Usage>, AzureError> {
        ArmClient::compute_usages(self, location).await
    }

    async fn permissions(
        &self,
        resource_group: &str,
    ) -> Result<Option<Vec<Permission>>, AzureError> {
        ArmClient::permissions(self, resource_group).await
    }
}

#[async_trait]
impl Secrets for Vault {
    fn secret_id(&self, name: &str) -> String {
        Vault::secret_id(self, name)
    }

    async fn get(&self, name: &str) -> Result<Option<String>, AzureError> {
        Vault::get(self, name).await
    }

    async fn set(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        Vault::set(self, name, value, tags).await.map(|_| ())
    }

    async fn create_if_absent(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        Vault::create_if_absent(self, name, value, tags).await
    }

    async fn delete(&self, name: &str) -> Result<(), AzureError> {
        Vault::delete(self, name).await
    }

    async fn purge(&self, name: &str) -> Result<Purge, AzureError> {
        Vault::purge(self, name).await
    }

    async fn list(&self) -> Result<Vec<Listed>, AzureError> {
        Vault::list(self).await
    }
}

#[async_trait]
impl KubeApi for KubeClient {
    async fn nodes(&self, kubeconfig: &str) -> Result<Vec<KubeNode>, AzureError> {
        Ok(KubeClient::nodes(self, kubeconfig)
            .await?
            .into_iter()
            .map(|n| KubeNode {
                name: n.name,
                ready: n.ready,
                labels: n.labels,
            })
            .collect())
    }
}

#[async_trait]
impl Blobs for Staging {
    fn blob_url(&self, name: &str) -> String {
        Staging::blob_url(self, name)
    }

    async fn put(
        &self,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        Staging::put(self, name, content, content_type, metadata)
            .await
            .map(|_| ())
    }

    async fn delete(&self, name: &str) -> Result<(), AzureError> {
        Staging::delete(self, name).await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<Listed>, AzureError> {
        Staging::list(self, prefix).await
    }
}
