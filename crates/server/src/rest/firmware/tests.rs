use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use twinhub_core::time::Timestamp;
use twinhub_store::{Batch, MemoryStore, Store, Table};

use super::{ByteRange, parse_range};
use crate::hub::{FirmwareSettings, Hub, HubSettings, IdentitySpec, JobLimits};
use crate::metrics::Metrics;
use crate::rest::{AppState, router};

#[test]
fn single_ranges_are_served_in_part() {
    let part = |start, end| ByteRange::Part { start, end };
    assert_eq!(parse_range(Some("bytes=10-19"), 100), part(10, 19));
    assert_eq!(parse_range(Some("bytes=5-"), 100), part(5, 99));
    assert_eq!(parse_range(Some("bytes=90-500"), 100), part(90, 99));
    assert_eq!(parse_range(Some("bytes=-30"), 100), part(70, 99));
    assert_eq!(parse_range(Some("bytes=-500"), 100), part(0, 99));
    assert_eq!(parse_range(Some("Bytes = 0-0"), 100), part(0, 0));
    assert_eq!(parse_range(Some("bytes=99-99"), 100), part(99, 99));
}

#[test]
fn ranges_beyond_the_end_are_unsatisfiable() {
    for header in [
        "bytes=100-",
        "bytes=100-200",
        "bytes=999999-",
        "bytes=-0",
        "bytes=99999999999999999999999-",
    ] {
        assert_eq!(
            parse_range(Some(header), 100),
            ByteRange::Unsatisfiable,
            "{header}"
        );
    }
}

#[test]
fn other_headers_get_the_whole_content() {
    for header in [
        None,
        Some("bytes=0-9,20-29"),
        Some("items=0-9"),
        Some("bytes=9-0"),
        Some("bytes=-"),
        Some("bytes=a-b"),
        Some("bytes=1-2-3"),
        Some("bytes 0-9"),
        Some("bytes=+1-2"),
        Some(""),
    ] {
        assert_eq!(parse_range(header, 100), ByteRange::Full, "{header:?}");
    }
}

proptest! {
    #[test]
    fn a_part_always_lies_within_the_content(header in ".{0,40}", size in 0u64..1000) {
        if let ByteRange::Part { start, end } = parse_range(Some(&header), size) {
            prop_assert!(start <= end && end < size);
        }
    }

    #[test]
    fn closed_ranges_follow_the_rfc(start in 0u64..2000, length in 0u64..2000, size in 1u64..1000) {
        let end = start + length;
        let range = parse_range(Some(&format!("bytes={start}-{end}")), size);
        if start >= size {
            prop_assert_eq!(range, ByteRange::Unsatisfiable);
        } else {
            prop_assert_eq!(range, ByteRange::Part { start, end: end.min(size - 1) });
        }
    }
}

const HOST: &str = "fw.test";

/// A hub on an in-memory store hosting firmware in a temporary directory, driven through the
/// router without sockets.
struct Api {
    hub: Hub,
    owner: String,
    dir: tempfile::TempDir,
}

fn token(resource: &str, key: &str, key_name: Option<&str>) -> String {
    let expiry = u64::try_from(Timestamp::now().unix_seconds() + 3600).unwrap_or(0);
    twinhub_core::sas::generate_token(resource, key, key_name, expiry).expect("token")
}

async fn open_hub(store: Arc<dyn Store>, key: &str, dir: &Path, max_size: u64) -> Hub {
    let settings = HubSettings {
        hostname: HOST.into(),
        sas_skew_secs: 300,
        max_modules_per_device: 50,
        max_configurations: 100,
        configuration_twins_per_second: 1000,
        jobs: JobLimits::default(),
    };
    let (hub, startup) =
        Hub::open(settings, store, Some(key), Arc::new(Metrics::default())).expect("opens");
    if let Some(batch) = startup {
        hub.commit_startup(batch).await.expect("startup");
    }
    hub.host_firmware(FirmwareSettings {
        dir: dir.to_path_buf(),
        max_size,
        https_port: 8443,
    })
    .await
    .expect("firmware hosted");
    hub
}

impl Api {
    async fn new(max_size: u64) -> Api {
        let key = twinhub_core::identity::generate_symmetric_key();
        let dir = tempfile::tempdir().expect("temporary directory");
        let hub = open_hub(Arc::new(MemoryStore::new()), &key, dir.path(), max_size).await;
        Api {
            hub,
            owner: token(HOST, &key, Some("iothubowner")),
            dir,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let app = router(AppState {
            hub: self.hub.clone(),
            shutdown: CancellationToken::new(),
        });
        let response = app
            .oneshot(request.body(Body::from(body)).expect("request"))
            .await
            .expect("answered");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }

    async fn owner(&self, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let (status, headers, bytes) = self
            .send(method, uri, &[("authorization", &self.owner)], body)
            .await;
        if status.is_client_error() || status.is_server_error() {
            let code = headers
                .get("iothub-errorcode")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            return (status, Value::from(code));
        }
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("listing")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn package_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn packages_are_uploaded_listed_downloaded_and_deleted() {
    let api = Api::new(4 * 1024 * 1024).await;
    // Larger than the 1 MiB limit on JSON bodies: packages stream past it.
    let bytes = package_bytes(1536 * 1024);
    let (status, created) = api
        .owner(
            Method::PUT,
            "/firmware/fw-1?version=1.0.0&api-version=2021-04-12",
            bytes.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "fw-1");
    assert_eq!(created["version"], "1.0.0");
    assert_eq!(created["size"], bytes.len());
    assert_eq!(created["sha256"], sha256_hex(&bytes));
    assert_eq!(created["url"], "https://fw.test:8443/firmware/fw-1/content");
    let uploaded = created["uploadedTimeUtc"].as_str().expect("time");
    assert!(Timestamp::parse_rfc3339(uploaded).is_some(), "{uploaded}");
    assert_eq!(api.files(), ["fw-1"]);

    let (status, code) = api
        .owner(Method::PUT, "/firmware/fw-1?version=2", b"other".to_vec())
        .await;
    assert_eq!(
        (status, code),
        (
            StatusCode::CONFLICT,
            Value::from("FirmwarePackageAlreadyExists")
        )
    );

    let (status, listed) = api.owner(Method::GET, "/firmware", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, Value::Array(vec![created.clone()]));
    let (status, got) = api.owner(Method::GET, "/firmware/fw-1", Vec::new()).await;
    assert_eq!((status, &got), (StatusCode::OK, &created));

    let (status, headers, body) = api
        .send(
            Method::GET,
            "/firmware/fw-1/content",
            &[("authorization", &api.owner)],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == bytes, "the whole package comes back");
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    assert_eq!(headers["etag"], etag.as_str());

    let (status, headers, body) = api
        .send(
            Method::GET,
            "/firmware/fw-1/content",
            &[
                ("authorization", &api.owner),
                ("range", "bytes=1048576-1048585"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, bytes[1_048_576..=1_048_585]);
    let total = bytes.len();
    assert_eq!(
        headers["content-range"],
        format!("bytes 1048576-1048585/{total}").as_str()
    );

    let (status, _, body) = api
        .send(
            Method::GET,
            "/firmware/fw-1/content",
            &[
                ("authorization", &api.owner),
                ("range", "bytes=0-9"),
                ("if-range", "\"an older etag\""),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a stale If-Range gets everything");
    assert_eq!(body.len(), total);

    let (status, headers, _) = api
        .send(
            Method::GET,
            "/firmware/fw-1/content",
            &[("authorization", &api.owner), ("range", "bytes=99999999-")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{total}").as_str()
    );
    assert_eq!(headers["iothub-errorcode"], "RangeNotSatisfiable");
    assert_eq!(api.hub.metrics().firmware_downloads.get(), 3);

    let (status, _) = api
        .owner(Method::DELETE, "/firmware/fw-1", Vec::new())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(api.files().is_empty(), "the file is gone");
    for uri in ["/firmware/fw-1", "/firmware/fw-1/content"] {
        let (status, code) = api.owner(Method::GET, uri, Vec::new()).await;
        assert_eq!(
            (status, code),
            (
                StatusCode::NOT_FOUND,
                Value::from("FirmwarePackageNotFound")
            ),
            "{uri}"
        );
    }
    let (status, _) = api
        .owner(Method::DELETE, "/firmware/fw-1", Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .owner(Method::PUT, "/firmware/fw-1?version=2", b"again".to_vec())
        .await;
    assert_eq!(status, StatusCode::CREATED, "a deleted id can be reused");
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_no_file() {
    let api = Api::new(1024).await;
    let refusals = [
        (
            "/firmware/big?version=1",
            package_bytes(1025),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "/firmware/ok?version=1",
            Vec::new(),
            StatusCode::BAD_REQUEST,
        ),
        ("/firmware/ok", b"x".to_vec(), StatusCode::BAD_REQUEST),
        (
            "/firmware/ok?version=",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/firmware/..?version=1",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/firmware/a%2Fb?version=1",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/firmware/upload~0?version=1",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (uri, body, expected) in refusals {
        let (status, code) = api.owner(Method::PUT, uri, body).await;
        assert_eq!(status, expected, "{uri}: {code}");
    }
    // Without a declared length the limit is enforced while streaming.
    let chunks = futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(package_bytes(512)))),
    );
    let streamed = api
        .hub
        .upload_firmware("streamed", "1", None, chunks)
        .await
        .expect_err("too large");
    assert!(
        matches!(streamed, crate::hub::HubError::FirmwareTooLarge(1024)),
        "{streamed}"
    );
    assert!(api.files().is_empty(), "{:?}", api.files());
    let (status, listed) = api.owner(Method::GET, "/firmware", Vec::new()).await;
    assert_eq!((status, listed), (StatusCode::OK, Value::Array(Vec::new())));
}

#[tokio::test]
async fn devices_download_with_their_own_token_and_nothing_else() {
    let api = Api::new(1024).await;
    let bytes = package_bytes(100);
    let (status, _) = api
        .owner(Method::PUT, "/firmware/fw?version=1", bytes.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let device = api
        .hub
        .create_identity(IdentitySpec::sas_device("d1"))
        .await
        .expect("device");
    let key = device
        .identity
        .authentication
        .symmetric_key
        .primary_key
        .clone();
    let device_token = token(&format!("{HOST}/devices/d1"), &key, None);

    let download = |authorization: Option<String>| {
        let api = &api;
        async move {
            let headers: Vec<(&str, &str)> = authorization
                .as_deref()
                .map(|t| ("authorization", t))
                .into_iter()
                .collect();
            api.send(Method::GET, "/firmware/fw/content", &headers, Vec::new())
                .await
        }
    };
    let (status, _, body) = download(Some(device_token.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bytes);

    let foreign = token("other.hub/devices/d1", &key, None);
    let wrong_key = token(
        &format!("{HOST}/devices/d1"),
        &twinhub_core::identity::generate_symmetric_key(),
        None,
    );
    let other_device = token(&format!("{HOST}/devices/d2"), &key, None);
    for authorization in [None, Some(foreign), Some(wrong_key), Some(other_device)] {
        let (status, headers, _) = download(authorization.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(headers["iothub-errorcode"], "IotHubUnauthorizedAccess");
    }

    let (status, _, _) = api
        .send(
            Method::GET,
            "/firmware/fw",
            &[("authorization", &device_token)],
            Vec::new(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a device token only downloads"
    );
}

#[tokio::test]
async fn start_removes_leftovers_and_forgets_packages_without_files() {
    let key = twinhub_core::identity::generate_symmetric_key();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = open_hub(Arc::clone(&store), &key, dir.path(), 1024).await;
    for id in ["kept", "lost", "damaged"] {
        hub.upload_firmware(
            id,
            "1",
            None,
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                b"firmware",
            ))]),
        )
        .await
        .expect("uploaded");
    }
    drop(hub);
    std::fs::remove_file(dir.path().join("lost")).expect("remove");
    std::fs::write(dir.path().join("damaged"), b"short").expect("write");
    std::fs::write(dir.path().join("upload~3"), b"half an upload").expect("write");
    std::fs::write(dir.path().join("orphan"), b"metadata never committed").expect("write");

    let reopened = open_hub(Arc::clone(&store), &key, dir.path(), 1024).await;
    let ids: Vec<String> = reopened
        .firmware_packages()
        .expect("hosted")
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(ids, ["kept"]);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["kept"]);
    let rows = store.load(Table::Firmware).expect("rows");
    assert_eq!(rows.len(), 1, "the forgotten packages' rows are deleted");
}

#[tokio::test]
async fn an_unreadable_row_fails_the_start() {
    let key = twinhub_core::identity::generate_symmetric_key();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut batch = Batch::new();
    batch.put(Table::Firmware, "x", b"not json".to_vec());
    store.commit(batch).await.expect("commit");
    let (hub, _) = Hub::open(
        HubSettings {
            hostname: HOST.into(),
            sas_skew_secs: 300,
            max_modules_per_device: 50,
            max_configurations: 100,
            configuration_twins_per_second: 1000,
            jobs: JobLimits::default(),
        },
        store,
        Some(&key),
        Arc::new(Metrics::default()),
    )
    .expect("opens");
    let error = hub
        .host_firmware(FirmwareSettings {
            dir: dir.path().to_path_buf(),
            max_size: 1024,
            https_port: 443,
        })
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("unreadable"), "{error}");
}
