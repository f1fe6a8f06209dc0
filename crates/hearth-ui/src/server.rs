//! The page's HTTP side: the embedded assets and a small JSON API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` , `/app.js`, `/style.css` | the page, built into the binary |
//! | `GET /api/overview` | what uses CPU in the range, and the timeline |
//! | `GET /api/flame` | flame graph of the selection over the range |
//! | `GET /api/diff` | the range against `base_from`..`base_to` |
//! | `GET /api/top` | top functions (self and total) |
//! | `GET /api/pprof` | the selection over the range as a `.pb.gz` download |
//!
//! Common parameters: `sel` (a row key from the overview, default `all`),
//! and either `last` (seconds before the newest window) or `from`/`to`
//! (milliseconds since the epoch). Bad parameters get a 400 with a reason.
//!
//! Bound to loopback, the server also refuses requests whose `Host` is not
//! a loopback name or address: a web page elsewhere cannot read profiles
//! through a DNS name it points at 127.0.0.1.
//!
//! Any web page can still make the browser send queries here (it cannot
//! read the answers, but the agent pays for them), so the `/api/` queries,
//! which compute over the history, run at most [`QueryLimits::concurrent`]
//! at once on blocking threads, over a [`Snapshot`] taken under the lock
//! and released at once: the reporter never waits for a query, and the
//! runtime stays free for the rest. A query that finds no free slot within
//! [`QueryLimits::wait`] gets a 503 with `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::history::{History, Snapshot};
use crate::listener::{release_free_memory, serve_limited, ServeLimits, ServerStats};
use crate::query::{self, QueryError, Selection, TimeRange};

pub type SharedHistory = Arc<RwLock<History>>;

/// What the page shows beside the data.
#[derive(Debug, Clone, Default)]
pub struct PageInfo {
    /// Shown in the title: the node or host name.
    pub host: Option<String>,
    /// Whether requests may name any host (bound beyond loopback).
    pub allow_any_host: bool,
}

/// How many history queries run at once, and how long others wait.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub concurrent: usize,
    /// Longest wait for a slot before a 503.
    pub wait: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            concurrent: 2,
            wait: Duration::from_secs(2),
        }
    }
}

/// The value of `Retry-After` (seconds) on a 503 for a busy server.
pub const RETRY_AFTER_SECS: u64 = 2;

/// What the query bound did, for `/metrics`.
#[derive(Debug, Default)]
pub struct QueryStats {
    /// Queries answered 503 because the bound was reached.
    pub refused: AtomicU64,
}

#[derive(Clone)]
struct AppState {
    history: SharedHistory,
    info: Arc<PageInfo>,
    queries: Arc<tokio::sync::Semaphore>,
    query_limits: QueryLimits,
    query_stats: Arc<QueryStats>,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The page's content security policy: nothing but this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub fn router(history: SharedHistory, info: PageInfo) -> Router {
    router_with_limits(history, info, QueryLimits::default(), Arc::default())
}

/// [`router`] with its query bound given, counting refusals in `stats`.
pub fn router_with_limits(
    history: SharedHistory,
    info: PageInfo,
    limits: QueryLimits,
    stats: Arc<QueryStats>,
) -> Router {
    let state = AppState {
        history,
        info: Arc::new(info),
        queries: Arc::new(tokio::sync::Semaphore::new(limits.concurrent.max(1))),
        query_limits: limits,
        query_stats: stats,
    };
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/overview", get(overview))
        .route("/api/flame", get(flame))
        .route("/api/diff", get(diff))
        .route("/api/top", get(top))
        .route("/api/pprof", get(pprof))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the page within the default [`ServeLimits`].
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    serve_limited(
        listener,
        router,
        ServeLimits::default(),
        Arc::default(),
        "profile page",
    )
    .await;
}

/// Serves the page within `limits`, counting what they refuse in `stats`.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: Arc<ServerStats>,
) {
    serve_limited(listener, router, limits, stats, "profile page").await;
}

/// Whether a `Host` header names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:port
        match rest.split_once(']') {
            Some((addr, _)) => addr,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Security headers on every answer; `Host` check when on loopback.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.info.allow_any_host {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "this page answers only to localhost, 127.0.0.1 or [::1]\n",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    sel: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    last: Option<f64>,
    base_from: Option<u64>,
    base_to: Option<u64>,
    base_last: Option<f64>,
    limit: Option<usize>,
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        "too many queries at once; try again shortly\n",
    )
        .into_response()
}

/// Runs a query on a blocking thread over a snapshot of the history, once
/// one of the bounded query slots is free (a 503 if none is in time).
async fn with_history<F>(state: &AppState, f: F) -> Response
where
    F: FnOnce(&Snapshot) -> Response + Send + 'static,
{
    let wait = state.query_limits.wait;
    let permit = match tokio::time::timeout(wait, state.queries.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            state.query_stats.refused.fetch_add(1, Ordering::Relaxed);
            return busy();
        }
    };
    let history = state.history.clone();
    let task = tokio::task::spawn_blocking(move || {
        let answer = {
            // The lock is held for the copy of a few pointers only.
            let snapshot = history.read().unwrap_or_else(|e| e.into_inner()).snapshot();
            f(&snapshot)
        };
        release_free_memory();
        drop(permit);
        answer
    });
    match task.await {
        Ok(r) => r,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn selection_and_range(h: &Snapshot, p: &Params) -> Result<(Selection, TimeRange), Box<Response>> {
    let bad = |e: QueryError| Box::new(bad_request(e));
    let sel = Selection::parse(p.sel.as_deref().unwrap_or("all")).map_err(bad)?;
    let range = TimeRange::from_params(h, p.from, p.to, p.last).map_err(bad)?;
    Ok((sel, range))
}

/// The overview with what only the server knows beside it.
#[derive(serde::Serialize)]
struct OverviewAnswer<'a> {
    #[serde(flatten)]
    overview: query::Overview,
    host: Option<&'a str>,
    history_bytes: usize,
}

async fn overview(State(state): State<AppState>, Query(p): Query<Params>) -> Response {
    let info = state.info.clone();
    with_history(&state, move |h| match selection_and_range(h, &p) {
        Ok((sel, range)) => json(&OverviewAnswer {
            overview: query::overview(h, range, &sel),
            host: info.host.as_deref(),
            history_bytes: h.bytes(),
        }),
        Err(r) => *r,
    })
    .await
}

async fn flame(State(state): State<AppState>, Query(p): Query<Params>) -> Response {
    with_history(&state, move |h| match selection_and_range(h, &p) {
        Ok((sel, range)) => json(&query::flame(h, &sel, range)),
        Err(r) => *r,
    })
    .await
}

async fn diff(State(state): State<AppState>, Query(p): Query<Params>) -> Response {
    with_history(&state, move |h| {
        let (sel, range) = match selection_and_range(h, &p) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        if p.base_from.is_none() && p.base_to.is_none() && p.base_last.is_none() {
            return bad_request("a comparison needs base_from and base_to (or base_last)");
        }
        match TimeRange::from_params(h, p.base_from, p.base_to, p.base_last) {
            Ok(base) => json(&query::diff(h, &sel, range, base)),
            Err(e) => bad_request(e),
        }
    })
    .await
}

async fn top(State(state): State<AppState>, Query(p): Query<Params>) -> Response {
    with_history(&state, move |h| match selection_and_range(h, &p) {
        Ok((sel, range)) => json(&query::top(
            h,
            &sel,
            range,
            p.limit.unwrap_or(200).min(5000),
        )),
        Err(r) => *r,
    })
    .await
}

async fn pprof(State(state): State<AppState>, Query(p): Query<Params>) -> Response {
    with_history(&state, move |h| {
        let (sel, range) = match selection_and_range(h, &p) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let report = query::report(h, &sel, range);
        let mut body = Vec::new();
        if let Err(e) = hearth_export::write_pprof_gz(&report, &mut body) {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
        let name = format!(
            "hearth-{}-{}.pb.gz",
            file_name_part(&sel),
            report.start_unix_ns / 1_000_000_000
        );
        Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            )
            .body(Body::from(body))
            .unwrap_or_else(|e| {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
            })
    })
    .await
}

/// A selection as a safe file name part.
fn file_name_part(sel: &Selection) -> String {
    let raw = match sel {
        Selection::All => "all".to_string(),
        Selection::Host => "host".to_string(),
        Selection::Pod(k) => k.replace('/', "_"),
        Selection::Container(id) => id.chars().take(12).collect(),
        Selection::Process { name, .. } => name.clone(),
    };
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if cleaned.is_empty() {
        "profile".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:7070",
            "127.0.0.1:7070",
            "127.0.0.2",
            "[::1]:7070",
            "[::1]",
            "LOCALHOST.:1",
            "app.localhost:7070",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:7070",
            "10.0.0.1:7070",
            "[::2]:7070",
            "[::1",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn file_names_are_safe() {
        let sel = Selection::Process {
            container: None,
            name: "../../etc/pass\"wd".into(),
        };
        assert_eq!(file_name_part(&sel), ".._.._etc_pass_wd");
        assert_eq!(
            file_name_part(&Selection::Pod("shop/cart-1".into())),
            "shop_cart-1"
        );
    }
}
