use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onestop_test_support::{FakeFcm, RedisProxy, TEST_CLIENT_EMAIL, TEST_PROJECT_ID};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn assertion(audience: &str, scope: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": TEST_CLIENT_EMAIL,
        "scope": scope,
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    });
    let key = EncodingKey::from_rsa_pem(FakeFcm::private_key_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

async fn exchange(fcm: &FakeFcm, assertion: &str) -> reqwest::Response {
    client()
        .post(fcm.token_url())
        .form(&[("grant_type", GRANT_TYPE), ("assertion", assertion)])
        .send()
        .await
        .unwrap()
}

const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[tokio::test]
async fn the_token_endpoint_refuses_an_assertion_with_a_wrong_signature() {
    let fcm = FakeFcm::start().await;
    let good = assertion(&fcm.token_url(), FCM_SCOPE);

    // One character inside the signature changed: same claims, bad signature.
    let signature_start = good.rfind('.').unwrap() + 1;
    let mut forged: Vec<char> = good.chars().collect();
    let at = signature_start + 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let response = exchange(&fcm, &forged).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("InvalidSignature"),
        "{body}"
    );

    let response = exchange(
        &fcm,
        &assertion("https://elsewhere.example/token", FCM_SCOPE),
    )
    .await;
    assert_eq!(response.status(), 400, "another audience is refused");
    let response = exchange(
        &fcm,
        &assertion(
            &fcm.token_url(),
            "https://www.googleapis.com/auth/cloud-platform.read-only",
        ),
    )
    .await;
    assert_eq!(response.status(), 400, "another scope is refused");

    let response = exchange(&fcm, &good).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(fcm.token_requests(), 4);

    // The token it issued opens the send endpoint; nothing else does.
    let url = format!(
        "{}/v1/projects/{TEST_PROJECT_ID}/messages:send",
        fcm.endpoint()
    );
    let message = json!({ "message": { "token": "device-1", "data": { "kind": "case.decided" } } });
    let refused = client()
        .post(&url)
        .bearer_auth("made-up")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let accepted = client()
        .post(&url)
        .bearer_auth(body["access_token"].as_str().unwrap())
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let answer: Value = accepted.json().await.unwrap();
    assert!(answer["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("projects/{TEST_PROJECT_ID}/messages/")));
    let messages = fcm.wait_for_messages(1, Duration::from_secs(1)).await;
    assert_eq!(messages[0]["token"], "device-1");
}

#[tokio::test]
async fn the_send_endpoint_can_be_scripted_to_fail() {
    let fcm = FakeFcm::start().await;
    let response = exchange(&fcm, &assertion(&fcm.token_url(), FCM_SCOPE)).await;
    let token: Value = response.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/v1/projects/{TEST_PROJECT_ID}/messages:send",
        fcm.endpoint()
    );
    let send = |device: &'static str| {
        client()
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "message": { "token": device } }))
            .send()
    };

    fcm.fail_next(1, 7);
    let response = send("device-1").await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(send("device-1").await.unwrap().status(), 200);

    fcm.unregister("device-2");
    let response = send("device-2").await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["errorCode"], "UNREGISTERED");

    let response = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({ "message": { "token": "device-3", "data": { "count": 1 } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "data values must be strings");
    assert_eq!(fcm.messages().len(), 1);
    assert_eq!(fcm.send_requests(), 4);
}

async fn ping(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

#[tokio::test]
async fn the_proxy_forwards_to_redis_and_refuses_while_paused() {
    let proxy = RedisProxy::start("127.0.0.1:6379").await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut open).await.unwrap(), "+PONG\r\n");

    proxy.pause();
    // The open connection is dropped...
    let answer = ping(&mut open).await;
    assert!(
        answer.as_deref().map_or(true, str::is_empty),
        "got {answer:?} through a paused proxy"
    );
    // ...and a new one is closed without an answer.
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    let answer = ping(&mut fresh).await;
    assert!(answer.as_deref().map_or(true, str::is_empty), "{answer:?}");

    proxy.resume();
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut again).await.unwrap(), "+PONG\r\n");
}
