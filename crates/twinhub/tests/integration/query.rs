//! `POST /devices/query` over raw HTTPS: headers, paging under concurrent writes, limits.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::{HttpResponse, TestHub};

async fn query(
    hub: &TestHub,
    text: &str,
    page_size: Option<&str>,
    token: Option<&str>,
) -> HttpResponse {
    let body = json!({ "query": text }).to_string().into_bytes();
    let mut headers = vec![("Content-Type", "application/json; charset=utf-8")];
    if let Some(size) = page_size {
        headers.push(("x-ms-max-item-count", size));
    }
    if let Some(token) = token {
        headers.push(("x-ms-continuation", token));
    }
    hub.rest_with("POST", "/devices/query", &headers, Some(body))
        .await
}

async fn tag(hub: &TestHub, device_id: &str, tags: Value) {
    let response = hub
        .rest(
            "PATCH",
            &format!("/twins/{device_id}"),
            Some(&json!({ "tags": tags })),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

fn device_ids(response: &HttpResponse) -> Vec<String> {
    response
        .json()
        .as_array()
        .expect("an array body")
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_item_type_and_a_continuation_only_when_more_exist() {
    let hub = TestHub::start().await;
    for i in 0..5 {
        hub.create_device(&format!("q{i}")).await;
    }
    let first = query(&hub, "SELECT * FROM devices", Some("2"), None).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ms-item-type"), Some("twin"));
    assert!(
        first
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(device_ids(&first), ["q0", "q1"]);
    let token = first
        .header("x-ms-continuation")
        .expect("more pages")
        .to_owned();
    let second = query(&hub, "SELECT * FROM devices", Some("2"), Some(&token)).await;
    assert_eq!(device_ids(&second), ["q2", "q3"]);
    let token = second
        .header("x-ms-continuation")
        .expect("one more page")
        .to_owned();
    let last = query(&hub, "SELECT * FROM devices", Some("2"), Some(&token)).await;
    assert_eq!(device_ids(&last), ["q4"]);
    assert_eq!(
        last.header("x-ms-continuation"),
        None,
        "no header on the last page"
    );

    let raw = query(&hub, "SELECT COUNT() AS n FROM devices", None, None).await;
    assert_eq!(raw.header("x-ms-item-type"), Some("raw"));
    assert_eq!(raw.json(), json!([{ "n": 5 }]));
    let top = query(&hub, "SELECT TOP 3 * FROM devices", Some("2"), None).await;
    let token = top
        .header("x-ms-continuation")
        .expect("TOP 3 spans two pages of 2")
        .to_owned();
    let rest = query(&hub, "SELECT TOP 3 * FROM devices", Some("2"), Some(&token)).await;
    assert_eq!(device_ids(&rest), ["q2"]);
    assert_eq!(rest.header("x-ms-continuation"), None);
    hub.stop().await;
}

/// Twins changing (and new ones appearing) between pages never make a page repeat a twin or
/// skip one that did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_stable_while_twins_change() {
    let hub = TestHub::start().await;
    for i in 0..10 {
        let id = format!("p{i:02}");
        hub.create_device(&id).await;
        tag(&hub, &id, json!({ "fleet": "x", "n": i })).await;
    }
    let text = "SELECT * FROM devices WHERE tags.fleet = 'x'";
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut round = 0;
    loop {
        let page = query(&hub, text, Some("3"), token.as_deref()).await;
        assert_eq!(page.status, 200, "{}", page.text());
        seen.extend(device_ids(&page));
        // Between pages: rewrite twins already seen and not yet seen, and add a device.
        tag(&hub, "p00", json!({ "n": 100 + round })).await;
        tag(&hub, "p09", json!({ "n": 200 + round })).await;
        round += 1;
        match page.header("x-ms-continuation") {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a twin appeared twice: {seen:?}");
    let expected: BTreeSet<String> = (0..10).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_and_tokens_are_argument_errors() {
    let hub = TestHub::start().await;
    let invalid = query(&hub, "SELECT * FROM devices WHERE tags.x =", None, None).await;
    invalid.assert_error(400, "ArgumentInvalid");
    assert!(invalid.text().contains("position"), "{}", invalid.text());
    let long = format!(
        "SELECT * FROM devices WHERE deviceId = '{}'",
        "x".repeat(8200)
    );
    query(&hub, &long, None, None)
        .await
        .assert_error(400, "ArgumentInvalid");
    query(&hub, "SELECT * FROM devices", None, Some("not-a-token"))
        .await
        .assert_error(400, "ArgumentInvalid");
    let wrong_body = hub
        .rest(
            "POST",
            "/devices/query",
            Some(&json!({ "sql": "SELECT * FROM devices" })),
        )
        .await;
    assert_eq!(wrong_body.status, 400, "{}", wrong_body.text());
    hub.stop().await;
}
