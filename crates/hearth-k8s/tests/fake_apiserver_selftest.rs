//! Tests of the fake API server itself: a real `kube::Client` and
//! `kube::runtime::watcher` against it, plus raw HTTP checks of the wire
//! shapes, so that the tests built on the fake test the client and not the
//! fake.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fake_apiserver::{fixture, fixture_names, FakeApiServer, FAKE_TOKEN};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const NODE1: &str = "spec.nodeName=node1";
const STEP: Duration = Duration::from_secs(10);

/// The fixtures scheduled on node1 (all but `other-node`).
const NODE1_PODS: &[&str] = &[
    "data/db-0",
    "default/scratchpad",
    "edge-cases/",
    "kube-system/kube-apiserver-node1",
    "monitoring/node-agent-x7k2p",
    "payments/ledger-5f6d8c7b9a-zt4rn",
    "reports/nightly-report-29012345-h7k4m",
    "shop/checkout-7d4b9c8f6d-q2w9x",
];

fn start_with_fixtures() -> FakeApiServer {
    let fake = FakeApiServer::start();
    for name in fixture_names() {
        fake.add_fixture(&name);
    }
    fake
}

async fn client_for(fake: &FakeApiServer) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&fake.kubeconfig_yaml()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Compares pod keys with the expected ones, the hostile pod's long name
/// by its namespace prefix only.
fn assert_node1_keys(keys: &BTreeSet<String>) {
    assert_eq!(keys.len(), NODE1_PODS.len(), "{keys:?}");
    for want in NODE1_PODS {
        assert!(
            keys.iter().any(|k| if want.ends_with('/') {
                k.starts_with(want)
            } else {
                k == want
            }),
            "missing {want} in {keys:?}"
        );
    }
}

/// Watcher output, driven by a background task as a real consumer would
/// (the watcher only issues its next request when polled). Dropping it
/// stops the watcher.
struct EventStream {
    rx: mpsc::UnboundedReceiver<Result<Event<Pod>, watcher::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn drive<S>(stream: S) -> EventStream
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    EventStream { rx, task }
}

async fn next(stream: &mut EventStream) -> Result<Event<Pod>, watcher::Error> {
    tokio::time::timeout(STEP, stream.rx.recv())
        .await
        .expect("watcher produced nothing in time")
        .expect("watcher stream ended")
}

async fn next_ok(stream: &mut EventStream) -> Event<Pod> {
    match next(stream).await {
        Ok(event) => event,
        Err(e) => panic!("unexpected watcher error: {e}"),
    }
}

/// Consumes Init, InitApply..., InitDone; returns the keys seen.
async fn initial_sync(stream: &mut EventStream) -> BTreeSet<String> {
    assert!(matches!(next_ok(stream).await, Event::Init));
    let mut keys = BTreeSet::new();
    loop {
        match next_ok(stream).await {
            Event::InitApply(pod) => {
                keys.insert(key(&pod));
            }
            Event::InitDone => return keys,
            other => panic!("unexpected event during initial sync: {other:?}"),
        }
    }
}

async fn expect_apply(stream: &mut EventStream) -> Pod {
    match next_ok(stream).await {
        Event::Apply(pod) => pod,
        other => panic!("expected Apply, got {other:?}"),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A pod on node1 derived from the bare fixture.
fn extra_pod(name: &str, node: Option<&str>) -> Value {
    let mut pod = fixture("bare");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(format!("5e1f7e57-0000-4000-8000-{:012x}", name.len()));
    match node {
        Some(node) => pod["spec"]["nodeName"] = json!(node),
        None => {
            pod["spec"].as_object_mut().unwrap().remove("nodeName");
        }
    }
    pod
}

fn watch_rvs(fake: &FakeApiServer) -> Vec<Option<String>> {
    fake.requests()
        .iter()
        .filter(|r| r.is_watch())
        .map(|r| r.query_param("resourceVersion"))
        .collect()
}

#[tokio::test]
async fn list_honours_field_selector_and_pages() {
    let fake = start_with_fixtures();
    let path = std::env::temp_dir().join(format!("fake-kubeconfig-{}", std::process::id()));
    fake.write_kubeconfig(&path).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::all(client.clone());

    // Every fixture deserializes as a typed Pod.
    let all = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), fixture_names().len());
    assert_eq!(
        all.metadata.resource_version.as_deref(),
        Some(fake.resource_version().to_string().as_str())
    );

    let mine = pods
        .list(&ListParams::default().fields(NODE1))
        .await
        .unwrap();
    assert_node1_keys(&mine.items.iter().map(key).collect());

    // Pages of 3 over a consistent snapshot, even with a write in between.
    let mut keys = BTreeSet::new();
    let mut lp = ListParams::default().fields(NODE1).limit(3);
    let mut pages = 0;
    loop {
        let page = pods.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        keys.extend(page.items.iter().map(key));
        if pages == 1 {
            fake.add_pod(extra_pod("late-arrival", Some("node1")));
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_node1_keys(&keys);

    // The namespaced form and a single get.
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    assert_eq!(
        shop.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let got = shop.get("checkout-7d4b9c8f6d-q2w9x").await.unwrap();
    assert_eq!(got.spec.unwrap().node_name.as_deref(), Some("node1"));
    let missing = shop.get("nope").await.unwrap_err();
    assert!(error_chain(&missing).contains("404"), "{missing}");

    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_list())
        .collect();
    assert_eq!(lists.len(), 6);
    assert_eq!(lists[2].query_param("limit").as_deref(), Some("3"));
    assert_eq!(
        lists[2].query_param("fieldSelector").as_deref(),
        Some(NODE1)
    );
    assert!(fake.bytes_sent() > 30_000, "{}", fake.bytes_sent());
}

#[tokio::test]
async fn watcher_sees_initial_list_then_changes() {
    let fake = start_with_fixtures();
    let pods: Api<Pod> = Api::all(client_for(&fake).await);
    let mut stream = drive(watcher(pods, watcher::Config::default().fields(NODE1)));

    assert_node1_keys(&initial_sync(&mut stream).await);
    let list = &fake.requests()[0];
    assert!(list.is_list());
    assert_eq!(list.query_param("limit").as_deref(), Some("500"));
    assert_eq!(list.query_param("resourceVersion"), None);

    // An unscheduled pod is not seen; once bound to node1 it arrives as new.
    fake.add_pod(extra_pod("unscheduled", None));
    fake.modify_pod("default", "unscheduled", |p| {
        p["spec"]["nodeName"] = json!("other")
    });
    let rv_bound = fake.modify_pod("default", "unscheduled", |p| {
        p["spec"]["nodeName"] = json!("node1")
    });
    let pod = expect_apply(&mut stream).await;
    assert_eq!(pod.name_any(), "unscheduled");
    assert_eq!(pod.resource_version(), Some(rv_bound.to_string()));

    // Changes on node2 are filtered out; bookmarks are invisible.
    fake.modify_pod("shop", "checkout-7d4b9c8f6d-m8n3v", |p| {
        p["metadata"]["labels"]["touched"] = json!("yes")
    });
    fake.bookmark();
    let rv = fake.modify_pod("shop", "checkout-7d4b9c8f6d-q2w9x", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] = json!(2)
    });
    let pod = expect_apply(&mut stream).await;
    assert_eq!(pod.name_any(), "checkout-7d4b9c8f6d-q2w9x");
    assert_eq!(pod.resource_version(), Some(rv.to_string()));
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0].restart_count,
        2
    );

    let rv = fake.delete_pod("default", "scratchpad");
    match next_ok(&mut stream).await {
        Event::Delete(pod) => {
            assert_eq!(key(&pod), "default/scratchpad");
            assert_eq!(pod.resource_version(), Some(rv.to_string()));
        }
        other => panic!("expected Delete, got {other:?}"),
    }

    // Moving off the node reads as a deletion.
    fake.modify_pod("default", "unscheduled", |p| {
        p["spec"]["nodeName"] = json!("node2")
    });
    assert!(
        matches!(next_ok(&mut stream).await, Event::Delete(p) if p.name_any() == "unscheduled")
    );

    assert_eq!(fake.list_count(), 1);
    assert_eq!(fake.watch_count(), 1);
    let watch = fake.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(
        watch.query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(watch.query_param("fieldSelector").as_deref(), Some(NODE1));
}

#[tokio::test]
async fn watcher_resumes_after_close_and_relists_after_compaction() {
    let fake = start_with_fixtures();
    let pods: Api<Pod> = Api::all(client_for(&fake).await);
    let mut stream = drive(watcher(pods, watcher::Config::default().fields(NODE1)));
    initial_sync(&mut stream).await;
    let list_rv = fake.resource_version();

    // A bookmark moves the client's resourceVersion past a write it could
    // not see; a closed watch resumes from there, without a relist.
    fake.add_pod(extra_pod("elsewhere", Some("node2")));
    assert!(fake.wait_for_watches(1, STEP).await);
    fake.bookmark();
    fake.close_watches();
    let rv = fake.add_pod(extra_pod("after-close", Some("node1")));
    assert_eq!(expect_apply(&mut stream).await.name_any(), "after-close");
    assert_eq!(
        watch_rvs(&fake),
        vec![Some(list_rv.to_string()), Some((list_rv + 1).to_string())]
    );
    assert_eq!(fake.list_count(), 1);

    // After a compaction the resume gets 410 Expired and the watcher relists.
    assert!(fake.wait_for_watches(1, STEP).await);
    fake.compact();
    fake.close_watches();
    match next(&mut stream).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert_eq!(
                status.message,
                format!("too old resource version: {rv} ({})", rv + 1)
            );
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    let mut keys = initial_sync(&mut stream).await;
    assert!(keys.remove("default/after-close"));
    assert_node1_keys(&keys);
    assert_eq!(fake.list_count(), 2);

    // And carries on watching from the new list.
    fake.delete_pod("default", "after-close");
    assert!(
        matches!(next_ok(&mut stream).await, Event::Delete(p) if p.name_any() == "after-close")
    );
    assert_eq!(watch_rvs(&fake).len(), 4);
}

#[tokio::test]
async fn watcher_reports_forbidden_and_recovers() {
    let fake = start_with_fixtures();
    let pods: Api<Pod> = Api::all(client_for(&fake).await);
    let mut stream =
        drive(watcher(pods, watcher::Config::default().fields(NODE1)).default_backoff());
    initial_sync(&mut stream).await;
    assert!(fake.wait_for_watches(1, STEP).await);

    fake.set_forbidden(true);
    fake.close_watches();
    let err = next(&mut stream).await.expect_err("a 403 error");
    let text = error_chain(&err);
    assert!(text.contains("403") || text.contains("Forbidden"), "{text}");
    assert!(
        text.contains(
            "pods is forbidden: User \"system:serviceaccount:hearth:hearth\" cannot watch \
             resource \"pods\" in API group \"\" at the cluster scope"
        ),
        "{text}"
    );

    // A watcher starting now fails its initial list the same way (with a
    // backoff, so that it is stopped before it retries).
    let client = client_for(&fake).await;
    let mut fresh = drive(
        watcher(
            Api::<Pod>::all(client),
            watcher::Config::default().fields(NODE1),
        )
        .default_backoff(),
    );
    assert!(matches!(next_ok(&mut fresh).await, Event::Init));
    match next(&mut fresh).await {
        Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) => {
            assert_eq!(status.code, 403);
            assert!(status.message.contains("cannot list resource \"pods\""));
        }
        other => panic!("expected a 403 list error, got {other:?}"),
    }
    drop(fresh);

    fake.add_pod(extra_pod("while-forbidden", Some("node1")));
    fake.set_forbidden(false);
    loop {
        match next(&mut stream).await {
            Ok(Event::Apply(pod)) => {
                assert_eq!(pod.name_any(), "while-forbidden");
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => assert!(error_chain(&e).contains("403"), "{e}"),
        }
    }
    // Resumed from where it was: no relist was needed (the other lists were
    // the fresh watcher's, refused).
    let lists: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.is_list())
        .map(|r| r.status)
        .collect();
    assert_eq!(lists[0], 200);
    assert!(lists[1..].iter().all(|&s| s == 403), "{lists:?}");
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.is_watch() && r.status == 403));
}

#[tokio::test]
async fn watcher_reports_connection_refused_and_recovers() {
    let fake = start_with_fixtures();
    let pods: Api<Pod> = Api::all(client_for(&fake).await);
    let mut stream =
        drive(watcher(pods, watcher::Config::default().fields(NODE1)).default_backoff());
    initial_sync(&mut stream).await;
    assert!(fake.wait_for_watches(1, STEP).await);

    fake.set_down(true);
    assert_eq!(
        TcpStream::connect(fake.addr()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let mut seen = Vec::new();
    loop {
        match next(&mut stream).await {
            Err(e) => {
                let text = error_chain(&e);
                let refused = text.to_lowercase().contains("connection refused");
                seen.push(text);
                if refused {
                    break;
                }
                assert!(seen.len() < 5, "{seen:#?}");
            }
            Ok(other) => panic!("unexpected {other:?} while down"),
        }
    }

    fake.add_pod(extra_pod("after-outage", Some("node1")));
    fake.set_down(false);
    loop {
        match next(&mut stream).await {
            Ok(Event::Apply(pod)) => {
                assert_eq!(pod.name_any(), "after-outage");
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => assert!(error_chain(&e).to_lowercase().contains("refused"), "{e}"),
        }
    }
    assert_eq!(fake.list_count(), 1);
}

#[tokio::test]
async fn watcher_streaming_list_mode() {
    let fake = start_with_fixtures();
    let pods: Api<Pod> = Api::all(client_for(&fake).await);
    let config = watcher::Config::default().fields(NODE1).streaming_lists();
    let mut stream = drive(watcher(pods, config));
    assert_node1_keys(&initial_sync(&mut stream).await);
    fake.add_pod(extra_pod("streamed", Some("node1")));
    assert_eq!(expect_apply(&mut stream).await.name_any(), "streamed");
    assert_eq!(fake.list_count(), 0);
    let first = &fake.requests()[0];
    assert_eq!(
        first.query_param("sendInitialEvents").as_deref(),
        Some("true")
    );
}

// ---------------------------------------------------------------------------
// Raw wire checks (a synchronous test, to show the fake needs no runtime
// from its caller).
// ---------------------------------------------------------------------------

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    /// Watch events, one per line.
    fn events(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn raw_get(fake: &FakeApiServer, path: &str, token: Option<&str>) -> RawResponse {
    let mut conn = TcpStream::connect(fake.addr()).unwrap();
    conn.set_read_timeout(Some(STEP)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
        fake.addr()
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

const NODE1_QUERY: &str = "fieldSelector=spec.nodeName%3Dnode1";

#[test]
fn raw_wire_shapes() {
    let fake = start_with_fixtures();
    let token = Some(FAKE_TOKEN);

    // Authentication.
    let r = raw_get(&fake, "/api/v1/pods", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Unauthorized");

    // List envelope; items without kind/apiVersion.
    let r = raw_get(&fake, &format!("/api/v1/pods?{NODE1_QUERY}"), token);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("content-length").is_some());
    assert!(r.text().starts_with(
        "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\""
    ));
    let list = r.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), NODE1_PODS.len());
    assert!(items
        .iter()
        .all(|p| p.get("kind").is_none() && p.get("apiVersion").is_none()));
    assert!(items
        .iter()
        .all(|p| p["metadata"]["managedFields"].is_array()));
    assert!(list["metadata"].get("continue").is_none());

    // Pagination: continue, remainingItemCount only without selectors.
    let r = raw_get(&fake, "/api/v1/pods?limit=4", token).json();
    assert_eq!(r["items"].as_array().unwrap().len(), 4);
    assert_eq!(r["metadata"]["remainingItemCount"], 5);
    let token1 = r["metadata"]["continue"].as_str().unwrap().to_string();
    let r = raw_get(&fake, &format!("/api/v1/pods?{NODE1_QUERY}&limit=4"), token).json();
    assert!(r["metadata"].get("remainingItemCount").is_none());
    assert!(r["metadata"]["continue"].is_string());
    let r = raw_get(
        &fake,
        &format!("/api/v1/pods?limit=4&continue={token1}"),
        token,
    )
    .json();
    assert_eq!(r["items"].as_array().unwrap().len(), 4);

    // Namespaced form and a bad field selector.
    let r = raw_get(&fake, "/api/v1/namespaces/shop/pods", token).json();
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    let r = raw_get(&fake, "/api/v1/pods?fieldSelector=spec.hostname%3Dx", token);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "field label not supported: spec.hostname"
    );

    // Watch: chunked, one event per line, kind/apiVersion on objects,
    // increasing resourceVersions; ends at timeoutSeconds.
    let from = fake.resource_version();
    fake.add_pod(extra_pod("w1", Some("node1")));
    fake.modify_pod("default", "w1", |p| {
        p["metadata"]["labels"]["x"] = json!("1")
    });
    fake.delete_pod("default", "w1");
    let bookmark_rv = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(fake.wait_for_watches_blocking(1, STEP));
            fake.bookmark();
        });
        let r = raw_get(
            &fake,
            &format!(
                "/api/v1/pods?{NODE1_QUERY}&allowWatchBookmarks=true&resourceVersion={from}\
                 &timeoutSeconds=1&watch=true"
            ),
            token,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let events = r.events();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]);
        let rvs: Vec<u64> = events
            .iter()
            .map(|e| {
                e["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(rvs, [from + 1, from + 2, from + 3, from + 3]);
        for e in &events[..3] {
            assert_eq!(e["object"]["kind"], "Pod");
            assert_eq!(e["object"]["apiVersion"], "v1");
        }
        let bookmark = &events[3]["object"];
        assert_eq!(bookmark["kind"], "Pod");
        assert_eq!(bookmark["metadata"].as_object().unwrap().len(), 1);
        rvs[3]
    });
    assert_eq!(bookmark_rv, fake.resource_version());

    // Watch without a resourceVersion: the current state as ADDED events.
    let r = raw_get(
        &fake,
        &format!("/api/v1/pods?{NODE1_QUERY}&timeoutSeconds=0&watch=true"),
        token,
    );
    let events = r.events();
    assert_eq!(events.len(), NODE1_PODS.len());
    assert!(events.iter().all(|e| e["type"] == "ADDED"));

    // A list continue token and a watch from before a compaction: 410.
    fake.compact();
    let r = raw_get(
        &fake,
        &format!("/api/v1/pods?limit=4&continue={token1}"),
        token,
    );
    assert_eq!(r.status, 410);
    assert_eq!(r.json()["reason"], "Expired");
    let r = raw_get(
        &fake,
        &format!("/api/v1/pods?{NODE1_QUERY}&resourceVersion={from}&watch=true"),
        token,
    );
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0],
        json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", fake.resource_version()),
            "reason": "Expired", "code": 410
        }})
    );

    // Forbidden.
    fake.set_forbidden(true);
    let r = raw_get(
        &fake,
        &format!("/api/v1/pods?{NODE1_QUERY}&limit=500"),
        token,
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:hearth:hearth\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403
        })
    );
    fake.set_forbidden(false);

    // Outage: refused, then back on the same port.
    let before = fake.bytes_sent();
    fake.set_down(true);
    assert!(TcpStream::connect(fake.addr()).is_err());
    fake.set_down(false);
    let r = raw_get(&fake, "/version", token);
    assert_eq!(r.status, 200);
    assert!(fake.bytes_sent() > before);

    let kinds: Vec<_> = fake.requests().iter().map(|r| (r.kind, r.status)).collect();
    assert_eq!(kinds.len(), 13, "{kinds:?}");
}
