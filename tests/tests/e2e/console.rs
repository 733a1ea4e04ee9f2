//! The dev gateway serves the built browser console at `/console/`: the
//! link's query survives the redirect from `/console`, the page comes with
//! headers that keep a token in its address from leaking, its assets are
//! served, nothing outside its directory is, and an unbuilt console says
//! how to build it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use agentwire_e2e::{Stack, StackOptions};
use agentwire_local::GatewayOptions;

fn console_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agentwire-console-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app.js"), "export const app = 1;").unwrap();
    dir
}

async fn stack_with_console(dir: std::path::PathBuf) -> Stack {
    let defaults = StackOptions::default();
    Stack::start_with(StackOptions {
        gateway: GatewayOptions {
            console_dir: dir,
            ..defaults.gateway.clone()
        },
        ..defaults
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_console_with_its_link_and_safe_headers() {
    let dir = console_dir("served");
    let stack = stack_with_console(dir.clone()).await;
    let base = stack.gateway.http_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = http
        .get(format!(
            "{base}/console?url=ws%3A%2F%2Fx&token=t&channels=a,b"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "/console/?url=ws%3A%2F%2Fx&token=t&channels=a,b"
    );

    let r = http
        .get(format!("{base}/console/?token=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        r.text().await.unwrap(),
        "<!doctype html><title>console</title>"
    );

    let r = http
        .get(format!("{base}/console/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );

    // Outside the console's directory: nothing.
    for path in [
        "/console/../Cargo.toml",
        "/console/%2e%2e/%2e%2e/Cargo.toml",
        "/console/missing.js",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    stack.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbuilt_console_says_how_to_build_it() {
    let dir = std::env::temp_dir().join(format!("agentwire-console-none-{}", std::process::id()));
    let stack = stack_with_console(dir).await;
    let r = reqwest::get(format!("{}/console/", stack.gateway.http_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("npm run build") && body.contains("clients/console"),
        "{body}"
    );
    stack.shutdown().await;
}
