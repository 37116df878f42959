//! Exact JSON text of the REST shapes, and parsing of the request bodies the SDKs send.

use serde_json::{Value, json};
use twinhub_protocol::rest::{
    AuthenticationDto, BulkRegistryOperationResult, CapabilitiesDto, DeviceDto,
    DeviceRegistryOperationError, DeviceRegistryOperationWarning, ExportImportDevice, ImportMode,
    MethodInvocation, MethodResult, ModuleDto, RegistryStatistics, ServiceStatistics,
    SymmetricKeyDto, TwinDto, TwinPropertiesDto, TwinUpdateRequest, X509ThumbprintDto,
};

const PRIMARY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const SECONDARY: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=";
const NEVER: &str = "0001-01-01T00:00:00Z";

fn sas_authentication() -> AuthenticationDto {
    AuthenticationDto {
        symmetric_key: Some(SymmetricKeyDto {
            primary_key: Some(PRIMARY.to_owned()),
            secondary_key: Some(SECONDARY.to_owned()),
        }),
        x509_thumbprint: Some(X509ThumbprintDto::default()),
        auth_type: Some("sas".to_owned()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> T {
    match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => panic!("{body}: {e}"),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(text) => text,
        Err(e) => panic!("serialize: {e}"),
    }
}

#[test]
fn device_json_text() {
    let device = DeviceDto {
        device_id: "dev1".to_owned(),
        generation_id: Some("637121074930370650".to_owned()),
        etag: Some("Nzk1MjE0NjM2".to_owned()),
        connection_state: Some("Disconnected".to_owned()),
        status: Some("enabled".to_owned()),
        status_reason: None,
        connection_state_updated_time: Some(NEVER.to_owned()),
        status_updated_time: Some(NEVER.to_owned()),
        last_activity_time: Some(NEVER.to_owned()),
        cloud_to_device_message_count: Some(0),
        authentication: Some(sas_authentication()),
        capabilities: Some(CapabilitiesDto { iot_edge: false }),
        device_scope: None,
        parent_scopes: Some(vec![]),
    };
    assert_eq!(
        to_json(&device),
        concat!(
            r#"{"deviceId":"dev1","generationId":"637121074930370650","etag":"Nzk1MjE0NjM2","#,
            r#""connectionState":"Disconnected","status":"enabled","statusReason":null,"#,
            r#""connectionStateUpdatedTime":"0001-01-01T00:00:00Z","statusUpdatedTime":"0001-01-01T00:00:00Z","#,
            r#""lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":0,"#,
            r#""authentication":{"symmetricKey":{"primaryKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","#,
            r#""secondaryKey":"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="},"#,
            r#""x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"#,
            r#""capabilities":{"iotEdge":false},"deviceScope":null,"parentScopes":[]}"#
        )
    );
    assert_eq!(parse::<DeviceDto>(&to_json(&device)), device);
}

#[test]
fn python_create_device_body() {
    let device: DeviceDto = parse(
        r#"{"deviceId":"d1","status":"enabled","authentication":{"symmetricKey":{},"type":"sas"},"capabilities":{"iotEdge":false}}"#,
    );
    assert_eq!(device.device_id, "d1");
    assert_eq!(device.etag, None);
    let authentication = device.authentication.unwrap_or_default();
    assert_eq!(
        authentication.symmetric_key,
        Some(SymmetricKeyDto::default())
    );
    assert_eq!(authentication.auth_type.as_deref(), Some("sas"));
}

#[test]
fn node_create_device_body_with_nulls_and_unknown_members() {
    let device: DeviceDto = parse(
        r#"{"deviceId":"d1","etag":null,"status":null,"statusReason":null,"parentScopes":null,"capabilities":null,
            "authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},"extra":{"x":1}}"#,
    );
    assert_eq!(
        (device.status, device.parent_scopes, device.capabilities),
        (None, None, None)
    );
    let keys = device
        .authentication
        .and_then(|a| a.symmetric_key)
        .unwrap_or_default();
    assert_eq!(keys.primary_key.as_deref(), Some(""));
}

#[test]
fn module_json_text() {
    let module = ModuleDto {
        module_id: "m1".to_owned(),
        managed_by: None,
        device_id: "d1".to_owned(),
        generation_id: Some("1".to_owned()),
        etag: Some("MQ==".to_owned()),
        connection_state: Some("Connected".to_owned()),
        connection_state_updated_time: Some("2024-01-02T03:04:05.0000000Z".to_owned()),
        last_activity_time: Some(NEVER.to_owned()),
        cloud_to_device_message_count: Some(0),
        authentication: Some(AuthenticationDto {
            symmetric_key: None,
            x509_thumbprint: Some(X509ThumbprintDto {
                primary_thumbprint: Some("AB".to_owned()),
                secondary_thumbprint: None,
            }),
            auth_type: Some("selfSigned".to_owned()),
        }),
    };
    assert_eq!(
        to_json(&module),
        concat!(
            r#"{"moduleId":"m1","managedBy":null,"deviceId":"d1","generationId":"1","etag":"MQ==","#,
            r#""connectionState":"Connected","connectionStateUpdatedTime":"2024-01-02T03:04:05.0000000Z","#,
            r#""lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":0,"#,
            r#""authentication":{"symmetricKey":null,"x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":null},"type":"selfSigned"}}"#
        )
    );
}

fn device_twin() -> TwinDto {
    TwinDto {
        device_id: "dev1".to_owned(),
        module_id: None,
        etag: "AAAAAAAAAAE=".to_owned(),
        device_etag: "NTk0ODUyODgx".to_owned(),
        status: "enabled".to_owned(),
        status_reason: None,
        status_update_time: NEVER.to_owned(),
        connection_state: "Disconnected".to_owned(),
        last_activity_time: NEVER.to_owned(),
        cloud_to_device_message_count: 0,
        authentication_type: "sas".to_owned(),
        x509_thumbprint: X509ThumbprintDto::default(),
        model_id: String::new(),
        version: 2,
        tags: json!({"location": {"region": "US"}}),
        properties: TwinPropertiesDto {
            desired: json!({"$metadata": {"$lastUpdated": "2024-01-01T00:00:00Z"}, "$version": 1}),
            reported: json!({"$metadata": {"$lastUpdated": "2024-01-01T00:00:00Z"}, "$version": 1}),
        },
        capabilities: Some(CapabilitiesDto { iot_edge: false }),
        configurations: Default::default(),
        device_scope: None,
        parent_scopes: vec![],
    }
}

#[test]
fn device_twin_json_text() {
    assert_eq!(
        to_json(&device_twin()),
        concat!(
            r#"{"deviceId":"dev1","etag":"AAAAAAAAAAE=","deviceEtag":"NTk0ODUyODgx","status":"enabled","#,
            r#""statusUpdateTime":"0001-01-01T00:00:00Z","connectionState":"Disconnected","#,
            r#""lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":0,"authenticationType":"sas","#,
            r#""x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"modelId":"","version":2,"#,
            r#""tags":{"location":{"region":"US"}},"#,
            r#""properties":{"desired":{"$metadata":{"$lastUpdated":"2024-01-01T00:00:00Z"},"$version":1},"#,
            r#""reported":{"$metadata":{"$lastUpdated":"2024-01-01T00:00:00Z"},"$version":1}},"#,
            r#""capabilities":{"iotEdge":false}}"#
        )
    );
}

#[test]
fn module_twin_with_optional_members() {
    let mut twin = device_twin();
    twin.module_id = Some("m1".to_owned());
    twin.status_reason = Some("provisioned".to_owned());
    twin.capabilities = None;
    twin.configurations
        .insert("firmware285".to_owned(), json!({"status": "Applied"}));
    twin.device_scope = Some("ms-azure-iot-edge://edge-1".to_owned());
    twin.parent_scopes = vec!["ms-azure-iot-edge://edge-1".to_owned()];
    let value: Value = parse(&to_json(&twin));
    assert_eq!(value["moduleId"], "m1");
    assert_eq!(value["statusReason"], "provisioned");
    assert!(value.get("capabilities").is_none());
    assert_eq!(
        value["configurations"],
        json!({"firmware285": {"status": "Applied"}})
    );
    assert_eq!(value["deviceScope"], "ms-azure-iot-edge://edge-1");
    assert_eq!(value["parentScopes"], json!(["ms-azure-iot-edge://edge-1"]));
    assert_eq!(parse::<TwinDto>(&to_json(&twin)), twin);
}

#[test]
fn csharp_twin_patch() {
    let request: TwinUpdateRequest = parse(
        r#"{"deviceId":"dev1","etag":"AAAAAAAAAAE=","version":null,
            "properties":{"desired":{"fw":{"version":"1.2"},"old":null},"reported":{}},"tags":{"site":"A"}}"#,
    );
    assert_eq!(request.tags, Some(json!({"site": "A"})));
    assert_eq!(
        request.desired(),
        Some(&json!({"fw": {"version": "1.2"}, "old": null}))
    );
    assert_eq!(
        request.properties.as_ref().and_then(|p| p.reported.clone()),
        Some(json!({}))
    );
    assert!(!request.reported_is_nonempty());
}

#[test]
fn twin_update_null_versus_absent() {
    let request: TwinUpdateRequest = parse(r#"{"tags":null,"properties":{"desired":null}}"#);
    assert_eq!(request.tags, Some(Value::Null));
    assert_eq!(request.desired(), Some(&Value::Null));
    assert_eq!(
        request
            .properties
            .as_ref()
            .and_then(|p| p.reported.as_ref()),
        None
    );

    let request: TwinUpdateRequest = parse(r#"{"properties":null}"#);
    assert_eq!(request, TwinUpdateRequest::default());
    assert_eq!((request.tags.as_ref(), request.desired()), (None, None));

    let request: TwinUpdateRequest = parse(r#"{"properties":{}}"#);
    assert_eq!(request.desired(), None);
}

#[test]
fn twin_update_reported_detection() {
    let refused = [
        r#"{"properties":{"reported":{"battery":5}}}"#,
        r#"{"properties":{"reported":"x"}}"#,
    ];
    for body in refused {
        assert!(
            parse::<TwinUpdateRequest>(body).reported_is_nonempty(),
            "{body}"
        );
    }
    let allowed = [
        r#"{"properties":{"reported":{"$version":4,"$metadata":{}}}}"#,
        r#"{"properties":{"reported":null}}"#,
        r#"{"properties":{"reported":{}}}"#,
        r#"{"tags":{}}"#,
    ];
    for body in allowed {
        assert!(
            !parse::<TwinUpdateRequest>(body).reported_is_nonempty(),
            "{body}"
        );
    }
}

#[test]
fn twin_update_rejects_non_object_properties() {
    assert!(serde_json::from_str::<TwinUpdateRequest>(r#"{"properties":5}"#).is_err());
    assert!(serde_json::from_str::<TwinUpdateRequest>(r#"{"properties":{"desired":1}}"#).is_ok());
}

#[test]
fn method_invocations() {
    let node: MethodInvocation = parse(
        r#"{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}"#,
    );
    assert_eq!(node.method_name, "reboot");
    assert_eq!(node.payload, Value::Null);
    assert_eq!(node.response_timeout_in_seconds, Some(30));
    assert_eq!(node.connect_timeout_in_seconds, Some(0));

    let python: MethodInvocation = parse(r#"{"methodName":"m","payload":""}"#);
    assert_eq!(python.payload, json!(""));
    assert_eq!(python.response_timeout_in_seconds, None);

    let bare: MethodInvocation = parse(r#"{"methodName":"m","responseTimeoutInSeconds":null}"#);
    assert_eq!(
        (bare.payload, bare.response_timeout_in_seconds),
        (Value::Null, None)
    );

    assert!(serde_json::from_str::<MethodInvocation>(r#"{"payload":1}"#).is_err());
}

#[test]
fn method_result_json_text() {
    assert_eq!(
        to_json(&MethodResult {
            status: 299,
            payload: Value::Null
        }),
        r#"{"status":299,"payload":null}"#
    );
    assert_eq!(
        to_json(&MethodResult {
            status: 200,
            payload: json!({"ok": true})
        }),
        r#"{"status":200,"payload":{"ok":true}}"#
    );
}

#[test]
fn bulk_import_entries() {
    let entries: Vec<ExportImportDevice> = parse(
        r#"[{"id":"d1","importMode":"create","status":"enabled","authentication":{"type":"sas","symmetricKey":{}}},
            {"id":"d2","importMode":"Delete","eTag":"\"abc\"","tags":null},
            {"id":"d3","importMode":"UPDATETWINIFMATCHETAG","twinETag":"t","tags":{"a":1},"properties":{"desired":{"x":1}}},
            {"id":"d4","importMode":"updateIfMatchETag","capabilities":{"iotEdge":true},"parentScopes":["p"]}]"#,
    );
    let modes: Vec<ImportMode> = entries.iter().map(|e| e.import_mode).collect();
    assert_eq!(
        modes,
        [
            ImportMode::Create,
            ImportMode::Delete,
            ImportMode::UpdateTwinIfMatchETag,
            ImportMode::UpdateIfMatchETag
        ]
    );
    assert_eq!(entries[0].status.as_deref(), Some("enabled"));
    assert_eq!(entries[0].tags, None);
    assert_eq!(entries[1].e_tag.as_deref(), Some("\"abc\""));
    assert_eq!(entries[1].tags, Some(Value::Null));
    assert_eq!(entries[2].twin_e_tag.as_deref(), Some("t"));
    assert_eq!(entries[2].tags, Some(json!({"a": 1})));
    assert_eq!(
        entries[2]
            .properties
            .as_ref()
            .and_then(|p| p.get("desired")),
        Some(&json!({"x": 1}))
    );
    assert_eq!(
        entries[3].capabilities,
        Some(CapabilitiesDto { iot_edge: true })
    );
    assert_eq!(
        ImportMode::UpdateTwinIfMatchETag.as_str(),
        "updateTwinIfMatchETag"
    );

    assert!(
        serde_json::from_str::<ExportImportDevice>(r#"{"id":"d1","importMode":"upsert"}"#).is_err()
    );
    assert!(serde_json::from_str::<ExportImportDevice>(r#"{"id":"d1"}"#).is_err());
}

#[test]
fn bulk_result_json_text() {
    let result = BulkRegistryOperationResult {
        is_successful: false,
        errors: vec![DeviceRegistryOperationError {
            device_id: "d1".to_owned(),
            error_code: "DeviceAlreadyExists".to_owned(),
            error_status: "A device with id d1 already exists".to_owned(),
            module_id: None,
            operation: "create".to_owned(),
        }],
        warnings: vec![DeviceRegistryOperationWarning {
            device_id: "d2".to_owned(),
            warning_code: "DeviceRegisteredWithoutTwin".to_owned(),
            warning_status: "twin not created".to_owned(),
        }],
    };
    let text = to_json(&result);
    assert_eq!(
        text,
        concat!(
            r#"{"isSuccessful":false,"errors":[{"deviceId":"d1","errorCode":"DeviceAlreadyExists","#,
            r#""errorStatus":"A device with id d1 already exists","operation":"create"}],"#,
            r#""warnings":[{"deviceId":"d2","warningCode":"DeviceRegisteredWithoutTwin","warningStatus":"twin not created"}]}"#
        )
    );
    assert_eq!(parse::<BulkRegistryOperationResult>(&text), result);
}

#[test]
fn statistics_json_text() {
    let registry = RegistryStatistics {
        total_device_count: 3,
        enabled_device_count: 2,
        disabled_device_count: 1,
    };
    assert_eq!(
        to_json(&registry),
        r#"{"totalDeviceCount":3,"enabledDeviceCount":2,"disabledDeviceCount":1}"#
    );
    assert_eq!(
        to_json(&ServiceStatistics {
            connected_device_count: 4
        }),
        r#"{"connectedDeviceCount":4}"#
    );
}
