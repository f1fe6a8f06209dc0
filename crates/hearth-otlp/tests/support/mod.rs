//! Test plumbing: the Python receiver as a child process, requests built
//! by the real encoder, and a tracing layer that keeps what was logged.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use hearth_otlp::{Backoff, ExporterConfig, Protocol};
use hearth_profile::{Function, GroupBy, Line, Location, Mapping, Report, ReportSample, Resource};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

pub const REQUIRE_ENV: &str = "HEARTH_REQUIRE_PRIVILEGED";

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints `SKIP`, or fails when skips are not allowed.
pub fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why} ({REQUIRE_ENV} is set)");
    }
    // Straight to stderr: the test harness captures eprintln! of passing
    // tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The venv's Python, if it has the receiver's packages.
pub fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let py = workspace_root().join(".venv-tests/bin/python");
        if !py.exists() {
            return Err(format!(
                "{} missing (run scripts/setup-tests.sh)",
                py.display()
            ));
        }
        let ok = Command::new(&py)
            .args([
                "-c",
                "import grpc, grpc_status, google.rpc.error_details_pb2, \
                 opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2_grpc",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(py)
        } else {
            Err(format!(
                "{} lacks tests/otlp/requirements.txt (run scripts/setup-tests.sh)",
                py.display()
            ))
        }
    })
    .clone()
}

/// Returns from the test (after printing SKIP) when there is no Python.
#[macro_export]
macro_rules! need_python {
    ($test:expr) => {
        if let Err(why) = support::python() {
            support::skip($test, &why);
            return;
        }
    };
}

/// A loopback port nobody listens on (right now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-otlp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate
/// (CN `hearth-test-client`), made with the openssl CLI.
pub fn make_certs(dir: &TempDir) -> Result<TlsFiles, String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    std::fs::write(
        dir.path("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| e.to_string())?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=hearth-test-ca",
    ]);
    run(&ca)?;
    for (name, cn) in [("server", "127.0.0.1"), ("client", "hearth-test-client")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-nodes"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&req)?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ])?;
    }
    Ok(TlsFiles {
        ca: dir.path("ca.pem"),
        server_cert: dir.path("server.pem"),
        server_key: dir.path("server.key"),
        client_cert: dir.path("client.pem"),
        client_key: dir.path("client.key"),
    })
}

/// The Python receiver (tests/otlp/receiver.py) as a child process.
pub struct Receiver {
    pub dir: TempDir,
    pub grpc_port: u16,
    pub http_port: u16,
    tls: Option<TlsFiles>,
    child: Option<Child>,
    control_seq: u64,
}

impl Receiver {
    /// Starts a receiver serving gRPC and HTTP on fresh ports.
    pub async fn start(tls: Option<TlsFiles>) -> Receiver {
        let mut r = Receiver::stopped(tls);
        r.restart().await;
        r
    }

    /// Picks ports and files but starts nothing (a collector that is not
    /// there yet).
    pub fn stopped(tls: Option<TlsFiles>) -> Receiver {
        Receiver {
            dir: TempDir::new("receiver"),
            grpc_port: free_port(),
            http_port: free_port(),
            tls,
            child: None,
            control_seq: 0,
        }
    }

    pub fn endpoint(&self, protocol: Protocol) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match protocol {
            Protocol::Grpc => format!("{scheme}://127.0.0.1:{}", self.grpc_port),
            Protocol::HttpProtobuf => format!(
                "{scheme}://127.0.0.1:{}/v1development/profiles",
                self.http_port
            ),
        }
    }

    /// (Re)starts the process on the same ports; waits until it listens.
    pub async fn restart(&mut self) {
        self.stop();
        let py = python().expect("python checked by the test");
        let ready = self.dir.path("ready.json");
        let _ = std::fs::remove_file(&ready);
        let script = workspace_root().join("tests/otlp/receiver.py");
        let mut cmd = Command::new(py);
        cmd.arg(script)
            .arg("--grpc-port")
            .arg(self.grpc_port.to_string())
            .arg("--http-port")
            .arg(self.http_port.to_string())
            .arg("--control")
            .arg(self.dir.path("control.json"))
            .arg("--out")
            .arg(self.dir.path("out.jsonl"))
            .arg("--ready")
            .arg(&ready)
            // The receiver exits when this pipe closes (the test is gone).
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // grpcio logs every failed TLS handshake otherwise.
            .env("GRPC_VERBOSITY", "ERROR");
        if let Some(t) = &self.tls {
            cmd.arg("--tls-cert")
                .arg(&t.server_cert)
                .arg("--tls-key")
                .arg(&t.server_key)
                .arg("--tls-client-ca")
                .arg(&t.ca);
        }
        let mut child = cmd.spawn().expect("spawn receiver.py");
        let start = Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("receiver.py exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "receiver.py did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Kills the process (the collector goes away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets the behaviour for the next requests (see receiver.py).
    pub fn control(&mut self, mut ctl: Value) {
        self.control_seq += 1;
        ctl["seq"] = Value::from(self.control_seq);
        let tmp = self.dir.path("control.json.tmp");
        std::fs::write(&tmp, ctl.to_string()).expect("write control");
        std::fs::rename(&tmp, self.dir.path("control.json")).expect("rename control");
    }

    /// Every request the receiver saw, in order.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path("out.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["accepted"] == Value::Bool(true))
            .collect()
    }

    /// `test.seq` of every accepted request.
    pub fn accepted_seqs(&self) -> BTreeSet<u64> {
        self.accepted().iter().filter_map(seq_of).collect()
    }

    pub async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let start = Instant::now();
        loop {
            let recs = self.records();
            if pred(&recs) {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; receiver saw:\n{}",
                    recs.iter()
                        .map(|r| format!(
                            "  {} {} accepted={} seq={:?}",
                            r["transport"],
                            r["mode"],
                            r["accepted"],
                            seq_of(r)
                        ))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `test.seq` resource attribute of a receiver record.
pub fn seq_of(record: &Value) -> Option<u64> {
    record["summary"]["resources"]
        .as_array()?
        .iter()
        .find_map(|r| r["attributes"]["test.seq"].as_str()?.parse().ok())
}

/// Checks what Python said about the request's content: the protocol's
/// invariants hold, the resource is ours and every sample arrived.
pub fn assert_content_ok(record: &Value, samples: u64) {
    let summary = &record["summary"];
    assert_eq!(
        summary["ok"],
        Value::Bool(true),
        "Python found invariant violations: {}",
        summary["errors"]
    );
    assert!(
        record["error"].is_null(),
        "receiver error: {}",
        record["error"]
    );
    let resources = summary["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "{summary}");
    assert_eq!(resources[0]["attributes"]["host.name"], "hearth-otlp-test");
    assert_eq!(resources[0]["samples"].as_u64(), Some(samples + 1));
    for table in [
        "mapping_table",
        "location_table",
        "function_table",
        "string_table",
        "attribute_table",
        "stack_table",
    ] {
        assert!(
            summary["tables"][table].as_u64().unwrap_or(0) >= 2,
            "{table}: {}",
            summary["tables"]
        );
    }
}

/// An encoded request from the real encoder: one resource tagged
/// `test.seq = seq`, two stacks, `samples + 1` samples in all.
pub fn request(seq: u64, samples: u64) -> Vec<u8> {
    let start = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let s = |x: &str| -> Arc<str> { Arc::from(x) };
    let report = Report {
        start_unix_ns: start,
        duration_ns: 1_000_000_000,
        frequency_hz: 99,
        mappings: vec![
            Mapping {
                path: s("/usr/bin/app"),
                build_id: Some("0123456789abcdef".into()),
                kernel: false,
            },
            Mapping {
                path: s("[kernel.kallsyms]"),
                build_id: None,
                kernel: true,
            },
        ],
        functions: vec![
            Function {
                name: s("main"),
                file: Some(s("main.c")),
            },
            Function {
                name: s("work"),
                file: Some(s("main.c")),
            },
            Function {
                name: s("do_syscall_64"),
                file: None,
            },
        ],
        locations: vec![
            Location {
                mapping: Some(0),
                address: 0x1000,
                lines: vec![Line {
                    function: 0,
                    line: 10,
                }],
                kernel: false,
            },
            Location {
                mapping: Some(0),
                address: 0x2000,
                lines: vec![Line {
                    function: 1,
                    line: 20,
                }],
                kernel: false,
            },
            Location {
                mapping: Some(1),
                address: 0xffff_ffff_8100_0000,
                lines: vec![Line {
                    function: 2,
                    line: 0,
                }],
                kernel: true,
            },
        ],
        samples: vec![
            ReportSample {
                stack: vec![1, 0],
                pid: 42,
                tid: 42,
                process_name: s("app"),
                thread_name: s("app"),
                resource: 0,
                count: samples,
            },
            ReportSample {
                stack: vec![2, 1, 0],
                pid: 42,
                tid: 43,
                process_name: s("app"),
                thread_name: s("worker"),
                resource: 0,
                count: 1,
            },
        ],
        resources: vec![Resource {
            container: None,
            attributes: vec![
                ("host.name".into(), "hearth-otlp-test".into()),
                ("test.seq".into(), seq.to_string()),
            ],
        }],
        lost_samples: 0,
        group_by: GroupBy::Process,
    };
    hearth_export::otlp::encode_otlp(&report)
}

/// Small timings so that a test of minutes of behaviour takes seconds.
pub fn fast_config(protocol: Protocol, endpoint: String) -> ExporterConfig {
    let mut c = ExporterConfig::new(protocol, endpoint);
    c.timeout = Duration::from_secs(3);
    c.backoff = Backoff {
        initial: Duration::from_millis(200),
        multiplier: 1.5,
        max: Duration::from_millis(800),
        jitter: 0.2,
        max_elapsed: Duration::from_secs(60),
    };
    c.log_period = Duration::from_secs(5);
    c
}

/// One captured log event.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub level: Level,
    pub event: Option<String>,
    pub message: String,
}

#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<Logged>>>);

impl Capture {
    /// Installs a subscriber for this thread (the exporter's worker
    /// inherits it at start); keep the guard alive.
    pub fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let (cap, dispatch) = Capture::new();
        let guard = tracing::dispatcher::set_default(&dispatch);
        (cap, guard)
    }

    /// A capture and its dispatcher, for a spawned task
    /// (`fut.with_subscriber(dispatch)`): a thread's default does not
    /// follow a task across threads.
    pub fn new() -> (Capture, tracing::Dispatch) {
        let cap = Capture::default();
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(cap.clone()));
        (cap, dispatch)
    }

    pub fn all(&self) -> Vec<Logged> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn events(&self, event: &str) -> Vec<Logged> {
        self.all()
            .into_iter()
            .filter(|l| l.event.as_deref() == Some(event))
            .collect()
    }

    pub fn count(&self, event: &str) -> usize {
        self.events(event).len()
    }

    pub fn dump(&self) -> String {
        self.all()
            .iter()
            .map(|l| format!("  {} {:?} {}", l.level, l.event, l.message))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Fields {
    event: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.event = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "event" => self.event = Some(format!("{value:?}").trim_matches('"').to_string()),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("hearth_otlp") {
            return;
        }
        let mut f = Fields {
            event: None,
            message: String::new(),
        };
        event.record(&mut f);
        if let Ok(mut v) = self.0.lock() {
            v.push(Logged {
                at: Instant::now(),
                level: *event.metadata().level(),
                event: f.event,
                message: f.message,
            });
        }
    }
}

/// Polls `pred` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
