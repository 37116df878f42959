//! Twins (`/twins/{id}`) and direct methods (`/twins/{id}/methods`).

use reqwest::Method;
use serde_json::Value;
use twinhub_protocol::rest::{MethodInvocation, MethodResult, TwinDto};

use crate::{ClientError, ServiceClient, if_match};

impl ServiceClient {
    /// A device's twin.
    pub async fn get_twin(&self, device_id: &str) -> Result<TwinDto, ClientError> {
        Self::execute_json(self.request(Method::GET, &["twins", device_id], &[])?).await
    }

    /// A module's twin.
    pub async fn get_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
    ) -> Result<TwinDto, ClientError> {
        let segments = ["twins", device_id, "modules", module_id];
        Self::execute_json(self.request(Method::GET, &segments, &[])?).await
    }

    /// Merges `patch` (`{"tags": {...}}` and/or `{"properties": {"desired": {...}}}`, `null`
    /// removing a key) into a device's twin. With `etag`, the update happens only if the twin is
    /// still at that version (else `PreconditionFailed`).
    pub async fn update_twin(
        &self,
        device_id: &str,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<TwinDto, ClientError> {
        let request = self
            .request(Method::PATCH, &["twins", device_id], &[])?
            .json(patch);
        Self::execute_json(if_match(request, etag)).await
    }

    /// Replaces a device twin's tags and desired properties with those of `twin`.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &Value,
        etag: Option<&str>,
    ) -> Result<TwinDto, ClientError> {
        let request = self
            .request(Method::PUT, &["twins", device_id], &[])?
            .json(twin);
        Self::execute_json(if_match(request, etag)).await
    }

    /// Calls a direct method on a device and returns its answer. The hub waits for the device
    /// up to the invocation's response timeout.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        invocation: &MethodInvocation,
    ) -> Result<MethodResult, ClientError> {
        let request = self
            .request(Method::POST, &["twins", device_id, "methods"], &[])?
            .json(invocation);
        Self::execute_json(request).await
    }

    /// Calls a direct method on a module.
    pub async fn invoke_module_method(
        &self,
        device_id: &str,
        module_id: &str,
        invocation: &MethodInvocation,
    ) -> Result<MethodResult, ClientError> {
        let segments = ["twins", device_id, "modules", module_id, "methods"];
        let request = self.request(Method::POST, &segments, &[])?.json(invocation);
        Self::execute_json(request).await
    }
}
