//! `openapi.yaml` and the router list the same operations.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Backend, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn spec() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn documented() -> BTreeSet<String> {
    let spec = spec();
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert(format!("{} {}", method.to_uppercase(), path.as_str().unwrap()));
            }
        }
    }
    ops
}

/// Every `.route("…", get(…).post(…))` in the HTTP modules.
fn routed() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut ops = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source: String = std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for chunk in source.split(".route(\"").skip(1) {
            let (path, rest) = chunk.split_once('"').unwrap();
            // A route's handlers end where its router function does.
            let handlers = rest.split('}').next().unwrap();
            let handlers = handlers.split(".route(").next().unwrap();
            for method in METHODS {
                if handlers.starts_with(&format!(",{method}(")) || handlers.contains(&format!(".{method}(")) {
                    ops.insert(format!("{} {}", method.to_uppercase(), path));
                }
            }
        }
    }
    ops
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let (documented, routed) = (documented(), routed());
    assert!(routed.len() >= 17, "route scan found too little: {routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "openapi.yaml lists routes the router lacks: {missing:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let id = uuid::Uuid::now_v7();
    for op in documented() {
        let (method, path) = op.split_once(' ').unwrap();
        let url = app.url(&path.replace("{id}", &id.to_string()));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.http.request(method, url).send().await.unwrap();
        assert_ne!(r.status(), 405, "{op}");
        if r.status() == 404 {
            let body: Value = r.json().await.unwrap();
            assert_ne!(body["error_description"], "route not found", "{op}");
        }
    }
}
