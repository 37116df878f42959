//! Automatic device management configurations: `/configurations`.

use reqwest::Method;
use twinhub_protocol::rest::{
    ConfigurationDto, ConfigurationQueriesTestInput, ConfigurationQueriesTestResponse,
};

use crate::{ClientError, ServiceClient, if_match};

impl ServiceClient {
    /// Creates a configuration (`PUT /configurations/{id}` without `If-Match`).
    pub async fn create_configuration(
        &self,
        configuration: &ConfigurationDto,
    ) -> Result<ConfigurationDto, ClientError> {
        let request = self
            .request(Method::PUT, &["configurations", &configuration.id], &[])?
            .json(configuration);
        Self::execute_json(request).await
    }

    /// One configuration, with its system and custom metric results as of now.
    pub async fn get_configuration(&self, id: &str) -> Result<ConfigurationDto, ClientError> {
        Self::execute_json(self.request(Method::GET, &["configurations", id], &[])?).await
    }

    /// Up to `top` configurations (`None`: as many as the hub returns).
    pub async fn list_configurations(
        &self,
        top: Option<u32>,
    ) -> Result<Vec<ConfigurationDto>, ClientError> {
        let top = top.map(|t| t.to_string());
        let query: Vec<(&str, &str)> = top.iter().map(|t| ("top", t.as_str())).collect();
        Self::execute_json(self.request(Method::GET, &["configurations"], &query)?).await
    }

    /// Updates a configuration's target condition, priority, labels or metrics (its content is
    /// immutable); `etag` `None` updates whatever the current version is.
    pub async fn update_configuration(
        &self,
        configuration: &ConfigurationDto,
        etag: Option<&str>,
    ) -> Result<ConfigurationDto, ClientError> {
        let request = self
            .request(Method::PUT, &["configurations", &configuration.id], &[])?
            .json(configuration);
        Self::execute_json(if_match(request, etag)).await
    }

    /// Deletes a configuration; `etag` `None` deletes any version.
    pub async fn delete_configuration(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &["configurations", id], &[])?;
        Self::execute(if_match(request, etag)).await.map(drop)
    }

    /// Checks a target condition and metric queries without creating anything.
    pub async fn test_configuration_queries(
        &self,
        input: &ConfigurationQueriesTestInput,
    ) -> Result<ConfigurationQueriesTestResponse, ClientError> {
        let request = self
            .request(Method::POST, &["configurations", "testQueries"], &[])?
            .json(input);
        Self::execute_json(request).await
    }
}
