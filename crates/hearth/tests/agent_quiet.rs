//! With no endpoint configured, the agent opens no connection at all.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn no_endpoint_means_no_connection_to_4317_or_4318() {
    if !require_root_perf("no_endpoint_means_no_connection_to_4317_or_4318") {
        return;
    }
    // The default OTLP ports, where a careless exporter would try.
    let listeners: Vec<TcpListener> = ["127.0.0.1:4317", "127.0.0.1:4318"]
        .iter()
        .map(|a| {
            TcpListener::bind(a)
                .unwrap_or_else(|e| panic!("cannot listen on {a} for the test: {e}"))
        })
        .collect();
    for l in &listeners {
        l.set_nonblocking(true).expect("nonblocking");
    }
    let mut cmd = Command::new(hearth());
    cmd.args(["agent", "--interval", "1", "--metrics-listen", "off"])
        // The page listens (on a port of its own) but never connects anywhere.
        .args(["--ui-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Nothing in the environment may point it anywhere.
    without_agent_env(&mut cmd);
    let mut agent = cmd.spawn().expect("start agent");
    let started = Instant::now();
    let mut connections = 0;
    while started.elapsed() < Duration::from_secs(30) {
        for l in &listeners {
            if l.accept().is_ok() {
                connections += 1;
            }
        }
        assert!(
            agent.try_wait().expect("wait").is_none(),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let out = agent.wait_with_output().expect("agent output");
    assert!(out.status.success(), "agent exit: {:?}", out.status);
    let log = text(&out.stderr);
    assert_eq!(connections, 0, "the agent connected to an OTLP port");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    assert!(
        !log.to_lowercase().contains("export"),
        "export chatter without an endpoint: {log}"
    );
}
