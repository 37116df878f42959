//! The client against an in-process twinhub on ephemeral loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use twinhub_client::rest::{
    ConfigurationContentDto, ConfigurationDto, ConfigurationMetricsDto,
    ConfigurationQueriesTestInput, MethodInvocation,
};
use twinhub_client::{ClientError, DeviceAuth, JobRequest, ServiceClient};
use twinhub_server::{HubConfig, RunningHub};

const KEY_A: &str = "dGhpcyBpcyBhIHRlc3QgZGV2aWNlIGtleSAzMiBieXQ=";
const KEY_B: &str = "c2Vjb25kIHRlc3QgZGV2aWNlIGtleSBvZiAzMiBieXQ=";

struct Hub {
    running: RunningHub,
    client: ServiceClient,
    _data_dir: tempfile::TempDir,
}

impl Hub {
    async fn start() -> Hub {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut config = HubConfig::new(data_dir.path());
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        config.mqtt_addr = loopback;
        config.https_addr = loopback;
        let running = twinhub_server::start(config).await.expect("the hub starts");
        let ca_path = running.ca_pem_path.clone().expect("a generated CA");
        let ca = std::fs::read_to_string(ca_path).expect("the CA is readable");
        // The hub's own connection string names `localhost` on port 443; point it at the
        // ephemeral port as a user of a non-default port would.
        let connection_string = running.service_connection_string.trim().replacen(
            "HostName=localhost",
            &format!("HostName=localhost:{}", running.https_addr.port()),
            1,
        );
        let client = ServiceClient::from_connection_string(&connection_string, Some(&ca))
            .expect("the client builds");
        Hub {
            running,
            client,
            _data_dir: data_dir,
        }
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.running.shutdown())
            .await
            .expect("the hub stops in time");
    }
}

fn service_code(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Service { status, code, .. }) => (status, code),
        other => panic!("expected a service error, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_crud_bulk_and_connection_strings() {
    let hub = Hub::start().await;
    let client = &hub.client;

    let generated = client
        .create_device("d1", &DeviceAuth::GeneratedKeys)
        .await
        .expect("created");
    let keys = generated
        .authentication
        .as_ref()
        .and_then(|a| a.symmetric_key.clone())
        .expect("keys");
    assert!(keys.primary_key.is_some_and(|k| !k.is_empty()));

    let given = client
        .create_device(
            "d#2%",
            &DeviceAuth::Keys {
                primary: KEY_A.to_owned(),
                secondary: KEY_B.to_owned(),
            },
        )
        .await
        .expect("created with given keys");
    assert_eq!(given.device_id, "d#2%");
    let fetched = client.get_device("d#2%").await.expect("fetched");
    assert_eq!(
        client
            .device_connection_string(&fetched)
            .expect("a SAS device"),
        format!(
            "HostName=localhost:{};DeviceId=d#2%;SharedAccessKey={KEY_A}",
            hub.running.https_addr.port()
        )
    );

    let x509 = client
        .create_device(
            "d3",
            &DeviceAuth::SelfSigned {
                primary_thumbprint: "a".repeat(40),
                secondary_thumbprint: "b".repeat(40),
            },
        )
        .await
        .expect("created with thumbprints");
    assert!(
        client
            .device_connection_string(&x509)
            .expect("an X.509 device")
            .ends_with(";DeviceId=d3;x509=true")
    );

    assert_eq!(
        service_code(client.create_device("d1", &DeviceAuth::GeneratedKeys).await),
        (409, "DeviceAlreadyExists".to_owned())
    );

    let mut disabled = fetched.clone();
    disabled.status = Some("disabled".to_owned());
    let updated = client
        .update_device(&disabled, fetched.etag.as_deref())
        .await
        .expect("updated");
    assert_eq!(updated.status.as_deref(), Some("disabled"));
    assert_eq!(
        service_code(client.delete_device("d#2%", fetched.etag.as_deref()).await),
        (412, "PreconditionFailed".to_owned())
    );
    client
        .delete_device("d#2%", updated.etag.as_deref())
        .await
        .expect("deleted with the current etag");
    let (status, code) = service_code(client.get_device("d#2%").await);
    assert_eq!((status, code.as_str()), (404, "DeviceNotFound"));

    let bulk: Vec<(String, DeviceAuth)> = ["b1", "b2", "d1"]
        .iter()
        .map(|id| ((*id).to_owned(), DeviceAuth::GeneratedKeys))
        .collect();
    let result = client.bulk_create_devices(&bulk).await.expect("answered");
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].device_id, "d1");
    assert_eq!(result.errors[0].error_code, "DeviceAlreadyExists");

    let mut ids: Vec<String> = client
        .list_devices(None)
        .await
        .expect("listed")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["b1", "b2", "d1", "d3"]);
    assert_eq!(client.list_devices(Some(2)).await.expect("top 2").len(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn twins_with_etags_and_queries_over_pages() {
    let hub = Hub::start().await;
    let client = &hub.client;
    let devices: Vec<(String, DeviceAuth)> = (0..230)
        .map(|i| (format!("q{i:03}"), DeviceAuth::GeneratedKeys))
        .collect();
    let result = client.bulk_create_devices(&devices).await.expect("bulk");
    assert!(result.is_successful, "{result:?}");

    let twin = client.get_twin("q000").await.expect("twin");
    let patch = json!({"tags": {"site": "north"}, "properties": {"desired": {"interval": 5}}});
    let updated = client
        .update_twin("q000", &patch, Some(&twin.etag))
        .await
        .expect("patched with the current etag");
    assert_eq!(updated.tags["site"], "north");
    assert_eq!(updated.properties.desired["interval"], 5);
    assert_eq!(
        service_code(client.update_twin("q000", &patch, Some(&twin.etag)).await),
        (412, "PreconditionFailed".to_owned())
    );
    let replaced = client
        .replace_twin("q000", &json!({"tags": {"only": true}}), None)
        .await
        .expect("replaced");
    assert_eq!(replaced.tags, json!({"only": true}));

    let page = client
        .query_page("SELECT * FROM devices", Some(100), None)
        .await
        .expect("first page");
    assert_eq!(page.items.len(), 100);
    assert_eq!(page.item_type.as_deref(), Some("twin"));
    let token = page.continuation.expect("more pages");
    let second = client
        .query_page("SELECT * FROM devices", Some(100), Some(&token))
        .await
        .expect("second page");
    assert_eq!(second.items.len(), 100);
    let all = client
        .query_all("SELECT deviceId FROM devices")
        .await
        .expect("all pages");
    assert_eq!(all.len(), 230);
    let mut ids: Vec<&str> = all.iter().filter_map(|r| r["deviceId"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 230);
    let (status, code) = service_code(client.query_all("SELECT FROM WHERE").await);
    assert_eq!((status, code.as_str()), (400, "ArgumentInvalid"));
    hub.stop().await;
}

#[tokio::test]
async fn configurations_lifecycle() {
    let hub = Hub::start().await;
    let client = &hub.client;
    client
        .create_device("c1", &DeviceAuth::GeneratedKeys)
        .await
        .expect("device");
    client
        .update_twin("c1", &json!({"tags": {"kind": "chiller"}}), None)
        .await
        .expect("tagged");
    let mut content = serde_json::Map::new();
    content.insert(
        "properties.desired.firmware".to_owned(),
        json!({"fwVersion": "2.0"}),
    );
    let mut queries = serde_json::Map::new();
    queries.insert(
        "current".to_owned(),
        Value::from("SELECT deviceId FROM devices WHERE configurations.[[fw2]].status='Applied'"),
    );
    let configuration = ConfigurationDto {
        id: "fw2".to_owned(),
        content: ConfigurationContentDto {
            device_content: Some(content),
            ..Default::default()
        },
        target_condition: "tags.kind = 'chiller'".to_owned(),
        priority: 10,
        metrics: ConfigurationMetricsDto {
            queries,
            ..Default::default()
        },
        ..Default::default()
    };
    let created = client
        .create_configuration(&configuration)
        .await
        .expect("created");
    assert_eq!(created.id, "fw2");
    let fetched = client.get_configuration("fw2").await.expect("fetched");
    assert_eq!(fetched.system_metrics.results["targetedCount"], 1);
    assert_eq!(fetched.metrics.results["current"], 1);
    let twin = client.get_twin("c1").await.expect("twin");
    assert_eq!(twin.properties.desired["firmware"]["fwVersion"], "2.0");

    let mut changed = fetched.clone();
    changed.priority = 20;
    let updated = client
        .update_configuration(&changed, fetched.etag.as_deref())
        .await
        .expect("updated");
    assert_eq!(updated.priority, 20);
    assert_eq!(
        client
            .list_configurations(None)
            .await
            .expect("listed")
            .len(),
        1
    );
    let test = client
        .test_configuration_queries(&ConfigurationQueriesTestInput {
            target_condition: "tags.kind = ".to_owned(),
            ..Default::default()
        })
        .await
        .expect("tested");
    assert!(!test.target_condition_error.is_empty());
    assert_eq!(
        service_code(client.create_configuration(&configuration).await),
        (409, "ConfigurationAlreadyExists".to_owned())
    );
    client
        .delete_configuration("fw2", None)
        .await
        .expect("deleted");
    assert_eq!(
        service_code(client.get_configuration("fw2").await),
        (404, "ConfigurationNotFound".to_owned())
    );
    hub.stop().await;
}

#[tokio::test]
async fn jobs_and_methods() {
    let hub = Hub::start().await;
    let client = &hub.client;
    client
        .create_device("j1", &DeviceAuth::GeneratedKeys)
        .await
        .expect("device");

    let job = JobRequest::twin_update("tag-all", "*", json!({"tags": {"batch": 7}}));
    let created = client.create_job(&job).await.expect("scheduled");
    assert_eq!(created["jobId"], "tag-all");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = client.get_job("tag-all").await.expect("job");
        if job["status"] == "completed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "job stuck: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get_twin("j1").await.expect("twin").tags["batch"], 7);

    let mut later = JobRequest::device_method(
        "reboot-later",
        "*",
        MethodInvocation {
            method_name: "reboot".to_owned(),
            payload: Value::Null,
            response_timeout_in_seconds: Some(10),
            connect_timeout_in_seconds: None,
        },
    );
    later.start_time = Some("2099-01-01T00:00:00Z".to_owned());
    client.create_job(&later).await.expect("scheduled later");
    let cancelled = client.cancel_job("reboot-later").await.expect("cancelled");
    assert_eq!(cancelled["status"], "cancelled");
    let all = client.list_jobs(None, None).await.expect("listed");
    assert_eq!(all.len(), 2);
    let methods = client
        .list_jobs(Some("scheduleDeviceMethod"), None)
        .await
        .expect("filtered");
    assert_eq!(methods.len(), 1);
    assert_eq!(methods[0]["jobId"], "reboot-later");
    assert_eq!(
        service_code(client.get_job("nope").await),
        (404, "JobNotFound".to_owned())
    );

    let offline = client
        .invoke_method(
            "j1",
            &MethodInvocation {
                method_name: "reboot".to_owned(),
                payload: json!({}),
                response_timeout_in_seconds: Some(5),
                connect_timeout_in_seconds: None,
            },
        )
        .await;
    assert_eq!(service_code(offline), (404, "DeviceNotOnline".to_owned()));
    hub.stop().await;
}

#[tokio::test]
async fn firmware_upload_list_get_delete() {
    let hub = Hub::start().await;
    let client = &hub.client;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fw.bin");
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).expect("written");

    let package = client
        .upload_firmware("fw-1.2.0", "1.2.0", &path)
        .await
        .expect("uploaded");
    assert_eq!(package.id, "fw-1.2.0");
    assert_eq!(package.version, "1.2.0");
    assert_eq!(package.size, 100_000);
    assert_eq!(package.sha256.len(), 64);
    assert!(
        package.url.ends_with("/firmware/fw-1.2.0/content"),
        "{}",
        package.url
    );
    assert_eq!(client.get_firmware("fw-1.2.0").await.expect("got"), package);
    assert_eq!(client.list_firmware().await.expect("listed"), vec![package]);
    assert_eq!(
        service_code(client.upload_firmware("fw-1.2.0", "1.2.0", &path).await).0,
        409
    );
    client.delete_firmware("fw-1.2.0").await.expect("deleted");
    assert_eq!(service_code(client.get_firmware("fw-1.2.0").await).0, 404);
    let missing = client
        .upload_firmware("fw-x", "1", &dir.path().join("missing.bin"))
        .await;
    assert!(
        matches!(missing, Err(ClientError::File { .. })),
        "{missing:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn failures_are_typed() {
    let hub = Hub::start().await;
    let ca = std::fs::read_to_string(hub.running.ca_pem_path.clone().expect("CA")).expect("CA");
    let port = hub.running.https_addr.port();

    let wrong_key = ServiceClient::from_connection_string(
        &format!(
            "HostName=localhost:{port};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY_A}"
        ),
        Some(&ca),
    )
    .expect("client");
    let (status, code) = service_code(wrong_key.list_devices(None).await);
    assert_eq!((status, code.as_str()), (401, "IotHubUnauthorizedAccess"));

    hub.stop().await;
    let gone = ServiceClient::from_connection_string(
        &format!(
            "HostName=localhost:{port};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY_A}"
        ),
        Some(&ca),
    )
    .expect("client");
    let result = gone.get_device("d1").await;
    assert!(
        matches!(result, Err(ClientError::Transport(_))),
        "{result:?}"
    );
}
