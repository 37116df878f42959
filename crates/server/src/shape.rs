//! The IoT Hub JSON shapes of domain records (device, module and twin), shared by the REST
//! answers and by queries, which run over exactly the twin documents the REST API returns.

use serde_json::{Map, Value};
use twinhub_core::identity::{AuthType, DeviceStatus, Identity};
use twinhub_core::twin::RenderedSection;
use twinhub_protocol::rest::{
    AuthenticationDto, CapabilitiesDto, DeviceDto, ModuleDto, SymmetricKeyDto, TwinDto,
    TwinPropertiesDto, X509ThumbprintDto,
};

use crate::hub::{Presence, Record};

pub(crate) fn status_text(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Enabled => "enabled",
        DeviceStatus::Disabled => "disabled",
    }
}

pub(crate) fn auth_type_text(auth_type: AuthType) -> &'static str {
    match auth_type {
        AuthType::Sas => "sas",
        AuthType::SelfSigned => "selfSigned",
        AuthType::CertificateAuthority => "certificateAuthority",
        AuthType::None => "none",
    }
}

pub(crate) fn connection_state(presence: &Presence) -> &'static str {
    if presence.connected {
        "Connected"
    } else {
        "Disconnected"
    }
}

pub(crate) fn authentication_dto(identity: &Identity) -> AuthenticationDto {
    let auth = &identity.authentication;
    let non_empty = |k: &String| (!k.is_empty()).then(|| k.clone());
    AuthenticationDto {
        symmetric_key: Some(SymmetricKeyDto {
            primary_key: non_empty(&auth.symmetric_key.primary_key),
            secondary_key: non_empty(&auth.symmetric_key.secondary_key),
        }),
        x509_thumbprint: Some(X509ThumbprintDto {
            primary_thumbprint: auth.x509_thumbprint.primary.clone(),
            secondary_thumbprint: auth.x509_thumbprint.secondary.clone(),
        }),
        auth_type: Some(auth_type_text(auth.auth_type).to_owned()),
    }
}

pub(crate) fn device_dto(record: &Record, presence: &Presence) -> DeviceDto {
    let identity = &record.identity;
    DeviceDto {
        device_id: identity.device_id.clone(),
        generation_id: Some(identity.generation_id.clone()),
        etag: Some(identity.etag()),
        connection_state: Some(connection_state(presence).to_owned()),
        status: Some(status_text(identity.status).to_owned()),
        status_reason: identity.status_reason.clone(),
        connection_state_updated_time: Some(presence.state_updated.to_rfc3339()),
        status_updated_time: Some(identity.status_updated.to_rfc3339()),
        last_activity_time: Some(presence.last_activity.to_rfc3339()),
        cloud_to_device_message_count: Some(0),
        authentication: Some(authentication_dto(identity)),
        capabilities: Some(CapabilitiesDto {
            iot_edge: identity.iot_edge,
        }),
        device_scope: identity.device_scope.clone(),
        parent_scopes: Some(identity.parent_scopes.clone()),
    }
}

pub(crate) fn module_dto(record: &Record, presence: &Presence) -> ModuleDto {
    let identity = &record.identity;
    ModuleDto {
        module_id: identity.module_id.clone().unwrap_or_default(),
        managed_by: identity.managed_by.clone(),
        device_id: identity.device_id.clone(),
        generation_id: Some(identity.generation_id.clone()),
        etag: Some(identity.etag()),
        connection_state: Some(connection_state(presence).to_owned()),
        connection_state_updated_time: Some(presence.state_updated.to_rfc3339()),
        last_activity_time: Some(presence.last_activity.to_rfc3339()),
        cloud_to_device_message_count: Some(0),
        authentication: Some(authentication_dto(identity)),
    }
}

/// The REST twin shape as a JSON value, for evaluating queries; `metadata: false` leaves out
/// the sections' `$metadata`, which a query that does not read it need not pay for.
pub(crate) fn twin_document(record: &Record, presence: &Presence, metadata: bool) -> Value {
    serde_json::to_value(twin_dto(record, presence, metadata)).unwrap_or(Value::Null)
}

/// The REST twin shape, borrowing the twin's properties: it serializes to exactly what
/// [`twin_document`] returns without building a JSON value first.
pub(crate) fn twin_dto<'r>(
    record: &'r Record,
    presence: &Presence,
    metadata: bool,
) -> TwinDto<&'r Map<String, Value>, RenderedSection<'r>> {
    let identity = &record.identity;
    let twin = &record.twin;
    TwinDto {
        device_id: identity.device_id.clone(),
        module_id: identity.module_id.clone(),
        etag: twin.etag(),
        device_etag: identity.etag(),
        status: status_text(identity.status).to_owned(),
        status_reason: identity.status_reason.clone(),
        status_update_time: identity.status_updated.to_rfc3339(),
        connection_state: connection_state(presence).to_owned(),
        last_activity_time: presence.last_activity.to_rfc3339(),
        cloud_to_device_message_count: 0,
        authentication_type: auth_type_text(identity.authentication.auth_type).to_owned(),
        x509_thumbprint: X509ThumbprintDto {
            primary_thumbprint: identity.authentication.x509_thumbprint.primary.clone(),
            secondary_thumbprint: identity.authentication.x509_thumbprint.secondary.clone(),
        },
        model_id: twin.model_id.clone().unwrap_or_default(),
        version: twin.version,
        tags: &twin.tags,
        properties: TwinPropertiesDto {
            desired: twin.desired.rendered(metadata),
            reported: twin.reported.rendered(metadata),
        },
        capabilities: identity.module_id.is_none().then_some(CapabilitiesDto {
            iot_edge: identity.iot_edge,
        }),
        configurations: record
            .configurations
            .iter()
            .map(|(id, status)| (id.clone(), serde_json::json!({ "status": status.as_str() })))
            .collect::<Map<String, Value>>(),
        device_scope: identity.device_scope.clone(),
        parent_scopes: identity.parent_scopes.clone(),
    }
}
