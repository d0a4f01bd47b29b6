//! The OpenAPI document, as served, under an insta snapshot: any change to
//! the API's shape shows up as a diff of `tests/snapshots/`.

use crate::common_http;

use common_http::TestServer;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_matches_the_snapshot() {
    // proves /api/v1/openapi.json is the generated document and that API drift is visible
    let s = TestServer::start().await;
    let (status, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc,
        serde_json::to_value(commerce_engine::http::openapi()).expect("json")
    );
    insta::assert_json_snapshot!("openapi", doc);
    s.stop().await;
}

#[test]
fn every_endpoint_of_the_contract_is_documented() {
    // proves each method and path of API.md is in the document with its success status
    let doc = serde_json::to_value(commerce_engine::http::openapi()).expect("json");
    let paths = &doc["paths"];
    for (method, path, status) in [
        ("post", "/api/v1/users", "201"),
        ("get", "/api/v1/users/{user_id}", "200"),
        ("get", "/api/v1/users/{user_id}/balance", "200"),
        ("post", "/api/v1/users/{user_id}/balance/charge", "200"),
        ("get", "/api/v1/users/{user_id}/balance/history", "200"),
        ("post", "/api/v1/products", "201"),
        ("get", "/api/v1/products", "200"),
        ("get", "/api/v1/products/{product_id}", "200"),
        ("patch", "/api/v1/products/{product_id}", "200"),
        ("post", "/api/v1/products/{product_id}/restock", "200"),
        ("get", "/api/v1/products/top", "200"),
        ("post", "/api/v1/admin/stats/refresh", "200"),
        ("post", "/api/v1/coupons", "201"),
        ("get", "/api/v1/coupons/{coupon_id}", "200"),
        ("post", "/api/v1/coupons/{coupon_id}/issue", "201"),
        ("get", "/api/v1/users/{user_id}/coupons", "200"),
        ("get", "/api/v1/users/{user_id}/cart", "200"),
        ("post", "/api/v1/users/{user_id}/cart/items", "200"),
        (
            "delete",
            "/api/v1/users/{user_id}/cart/items/{product_id}",
            "200",
        ),
        ("post", "/api/v1/orders", "201"),
        ("get", "/api/v1/orders/{order_id}", "200"),
        ("get", "/api/v1/users/{user_id}/orders", "200"),
        ("post", "/api/v1/orders/{order_id}/cancel", "200"),
        ("post", "/api/v1/orders/{order_id}/payment", "200"),
        ("get", "/api/v1/admin/data-platform", "200"),
        ("get", "/api/v1/admin/data-platform/dead-letters", "200"),
        (
            "post",
            "/api/v1/admin/data-platform/dead-letters/redrive",
            "200",
        ),
        ("get", "/health", "200"),
        ("get", "/metrics", "200"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"][status].is_object(),
            "{method} {path} lacks {status}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Timestamp"]["format"], "date-time");
    assert_eq!(
        schemas["Discount"]["oneOf"].as_array().map(Vec::len),
        Some(2)
    );
}
