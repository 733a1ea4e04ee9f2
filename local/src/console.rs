//! `/console`: the browser console (`clients/console`, built with
//! `npm run build` into `clients/console/dist`) served as static files, so
//! `http://127.0.0.1:8080/console/?url=…&token=…&channels=a,b` opens it
//! against this gateway. `/console` redirects to `/console/` with its query
//! (the built page loads its assets relative to itself). Every answer
//! carries `Referrer-Policy: no-referrer` (a token may be in the address
//! until the page moves it out) and a content security policy that runs
//! only the console's own scripts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::App;

/// Where the built console is looked for when no directory is configured:
/// `clients/console/dist` of this source tree.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/console/dist")
}

/// Scripts and styles from the console's own origin only (xterm.js sets
/// inline styles); connections anywhere (the gateway may be elsewhere);
/// never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self' ws: wss: http: https:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(to_slash))
        .route("/console/", get(serve))
        .route("/console/{*path}", get(serve))
}

/// `/console?…` -> `/console/?…`.
async fn to_slash(uri: Uri) -> Redirect {
    match uri.query() {
        Some(q) => Redirect::permanent(&format!("/console/?{q}")),
        None => Redirect::permanent("/console/"),
    }
}

async fn serve(State(app): State<Arc<App>>, req: Request) -> Response {
    let dir = app.options.console_dir.clone();
    if !dir.join("index.html").is_file() {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "the console is not built ({} has no index.html): run `npm ci && npm run build` in clients/console, or start the gateway with --console-dir DIR\n",
                dir.display()
            ),
        )
            .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix("/console")
        .unwrap_or("/")
        .to_owned();
    let path = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let files = ServeDir::new(&dir).append_index_html_on_directories(true);
    let mut answer = match files.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r.map(Body::new).into_response(),
        Err(e) => match e {},
    };
    let headers = answer.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer
}
