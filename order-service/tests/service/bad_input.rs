use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestApp;

/// One request a client might get wrong, and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    error: &'static str,
}

fn post_order(name: &'static str, body: String, status: StatusCode, error: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        path: "/orders".into(),
        content_type: Some("application/json"),
        body,
        status,
        error,
    }
}

fn request(
    name: &'static str,
    method: Method,
    path: String,
    status: StatusCode,
    error: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        content_type: None,
        body: String::new(),
        status,
        error,
    }
}

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_with_a_json_error() {
    let app = TestApp::spawn().await;
    let p = app.create_product("Widget", 100, 10).await;
    let order =
        |customer: &str, lines: &str| format!(r#"{{"customer_id": {customer}, "lines": {lines}}}"#);
    let line = |quantity: &str| format!(r#"[{{"product_id": "{p}", "quantity": {quantity}}}]"#);
    let (bad, unprocessable, missing) = (
        StatusCode::BAD_REQUEST,
        StatusCode::UNPROCESSABLE_ENTITY,
        StatusCode::NOT_FOUND,
    );
    let big_customer = format!("\"{}\"", "x".repeat(70 * 1024));
    let cases = vec![
        post_order(
            "malformed JSON",
            r#"{"customer_id": "a", "lines": ["#.into(),
            bad,
            "malformed_json",
        ),
        post_order("empty body", String::new(), bad, "malformed_json"),
        post_order(
            "trailing garbage",
            format!("{} x", order("\"a\"", &line("1"))),
            bad,
            "malformed_json",
        ),
        Case {
            content_type: Some("text/plain"),
            ..post_order(
                "not sent as JSON",
                order("\"a\"", &line("1")),
                bad,
                "malformed_json",
            )
        },
        Case {
            content_type: None,
            ..post_order(
                "no content type",
                order("\"a\"", &line("1")),
                bad,
                "malformed_json",
            )
        },
        post_order(
            "not an object",
            "[]".into(),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "missing customer",
            format!(r#"{{"lines": {}}}"#, line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "missing lines",
            r#"{"customer_id": "a"}"#.into(),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "missing quantity",
            order("\"a\"", &format!(r#"[{{"product_id": "{p}"}}]"#)),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "customer is a number",
            order("7", &line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "customer is null",
            order("null", &line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "customer with a NUL character",
            order(r#""a\u0000b""#, &line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "lines is an object",
            order("\"a\"", "{}"),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "quantity is a string",
            order("\"a\"", &line("\"2\"")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "quantity is a fraction",
            order("\"a\"", &line("1.5")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "quantity beyond i64",
            order("\"a\"", &line("9223372036854775808")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "quantity 0",
            order("\"a\"", &line("0")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "negative quantity",
            order("\"a\"", &line("-3")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "quantity over the maximum",
            order("\"a\"", &line("1000001")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "empty lines",
            order("\"a\"", "[]"),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "blank customer",
            order("\"  \"", &line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "customer too long",
            order(&format!("\"{}\"", "c".repeat(101)), &line("1")),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "product id not a uuid",
            order("\"a\"", r#"[{"product_id": "nope", "quantity": 1}]"#),
            unprocessable,
            "validation_failed",
        ),
        post_order(
            "unknown product",
            order(
                "\"a\"",
                &format!(r#"[{{"product_id": "{}", "quantity": 1}}]"#, Uuid::new_v4()),
            ),
            unprocessable,
            "unknown_product",
        ),
        post_order(
            "body over 64 KiB",
            order(&big_customer, &line("1")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        request(
            "unknown order",
            Method::GET,
            format!("/orders/{}", Uuid::new_v4()),
            missing,
            "not_found",
        ),
        request(
            "malformed order id",
            Method::GET,
            "/orders/not-a-uuid".into(),
            missing,
            "not_found",
        ),
        request(
            "cancel unknown order",
            Method::POST,
            format!("/orders/{}/cancel", Uuid::new_v4()),
            missing,
            "not_found",
        ),
        request(
            "cancel malformed order id",
            Method::POST,
            "/orders/123/cancel".into(),
            missing,
            "not_found",
        ),
        request(
            "malformed product id",
            Method::GET,
            "/catalog/products/xyz".into(),
            missing,
            "not_found",
        ),
        request(
            "unknown product id",
            Method::GET,
            format!("/catalog/products/{}", Uuid::new_v4()),
            missing,
            "not_found",
        ),
        request(
            "min_version not a number",
            Method::GET,
            format!("/orders/{}?min_version=soon", Uuid::new_v4()),
            unprocessable,
            "validation_failed",
        ),
        request(
            "customer filter with a NUL character",
            Method::GET,
            "/orders?customer_id=a%00b".into(),
            unprocessable,
            "validation_failed",
        ),
        request(
            "limit 0",
            Method::GET,
            "/orders?limit=0".into(),
            unprocessable,
            "validation_failed",
        ),
        request(
            "limit too large",
            Method::GET,
            "/catalog/products?limit=100000".into(),
            unprocessable,
            "validation_failed",
        ),
        request(
            "unknown route",
            Method::GET,
            "/nope".into(),
            missing,
            "not_found",
        ),
        request(
            "wrong method",
            Method::DELETE,
            "/orders".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];

    let mut failures = Vec::new();
    for case in cases {
        let mut builder = app
            .http
            .request(case.method.clone(), app.url(&case.path))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            builder = builder.header("Content-Type", content_type);
        }
        let response = builder.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let error = body
            .as_ref()
            .and_then(|b| b["error"].as_str())
            .unwrap_or_default()
            .to_owned();
        let message = body
            .as_ref()
            .and_then(|b| b["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        if status != case.status || error != case.error || message.is_empty() {
            failures.push(format!("{}: got {status} {text}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected answers:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        app.store().head_position().await.unwrap(),
        0,
        "no bad request appended anything"
    );
}

#[tokio::test]
async fn a_whole_quantity_written_with_a_fraction_is_an_integer() {
    // JSON Schema, which the OpenAPI document uses, counts 2.0 as the integer 2.
    let app = TestApp::spawn().await;
    let p = app.create_product("Widget", 100, 10).await;
    let body =
        serde_json::json!({ "customer_id": "a", "lines": [{ "product_id": p, "quantity": 2.0 }] });
    let response = app.post("/orders", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert_eq!(order["total_cents"], 200);
}

#[tokio::test]
async fn a_method_a_resource_does_not_take_gets_405_naming_the_ones_it_does() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (Method::DELETE, "/orders", "POST, GET"),
        (Method::PUT, "/health/live", "GET"),
        (Method::TRACE, "/openapi.json", "GET"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{method} {path}");
    }
}
