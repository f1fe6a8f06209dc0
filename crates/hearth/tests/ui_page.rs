//! The agent's local profile page, end to end: a real agent profiles a
//! known workload, headless Chromium opens the page, and the test uses it
//! the way a person would (pick the workload, read the flame graph, search,
//! compare two ranges, download pprof), saving a screenshot.

mod browser;
mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use browser::{free_port, http_get, Browser};
use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use prost::Message;

/// The workload's process name (a copy of split_c under a name no other
/// process on the machine has).
const WORKLOAD: &str = "hearth_ui_wl";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn overview_has_workload(port: u16, min_samples: u64) -> bool {
    let Ok((200, _, body)) = http_get(port, "/api/overview") else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    v["rows"].as_array().is_some_and(|rows| {
        rows.iter()
            .any(|r| r["label"] == WORKLOAD && r["samples"].as_u64().unwrap_or(0) >= min_samples)
    })
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("page never showed {css}: {e}"))
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The hover tooltip's text once the page shows it.
async fn visible_tooltip(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = c
            .execute(
                "const t = document.getElementById('tooltip'); return t.hidden ? null : t.textContent",
                vec![],
            )
            .await
            .expect("read the tooltip");
        if let Some(text) = shown.as_str() {
            return text.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no tooltip after hovering a frame"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percentage in a text such as "Matched 69.8% in 1 frames".
fn percent_in(text: &str) -> Option<f64> {
    let end = text.find('%')?;
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    text[start..end].parse().ok()
}

#[test]
fn page_shows_workload_flame_graph_search_compare_and_pprof() {
    let test = "page_shows_workload_flame_graph_search_compare_and_pprof";
    if !require_root_perf(test) {
        return;
    }
    if browser::tools().is_none() {
        skip_or_fail(
            test,
            "/usr/bin/chromium or /usr/bin/chromedriver missing (scripts/setup-tests.sh installs them)",
        );
        return;
    }
    let dir = TempDir::new("ui-page");
    let exe = dir.path(WORKLOAD);
    std::fs::copy(workload("split_c"), &exe).expect("copy the workload");
    let _workload = Killed(
        spawn_copied(Command::new(&exe).arg("300").stdout(Stdio::null()))
            .expect("start the workload"),
    );
    let port = free_port();
    let mut agent = Command::new(hearth());
    agent
        .args(["agent", "--interval", "1", "-F", "199"])
        .args(["--metrics-listen", "off"])
        .args(["--ui-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    without_agent_env(&mut agent);
    let mut agent = Killed(agent.spawn().expect("start the agent"));
    let stderr = agent.0.stderr.take();

    // Let a few windows of history build up: the comparison needs two.
    let started = Instant::now();
    while !overview_has_workload(port, 400) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the agent's overview never listed {WORKLOAD} with 400 samples"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let screenshot_path = runtime.block_on(async {
        let b = Browser::start(1400, 900).await.expect("start Chromium");
        let c = &b.client;
        c.goto(&format!("http://127.0.0.1:{port}/"))
            .await
            .expect("open the page");

        // 1. The list shows the workload, with a share.
        let row_css = format!("#rows tr[data-kind=process][data-label={WORKLOAD}]");
        let row = wait_for(c, &row_css).await;
        let row_text = row.text().await.unwrap_or_default();
        let share = percent_in(&row_text).unwrap_or(0.0);
        println!("list row: {row_text:?}");
        assert!(
            share > 5.0,
            "{WORKLOAD} uses a whole CPU of two; the list says {share}%"
        );

        // 2. Selecting it draws its flame graph with the hot function and
        //    the chain that leads there.
        row.click().await.expect("click the workload");
        let sel = format!("process:host:{WORKLOAD}");
        wait_for(
            c,
            &format!("#flame[data-sel=\"{sel}\"][data-state=ready] .frame[data-name=leaf_seventy]"),
        )
        .await;
        for f in ["main", "run_rounds", "alpha_three", "leaf_thirty"] {
            assert!(
                c.find(Locator::Css(&format!("#flame .frame[data-name={f}]")))
                    .await
                    .is_ok(),
                "the flame graph lacks {f}"
            );
        }
        assert!(
            c.find(Locator::Css("#flame .frame.match")).await.is_err(),
            "frames highlighted before any search"
        );

        // 3. Search highlights the hot function, and only matching frames.
        let search = c.find(Locator::Css("#search")).await.expect("search box");
        search.send_keys("leaf_seventy").await.expect("type");
        let hit = wait_for(c, "#flame .frame.match[data-name=leaf_seventy]").await;
        let info = text_of(c, "#match-info").await;
        let matched = percent_in(&info).unwrap_or(0.0);
        println!("search: {info:?}");
        assert!(
            (45.0..=95.0).contains(&matched),
            "leaf_seventy is 70% of the workload by construction; the page matched {matched}%"
        );
        let colour = hit.css_value("background-color").await.unwrap_or_default();
        let rgb: Vec<u32> = colour
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .take(3)
            .collect();
        assert_eq!(rgb, [214, 42, 214], "highlight colour of a match: {colour}");
        let others: Vec<String> = c
            .execute(
                "return [...document.querySelectorAll('#flame .frame.match')].map(e => e.dataset.name)",
                vec![],
            )
            .await
            .expect("list matches")
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        assert!(
            !others.is_empty() && others.iter().all(|n| n.contains("leaf_seventy")),
            "only leaf_seventy frames may be highlighted: {others:?}"
        );

        // Hovering a frame shows its name and its share of the selection.
        let pointer = MouseActions::new("mouse".to_string()).then(PointerAction::MoveToElement {
            element: hit.clone(),
            duration: Some(Duration::from_millis(50)),
            x: 0.0,
            y: 0.0,
        });
        c.perform_actions(pointer).await.expect("move the pointer");
        let tip = visible_tooltip(c).await;
        println!("hover: {tip:?}");
        let mut lines = tip.lines();
        assert_eq!(lines.next(), Some("leaf_seventy"), "tooltip: {tip:?}");
        let hovered = lines.next().and_then(percent_in).unwrap_or(0.0);
        assert!(
            hovered > 40.0 && hovered <= matched + 0.05,
            "the hovered leaf_seventy frame holds {hovered}% of the selection; \
             every leaf_seventy frame together {matched}%"
        );

        // Clicking a frame zooms into it.
        hit.click().await.expect("zoom into leaf_seventy");
        let zoomed = c
            .find(Locator::Css("#reset-zoom"))
            .await
            .expect("reset button")
            .prop("disabled")
            .await
            .unwrap_or_default();
        assert_eq!(zoomed.as_deref(), Some("false"), "zooming enables reset");

        // The screenshot shows the searched, zoomed graph of the workload.
        let png = c.screenshot().await.expect("screenshot");
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-page.png");
        std::fs::write(&out, &png).expect("save the screenshot");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
        let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        assert!(width >= 1000, "screenshot width {width}");
        click(c, "#reset-zoom").await;

        // 4. The download link gives a pprof profile of the selection.
        let href = c
            .find(Locator::Css("#download"))
            .await
            .expect("download link")
            .attr("href")
            .await
            .expect("href")
            .expect("the download link has an href");
        assert!(href.contains("api/pprof") && href.contains(WORKLOAD), "{href}");
        let (status, headers, body) = http_get(port, &format!("/{href}")).expect("download");
        assert_eq!(status, 200, "pprof download status");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-disposition" && v.contains(".pb.gz")),
            "{headers:?}"
        );
        let pprof_path = dir.path("selection.pb.gz");
        std::fs::write(&pprof_path, &body).expect("save pprof");
        check_pprof(&body);
        let go = Command::new("go")
            .args(["tool", "pprof", "-top"])
            .arg(&pprof_path)
            .output()
            .expect("run go tool pprof (golang-go, installed by scripts/setup-tests.sh)");
        let top = String::from_utf8_lossy(&go.stdout);
        assert!(
            go.status.success() && top.contains("leaf_seventy"),
            "go tool pprof -top failed: {}\n{top}",
            String::from_utf8_lossy(&go.stderr)
        );

        // 5. Top functions list the hot function first.
        click(c, ".tabs button[data-tab=top]").await;
        let first = wait_for(c, "#top tbody tr").await;
        assert_eq!(
            first.attr("data-name").await.ok().flatten().as_deref(),
            Some("leaf_seventy"),
            "the first top function"
        );
        click(c, ".tabs button[data-tab=flame]").await;

        // 6. Comparing two ranges draws a differential graph.
        click(c, "#compare").await;
        let started = Instant::now();
        loop {
            let legend = text_of(c, "#legend").await;
            if legend.starts_with("Differential") {
                println!("legend: {legend:?}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no differential graph: legend {legend:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for(c, "#flame[data-state=ready] .frame[data-name=leaf_seventy]").await;

        // 7. It updates live: the status line follows new windows.
        let before = text_of(c, "#status").await;
        let started = Instant::now();
        while text_of(c, "#status").await == before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "status never changed from {before:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        b.close().await;
        out
    });
    println!("screenshot: {}", screenshot_path.display());

    drop(agent);
    let mut log = String::new();
    if let Some(mut e) = stderr {
        let _ = e.read_to_string(&mut log);
    }
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "agent log:\n{log}"
    );
}

/// The download decodes as pprof and holds the workload's functions with
/// the 70/30 split roughly right.
fn check_pprof(gz: &[u8]) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("the download is gzip");
    let p = hearth_export::pprof::proto::Profile::decode(raw.as_slice()).expect("pprof protobuf");
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let fn_name = |id: u64| {
        p.function
            .iter()
            .find(|f| f.id == id)
            .map(|f| s(f.name))
            .unwrap_or_default()
    };
    let leaf = |sample: &hearth_export::pprof::proto::Sample| {
        sample
            .location_id
            .first()
            .and_then(|id| p.location.iter().find(|l| l.id == *id))
            .and_then(|l| l.line.first())
            .map(|l| fn_name(l.function_id))
            .unwrap_or_default()
    };
    let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
    let seventy: i64 = p
        .sample
        .iter()
        .filter(|x| leaf(x) == "leaf_seventy")
        .map(|x| x.value[0])
        .sum();
    assert!(total > 300, "pprof has {total} samples");
    let share = seventy as f64 / total as f64;
    println!("pprof: {total} samples, leaf_seventy {share:.3}");
    assert!(
        (0.55..=0.85).contains(&share),
        "leaf_seventy share in the pprof download: {share}"
    );
}

#[test]
fn page_beyond_loopback_needs_an_explicit_flag() {
    for (listen, expect) in [
        ("0.0.0.0:0", "--ui-allow-remote"),
        ("[::]:0", "--ui-allow-remote"),
        ("not-an-address", "is not like 127.0.0.1:7070"),
    ] {
        let out = Command::new(hearth())
            .args(["agent", "--metrics-listen", "off", "--ui-listen", listen])
            .stdin(Stdio::null())
            .output()
            .expect("run hearth");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--ui-listen {listen}: {err}");
        assert!(err.contains(expect), "--ui-listen {listen}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "one clear line: {err}"
        );
    }
}
