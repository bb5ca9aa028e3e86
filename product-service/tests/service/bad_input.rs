use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestApp;

/// One bad request and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    content_type: &'static str,
    status: u16,
    error: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<&str>,
    status: u16,
    error: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        body: body.map(str::to_owned),
        content_type: "application/json",
        status,
        error,
    }
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem_and_never_a_5xx() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Existing", 100, 5).await;
    let known = product.id;
    let unknown = Uuid::now_v7();
    let post = Method::POST;
    let get = Method::GET;
    let price = format!("/products/{known}/price");
    let restock = format!("/products/{known}/restock");
    let long_name = format!(
        r#"{{"name":"{}","price_cents":1,"stock":1}}"#,
        "x".repeat(201)
    );
    let huge = format!(
        r#"{{"name":"{}","price_cents":1,"stock":1}}"#,
        "x".repeat(70 * 1024)
    );

    let mut cases = vec![
        case(
            "malformed JSON",
            post.clone(),
            "/products",
            Some(r#"{"name": "#),
            400,
            "malformed_json",
        ),
        case(
            "not JSON at all",
            post.clone(),
            "/products",
            Some("hello"),
            400,
            "malformed_json",
        ),
        case(
            "empty body",
            post.clone(),
            "/products",
            Some(""),
            400,
            "malformed_json",
        ),
        case(
            "missing price",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "missing name",
            post.clone(),
            "/products",
            Some(r#"{"price_cents":1,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "price is a string",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":"10","stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "price is fractional",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1.5,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "price beyond i64",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":99999999999999999999,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "price null",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":null,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "body is an array",
            post.clone(),
            "/products",
            Some("[]"),
            422,
            "validation_failed",
        ),
        case(
            "price 0",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":0,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "negative price",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":-5,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "currency not upper case",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1,"currency":"eur","stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "currency of four letters",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1,"currency":"EURO","stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "currency not a string",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1,"currency":978,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "stock -1",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1,"stock":-1}"#),
            422,
            "validation_failed",
        ),
        case(
            "empty name",
            post.clone(),
            "/products",
            Some(r#"{"name":"","price_cents":1,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "blank name",
            post.clone(),
            "/products",
            Some(r#"{"name":"   ","price_cents":1,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "name with a NUL character",
            post.clone(),
            "/products",
            Some(r#"{"name":"a\u0000b","price_cents":1,"stock":1}"#),
            422,
            "validation_failed",
        ),
        case(
            "name too long",
            post.clone(),
            "/products",
            Some(&long_name),
            422,
            "validation_failed",
        ),
        case(
            "body over 64 KiB",
            post.clone(),
            "/products",
            Some(&huge),
            413,
            "payload_too_large",
        ),
        case(
            "new price 0",
            post.clone(),
            price.clone(),
            Some(r#"{"price_cents":0}"#),
            422,
            "validation_failed",
        ),
        case(
            "negative new price",
            post.clone(),
            price.clone(),
            Some(r#"{"price_cents":-1}"#),
            422,
            "validation_failed",
        ),
        case(
            "price body malformed",
            post.clone(),
            price.clone(),
            Some("{"),
            400,
            "malformed_json",
        ),
        case(
            "restock 0",
            post.clone(),
            restock.clone(),
            Some(r#"{"quantity":0}"#),
            422,
            "validation_failed",
        ),
        case(
            "negative restock",
            post.clone(),
            restock.clone(),
            Some(r#"{"quantity":-3}"#),
            422,
            "validation_failed",
        ),
        case(
            "restock quantity a string",
            post.clone(),
            restock.clone(),
            Some(r#"{"quantity":"x"}"#),
            422,
            "validation_failed",
        ),
        case(
            "restock overflowing stock",
            post.clone(),
            restock.clone(),
            Some(r#"{"quantity":9223372036854775807}"#),
            422,
            "validation_failed",
        ),
        case(
            "price of an unknown product",
            post.clone(),
            format!("/products/{unknown}/price"),
            Some(r#"{"price_cents":5}"#),
            404,
            "not_found",
        ),
        case(
            "restock of an unknown product",
            post.clone(),
            format!("/products/{unknown}/restock"),
            Some(r#"{"quantity":5}"#),
            404,
            "not_found",
        ),
        case(
            "unknown product",
            get.clone(),
            format!("/products/{unknown}"),
            None,
            404,
            "not_found",
        ),
        case(
            "history of an unknown product",
            get.clone(),
            format!("/products/{unknown}/events"),
            None,
            404,
            "not_found",
        ),
        case(
            "malformed uuid",
            get.clone(),
            "/products/not-a-uuid",
            None,
            404,
            "not_found",
        ),
        case(
            "malformed uuid in a command",
            post.clone(),
            "/products/123/price",
            Some(r#"{"price_cents":5}"#),
            404,
            "not_found",
        ),
        case(
            "malformed uuid in history",
            get.clone(),
            "/products/zzz/events",
            None,
            404,
            "not_found",
        ),
        case(
            "limit 0",
            get.clone(),
            "/products?limit=0",
            None,
            422,
            "validation_failed",
        ),
        case(
            "limit too large",
            get.clone(),
            "/products?limit=100000",
            None,
            422,
            "validation_failed",
        ),
        case(
            "negative offset",
            get.clone(),
            "/products?offset=-1",
            None,
            422,
            "validation_failed",
        ),
        case(
            "limit not a number",
            get.clone(),
            "/products?limit=ten",
            None,
            422,
            "validation_failed",
        ),
        case(
            "min_version not a number",
            get.clone(),
            format!("/products/{known}?min_version=x"),
            None,
            422,
            "validation_failed",
        ),
        case(
            "unknown route",
            get.clone(),
            "/nowhere",
            None,
            404,
            "not_found",
        ),
        case(
            "unsupported method",
            Method::DELETE,
            format!("/products/{known}"),
            None,
            405,
            "method_not_allowed",
        ),
    ];
    cases.push(Case {
        content_type: "text/plain",
        ..case(
            "wrong content type",
            post.clone(),
            "/products",
            Some(r#"{"name":"a","price_cents":1,"stock":1}"#),
            400,
            "malformed_json",
        )
    });

    let mut failures = Vec::new();
    for c in &cases {
        let mut request = app.http.request(c.method.clone(), app.url(&c.path));
        if let Some(body) = &c.body {
            request = request
                .header("Content-Type", c.content_type)
                .body(body.clone());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = status == c.status
            && body["error"] == c.error
            && body["message"].as_str().is_some_and(|m| !m.is_empty());
        if !ok || status >= 500 {
            failures.push(format!(
                "{}: expected {} {}, got {status} {text}",
                c.name, c.status, c.error
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing above changed the product.
    let after = app.product(known, 1).await;
    assert_eq!(after, product);
}

#[tokio::test]
async fn a_whole_number_written_with_a_fraction_or_exponent_is_an_integer() {
    // JSON Schema, which the OpenAPI document uses, counts 250.0 as the integer 250.
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/products"))
        .header("Content-Type", "application/json")
        .body(r#"{"name":"Whole","price_cents":250.0,"stock":1e1}"#)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["price_cents"], 250);
    assert_eq!(body["stock_available"], 10);
}

#[tokio::test]
async fn a_method_a_resource_does_not_take_gets_405_naming_the_ones_it_does() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (Method::DELETE, "/products", "POST, GET"),
        (Method::PUT, "/health/live", "GET"),
        (Method::TRACE, "/openapi.json", "GET"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "method_not_allowed", "{method} {path}");
    }
}
