//! The IoT Hub JSON shapes of domain records (device, module and twin), shared by the REST
//! answers and by queries, which run over exactly the twin documents the REST API returns.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value};
use twinhub_core::identity::{AuthType, DeviceStatus, Identity};
use twinhub_core::twin::{RenderedSection, Twin, TwinView};
use twinhub_protocol::rest::{
    AuthenticationDto, CapabilitiesDto, DeviceDto, ModuleDto, SymmetricKeyDto, TwinDto,
    TwinPropertiesDto, X509ThumbprintDto,
};
use twinhub_query::Condition;

use crate::hub::{ConfigurationStatus, Presence, Record};

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

/// Which of a twin document's costly members to build; a query condition reads few of them, and
/// the others are left `null` ([`Condition::reads_under`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DocumentParts {
    pub tags: bool,
    pub desired: bool,
    pub reported: bool,
    /// The sections' `$metadata`.
    pub metadata: bool,
}

impl DocumentParts {
    /// Only the identity's members.
    pub(crate) const NONE: Self = Self {
        tags: false,
        desired: false,
        reported: false,
        metadata: false,
    };

    /// The whole document, with `$metadata` or without.
    pub(crate) fn all(metadata: bool) -> Self {
        Self {
            tags: true,
            desired: true,
            reported: true,
            metadata,
        }
    }

    /// What evaluating `condition` reads.
    pub(crate) fn read_by(condition: &Condition) -> Self {
        Self {
            tags: condition.reads_under(&["tags"]),
            desired: condition.reads_under(&["properties", "desired"]),
            reported: condition.reads_under(&["properties", "reported"]),
            metadata: condition.reads_metadata(),
        }
    }

    /// What either reads.
    pub(crate) fn union(self, other: Self) -> Self {
        Self {
            tags: self.tags || other.tags,
            desired: self.desired || other.desired,
            reported: self.reported || other.reported,
            metadata: self.metadata || other.metadata,
        }
    }
}

/// What a twin records of the automatic configurations: their statuses, and which configuration
/// wrote each desired path.
pub(crate) struct ConfigurationRecords<'a> {
    pub statuses: Cow<'a, BTreeMap<String, ConfigurationStatus>>,
    pub paths: Cow<'a, BTreeMap<String, String>>,
}

/// A twin to render: decoded, or read in place from its stored bytes, which costs a fraction of
/// decoding it (see [`TwinView`]).
pub(crate) enum TwinSource<'a> {
    Decoded(&'a Record),
    Stored {
        identity: &'a StoredIdentity<'a>,
        twin: &'a TwinView<'a>,
        configurations: &'a BTreeMap<String, ConfigurationStatus>,
        /// Which configuration wrote each desired path, when any did; read only when asked.
        configured_paths: Option<&'a RawValue>,
    },
}

/// A stored twin's identity, parsed from its text the first time a rendering needs it (a
/// query renders a twin's document and then its row; an index fill needs neither).
pub(crate) struct StoredIdentity<'a> {
    text: &'a RawValue,
    parsed: OnceCell<Identity>,
}

impl<'a> StoredIdentity<'a> {
    pub(crate) fn new(text: &'a RawValue) -> Self {
        Self {
            text,
            parsed: OnceCell::new(),
        }
    }

    fn get(&self) -> Result<&Identity, serde_json::Error> {
        if let Some(identity) = self.parsed.get() {
            return Ok(identity);
        }
        let identity = serde_json::from_str(self.text.get())?;
        Ok(self.parsed.get_or_init(|| identity))
    }
}

impl TwinSource<'_> {
    /// What the twin records of the automatic configurations.
    pub(crate) fn configuration_records(
        &self,
    ) -> Result<ConfigurationRecords<'_>, serde_json::Error> {
        match self {
            TwinSource::Decoded(record) => Ok(ConfigurationRecords {
                statuses: Cow::Borrowed(&record.configurations),
                paths: Cow::Borrowed(&record.configured_paths),
            }),
            TwinSource::Stored {
                configurations,
                configured_paths,
                ..
            } => {
                let paths = match configured_paths {
                    Some(paths) => serde_json::from_str(paths.get())?,
                    None => BTreeMap::new(),
                };
                Ok(ConfigurationRecords {
                    statuses: Cow::Borrowed(*configurations),
                    paths: Cow::Owned(paths),
                })
            }
        }
    }

    /// The REST twin shape (with `$metadata`), as JSON text: a `SELECT *` row.
    pub(crate) fn to_json(&self, presence: &Presence) -> Result<Box<RawValue>, serde_json::Error> {
        match self {
            TwinSource::Decoded(record) => to_raw_value(&twin_dto(record, presence, true)),
            TwinSource::Stored {
                identity,
                twin,
                configurations,
                ..
            } => to_raw_value(&dto(
                identity.get()?,
                presence,
                configurations,
                &TwinVersion::of_view(twin),
                twin.tags(),
                twin.desired().rendered(true),
                twin.reported().rendered(true),
            )),
        }
    }

    /// The REST twin shape as a JSON value, for evaluating queries, with only `parts` built.
    pub(crate) fn document(&self, presence: &Presence, parts: DocumentParts) -> Value {
        let document = match self {
            TwinSource::Decoded(record) => {
                let twin = &record.twin;
                serde_json::to_value(dto(
                    &record.identity,
                    presence,
                    &record.configurations,
                    &TwinVersion::of(twin),
                    parts.tags.then_some(&twin.tags),
                    parts.desired.then(|| twin.desired.rendered(parts.metadata)),
                    parts
                        .reported
                        .then(|| twin.reported.rendered(parts.metadata)),
                ))
            }
            TwinSource::Stored {
                identity,
                twin,
                configurations,
                ..
            } => identity.get().and_then(|identity| {
                serde_json::to_value(dto(
                    identity,
                    presence,
                    configurations,
                    &TwinVersion::of_view(twin),
                    parts.tags.then(|| twin.tags()),
                    parts
                        .desired
                        .then(|| twin.desired().rendered(parts.metadata)),
                    parts
                        .reported
                        .then(|| twin.reported().rendered(parts.metadata)),
                ))
            }),
        };
        document.unwrap_or(Value::Null)
    }
}

/// The REST twin shape, borrowing the twin's properties: it serializes to exactly the document
/// [`TwinSource::document`] builds with every part, without building a JSON value first.
pub(crate) fn twin_dto<'r>(
    record: &'r Record,
    presence: &Presence,
    metadata: bool,
) -> TwinDto<&'r Map<String, Value>, RenderedSection<'r>> {
    let twin = &record.twin;
    dto(
        &record.identity,
        presence,
        &record.configurations,
        &TwinVersion::of(twin),
        &twin.tags,
        twin.desired.rendered(metadata),
        twin.reported.rendered(metadata),
    )
}

/// The twin's own fields besides its sections.
struct TwinVersion<'a> {
    etag: String,
    version: i64,
    model_id: Option<&'a str>,
}

impl<'a> TwinVersion<'a> {
    fn of(twin: &'a Twin) -> Self {
        Self {
            etag: twin.etag(),
            version: twin.version,
            model_id: twin.model_id.as_deref(),
        }
    }

    fn of_view(twin: &'a TwinView<'_>) -> Self {
        Self {
            etag: twin.etag(),
            version: twin.version(),
            model_id: twin.model_id(),
        }
    }
}

/// The REST twin shape from its parts, however the sections are rendered.
fn dto<Tags, Section>(
    identity: &Identity,
    presence: &Presence,
    configurations: &BTreeMap<String, ConfigurationStatus>,
    twin: &TwinVersion<'_>,
    tags: Tags,
    desired: Section,
    reported: Section,
) -> TwinDto<Tags, Section> {
    TwinDto {
        device_id: identity.device_id.clone(),
        module_id: identity.module_id.clone(),
        etag: twin.etag.clone(),
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
        model_id: twin.model_id.unwrap_or_default().to_owned(),
        version: twin.version,
        tags,
        properties: TwinPropertiesDto { desired, reported },
        capabilities: identity.module_id.is_none().then_some(CapabilitiesDto {
            iot_edge: identity.iot_edge,
        }),
        configurations: configurations
            .iter()
            .map(|(id, status)| (id.clone(), serde_json::json!({ "status": status.as_str() })))
            .collect::<Map<String, Value>>(),
        device_scope: identity.device_scope.clone(),
        parent_scopes: identity.parent_scopes.clone(),
    }
}
