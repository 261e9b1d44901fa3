//! Random bodies, ids and content types thrown at the write routes: the server never panics
//! nor answers 5xx, every rejection is the JSON error, and a rejected request writes nothing.

mod common;

use common::{Reply, TestApp, UNKNOWN_ID};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};

/// Any JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![Just("pending"), Just("processing"), Just("done"), Just("failed"), Just("DONE")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::hash_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("items".to_owned()),
                    Just("status".to_owned()),
                    Just("error".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: random bytes, or JSON shaped like (or nearly like) what the routes take.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (".{0,300}", prop::collection::vec(".{0,300}", 0..20))
            .prop_map(|(name, items)| serde_json::to_vec(&json!({ "name": name, "items": items })).unwrap()),
        (json_value(), proptest::option::of(".{0,100}"))
            .prop_map(
                |(status, error)| serde_json::to_vec(&json!({ "status": status, "error": error })).unwrap()
            ),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        3 => Just(Some("application/json")),
        1 => Just(None),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
    ]
}

/// An id segment: a real one, a well-formed unknown one, or anything (percent-encoded).
fn id(real: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(real),
        Just(UNKNOWN_ID.to_owned()),
        ".{0,40}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
        "[0-9a-f-]{0,40}",
    ]
}

/// Checks one answer; a rejection must have left `before` as it was.
async fn check(app: &TestApp, reply: Reply, before: (i64, i64, i64, i64)) {
    let status = reply.status;
    assert!(!status.is_server_error(), "{status}: {}", reply.text());
    if status.is_client_error() {
        let error: Value = serde_json::from_slice(&reply.body).expect("a JSON error");
        assert!(error["error"]["code"].is_string(), "{error}");
        assert_eq!(app.fingerprint().await, before, "a rejected request wrote something ({status})");
    }
}

#[test]
fn random_creates_and_reports_never_break_the_server_nor_write_when_rejected() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::with(|c| c.writes_per_minute = u32::MAX));
    let batch = runtime.block_on(app.create("target", 3));
    let (batch_id, item_id) = (
        batch["batch_id"].as_str().unwrap().to_owned(),
        batch["items"][0]["id"].as_str().unwrap().to_owned(),
    );
    let mut runner = TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });

    runner
        .run(&(content_type(), body()), |(ct, body)| {
            runtime.block_on(async {
                let before = app.fingerprint().await;
                let reply = app.post_raw("/api/batches", ct, body).await;
                check(&app, reply, before).await;
            });
            Ok(())
        })
        .unwrap();

    runner
        .run(&(id(batch_id), id(item_id), content_type(), body()), |(batch, item, ct, body)| {
            runtime.block_on(async {
                let before = app.fingerprint().await;
                let uri = format!("/api/batches/{batch}/items/{item}/status");
                let reply = app.post_raw(&uri, ct, body).await;
                check(&app, reply, before).await;
            });
            Ok(())
        })
        .unwrap();
}
