//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup-tests.sh).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

/// The browser and its driver, from HEARTH_CHROMIUM / HEARTH_CHROMEDRIVER
/// or the Debian paths.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let pick = |var: &str, default: &str| {
        let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        p.exists().then_some(p)
    };
    Some((
        pick("HEARTH_CHROMIUM", "/usr/bin/chromium")?,
        pick("HEARTH_CHROMEDRIVER", "/usr/bin/chromedriver")?,
    ))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Browser {
    driver: Child,
    pub client: Client,
    profile_dir: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of the given size.
    pub async fn start(width: u32, height: u32) -> Result<Browser, String> {
        let (chromium, chromedriver) =
            tools().ok_or("chromium or chromedriver is not installed")?;
        let port = free_port();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = driver.kill();
                return Err("chromedriver did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile_dir =
            std::env::temp_dir().join(format!("hearth-chromium-{}-{port}", std::process::id()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--enable-precise-memory-info",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile_dir.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                return Err(format!("starting a Chromium session: {e}"));
            }
        };
        Ok(Browser {
            driver,
            client,
            profile_dir,
        })
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed midway never closed its session, and Chromium
        // outlives its driver: find it by its profile directory.
        let marker = format!("--user-data-dir={}", self.profile_dir.display());
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == marker.as_bytes())
                {
                    // SAFETY: kill(2) on a process this test started.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile_dir);
    }
}

/// Status, headers (lowercase names) and body of an answer.
pub type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// A plain HTTP/1.0 GET.
pub fn http_get(port: u16, path: &str) -> std::io::Result<HttpAnswer> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body))
}
