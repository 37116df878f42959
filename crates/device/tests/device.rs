//! The SDK against an in-process twinhub on loopback ports, with real TLS: the device connects to
//! 127.0.0.1 while the hub's name (and the SAS scope) is `localhost`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::timeout;
use twinhub_core::identity::AuthType;
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_device::{
    ConnectError, ConnectionState, Credential, DesiredUpdate, DeviceClient, DeviceConfig,
    TelemetryError, Transport, TwinError,
};
use twinhub_server::hub::{IdentityKey, IdentitySpec, IfMatch, MethodCall, MethodOutcome};
use twinhub_server::{HubConfig, RunningHub};

/// Upper bound on any single wait, so a broken SDK fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(15);

async fn start_hub(data_dir: &Path, mqtt_addr: SocketAddr, https_addr: SocketAddr) -> RunningHub {
    let mut config = HubConfig::new(data_dir);
    config.mqtt_addr = mqtt_addr;
    config.https_addr = https_addr;
    twinhub_server::start(config).await.expect("hub starts")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

struct TestHub {
    running: RunningHub,
    ca_pem: String,
    data_dir: tempfile::TempDir,
}

impl TestHub {
    async fn start() -> TestHub {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let running = start_hub(data_dir.path(), loopback(), loopback()).await;
        let ca_path = running.ca_pem_path.clone().expect("the hub made a CA");
        let ca_pem = std::fs::read_to_string(ca_path).expect("CA readable");
        TestHub {
            running,
            ca_pem,
            data_dir,
        }
    }

    /// Registers a SAS device; returns its primary key.
    async fn create_device(&self, device_id: &str) -> String {
        let record = self
            .running
            .hub
            .create_identity(IdentitySpec::sas_device(device_id))
            .await
            .expect("device created");
        record
            .identity
            .authentication
            .symmetric_key
            .primary_key
            .clone()
    }

    /// A device configuration reaching this hub over MQTT/TLS through 127.0.0.1.
    fn config(&self, device_id: &str, key: &str) -> DeviceConfig {
        let mut config = DeviceConfig::from_connection_string(&format!(
            "HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
        ))
        .expect("valid connection string");
        config.gateway_host = Some("127.0.0.1".to_owned());
        config.port = Some(self.running.mqtt_addr.port());
        config.ca_pem = Some(self.ca_pem.clone());
        config.request_timeout = Duration::from_secs(10);
        config.reconnect_backoff = (Duration::from_millis(100), Duration::from_millis(500));
        config
    }

    async fn connect(&self, device_id: &str) -> DeviceClient {
        let key = self.create_device(device_id).await;
        DeviceClient::connect(self.config(device_id, &key))
            .await
            .expect("device connects")
    }

    async fn patch_desired(&self, device_id: &str, patch: Value) {
        patch_desired(&self.running, device_id, patch).await;
    }

    fn reported(&self, device_id: &str) -> Value {
        let document = self
            .running
            .hub
            .device_twin_document(&IdentityKey::device(device_id))
            .expect("twin exists");
        document["reported"].clone()
    }
}

async fn patch_desired(running: &RunningHub, device_id: &str, patch: Value) {
    let Value::Object(patch) = patch else {
        panic!("patch must be an object")
    };
    running
        .hub
        .update_twin(
            &IdentityKey::device(device_id),
            ServiceUpdate {
                tags: None,
                desired: Some(Change::Patch(patch)),
            },
            &IfMatch::Any,
        )
        .await
        .expect("desired patched");
}

async fn invoke(
    running: &RunningHub,
    device_id: &str,
    name: &str,
    payload: Value,
) -> MethodOutcome {
    running
        .hub
        .invoke_method(
            &IdentityKey::device(device_id),
            MethodCall {
                name: name.to_owned(),
                payload,
                response_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("method answered")
}

/// Answers every method call with 200 and `{"method": name, "echo": payload}`.
async fn serve_methods(client: &DeviceClient) {
    let mut calls = client.methods().await.expect("subscribed to methods");
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            let answer = json!({"method": call.name, "echo": call.payload});
            let _ = call.respond(200, answer).await;
        }
    });
}

async fn next_update(
    updates: &mut tokio::sync::broadcast::Receiver<DesiredUpdate>,
) -> DesiredUpdate {
    timeout(WAIT, updates.recv())
        .await
        .expect("a desired update in time")
        .expect("the stream is open")
}

async fn wait_for_state(
    states: &mut watch::Receiver<ConnectionState>,
    wanted: impl Fn(&ConnectionState) -> bool,
) {
    timeout(WAIT, states.wait_for(wanted))
        .await
        .expect("state reached in time")
        .expect("state channel open");
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_round_trip_and_desired_updates() {
    let hub = TestHub::start().await;
    let client = hub.connect("twin-dev").await;
    assert_eq!(
        *client.connection_state().borrow(),
        ConnectionState::Connected
    );

    let twin = client.get_twin().await.expect("twin read");
    assert!(twin.desired.is_empty() && twin.reported.is_empty());

    let version = client
        .update_reported(json!({"temperature": 21.5, "firmware": {"version": "1.0"}}))
        .await
        .expect("reported updated");
    assert_eq!(version, twin.reported_version + 1);
    assert_eq!(hub.reported("twin-dev")["temperature"], json!(21.5));
    assert_eq!(hub.reported("twin-dev")["$version"], json!(version));

    let mut updates = client.desired_updates();
    hub.patch_desired("twin-dev", json!({"interval": 5})).await;
    let update = next_update(&mut updates).await;
    assert_eq!(update.version, twin.desired_version + 1);
    assert_eq!(update.patch, object(json!({"interval": 5})));
    assert!(!update.full);

    let twin = client.get_twin().await.expect("twin read");
    assert_eq!(twin.desired, object(json!({"interval": 5})));
    assert_eq!(twin.reported["firmware"], json!({"version": "1.0"}));

    // Concurrent requests are told apart by $rid.
    let (a, b, c) = tokio::join!(
        client.update_reported(json!({"a": 1})),
        client.update_reported(json!({"b": 2})),
        client.get_twin(),
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_ne!(a, b);
    assert!(c.is_ok());

    let rejected = client.update_reported(json!({"$bad": 1})).await;
    assert!(
        matches!(rejected, Err(TwinError::Rejected { status: 400, .. })),
        "{rejected:?}"
    );
    assert_eq!(
        client.update_reported(json!([1])).await,
        Err(TwinError::InvalidPatch)
    );

    client.close().await;
    assert_eq!(*client.connection_state().borrow(), ConnectionState::Closed);
    assert_eq!(client.get_twin().await, Err(TwinError::Closed));
    hub.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_with_code_5() {
    let hub = TestHub::start().await;
    hub.create_device("locked").await;
    let wrong_key = "Zm9yZWlnbiBrZXkgdGhhdCBzaWducyBub3RoaW5nISE=";
    let result = DeviceClient::connect(hub.config("locked", wrong_key)).await;
    assert!(
        matches!(result, Err(ConnectError::Refused { code: 5 })),
        "{:?}",
        result.err()
    );
    hub.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_telemetry() {
    let hub = TestHub::start().await;
    let client = hub.connect("method-dev").await;
    serve_methods(&client).await;

    let outcome = invoke(&hub.running, "method-dev", "reboot", json!({"delay": 3})).await;
    assert_eq!(outcome.status, 200);
    assert_eq!(
        outcome.payload,
        json!({"method": "reboot", "echo": {"delay": 3}})
    );

    client
        .send_telemetry(
            r#"{"t": 1}"#,
            &[("$.ct", "application/json"), ("kind", "test")],
        )
        .await
        .expect("telemetry acknowledged");
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.send_telemetry(format!("{i}"), &[]).await })
        })
        .collect();
    for send in sends {
        send.await
            .expect("task completes")
            .expect("telemetry acknowledged");
    }
    let too_large = client.send_telemetry(vec![0u8; 300 * 1024], &[]).await;
    assert!(matches!(too_large, Err(TelemetryError::TooLarge { .. })));

    client.close().await;
    hub.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_hub_restart_and_catches_up_on_desired() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let first = start_hub(data_dir.path(), loopback(), loopback()).await;
    let (mqtt_addr, https_addr) = (first.mqtt_addr, first.https_addr);
    let hub = TestHub {
        ca_pem: std::fs::read_to_string(first.ca_pem_path.clone().expect("CA")).expect("CA"),
        running: first,
        data_dir,
    };
    let client = hub.connect("restart-dev").await;
    serve_methods(&client).await;
    let mut updates = client.desired_updates();
    let mut states = client.connection_state();
    hub.patch_desired("restart-dev", json!({"mode": "eco"}))
        .await;
    let live = next_update(&mut updates).await;
    assert!(!live.full);

    // Stop the hub; while the device cannot reach it, change desired on a hub running from the
    // same store on other ports; then bring the hub back on the device's ports.
    let TestHub {
        running,
        ca_pem: _,
        data_dir,
    } = hub;
    running.shutdown().await;
    wait_for_state(&mut states, |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let elsewhere = start_hub(data_dir.path(), loopback(), loopback()).await;
    patch_desired(
        &elsewhere,
        "restart-dev",
        json!({"mode": "turbo", "level": 2}),
    )
    .await;
    elsewhere.shutdown().await;
    let running = start_hub(data_dir.path(), mqtt_addr, https_addr).await;

    let update = next_update(&mut updates).await;
    assert!(update.full, "{update:?}");
    assert_eq!(update.version, live.version + 1);
    assert_eq!(update.patch, object(json!({"mode": "turbo", "level": 2})));
    wait_for_state(&mut states, |s| *s == ConnectionState::Connected).await;

    // The new hub process had no session: methods and desired notifications work because the
    // client subscribed again.
    let outcome = invoke(&running, "restart-dev", "ping", Value::Null).await;
    assert_eq!(outcome.status, 200);
    patch_desired(&running, "restart-dev", json!({"level": 3})).await;
    let update = next_update(&mut updates).await;
    assert_eq!((update.version, update.full), (live.version + 2, false));
    assert!(client.update_reported(json!({"back": true})).await.is_ok());

    client.close().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_renewal_keeps_the_device_working() {
    let hub = TestHub::start().await;
    let key = hub.create_device("renew-dev").await;
    let mut config = hub.config("renew-dev", &key);
    config.sas_ttl = Duration::from_secs(3);
    let client = DeviceClient::connect(config).await.expect("connects");
    serve_methods(&client).await;
    let mut states = client.connection_state();
    for round in 0..2 {
        wait_for_state(
            &mut states,
            |s| matches!(s, ConnectionState::Disconnected { reason } if reason.contains("renew")),
        )
        .await;
        wait_for_state(&mut states, |s| *s == ConnectionState::Connected).await;
        client.get_twin().await.expect("twin after renewal");
        client
            .update_reported(json!({"round": round}))
            .await
            .expect("reported after renewal");
        let outcome = invoke(&hub.running, "renew-dev", "ping", json!(round)).await;
        assert_eq!(outcome.status, 200);
    }
    assert_eq!(hub.reported("renew-dev")["round"], json!(1));
    client.close().await;
    hub.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_transport() {
    let hub = TestHub::start().await;
    let key = hub.create_device("ws-dev").await;
    let mut config = hub.config("ws-dev", &key);
    config.transport = Transport::WebSockets;
    config.port = Some(hub.running.https_addr.port());
    let client = DeviceClient::connect(config)
        .await
        .expect("connects over WebSockets");
    serve_methods(&client).await;
    let version = client
        .update_reported(json!({"transport": "ws"}))
        .await
        .expect("reported");
    assert_eq!(
        client.get_twin().await.expect("twin").reported_version,
        version
    );
    let outcome = invoke(&hub.running, "ws-dev", "hello", json!("there")).await;
    assert_eq!(outcome.payload, json!({"method": "hello", "echo": "there"}));
    client.close().await;
    hub.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_device() {
    let hub = TestHub::start().await;
    let (cert_pem, key_pem) =
        twinhub_server::tls::self_signed_client_cert("x509-dev").expect("certificate");
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("PEM");
    let (_, sha256) = twinhub_server::tls::thumbprints(&der);
    let mut spec = IdentitySpec::sas_device("x509-dev");
    spec.auth_type = AuthType::SelfSigned;
    spec.primary_thumbprint = Some(sha256);
    hub.running
        .hub
        .create_identity(spec)
        .await
        .expect("device created");

    let mut config =
        DeviceConfig::from_connection_string("HostName=localhost;DeviceId=x509-dev;x509=true")
            .expect("valid");
    config.credential = Credential::X509 {
        cert_pem: cert_pem.clone(),
        key_pem: key_pem.clone(),
    };
    config.gateway_host = Some("127.0.0.1".to_owned());
    config.port = Some(hub.running.mqtt_addr.port());
    config.ca_pem = Some(hub.ca_pem.clone());
    let client = DeviceClient::connect(config.clone())
        .await
        .expect("connects with a certificate");
    client
        .update_reported(json!({"auth": "x509"}))
        .await
        .expect("reported");
    assert_eq!(hub.reported("x509-dev")["auth"], json!("x509"));
    client.close().await;

    // Another certificate is not the registered one.
    let (other_cert, other_key) =
        twinhub_server::tls::self_signed_client_cert("x509-dev").expect("certificate");
    config.credential = Credential::X509 {
        cert_pem: other_cert,
        key_pem: other_key,
    };
    let refused = DeviceClient::connect(config).await;
    assert!(
        matches!(refused, Err(ConnectError::Refused { code: 5 })),
        "{:?}",
        refused.err()
    );
    hub.running.shutdown().await;
}
