//! Devices authenticating with a self-signed X.509 certificate instead of a SAS token.

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use twinhub_mqtt::{ConnectReturnCode, QoS};
use twinhub_server::tls::{self_signed_client_cert, thumbprints};

use crate::support::{TestHub, device_connect};

fn sha1_thumbprint(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    thumbprints(der.as_ref()).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_devices_connect_with_their_registered_certificate() {
    let hub = TestHub::start().await;
    let (cert, key) = self_signed_client_cert("x1").expect("certificate");
    let (other_cert, other_key) = self_signed_client_cert("x1").expect("certificate");
    let body = json!({
        "deviceId": "x1",
        "authentication": {
            "type": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": sha1_thumbprint(&cert), "secondaryThumbprint": null},
        },
    });
    let created = hub.rest("PUT", "/devices/x1", Some(&body)).await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["authentication"]["type"], "selfSigned");

    let mut device = hub.mqtt_socket(Some((&cert, &key))).await;
    let ack = device.connect(device_connect("x1", None, true)).await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::Accepted,
        "no password, as the SDKs send"
    );
    device
        .subscribe(&[("$iothub/twin/res/#", QoS::AtMostOnce)])
        .await;
    let twin = device.get_twin("1").await;
    assert_eq!(twin["reported"]["$version"], 1, "{twin}");
    assert_eq!(
        device
            .patch_reported("2", br#"{"auth":"x509"}"#)
            .await
            .status,
        204
    );
    drop(device);

    let mut empty_password = hub.mqtt_socket(Some((&cert, &key))).await;
    let mut connect = device_connect("x1", None, true);
    connect.password = Some(Bytes::new());
    assert_eq!(
        empty_password.connect(connect).await.code,
        ConnectReturnCode::Accepted,
        "an empty password"
    );
    drop(empty_password);

    let mut impostor = hub.mqtt_socket(Some((&other_cert, &other_key))).await;
    let ack = impostor.connect(device_connect("x1", None, true)).await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "a certificate with another thumbprint"
    );
    impostor.expect_closed().await;

    let mut no_certificate = hub.mqtt_socket(None).await;
    let ack = no_certificate
        .connect(device_connect("x1", None, true))
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "no certificate at all"
    );
    no_certificate.expect_closed().await;

    hub.create_device("sas-device").await;
    let mut wrong_method = hub.mqtt_socket(Some((&cert, &key))).await;
    let ack = wrong_method
        .connect(device_connect("sas-device", None, true))
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "a SAS device cannot use a certificate"
    );
    wrong_method.expect_closed().await;

    let twin = hub.rest("GET", "/twins/x1", None).await.json();
    assert_eq!(twin["authenticationType"], "selfSigned", "{twin}");
    assert_eq!(twin["properties"]["reported"]["auth"], "x509", "{twin}");
    hub.stop().await;
}
