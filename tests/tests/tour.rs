//! README's tour (scripts/tour.sh, which scripts/compose-check.sh also runs against docker
//! compose) against both services started as processes: README's answers are the code's.

use std::path::PathBuf;
use std::process::Command;

use tests::TestSystem;

#[tokio::test]
async fn readmes_curl_tour_answers_what_readme_says() {
    let system = TestSystem::start().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/tour.sh");
    let orders_url = system.orders.base_url.clone();
    let products_url = system.products.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(script)
            .env("ORDERS_URL", orders_url)
            .env("PRODUCTS_URL", products_url)
            .output()
            .expect("running bash scripts/tour.sh (needs bash, curl and jq)")
    })
    .await
    .expect("the tour ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the tour failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("TOUR OK"), "{stdout}");
}
