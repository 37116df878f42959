//! The Prometheus endpoint over plain HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;
use twinhub_mqtt::QoS;

use crate::support::{HttpRequest, TestHub, WAIT, exchange, method_call};

/// The `/metrics` text over plain HTTP.
async fn scrape(metrics_addr: SocketAddr) -> String {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(metrics_addr))
        .await
        .expect("connect in time")
        .expect("the metrics port accepts plain TCP");
    let request = HttpRequest {
        method: "GET",
        target: "/metrics",
        headers: &[],
        body: None,
    };
    let response = exchange(stream, &request).await.expect("metrics response");
    assert_eq!(response.status, 200, "{}", response.text());
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_and_method_calls() {
    let hub = TestHub::start_with(|config| {
        config.metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await;
    let metrics_addr = hub
        .running
        .metrics_addr
        .expect("the metrics listener is up");
    let key = hub.create_device("d1").await;
    let mut device = hub.connect_device("d1", &key).await;
    device
        .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;

    let service = (*hub).clone();
    let call = tokio::spawn(async move {
        service
            .rest(
                "POST",
                "/twins/d1/methods",
                Some(&method_call("m", &json!(null), 10)),
            )
            .await
    });
    let request = device.expect_method_request().await;
    device.answer_method(&request.rid, 200, &b"null"[..]).await;
    assert_eq!(call.await.expect("call task").status, 200);

    let text = scrape(metrics_addr).await;
    assert!(
        text.lines()
            .any(|line| line == "twinhub_connected_devices 1"),
        "one device is connected:\n{text}"
    );
    assert!(
        text.lines()
            .any(|line| line == "twinhub_method_calls_total{outcome=\"ok\"} 1"),
        "one successful method call:\n{text}"
    );
    device.disconnect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(metrics_addr).await;
        if text
            .lines()
            .any(|line| line == "twinhub_connected_devices 0")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gauge never went back to 0:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await;
}
