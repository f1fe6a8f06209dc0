//! Memory during a long outage stays near the queue bound, however much is
//! submitted. Its own test binary, so that its process measures only this.

use std::time::{Duration, Instant};

use hearth_otlp::{Backoff, Exporter, ExporterConfig, Protocol};

/// (VmRSS, VmHWM) in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_without_a_collector() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cap: usize = 16 << 20;
    let mut c = ExporterConfig::new(Protocol::Grpc, format!("http://127.0.0.1:{port}"));
    c.queue_bytes = cap;
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Backoff::default()
    };
    let e = Exporter::start(c, &tokio::runtime::Handle::current()).expect("start");
    let stats = e.stats();

    let (rss0, _) = rss_kib();
    let chunk = 512 << 10;
    let total_requests = 160; // 80 MiB submitted, 5 times the bound
    let t0 = Instant::now();
    let mut max_rss = rss0;
    for i in 0..total_requests {
        // Distinct, non-zero bytes so that every page is really resident.
        let body: Vec<u8> = (0..chunk).map(|j| (i * 31 + j) as u8 | 1).collect();
        e.submit(body);
        let s = stats.snapshot();
        assert!(s.queue_bytes <= cap as u64, "{s:?}");
        if i % 20 == 0 {
            max_rss = max_rss.max(rss_kib().0);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (rss1, _) = rss_kib();
    max_rss = max_rss.max(rss1);
    let s = stats.snapshot();
    let growth_mib = (max_rss.saturating_sub(rss0)) as f64 / 1024.0;
    eprintln!(
        "outage: submitted {} MiB in {:.1?}; queue {} requests, {:.1} MiB (bound {} MiB); dropped {} (queue full); failed attempts {}; RSS {:.1} -> {:.1} MiB (peak growth {growth_mib:.1} MiB)",
        (total_requests * chunk) >> 20,
        t0.elapsed(),
        s.queue_len,
        s.queue_bytes as f64 / 1048576.0,
        cap >> 20,
        s.dropped_queue_overflow,
        s.attempts_failed,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
    );
    assert!(s.queue_bytes_max <= cap as u64);
    assert!(s.dropped_queue_overflow >= (total_requests - cap / chunk - 1) as u64);
    // The bound, one request in flight, and allocator slack; far below the
    // 80 MiB submitted.
    assert!(
        growth_mib < 3.0 * (cap >> 20) as f64,
        "RSS grew {growth_mib} MiB"
    );
    let s = e.shutdown(Duration::ZERO).await;
    assert_eq!(s.submitted, s.dropped_total(), "{s:?}");
}
