//! The servers' bounds against hostile clients, on real sockets: slow and
//! oversized request heads, connections past the cap, and more heavy
//! queries at once than the page runs.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use hearth_ui::{
    History, HistoryConfig, PageInfo, QueryLimits, QueryStats, ServeLimits, ServerStats,
};
use support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves `router` within `limits` on a port of its own.
fn serve(
    runtime: &tokio::runtime::Runtime,
    router: Router,
    limits: ServeLimits,
) -> (SocketAddr, Arc<ServerStats>) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    runtime.spawn(hearth_ui::serve_with_limits(
        listener,
        router,
        limits,
        stats.clone(),
    ));
    (addr, stats)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Reads until the server closes; what came, and how long it took.
fn until_closed(c: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (out, started.elapsed())
}

fn status_of(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get_once(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = connect(addr);
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    until_closed(&mut c).0
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

#[test]
fn slow_partial_headers_and_idle_keep_alive_are_dropped_after_the_timeout() {
    let rt = runtime();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let (addr, stats) = serve(&rt, ok_router(), limits);

    // A head that trickles in a byte every 100 ms and never ends.
    let mut slow = connect(addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if slow.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "the trickling client was never dropped");
    wait_until("a header timeout counted", || {
        stats.header_timeouts.load(Ordering::Relaxed) == 1
    });
    println!(
        "trickling head dropped after {:?} (timeout 1 s)",
        started.elapsed()
    );

    // A kept-alive connection that asks once, then says nothing.
    let mut idle = connect(addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (answer, held) = until_closed(&mut idle);
    assert_eq!(
        status_of(&answer),
        200,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        held >= Duration::from_millis(900),
        "closed after {held:?}: keep-alive did not keep the connection"
    );
    assert!(
        held < Duration::from_secs(9),
        "idle connection held {held:?}"
    );
    wait_until("the idle connection counted as timed out", || {
        stats.header_timeouts.load(Ordering::Relaxed) == 2
    });
    wait_until("no connection open", || {
        stats.open.load(Ordering::Relaxed) == 0
    });
}

#[test]
fn an_oversized_request_head_gets_431_and_the_connection_closes() {
    let rt = runtime();
    let (addr, stats) = serve(&rt, ok_router(), ServeLimits::default());
    let mut c = connect(addr);
    let filler = "a".repeat(64 << 10);
    // The server may close before all of it is written.
    let _ = write!(
        c,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {filler}\r\n\r\n"
    );
    let (answer, _) = until_closed(&mut c);
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_until("the oversized head counted", || {
        stats.headers_too_large.load(Ordering::Relaxed) == 1
    });
    assert_eq!(status_of(&get_once(addr, "/healthz")), 200);
}

#[test]
fn past_the_cap_idle_connections_make_room_and_busy_ones_refuse_newcomers() {
    const CAP: usize = 4;
    let rt = runtime();
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let router = ok_router().route(
        "/hold",
        get({
            let entered = entered.clone();
            let release = release.clone();
            move || {
                let (entered, release) = (entered.clone(), release.clone());
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    let _ = release.acquire().await.map(|p| p.forget());
                    "held\n"
                }
            }
        }),
    );
    let limits = ServeLimits {
        max_connections: CAP,
        ..ServeLimits::default()
    };
    let (addr, stats) = serve(&rt, router, limits);

    // Idle connections past the cap: each newcomer closes the longest idle.
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..3 * CAP {
        idle.push(connect(addr));
        wait_until("the connection accepted", || {
            stats.accepted.load(Ordering::Relaxed) == i as u64 + 1
        });
        assert!(stats.open.load(Ordering::Relaxed) <= CAP as u64);
    }
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 2 * CAP as u64);
    // The first ones were closed by the server.
    for c in &mut idle[..2 * CAP] {
        let (answer, _) = until_closed(c);
        assert!(answer.is_empty());
    }
    // A health check still gets in, and its answer.
    assert_eq!(status_of(&get_once(addr, "/healthz")), 200);

    // Every slot busy with a request in progress: a newcomer is refused.
    let mut holders: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut c = connect(addr);
            write!(
                c,
                "GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            c
        })
        .collect();
    wait_until("every holder inside its request", || {
        entered.load(Ordering::SeqCst) == CAP
    });
    let refused_before = stats.refused.load(Ordering::Relaxed);
    let answer = get_once(addr, "/healthz");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(stats.refused.load(Ordering::Relaxed), refused_before + 1);
    assert!(stats.open.load(Ordering::Relaxed) <= CAP as u64);

    // The holders finish; the others are gone; a fresh client is served.
    release.add_permits(CAP);
    for c in &mut holders {
        assert_eq!(status_of(&until_closed(c).0), 200);
    }
    drop(idle);
    assert_eq!(status_of(&get_once(addr, "/healthz")), 200);
    println!(
        "accepted {} evicted {} refused {}",
        stats.accepted.load(Ordering::Relaxed),
        stats.evicted.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed)
    );
}

#[test]
fn heavy_queries_beyond_the_bound_get_503_with_retry_after() {
    const PARALLEL: usize = 6;
    let rt = runtime();
    let mut h = History::new(HistoryConfig::default());
    h.ingest(&machine_window(1_000, 10));
    h.ingest(&machine_window(1_005, 30));
    let history = Arc::new(RwLock::new(h));
    let query_stats = Arc::new(QueryStats::default());
    let limits = QueryLimits {
        concurrent: 2,
        wait: Duration::from_millis(500),
    };
    let router = hearth_ui::router_with_limits(
        history.clone(),
        PageInfo::default(),
        limits,
        query_stats.clone(),
    );
    let (addr, _) = serve(&rt, router, ServeLimits::default());

    // Writing to the history stalls the queries that got a slot (they wait
    // to take their snapshot): the rest find no free slot.
    let writer = history.write().unwrap();
    let queries: Vec<_> = (0..PARALLEL)
        .map(|_| std::thread::spawn(move || get_once(addr, "/api/flame?last=900")))
        .collect();
    wait_until("the queries without a slot refused", || {
        query_stats.refused.load(Ordering::Relaxed) == (PARALLEL - limits.concurrent) as u64
    });
    // The runtime is not held up by the stalled queries.
    let page = get_once(addr, "/");
    assert_eq!(status_of(&page), 200);
    drop(writer);

    let answers: Vec<Vec<u8>> = queries.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| status_of(a) == 200).count();
    let busy: Vec<&Vec<u8>> = answers.iter().filter(|a| status_of(a) == 503).collect();
    assert_eq!(ok, limits.concurrent);
    assert_eq!(busy.len(), PARALLEL - limits.concurrent);
    for a in busy {
        let head = String::from_utf8_lossy(a).to_ascii_lowercase();
        assert!(
            head.contains(&format!("retry-after: {}", hearth_ui::RETRY_AFTER_SECS)),
            "{head}"
        );
    }
    // With the bound free again, a query is answered.
    assert_eq!(status_of(&get_once(addr, "/api/top?last=900")), 200);
}

#[test]
fn a_client_that_asks_and_never_reads_is_dropped_with_its_answer() {
    let rt = runtime();
    // Far more than the sockets' buffers hold.
    let big = Arc::new(vec![b'x'; 64 << 20]);
    let router = ok_router().route(
        "/big",
        get(move || {
            let big = big.clone();
            async move { axum::body::Bytes::from(big.to_vec()) }
        }),
    );
    let limits = ServeLimits {
        write_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let (addr, stats) = serve(&rt, router, limits);
    let mut c = connect(addr);
    c.write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    // Read nothing.
    wait_until("the stalled connection dropped", || {
        stats.write_timeouts.load(Ordering::Relaxed) == 1
    });
    wait_until("no connection open", || {
        stats.open.load(Ordering::Relaxed) == 0
    });
    // What arrives is cut short of the whole answer.
    let (answer, _) = until_closed(&mut c);
    assert!(answer.len() < 64 << 20, "{} bytes", answer.len());
    assert_eq!(status_of(&get_once(addr, "/healthz")), 200);
}
