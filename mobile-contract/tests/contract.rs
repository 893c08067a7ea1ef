//! The committed contract must be what the code produces: a change to the
//! API, the push payloads or the events shows up here before it reaches
//! the apps.

#[test]
fn the_committed_contract_matches_the_code() {
    let dir = onestop_mobile_contract::contract_dir();
    let mut stale = Vec::new();
    for (path, generated) in onestop_mobile_contract::generated_files() {
        let committed = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
        if committed != generated {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "these contract files differ from the code: {stale:?}; if the change is meant, run \
         `cargo run -p onestop-mobile-contract --bin write-contract` and commit the files"
    );
}

#[test]
fn every_operation_is_named_and_declares_its_errors_as_problems() {
    let spec: serde_json::Value =
        serde_json::from_str(&onestop_mobile_contract::openapi_json()).unwrap();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{method} {path} answers {status} without a problem body"
                    );
                }
            }
            if operation.get("security").is_some() {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} needs a token but does not declare 401"
                );
            }
        }
    }
}

/// What the HTTP layer answers before an operation runs must be in the
/// operation's responses too: a parameter that does not parse (400), a JSON
/// body that is broken, too large, of another type or sent without a length
/// (400, 413, 415, 411), and a bodyless POST with a body too large or
/// without a length (413, 411).
#[test]
fn every_status_the_http_layer_answers_is_declared() {
    let spec: serde_json::Value =
        serde_json::from_str(&onestop_mobile_contract::openapi_json()).unwrap();
    let mut missing = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        let upload = path.starts_with("/v1/attachments") || path.starts_with("/v1/uploads");
        for (method, operation) in operations.as_object().unwrap() {
            let responses = &operation["responses"];
            let mut expect = |status: &str, why: &str| {
                if !responses[status].is_object() {
                    missing.push(format!("{method} {path}: {status} ({why})"));
                }
            };
            if operation["parameters"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
            {
                expect("400", "a parameter that does not parse");
            }
            let body = operation["requestBody"]["content"].as_object();
            if body.is_some_and(|c| c.keys().any(|t| t.contains("json"))) {
                for status in ["400", "411", "413", "415"] {
                    expect(status, "a JSON body");
                }
            }
            if matches!(method.as_str(), "post" | "put" | "patch") {
                expect("413", "a body over the limit");
                if !upload {
                    expect("411", "a streamed body without a length");
                }
            }
        }
    }
    assert!(missing.is_empty(), "undeclared statuses: {missing:#?}");
}
