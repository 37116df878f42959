//! Firmware hosting: back ends upload packages over HTTPS, devices download them with their own
//! SAS token or client certificate, in whole or by range, and packages survive a restart.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use twinhub_server::tls::{self_signed_client_cert, thumbprints};

use crate::support::{
    API_VERSION, HOSTNAME, HttpRequest, HttpResponse, TestHub, device_token, exchange, now_unix,
    sas_token,
};

fn package(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Uploads `bytes` as the owner.
async fn upload(hub: &TestHub, id: &str, version: &str, bytes: &[u8]) -> HttpResponse {
    hub.rest_with(
        "PUT",
        &format!("/firmware/{id}?version={version}"),
        &[("Content-Type", "application/octet-stream")],
        Some(bytes.to_vec()),
    )
    .await
}

/// Downloads `id` with the given extra headers and no service credentials.
async fn download(hub: &TestHub, id: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let target = format!("/firmware/{id}/content?{API_VERSION}");
    hub.https(&HttpRequest {
        method: "GET",
        target: &target,
        headers,
        body: None,
    })
    .await
}

/// The names in the hub's firmware directory.
fn firmware_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("firmware"))
        .expect("the firmware directory exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_hosted_for_devices() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path().to_path_buf();
    let hub = TestHub::start_with(|config| config.data_dir = dir.clone()).await;
    let bytes = package(300 * 1024);

    let created = upload(&hub, "fw-1.0", "1.0.0", &bytes).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let port = hub.https_addr.port();
    assert_eq!(
        created,
        json!({
            "id": "fw-1.0",
            "version": "1.0.0",
            "size": bytes.len(),
            "sha256": sha256_hex(&bytes),
            "url": format!("https://{HOSTNAME}:{port}/firmware/fw-1.0/content"),
            "uploadedTimeUtc": created["uploadedTimeUtc"],
        })
    );
    assert!(created["uploadedTimeUtc"].is_string(), "{created}");
    upload(&hub, "fw-1.0", "1.0.1", b"other bytes")
        .await
        .assert_error(409, "FirmwarePackageAlreadyExists");

    let listed = hub.rest("GET", "/firmware", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), Value::Array(vec![created.clone()]));
    let got = hub.rest("GET", "/firmware/fw-1.0", None).await;
    assert_eq!((got.status, got.json()), (200, created.clone()));
    hub.rest("GET", "/firmware/missing", None)
        .await
        .assert_error(404, "FirmwarePackageNotFound");

    let key = hub.create_device("d1").await;
    let token = device_token("d1", &key);
    let auth = ("Authorization", token.as_str());
    let whole = download(&hub, "fw-1.0", &[auth]).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == bytes, "the downloaded bytes are the package");
    assert_eq!(whole.header("content-length"), Some("307200"));
    assert_eq!(
        whole.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    assert_eq!(whole.header("etag"), Some(etag.as_str()));

    let part = download(&hub, "fw-1.0", &[auth, ("Range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[10..20]);
    assert_eq!(part.header("content-range"), Some("bytes 10-19/307200"));
    assert_eq!(part.header("content-length"), Some("10"));
    let rest = download(&hub, "fw-1.0", &[auth, ("Range", "bytes=5-")]).await;
    assert_eq!(rest.status, 206);
    assert!(
        rest.body == bytes[5..],
        "bytes=5- is everything after the fifth"
    );
    assert_eq!(rest.header("content-range"), Some("bytes 5-307199/307200"));
    let beyond = download(&hub, "fw-1.0", &[auth, ("Range", "bytes=999999-")]).await;
    beyond.assert_error(416, "RangeNotSatisfiable");
    assert_eq!(beyond.header("content-range"), Some("bytes */307200"));

    let deleted = hub.rest("DELETE", "/firmware/fw-1.0", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    hub.rest("GET", "/firmware/fw-1.0", None)
        .await
        .assert_error(404, "FirmwarePackageNotFound");
    download(&hub, "fw-1.0", &[auth])
        .await
        .assert_error(404, "FirmwarePackageNotFound");
    assert!(
        firmware_files(&dir).is_empty(),
        "{:?}",
        firmware_files(&dir)
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_need_a_valid_enabled_device_or_service() {
    let hub = TestHub::start().await;
    assert_eq!(upload(&hub, "fw", "1", &package(64)).await.status, 201);
    let key = hub.create_device("d1").await;

    let disabled_key = twinhub_core::identity::generate_symmetric_key();
    let body = json!({
        "deviceId": "off",
        "status": "disabled",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": disabled_key, "secondaryKey": disabled_key}},
    });
    let created = hub.rest("PUT", "/devices/off", Some(&body)).await;
    assert_eq!(created.status, 200, "{}", created.text());

    let foreign_hub = sas_token(
        "other-hub.example/devices/d1",
        &key,
        None,
        now_unix() + 3600,
    );
    let refused = [
        ("no token", None),
        ("another hub's token", Some(foreign_hub)),
        (
            "a disabled device",
            Some(device_token("off", &disabled_key)),
        ),
        ("an unknown device", Some(device_token("ghost", &key))),
    ];
    for (what, token) in refused {
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| ("Authorization", t))
            .into_iter()
            .collect();
        let response = download(&hub, "fw", &headers).await;
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert_eq!(
            response.header("iothub-errorcode"),
            Some("IotHubUnauthorizedAccess"),
            "{what}"
        );
    }

    let service = hub.service_token();
    let by_service = download(&hub, "fw", &[("Authorization", &service)]).await;
    assert_eq!(by_service.status, 200, "a service token downloads too");
    let device = device_token("d1", &key);
    let listing = hub
        .https(&HttpRequest {
            method: "GET",
            target: &format!("/firmware?{API_VERSION}"),
            headers: &[("Authorization", &device)],
            body: None,
        })
        .await;
    assert_eq!(listing.status, 401, "a device token does not list packages");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_devices_download_with_their_registered_certificate() {
    let hub = TestHub::start().await;
    let bytes = package(5000);
    assert_eq!(upload(&hub, "fw", "1", &bytes).await.status, 201);
    let (cert, key) = self_signed_client_cert("x1").expect("certificate");
    let (other_cert, other_key) = self_signed_client_cert("x1").expect("certificate");
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("certificate PEM");
    let body = json!({
        "deviceId": "x1",
        "authentication": {
            "type": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": thumbprints(der.as_ref()).0, "secondaryThumbprint": null},
        },
    });
    assert_eq!(
        hub.rest("PUT", "/devices/x1", Some(&body)).await.status,
        200
    );
    let target = format!("/firmware/fw/content?{API_VERSION}");
    let request = HttpRequest {
        method: "GET",
        target: &target,
        headers: &[("Range", "bytes=100-")],
        body: None,
    };

    let stream = hub.tls(hub.https_addr, Some((&cert, &key))).await;
    let response = exchange(stream, &request).await.expect("an answer");
    assert_eq!(response.status, 206, "{}", response.text());
    assert!(response.body == bytes[100..], "the range of the package");

    let stream = hub
        .tls(hub.https_addr, Some((&other_cert, &other_key)))
        .await;
    let response = exchange(stream, &request).await.expect("an answer");
    assert_eq!(response.status, 401, "an unregistered certificate");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packages_are_refused_and_leave_nothing() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path().to_path_buf();
    let hub = TestHub::start_with(|config| {
        config.data_dir = dir.clone();
        config.max_firmware_size = 1024;
    })
    .await;
    upload(&hub, "big", "1", &package(4096))
        .await
        .assert_error(413, "MessageTooLarge");
    assert!(
        firmware_files(&dir).is_empty(),
        "{:?}",
        firmware_files(&dir)
    );
    assert_eq!(upload(&hub, "fits", "1", &package(1024)).await.status, 201);
    assert_eq!(
        hub.rest("GET", "/firmware", None).await.json()[0]["id"],
        "fits"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_survive_a_restart() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path().to_path_buf();
    let bytes = package(70_000);
    let hub = TestHub::start_with(|config| config.data_dir = dir.clone()).await;
    let created = upload(&hub, "kept", "2.0", &bytes).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let key = hub.create_device("d1").await;
    hub.stop().await;

    let hub = TestHub::start_with(|config| config.data_dir = dir.clone()).await;
    let got = hub.rest("GET", "/firmware/kept", None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = got.json();
    assert_eq!(got["version"], "2.0");
    assert_eq!(got["sha256"], sha256_hex(&bytes));
    let port = hub.https_addr.port();
    assert_eq!(
        got["url"],
        format!("https://{HOSTNAME}:{port}/firmware/kept/content"),
        "the URL names the port bound now"
    );
    let token = device_token("d1", &key);
    let response = download(&hub, "kept", &[("Authorization", &token)]).await;
    assert_eq!(response.status, 200);
    assert!(response.body == bytes, "the package's bytes survived");
    assert_eq!(firmware_files(&dir), ["kept"]);
    hub.stop().await;
}

/// A refused upload is answered after its body has been read, so a client that sends the whole
/// body before reading (as HTTP/1.1 clients without `Expect: 100-continue` do) gets the 409
/// instead of a connection reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_answered_after_its_body() {
    let hub = TestHub::start().await;
    let first = upload(&hub, "fw-dup", "1.0.0", b"the first package").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let large = vec![7u8; 8 * 1024 * 1024];
    let duplicate = hub
        .try_rest_with(
            "PUT",
            "/firmware/fw-dup?version=2.0.0",
            &[("Content-Type", "application/octet-stream")],
            Some(large),
        )
        .await
        .expect("the client finishes sending and reads the answer");
    duplicate.assert_error(409, "FirmwarePackageAlreadyExists");
    hub.stop().await;
}
