//! The exporter against a real receiver (tests/otlp/receiver.py, the
//! official Python OTLP classes and grpcio) for both transports: retry
//! rules, server-given delays, timeouts, gzip, headers, TLS, and a
//! collector that is absent or goes away, with the log lines counted.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use hearth_otlp::{Compression, Exporter, Protocol, StatsSnapshot, TlsConfig};
use serde_json::{json, Value};
use support::{assert_content_ok, fast_config, request, Capture, Receiver};
use tokio::runtime::Handle;
use tracing::instrument::WithSubscriber;

const BOTH: [Protocol; 2] = [Protocol::Grpc, Protocol::HttpProtobuf];

fn name(p: Protocol) -> &'static str {
    match p {
        Protocol::Grpc => "grpc",
        Protocol::HttpProtobuf => "http",
    }
}

fn stats(e: &Exporter) -> StatsSnapshot {
    e.stats().snapshot()
}

async fn wait_stats(
    e: &Exporter,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&StatsSnapshot) -> bool,
) {
    let s = e.stats();
    let start = Instant::now();
    loop {
        let snap = s.snapshot();
        if pred(&snap) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempts(r: &Receiver, transport: &str) -> Vec<Value> {
    r.records()
        .into_iter()
        .filter(|x| x["transport"] == transport)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried() {
    need_python!("retryable_failures_are_retried");
    let mut r = Receiver::start(None).await;
    for p in BOTH {
        let (logs, _guard) = Capture::install();
        // gRPC UNAVAILABLE / HTTP 503, twice, then accept.
        r.control(json!({"mode": "unavailable", "times": 2}));
        let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
        e.submit(request(1, 5));
        wait_stats(&e, "the export", Duration::from_secs(15), |s| {
            s.exports_sent == 1
        })
        .await;
        let seen = attempts(&r, name(p));
        assert_eq!(seen.len(), 3, "{}: {seen:?}", name(p));
        assert_eq!(seen[0]["mode"], "unavailable");
        assert_eq!(seen[2]["mode"], "ok");
        assert_content_ok(&seen[2], 5);
        let s = stats(&e);
        assert_eq!(
            (s.attempts_failed, s.retries, s.dropped_total()),
            (2, 2, 0),
            "{s:?}"
        );
        assert_eq!(logs.count("export_failing"), 1, "{}", logs.dump());
        assert_eq!(logs.count("export_recovered"), 1, "{}", logs.dump());
        e.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_dropped_after_one_attempt() {
    need_python!("refusals_are_dropped_after_one_attempt");
    let mut r = Receiver::start(None).await;
    for p in BOTH {
        let (logs, _guard) = Capture::install();
        // gRPC INVALID_ARGUMENT / HTTP 400.
        r.control(json!({"mode": "invalid"}));
        let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
        e.submit(request(1, 1));
        wait_stats(&e, "the refusal", Duration::from_secs(10), |s| {
            s.dropped_permanent == 1
        })
        .await;
        // Long enough for a retry to show if there were one.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(attempts(&r, name(p)).len(), 1, "{}", name(p));
        let s = stats(&e);
        assert_eq!(
            (s.attempts_failed, s.retries, s.exports_sent),
            (1, 0, 0),
            "{s:?}"
        );
        assert_eq!(logs.count("export_refused"), 1, "{}", logs.dump());
        assert_eq!(logs.count("export_failing"), 0, "{}", logs.dump());
        // The exporter goes on with the next request.
        r.control(json!({"mode": "ok"}));
        e.submit(request(2, 1));
        wait_stats(&e, "the next export", Duration::from_secs(10), |s| {
            s.exports_sent == 1
        })
        .await;
        assert_eq!(logs.count("export_accepted_again"), 1, "{}", logs.dump());
        e.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_needs_retry_info() {
    need_python!("resource_exhausted_needs_retry_info");
    let mut r = Receiver::start(None).await;
    let p = Protocol::Grpc;

    // Without RetryInfo: a refusal, one attempt.
    r.control(json!({"mode": "resource_exhausted"}));
    let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
    e.submit(request(1, 1));
    wait_stats(&e, "the drop", Duration::from_secs(10), |s| {
        s.dropped_permanent == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(attempts(&r, "grpc").len(), 1);
    assert_eq!(stats(&e).retries, 0);
    e.shutdown(Duration::from_secs(1)).await;

    // With RetryInfo (1.5 s): retried after that delay, not after our
    // 200 ms backoff.
    r.control(json!({"mode": "resource_exhausted", "times": 1, "retry_delay_ms": 1500}));
    let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
    e.submit(request(2, 1));
    wait_stats(&e, "the export", Duration::from_secs(10), |s| {
        s.exports_sent == 1
    })
    .await;
    let seen = attempts(&r, "grpc");
    assert_eq!(seen.len(), 3, "{seen:?}");
    let gap = seen[2]["t"].as_f64().unwrap_or(0.0) - seen[1]["t"].as_f64().unwrap_or(0.0);
    eprintln!("RetryInfo 1.5 s: retried after {gap:.3} s");
    assert!((1.45..3.0).contains(&gap), "retried after {gap} s");
    let s = stats(&e);
    assert_eq!((s.retries, s.dropped_total()), (1, 0), "{s:?}");
    e.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_waits_for_retry_after() {
    need_python!("http_429_waits_for_retry_after");
    let mut r = Receiver::start(None).await;
    let p = Protocol::HttpProtobuf;
    r.control(json!({"mode": "http_429", "times": 1, "retry_after": 2}));
    let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
    e.submit(request(1, 1));
    wait_stats(&e, "the export", Duration::from_secs(10), |s| {
        s.exports_sent == 1
    })
    .await;
    let seen = attempts(&r, "http");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let gap = seen[1]["t"].as_f64().unwrap_or(0.0) - seen[0]["t"].as_f64().unwrap_or(0.0);
    eprintln!("Retry-After 2: retried after {gap:.3} s");
    assert!((1.95..3.5).contains(&gap), "retried after {gap} s");
    assert_eq!(stats(&e).retries, 1);
    e.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_counted_not_retried() {
    need_python!("partial_success_is_counted_not_retried");
    let mut r = Receiver::start(None).await;
    for p in BOTH {
        let (logs, _guard) = Capture::install();
        r.control(json!({"mode": "partial_success", "rejected": 3, "message": "3 too old"}));
        let e = Exporter::start(fast_config(p, r.endpoint(p)), &Handle::current()).expect("start");
        e.submit(request(1, 1));
        e.submit(request(2, 1));
        wait_stats(&e, "two exports", Duration::from_secs(10), |s| {
            s.exports_sent == 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(attempts(&r, name(p)).len(), 2, "{}", name(p));
        let s = stats(&e);
        assert_eq!(
            (
                s.partial_successes,
                s.rejected_profiles,
                s.retries,
                s.dropped_total()
            ),
            (2, 6, 0, 0),
            "{s:?}"
        );
        // One line for both (rate-limited).
        assert_eq!(logs.count("export_partial"), 1, "{}", logs.dump());
        e.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_and_does_not_wedge_the_queue() {
    need_python!("a_hanging_receiver_times_out_and_does_not_wedge_the_queue");
    let mut r = Receiver::start(None).await;
    for p in BOTH {
        r.control(json!({"mode": "hang", "times": 1, "hang_s": 10}));
        let mut c = fast_config(p, r.endpoint(p));
        c.timeout = Duration::from_secs(1);
        let e = Exporter::start(c, &Handle::current()).expect("start");
        let t0 = Instant::now();
        for seq in 1..=3 {
            e.submit(request(seq, 1));
        }
        wait_stats(&e, "three exports", Duration::from_secs(10), |s| {
            s.exports_sent == 3
        })
        .await;
        let took = t0.elapsed();
        eprintln!("{}: hang + 3 exports took {took:.2?}", name(p));
        let s = stats(&e);
        assert_eq!(
            (s.attempts_failed, s.retries, s.dropped_total()),
            (1, 1, 0),
            "{s:?}"
        );
        assert!(took < Duration::from_secs(4), "{took:?}");
        let seen = attempts(&r, name(p));
        assert_eq!(seen[0]["mode"], "hang");
        let seqs: BTreeSet<u64> = seen.iter().skip(1).filter_map(support::seq_of).collect();
        assert_eq!(seqs, BTreeSet::from([1, 2, 3]));
        e.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_headers_arrive() {
    need_python!("gzip_and_headers_arrive");
    let r = Receiver::start(None).await;
    for p in BOTH {
        for gzip in [true, false] {
            let mut c = fast_config(p, r.endpoint(p));
            c.compression = if gzip {
                Compression::Gzip
            } else {
                Compression::None
            };
            c.headers = vec![
                ("X-Hearth-Test".into(), "yes".into()),
                ("authorization".into(), "Bearer s3cret".into()),
            ];
            let e = Exporter::start(c, &Handle::current()).expect("start");
            let before = r.records().len();
            e.submit(request(7, 11));
            let stats = e.shutdown(Duration::from_secs(5)).await;
            assert_eq!(stats.exports_sent, 1, "{stats:?}");
            let recs = r.records();
            assert_eq!(recs.len(), before + 1);
            let rec = &recs[before];
            assert_eq!(rec["transport"], name(p));
            assert_eq!(
                rec["encoding"],
                if gzip { "gzip" } else { "identity" },
                "{rec}"
            );
            assert_eq!(rec["headers"]["x-hearth-test"], "yes", "{rec}");
            assert_eq!(rec["headers"]["authorization"], "Bearer s3cret", "{rec}");
            assert!(
                rec["headers"]["user-agent"]
                    .as_str()
                    .is_some_and(|ua| ua.contains("hearth-otlp/")),
                "{rec}"
            );
            if p == Protocol::HttpProtobuf {
                assert_eq!(rec["headers"]["content-type"], "application/x-protobuf");
            }
            assert_content_ok(rec, 11);
            assert_eq!(support::seq_of(rec), Some(7));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_custom_ca() {
    need_python!("mutual_tls_with_a_custom_ca");
    let dir = support::TempDir::new("tls");
    let files = match support::make_certs(&dir) {
        Ok(f) => f,
        Err(why) => {
            support::skip("mutual_tls_with_a_custom_ca", &why);
            return;
        }
    };
    let r = Receiver::start(Some(files.clone())).await;
    for p in BOTH {
        let mut c = fast_config(p, r.endpoint(p));
        c.compression = Compression::Gzip;
        c.tls = TlsConfig {
            ca_cert: Some(files.ca.clone()),
            client_cert: Some(files.client_cert.clone()),
            client_key: Some(files.client_key.clone()),
            insecure: false,
        };
        let e = Exporter::start(c.clone(), &Handle::current()).expect("start");
        e.submit(request(1, 2));
        let s = e.shutdown(Duration::from_secs(8)).await;
        assert_eq!(s.exports_sent, 1, "{}: {s:?}", name(p));
        let rec = attempts(&r, name(p)).pop().expect("a request");
        assert_eq!(rec["client_cn"], "hearth-test-client", "{rec}");
        assert_content_ok(&rec, 2);

        // Without the client certificate the receiver refuses the handshake.
        let before = attempts(&r, name(p)).len();
        let mut anon = c.clone();
        anon.tls.client_cert = None;
        anon.tls.client_key = None;
        let e = Exporter::start(anon, &Handle::current()).expect("start");
        e.submit(request(2, 2));
        wait_stats(&e, "a failed handshake", Duration::from_secs(10), |s| {
            s.attempts_failed >= 1
        })
        .await;
        assert_eq!(stats(&e).exports_sent, 0);
        e.shutdown(Duration::ZERO).await;

        // Without our CA the server is not trusted.
        let mut untrusting = c.clone();
        untrusting.tls.ca_cert = None;
        let e = Exporter::start(untrusting, &Handle::current()).expect("start");
        e.submit(request(3, 2));
        wait_stats(&e, "an untrusted server", Duration::from_secs(10), |s| {
            s.attempts_failed >= 1
        })
        .await;
        assert_eq!(stats(&e).exports_sent, 0);
        e.shutdown(Duration::ZERO).await;
        assert_eq!(
            attempts(&r, name(p)).len(),
            before,
            "no request got through"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_connects_nowhere_until_something_is_submitted() {
    for p in BOTH {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let endpoint = match p {
            Protocol::Grpc => format!("http://127.0.0.1:{port}"),
            Protocol::HttpProtobuf => format!("http://127.0.0.1:{port}/v1development/profiles"),
        };
        let e = Exporter::start(fast_config(p, endpoint), &Handle::current()).expect("start");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            listener.accept().is_err(),
            "{}: connected before anything was submitted",
            name(p)
        );
        e.submit(request(1, 1));
        support::eventually("a connection", Duration::from_secs(5), || {
            listener.accept().is_ok()
        })
        .await;
        e.shutdown(Duration::ZERO).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_respects_its_deadline() {
    // Nothing listens: everything fails; shutdown must still return on time
    // and account for every request.
    let port = support::free_port();
    let e = Exporter::start(
        fast_config(Protocol::Grpc, format!("http://127.0.0.1:{port}")),
        &Handle::current(),
    )
    .expect("start");
    let late = e.submitter();
    let live = e.stats();
    for seq in 0..5 {
        e.submit(request(seq, 1));
    }
    let t0 = Instant::now();
    let s = e.shutdown(Duration::from_millis(700)).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(s.exports_sent, 0);
    assert_eq!(s.dropped_total(), 5, "{s:?}");
    assert_eq!(s.queue_len, 0);
    // A handle that outlived the exporter: counted, not queued.
    late.submit(request(9, 1));
    let s = live.snapshot();
    assert_eq!(
        (s.submitted, s.dropped_shutdown, s.queue_len),
        (6, 6, 0),
        "{s:?}"
    );
}

/// Submits a request every `every` for `how_long`, checking the queue
/// bound at each step; returns the seqs submitted.
async fn submit_for(
    e: &Exporter,
    first_seq: u64,
    every: Duration,
    how_long: Duration,
    cap: u64,
    max_seen: &mut u64,
) -> Vec<u64> {
    let stats = e.stats();
    let t0 = Instant::now();
    let mut seq = first_seq;
    let mut out = Vec::new();
    while t0.elapsed() < how_long {
        e.submit(request(seq, 3));
        out.push(seq);
        seq += 1;
        let s = stats.snapshot();
        assert!(
            s.queue_bytes <= cap,
            "queue {} > bound {cap}",
            s.queue_bytes
        );
        *max_seen = (*max_seen).max(s.queue_bytes);
        tokio::time::sleep(every).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_absent_at_start() {
    need_python!("collector_absent_at_start");
    let runs = BOTH.map(|p| {
        let (logs, dispatch) = Capture::new();
        tokio::spawn(absent(p, logs).with_subscriber(dispatch))
    });
    for run in runs {
        run.await.expect("absent run");
    }
}

async fn absent(p: Protocol, logs: Capture) {
    {
        let mut r = Receiver::stopped(None);
        let mut c = fast_config(p, r.endpoint(p));
        let one = request(0, 3).len() as u64;
        let cap = one * 8;
        c.queue_bytes = cap as usize;
        c.log_period = Duration::from_secs(2);
        let e = Exporter::start(c, &Handle::current()).expect("start");
        let every = Duration::from_millis(100);
        let mut max_q = 0;
        let t0 = Instant::now();
        let before = submit_for(&e, 1, every, Duration::from_secs(6), cap, &mut max_q).await;
        let outage = t0.elapsed();
        let s = stats(&e);
        eprintln!(
            "{} absent {outage:.1?}: {} submitted, {} failed attempts, {} dropped (queue full), queue max {max_q} of {cap} bytes",
            name(p),
            before.len(),
            s.attempts_failed,
            s.dropped_queue_overflow
        );
        assert_eq!(s.exports_sent, 0);
        assert!(s.attempts_failed >= 5, "{s:?}");
        assert!(s.dropped_queue_overflow > 0, "{s:?}");
        assert!(s.queue_bytes_max <= cap);
        assert_eq!(logs.count("export_failing"), 1, "{}", logs.dump());
        let summaries = logs.count("export_still_failing");
        assert!(
            (1..=4).contains(&summaries),
            "{summaries} summaries\n{}",
            logs.dump()
        );
        let warns = logs
            .all()
            .iter()
            .filter(|l| l.level == tracing::Level::WARN)
            .count();
        assert_eq!(warns, 1 + summaries, "{}", logs.dump());

        // The collector appears. Until the exporter's next attempt (at most
        // one backoff, 1 s here) new requests only queue: submitted less
        // often than that fills the queue, every one of them must arrive.
        r.restart().await;
        let slower = Duration::from_millis(250);
        let after = submit_for(&e, 1000, slower, Duration::from_secs(2), cap, &mut max_q).await;
        r.wait_for(
            "every request submitted after start",
            Duration::from_secs(20),
            |_| {
                let got = r.accepted_seqs();
                after.iter().all(|s| got.contains(s))
            },
        )
        .await;
        let got = r.accepted_seqs();
        let early = before.iter().filter(|s| got.contains(s)).count();
        eprintln!(
            "{}: {early} of {} requests queued during the absence arrived too",
            name(p),
            before.len()
        );
        // The request in flight when the collector came (the oldest) and
        // the newest that fitted the queue until the first success.
        assert!(early >= 1, "{early}");
        for rec in r.accepted() {
            assert_content_ok(&rec, 3);
        }
        assert_eq!(logs.count("export_recovered"), 1, "{}", logs.dump());
        assert_eq!(logs.count("export_failing"), 1, "{}", logs.dump());
        let recovered = logs.events("export_recovered");
        assert!(
            recovered[0].message.contains("dropped meanwhile"),
            "{}",
            recovered[0].message
        );
        let s = e.shutdown(Duration::from_secs(2)).await;
        // Every request is accounted for: sent (and seen) or dropped.
        assert_eq!(s.submitted, s.exports_sent + s.dropped_total(), "{s:?}");
        assert_eq!(r.accepted().len() as u64, s.exports_sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_gone_mid_run_then_back() {
    need_python!("collector_gone_mid_run_then_back");
    // Both transports at once: the outage is the long part.
    let runs = BOTH.map(|p| {
        let (logs, dispatch) = Capture::new();
        tokio::spawn(outage(p, logs).with_subscriber(dispatch))
    });
    for run in runs {
        run.await.expect("outage run");
    }
}

async fn outage(p: Protocol, logs: Capture) {
    let mut r = Receiver::start(None).await;
    let period = Duration::from_secs(5);
    let mut c = fast_config(p, r.endpoint(p));
    let one = request(0, 3).len() as u64;
    let cap = one * 10;
    c.queue_bytes = cap as usize;
    c.log_period = period;
    c.backoff.max = Duration::from_secs(1);
    c.backoff.max_elapsed = Duration::from_secs(8);
    let e = Exporter::start(c, &Handle::current()).expect("start");
    let every = Duration::from_millis(200);
    let mut max_q = 0;

    let first = submit_for(&e, 1, every, Duration::from_secs(2), cap, &mut max_q).await;
    r.wait_for("the first requests", Duration::from_secs(10), |_| {
        let got = r.accepted_seqs();
        first.iter().all(|s| got.contains(s))
    })
    .await;

    // 20 s without a collector.
    r.stop();
    let t_down = Instant::now();
    let during = submit_for(&e, 1000, every, Duration::from_secs(20), cap, &mut max_q).await;
    let down_for = t_down.elapsed();
    let s = stats(&e);
    eprintln!(
        "{} outage {down_for:.1?}: {} submitted, {} failed attempts, dropped {} (queue full) + {} (too old), queue max {max_q} of {cap} bytes ({} requests of {one} bytes)",
        name(p),
        during.len(),
        s.attempts_failed,
        s.dropped_queue_overflow,
        s.dropped_retry_expired,
        cap / one
    );
    assert!(s.queue_bytes_max <= cap, "{s:?}");
    assert!(
        s.dropped_queue_overflow + s.dropped_retry_expired > 0,
        "{s:?}"
    );

    // Back.
    r.restart().await;
    let t_back = Instant::now();
    let after = submit_for(&e, 2000, every, Duration::from_secs(3), cap, &mut max_q).await;
    r.wait_for(
        "every request submitted after the return",
        Duration::from_secs(20),
        |_| {
            let got = r.accepted_seqs();
            after.iter().all(|s| got.contains(s))
        },
    )
    .await;
    eprintln!(
        "{}: all {} requests submitted after the return arrived within {:.1?}",
        name(p),
        after.len(),
        t_back.elapsed()
    );
    for rec in r.accepted() {
        assert_content_ok(&rec, 3);
    }

    // Log: one WARN, at most one summary per period, one INFO.
    let failing = logs.events("export_failing");
    let summaries = logs.events("export_still_failing");
    assert_eq!(failing.len(), 1, "{}", logs.dump());
    assert_eq!(logs.count("export_recovered"), 1, "{}", logs.dump());
    let periods = (down_for.as_secs_f64() / period.as_secs_f64()).ceil() as usize + 1;
    assert!(
        !summaries.is_empty() && summaries.len() <= periods,
        "{} summaries for {periods} periods\n{}",
        summaries.len(),
        logs.dump()
    );
    let mut last = failing[0].at;
    for s in &summaries {
        assert!(
            s.at.duration_since(last) >= period - Duration::from_millis(50),
            "summaries closer than a period\n{}",
            logs.dump()
        );
        last = s.at;
    }
    let warns = logs
        .all()
        .iter()
        .filter(|l| l.level == tracing::Level::WARN)
        .count();
    assert_eq!(warns, 1 + summaries.len(), "{}", logs.dump());
    eprintln!("{} log during the outage:\n{}", name(p), logs.dump());
    let s = e.shutdown(Duration::from_secs(2)).await;
    assert_eq!(s.submitted, s.exports_sent + s.dropped_total(), "{s:?}");
    assert_eq!(r.accepted().len() as u64, s.exports_sent);
}
