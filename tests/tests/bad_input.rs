//! Bad requests to both running services get a clear 4xx with a JSON body, never a 5xx.
//! Broken JSON is 400; well-formed JSON of the wrong shape or out of range is 422.

use tests::TestSystem;

#[tokio::test]
async fn bad_requests_to_either_service_get_a_named_4xx_error() {
    let system = TestSystem::start().await;
    let p = &system.products.base_url;
    let o = &system.orders.base_url;
    let product = system.create_product("Desk", 20_000, 2).await;
    let big = format!(
        "{{\"name\":\"{}\",\"price_cents\":1,\"stock\":1}}",
        "x".repeat(70_000)
    );
    let missing = uuid::Uuid::new_v4();

    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "POST",
            format!("{p}/products"),
            Some("{not json".into()),
            400,
        ),
        (
            "POST",
            format!("{p}/products"),
            Some(r#"{"name":"A","price_cents":"ten","stock":1}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{p}/products"),
            Some(r#"{"name":"A","stock":1}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{p}/products"),
            Some(r#"{"name":"A","price_cents":0,"stock":1}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{p}/products"),
            Some(r#"{"name":"A","price_cents":5,"stock":-1}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{p}/products"),
            Some(r#"{"name":"  ","price_cents":5,"stock":1}"#.into()),
            422,
        ),
        ("POST", format!("{p}/products"), Some(big.clone()), 413),
        (
            "POST",
            format!("{p}/products/{product}/restock"),
            Some(r#"{"quantity":0}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{p}/products/{missing}/price"),
            Some(r#"{"price_cents":5}"#.into()),
            404,
        ),
        ("GET", format!("{p}/products/{missing}"), None, 404),
        ("GET", format!("{p}/products/not-a-uuid"), None, 404),
        (
            "POST",
            format!("{o}/orders"),
            Some(r#"{"customer_id": "c", "lines": ["#.into()),
            400,
        ),
        (
            "POST",
            format!("{o}/orders"),
            Some(r#"{"customer_id":"c"}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{o}/orders"),
            Some(r#"{"customer_id":"c","lines":[]}"#.into()),
            422,
        ),
        (
            "POST",
            format!("{o}/orders"),
            Some(format!(
                r#"{{"customer_id":"c","lines":[{{"product_id":"{product}","quantity":0}}]}}"#
            )),
            422,
        ),
        (
            "POST",
            format!("{o}/orders"),
            Some(r#"{"customer_id":"c","lines":[{"product_id":"nope","quantity":1}]}"#.into()),
            422,
        ),
        ("POST", format!("{o}/orders"), Some(big), 413),
        ("GET", format!("{o}/orders/{missing}"), None, 404),
        ("POST", format!("{o}/orders/{missing}/cancel"), None, 404),
        ("GET", format!("{o}/catalog/products/not-a-uuid"), None, 404),
    ];

    for (method, url, body, expected) in cases {
        let request = match method {
            "POST" => system
                .http
                .post(&url)
                .header("content-type", "application/json"),
            _ => system.http.get(&url),
        };
        let request = match &body {
            Some(b) => request.body(b.clone()),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.unwrap_or_default();
        let shown = body.as_deref().map(|b| &b[..b.len().min(80)]).unwrap_or("");
        assert_eq!(status, expected, "{method} {url} {shown}: {json}");
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{method} {url}: {json}"
        );
    }
}
