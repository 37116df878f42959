//! The service REST JSON shapes, with Azure's exact member names.
//!
//! Request types ignore unknown members. Because SDKs differ in which members they send and
//! whether they send `null`, a missing or `null` member reads as `None` (or the default), except
//! `tags`/`desired`/`reported`, where an explicit `null` is kept as `Some(Value::Null)`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Reads `null` as the type's default, for members some SDKs send as `null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A device identity (`GET|PUT /devices/{id}`). Members other than `deviceId` are optional so a
/// request body can omit them; the hub fills every one in its answers (`None` is written as `null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceDto {
    /// `deviceId`
    #[serde(deserialize_with = "null_as_default")]
    pub device_id: String,
    /// `generationId`: changes when a deleted id is re-created.
    pub generation_id: Option<String>,
    /// `etag` of the identity.
    pub etag: Option<String>,
    /// `connectionState`: `Connected` or `Disconnected`.
    pub connection_state: Option<String>,
    /// `status`: `enabled` or `disabled`.
    pub status: Option<String>,
    /// `statusReason`
    pub status_reason: Option<String>,
    /// `connectionStateUpdatedTime` (ISO-8601 UTC)
    pub connection_state_updated_time: Option<String>,
    /// `statusUpdatedTime` (ISO-8601 UTC)
    pub status_updated_time: Option<String>,
    /// `lastActivityTime` (ISO-8601 UTC)
    pub last_activity_time: Option<String>,
    /// `cloudToDeviceMessageCount`
    pub cloud_to_device_message_count: Option<u64>,
    /// `authentication`
    pub authentication: Option<AuthenticationDto>,
    /// `capabilities`
    pub capabilities: Option<CapabilitiesDto>,
    /// `deviceScope` (IoT Edge)
    pub device_scope: Option<String>,
    /// `parentScopes` (nested IoT Edge)
    pub parent_scopes: Option<Vec<String>>,
}

/// A module identity (`GET|PUT /devices/{id}/modules/{mid}`); optional members as in [`DeviceDto`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModuleDto {
    /// `moduleId`
    #[serde(deserialize_with = "null_as_default")]
    pub module_id: String,
    /// `managedBy` (e.g. `IotEdge`)
    pub managed_by: Option<String>,
    /// `deviceId`
    #[serde(deserialize_with = "null_as_default")]
    pub device_id: String,
    /// `generationId`
    pub generation_id: Option<String>,
    /// `etag` of the identity.
    pub etag: Option<String>,
    /// `connectionState`: `Connected` or `Disconnected`.
    pub connection_state: Option<String>,
    /// `connectionStateUpdatedTime` (ISO-8601 UTC)
    pub connection_state_updated_time: Option<String>,
    /// `lastActivityTime` (ISO-8601 UTC)
    pub last_activity_time: Option<String>,
    /// `cloudToDeviceMessageCount`
    pub cloud_to_device_message_count: Option<u64>,
    /// `authentication`
    pub authentication: Option<AuthenticationDto>,
}

/// `authentication` of a device or module.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthenticationDto {
    /// `symmetricKey`
    pub symmetric_key: Option<SymmetricKeyDto>,
    /// `x509Thumbprint`
    pub x509_thumbprint: Option<X509ThumbprintDto>,
    /// `type`: `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type")]
    pub auth_type: Option<String>,
}

/// `symmetricKey`: base64 keys; absent, `null` or `""` in a request means "generate".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SymmetricKeyDto {
    /// `primaryKey`
    pub primary_key: Option<String>,
    /// `secondaryKey`
    pub secondary_key: Option<String>,
}

/// `x509Thumbprint`: hex SHA-1 or SHA-256 certificate thumbprints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct X509ThumbprintDto {
    /// `primaryThumbprint`
    pub primary_thumbprint: Option<String>,
    /// `secondaryThumbprint`
    pub secondary_thumbprint: Option<String>,
}

/// `capabilities` of a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CapabilitiesDto {
    /// `iotEdge`
    #[serde(deserialize_with = "null_as_default")]
    pub iot_edge: bool,
}

/// The full service view of a device or module twin (`GET|PUT|PATCH /twins/{id}`, query results).
///
/// `Tags` and `Section` are how the tags and the two property sections are held: JSON values by
/// default, or borrowed views that serialize to the same JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    default,
    bound(deserialize = "Tags: Deserialize<'de> + Default, Section: Deserialize<'de> + Default")
)]
pub struct TwinDto<Tags = Value, Section = Value> {
    /// `deviceId`
    pub device_id: String,
    /// `moduleId` (module twins only)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// `etag` of the twin (changes on tags/desired writes).
    pub etag: String,
    /// `deviceEtag`: the identity's etag.
    pub device_etag: String,
    /// `status`: `enabled` or `disabled`.
    pub status: String,
    /// `statusReason`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// `statusUpdateTime` (ISO-8601 UTC)
    pub status_update_time: String,
    /// `connectionState`
    pub connection_state: String,
    /// `lastActivityTime` (ISO-8601 UTC)
    pub last_activity_time: String,
    /// `cloudToDeviceMessageCount`
    pub cloud_to_device_message_count: u64,
    /// `authenticationType`: `sas`, `selfSigned`, `certificateAuthority` or `none`.
    pub authentication_type: String,
    /// `x509Thumbprint`
    pub x509_thumbprint: X509ThumbprintDto,
    /// `modelId` (`""` when none)
    pub model_id: String,
    /// `version`: increases on any twin change.
    pub version: i64,
    /// `tags`, rendered by the caller.
    pub tags: Tags,
    /// `properties`
    pub properties: TwinPropertiesDto<Section>,
    /// `capabilities` (device twins only)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilitiesDto>,
    /// `configurations`: `{"<configuration id>": {"status": "Targeted"|"Applied"}}`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub configurations: Map<String, Value>,
    /// `deviceScope` (IoT Edge)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// `parentScopes` (nested IoT Edge)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parent_scopes: Vec<String>,
}

/// `properties` of a twin: both sections already rendered (with `$metadata`, `$version`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "Section: Deserialize<'de> + Default"))]
pub struct TwinPropertiesDto<Section = Value> {
    /// `desired`
    pub desired: Section,
    /// `reported`
    pub reported: Section,
}

/// Keeps an explicit `null` as `Some(Value::Null)`; with `#[serde(default)]` an absent member
/// stays `None`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The body of `PATCH|PUT /twins/{id}` (and module twins). Read-only members (`deviceId`, `etag`,
/// `version`, status fields, ...) are ignored.
///
/// `None` means the member was absent, `Some(Value::Null)` that it was `null` ("clear" for PUT,
/// "no change" for PATCH: the caller decides). Values are not checked to be objects here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TwinUpdateRequest {
    /// `tags`
    #[serde(deserialize_with = "present")]
    pub tags: Option<Value>,
    /// `properties` (`null` reads as absent)
    pub properties: Option<TwinPropertiesUpdate>,
}

/// `properties` of a twin update; absent vs `null` as in [`TwinUpdateRequest`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TwinPropertiesUpdate {
    /// `desired`
    #[serde(deserialize_with = "present")]
    pub desired: Option<Value>,
    /// `reported` (the service may not write it; C# sends an empty object)
    #[serde(deserialize_with = "present")]
    pub reported: Option<Value>,
}

impl TwinUpdateRequest {
    /// `properties.desired`, if sent (possibly `null`).
    pub fn desired(&self) -> Option<&Value> {
        self.properties.as_ref().and_then(|p| p.desired.as_ref())
    }

    /// Whether the body tries to write reported properties. Absent, `null`, an empty object (C#)
    /// and an object holding only `$`-prefixed members (`$metadata`, `$version`, echoed from a read
    /// twin) do not count; any other value does.
    pub fn reported_is_nonempty(&self) -> bool {
        match self.properties.as_ref().and_then(|p| p.reported.as_ref()) {
            None | Some(Value::Null) => false,
            Some(Value::Object(reported)) => reported.keys().any(|key| !key.starts_with('$')),
            Some(_) => true,
        }
    }
}

/// The body of `POST /twins/{id}/methods` (CloudToDeviceMethod).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodInvocation {
    /// `methodName`
    pub method_name: String,
    /// `payload`: any JSON; absent reads as `null`.
    #[serde(default)]
    pub payload: Value,
    /// `responseTimeoutInSeconds` (`null` reads as absent)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<i64>,
    /// `connectTimeoutInSeconds` (`null` reads as absent)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<i64>,
}

/// The answer to a method invocation: the device's status and payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// `status` chosen by the device.
    pub status: i32,
    /// `payload` from the device (`null` when it sent none).
    #[serde(default)]
    pub payload: Value,
}

/// One entry of a bulk registry request (`POST /devices`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    /// `id`: the device id.
    pub id: String,
    /// `moduleId`
    #[serde(default)]
    pub module_id: Option<String>,
    /// `eTag` of the identity, for `*IfMatchETag` modes.
    #[serde(default, rename = "eTag")]
    pub e_tag: Option<String>,
    /// `importMode`
    pub import_mode: ImportMode,
    /// `status`
    #[serde(default)]
    pub status: Option<String>,
    /// `statusReason`
    #[serde(default)]
    pub status_reason: Option<String>,
    /// `authentication`
    #[serde(default)]
    pub authentication: Option<AuthenticationDto>,
    /// `twinETag`, for `updateTwinIfMatchETag`.
    #[serde(default, rename = "twinETag")]
    pub twin_e_tag: Option<String>,
    /// `tags` (`null` kept as `Some(Value::Null)`)
    #[serde(default, deserialize_with = "present")]
    pub tags: Option<Value>,
    /// `properties`: `{"desired": ..., "reported": ...}`
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
    /// `capabilities`
    #[serde(default)]
    pub capabilities: Option<CapabilitiesDto>,
    /// `deviceScope`
    #[serde(default)]
    pub device_scope: Option<String>,
    /// `parentScopes`
    #[serde(default)]
    pub parent_scopes: Option<Vec<String>>,
}

/// `importMode` of a bulk registry entry; parsed case-insensitively (Node sends `Update`, `Delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportMode {
    /// `create`
    Create,
    /// `update`
    Update,
    /// `updateIfMatchETag`
    UpdateIfMatchETag,
    /// `delete`
    Delete,
    /// `deleteIfMatchETag`
    DeleteIfMatchETag,
    /// `updateTwin`
    UpdateTwin,
    /// `updateTwinIfMatchETag`
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    const ALL: [ImportMode; 7] = [
        ImportMode::Create,
        ImportMode::Update,
        ImportMode::UpdateIfMatchETag,
        ImportMode::Delete,
        ImportMode::DeleteIfMatchETag,
        ImportMode::UpdateTwin,
        ImportMode::UpdateTwinIfMatchETag,
    ];

    /// The name Azure documents, e.g. `updateIfMatchETag`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::Update => "update",
            ImportMode::UpdateIfMatchETag => "updateIfMatchETag",
            ImportMode::Delete => "delete",
            ImportMode::DeleteIfMatchETag => "deleteIfMatchETag",
            ImportMode::UpdateTwin => "updateTwin",
            ImportMode::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }
}

impl<'de> Deserialize<'de> for ImportMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ImportMode::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(&name))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown importMode {name:?}")))
    }
}

/// The answer to a bulk registry request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRegistryOperationResult {
    /// `isSuccessful`
    pub is_successful: bool,
    /// `errors`
    pub errors: Vec<DeviceRegistryOperationError>,
    /// `warnings`
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

/// One failed entry of a bulk registry request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationError {
    /// `deviceId`
    pub device_id: String,
    /// `errorCode`: the error code's name (e.g. `DeviceAlreadyExists`, see `ErrorCode::name`).
    pub error_code: String,
    /// `errorStatus`: human-readable text.
    pub error_status: String,
    /// `moduleId`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// `operation`: the import mode of the failed entry (see [`ImportMode::as_str`]).
    pub operation: String,
}

/// One warning of a bulk registry request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationWarning {
    /// `deviceId`
    pub device_id: String,
    /// `warningCode`, e.g. `DeviceRegisteredWithoutTwin`.
    pub warning_code: String,
    /// `warningStatus`: human-readable text.
    pub warning_status: String,
}

/// `GET /statistics/devices`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    /// `totalDeviceCount`
    pub total_device_count: u64,
    /// `enabledDeviceCount`
    pub enabled_device_count: u64,
    /// `disabledDeviceCount`
    pub disabled_device_count: u64,
}

/// `GET /statistics/service`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatistics {
    /// `connectedDeviceCount`
    pub connected_device_count: u64,
}

/// The body of `POST /devices/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySpecification {
    /// `query`: the SQL-like query text.
    pub query: String,
}

/// An automatic device management configuration (`/configurations/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationDto {
    /// `id`
    pub id: String,
    /// `schemaVersion` ("1.0" when absent)
    #[serde(deserialize_with = "null_as_default")]
    pub schema_version: Option<String>,
    /// `labels`
    #[serde(deserialize_with = "null_as_default")]
    pub labels: Map<String, Value>,
    /// `content`
    #[serde(deserialize_with = "null_as_default")]
    pub content: ConfigurationContentDto,
    /// `contentType` (sent by the C# SDK; echoed)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `targetCondition`
    #[serde(deserialize_with = "null_as_default")]
    pub target_condition: String,
    /// `createdTimeUtc`
    pub created_time_utc: Option<String>,
    /// `lastUpdatedTimeUtc`
    pub last_updated_time_utc: Option<String>,
    /// `priority`
    #[serde(deserialize_with = "null_as_default")]
    pub priority: i64,
    /// `systemMetrics`
    #[serde(deserialize_with = "null_as_default")]
    pub system_metrics: ConfigurationMetricsDto,
    /// `metrics`
    #[serde(deserialize_with = "null_as_default")]
    pub metrics: ConfigurationMetricsDto,
    /// `etag`
    pub etag: Option<String>,
}

/// `content` of a configuration: twin path → value maps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationContentDto {
    /// `deviceContent`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_content: Option<Map<String, Value>>,
    /// `moduleContent`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_content: Option<Map<String, Value>>,
    /// `modulesContent` (IoT Edge deployments; stored and echoed)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules_content: Option<Map<String, Value>>,
}

/// `systemMetrics` / `metrics`: named queries and their row counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationMetricsDto {
    /// `results`
    #[serde(deserialize_with = "null_as_default")]
    pub results: Map<String, Value>,
    /// `queries`
    #[serde(deserialize_with = "null_as_default")]
    pub queries: Map<String, Value>,
}

/// `POST /configurations/testQueries` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationQueriesTestInput {
    /// `targetCondition`
    #[serde(deserialize_with = "null_as_default")]
    pub target_condition: String,
    /// `customMetricQueries`
    #[serde(deserialize_with = "null_as_default")]
    pub custom_metric_queries: Map<String, Value>,
}

/// `POST /configurations/testQueries` answer: empty strings mean "valid".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationQueriesTestResponse {
    /// `targetConditionError`
    pub target_condition_error: String,
    /// `customMetricQueryErrors`
    pub custom_metric_query_errors: Map<String, Value>,
}
