//! The page's server on a real socket: what it serves, what it refuses,
//! and that garbage sent to its port gets an error, never a crash.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_ui::{History, HistoryConfig, PageInfo};
use support::*;

struct Server {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn start(allow_any_host: bool) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut h = History::new(HistoryConfig::default());
    h.ingest(&machine_window(1_000, 10));
    h.ingest(&machine_window(1_005, 30));
    let router = hearth_ui::router(
        Arc::new(RwLock::new(h)),
        PageInfo {
            host: Some("node-1".into()),
            allow_any_host,
        },
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(hearth_ui::serve(listener, router));
    Server {
        addr,
        _runtime: runtime,
    }
}

/// Sends raw bytes, returns whatever comes back before the server closes
/// (or a timeout).
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send(addr, bytes, true)
}

/// `half_close`: end the sending side after the bytes (for garbage, so
/// the server sees the end of it); a well-formed request asks for
/// `Connection: close` instead, because the server drops a request whose
/// client has stopped sending.
fn send(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(bytes);
    if half_close {
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

fn get(addr: SocketAddr, path: &str, host: &str) -> (u16, String, Vec<u8>) {
    let out = send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    );
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP answer to {path}: {:?}",
                String::from_utf8_lossy(&out)
            )
        });
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), out[end + 4..].to_vec())
}

const LOCAL: &str = "127.0.0.1:7070";

#[test]
fn serves_the_page_and_its_api_with_strict_headers() {
    let s = start(false);
    let (status, head, body) = get(s.addr, "/", LOCAL);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"));
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(head.contains("x-content-type-options: nosniff"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("app.js") && html.contains("style.css"));
    // Nothing from elsewhere: every reference is relative to this server.
    for needle in ["http://", "https://", "//cdn", "<script>"] {
        assert!(!html.contains(needle), "the page refers to {needle}");
    }
    for asset in ["/app.js", "/style.css"] {
        let (status, _, body) = get(s.addr, asset, LOCAL);
        assert_eq!(status, 200, "{asset}");
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("http://") || asset == "/app.js");
        assert!(
            !text.contains("https://"),
            "{asset} loads from the internet"
        );
    }
    // The script never puts names from the machine into HTML.
    let (_, _, js) = get(s.addr, "/app.js", LOCAL);
    let js = String::from_utf8(js).unwrap();
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"));

    let (status, head, body) = get(s.addr, "/api/overview", "localhost:7070");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["total_samples"], 60);
    assert_eq!(v["host"], "node-1");

    let (status, head, body) = get(s.addr, "/api/pprof?sel=host", "[::1]:7070");
    assert_eq!(status, 200);
    assert!(
        head.contains("attachment; filename=\"hearth-host-1000.pb.gz\""),
        "{head}"
    );
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip");
}

#[test]
fn refuses_foreign_host_names_unless_told_otherwise() {
    let s = start(false);
    for host in ["evil.example", "attacker.test:7070", "127.0.0.1.nip.io", ""] {
        let (status, _, _) = get(s.addr, "/api/overview", host);
        assert_eq!(status, 403, "Host {host:?}");
    }
    let open = start(true);
    let (status, _, _) = get(open.addr, "/api/overview", "profiler.internal:7070");
    assert_eq!(status, 200);
}

#[test]
fn bad_parameters_get_a_400_with_a_reason() {
    let s = start(false);
    for (path, reason) in [
        ("/api/flame?sel=bogus", "unknown selection"),
        ("/api/flame?from=abc", "from"),
        ("/api/flame?from=10&to=5", "from must be before to"),
        ("/api/top?last=-3", "positive"),
        ("/api/top?last=NaN", "positive"),
        ("/api/top?limit=99999999999999999999999", "limit"),
        ("/api/diff?sel=all", "base_from"),
        ("/api/pprof?sel=process:nohost", "unknown selection"),
    ] {
        let (status, _, body) = get(s.addr, path, LOCAL);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(reason), "{path}: {text}");
    }
    let (status, _, _) = get(s.addr, "/nope", LOCAL);
    assert_eq!(status, 404);
}

#[test]
fn garbage_on_the_port_never_takes_the_server_down() {
    let s = start(false);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let samples: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /api/flame?sel=%ff%fe HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        format!(
            "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "a".repeat(100_000)
        )
        .into_bytes(),
        format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nX: {}\r\n\r\n",
            "b".repeat(200_000)
        )
        .into_bytes(),
        b"POST /api/flame HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET /api/top HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            .to_vec(),
    ];
    for bytes in &samples {
        let _ = raw(s.addr, bytes);
    }
    // Random bytes, and random query strings from a small alphabet that
    // hits the parsers' edge cases.
    let alphabet: &[u8] = b"selfromtolastbase_limitpodcontainerprocesshost:=&%/0123456789.-e+x ";
    for i in 0..400 {
        if i % 2 == 0 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = raw(s.addr, &bytes);
        } else {
            let len = (next() % 80) as usize;
            let q: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .filter(|c| *c != ' ')
                .collect();
            for api in ["overview", "flame", "diff", "top", "pprof"] {
                let (status, _, _) = get(s.addr, &format!("/api/{api}?{q}"), LOCAL);
                assert!(
                    status == 200 || status == 400,
                    "/api/{api}?{q} answered {status}"
                );
            }
        }
    }
    let (status, _, _) = get(s.addr, "/api/overview", LOCAL);
    assert_eq!(status, 200, "the server still answers");
}
