//! Measures the profile page of a running agent, for BENCHMARKS.md (see
//! scripts/bench-ui.sh): API answer times and sizes, then, in headless
//! Chromium, the time to first render, the time to show a selection, a
//! search and a comparison, and the memory the page holds.
//!
//! cargo run --release -p hearth --example ui_probe -- <port> [repetitions]

#[path = "../tests/browser/mod.rs"]
mod browser;

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::Value;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn api(port: u16, path: &str, reps: usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..reps {
        let t = Instant::now();
        match browser::http_get(port, path) {
            Ok((200, _, body)) => size = body.len(),
            Ok((status, _, body)) => {
                println!(
                    "api {path}: status {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                return;
            }
            Err(e) => {
                println!("api {path}: {e}");
                return;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "api {path}: median {:.1} ms, max {:.1} ms, {size} bytes",
        median(times.clone()),
        times.iter().cloned().fold(0.0, f64::max)
    );
}

/// Clicks what `click_js` returns and waits until `done_js` (given the
/// clicked element's key) is true; returns the milliseconds in between,
/// measured in the page.
const TIMED_CLICK: &str = r#"
const [clickJs, doneJs] = [arguments[0], arguments[1]];
const callback = arguments[arguments.length - 1];
const target = new Function(clickJs)();
const key = target && target.dataset ? (target.dataset.key || '') : '';
const before = document.getElementById('legend').textContent;
const t0 = performance.now();
target.click();
const done = new Function('key', 'before', doneJs);
const poll = () => {
  if (done(key, before)) callback({ key, ms: performance.now() - t0 });
  else if (performance.now() - t0 > 60000) callback({ key, ms: -1 });
  else setTimeout(poll, 2);
};
poll();
"#;

const PAGE_STATE: &str = r#"
const m = performance.getEntriesByName('hearth:first-flame')[0];
const nav = performance.getEntriesByType('navigation')[0];
return {
  first_flame_ms: m ? m.startTime : -1,
  dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : -1,
  js_heap_used: performance.memory ? performance.memory.usedJSHeapSize : -1,
  js_heap_total: performance.memory ? performance.memory.totalJSHeapSize : -1,
  rows: document.querySelectorAll('#rows tbody tr').length,
  frames: document.querySelectorAll('#flame .frame').length,
  dom_nodes: document.getElementsByTagName('*').length,
};
"#;

async fn timed(c: &fantoccini::Client, what: &str, click_js: &str, done_js: &str) -> Value {
    let v = c
        .execute_async(
            TIMED_CLICK,
            vec![Value::from(click_js), Value::from(done_js)],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    println!("page {what}: {v}");
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: ui_probe <port> [repetitions]");
    let reps: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);

    api(port, "/api/overview", reps);
    api(port, "/api/flame?sel=all", reps);
    api(port, "/api/top?sel=all", reps);
    api(port, "/api/flame?sel=all&last=60", reps);
    api(port, "/api/diff?sel=all&last=300&base_last=900", reps);
    api(port, "/api/pprof?sel=all", reps);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let b = browser::Browser::start(1400, 900).await.expect("Chromium");
        let c = &b.client;
        for round in 0..reps.min(3) {
            let t = Instant::now();
            c.goto(&format!("http://127.0.0.1:{port}/"))
                .await
                .expect("open the page");
            c.wait()
                .at_most(Duration::from_secs(120))
                .for_element(Locator::Css("body[data-first-flame=done]"))
                .await
                .expect("first flame graph");
            let outside = t.elapsed().as_secs_f64() * 1e3;
            let state = c.execute(PAGE_STATE, vec![]).await.expect("page state");
            println!("page load {round}: {state} (seen by the driver after {outside:.0} ms)");
        }
        timed(
            c,
            "select the busiest process",
            "return document.querySelector('#rows tr[data-kind=process]')",
            "const f = document.getElementById('flame'); return f.dataset.sel === key && f.dataset.state === 'ready';",
        )
        .await;
        timed(
            c,
            "select everything again",
            "return document.querySelector('#rows tr[data-key=all]')",
            "const f = document.getElementById('flame'); return f.dataset.sel === 'all' && f.dataset.state === 'ready';",
        )
        .await;
        // Search (the box waits 120 ms after the last key before searching).
        let search = c
            .execute_async(
                r#"
const callback = arguments[arguments.length - 1];
const box = document.getElementById('search');
const t0 = performance.now();
box.value = 'burn';
box.dispatchEvent(new Event('input'));
const poll = () => {
  const n = Number(document.getElementById('flame').dataset.matches || '0');
  if (n > 0) callback({ ms: performance.now() - t0, matches: n, info: document.getElementById('match-info').textContent });
  else if (performance.now() - t0 > 60000) callback({ ms: -1 });
  else setTimeout(poll, 2);
};
poll();
"#,
                vec![],
            )
            .await
            .expect("search");
        println!("page search 'burn' (includes the 120 ms typing pause): {search}");
        timed(
            c,
            "compare with a baseline",
            "return document.getElementById('compare')",
            "const l = document.getElementById('legend').textContent; return l.startsWith('Differential') && document.getElementById('flame').dataset.state === 'ready';",
        )
        .await;
        let state = c.execute(PAGE_STATE, vec![]).await.expect("page state");
        println!("page after all: {state}");
        b.close().await;
    });
}
