//! Serving a router to clients that may be hostile: the profile page and
//! the agent's `/metrics` server both go through [`serve_limited`].
//!
//! * Every connection must send a complete request head within
//!   [`ServeLimits::header_read_timeout`] of opening, and again of its
//!   last answer: hyper starts that timer whenever it waits for a head, so
//!   it is both the header-read and the idle keep-alive timeout. A client
//!   that never finishes its headers, or keeps a connection open doing
//!   nothing, is dropped when it runs out.
//! * A connection whose answer makes no way to the client for
//!   [`ServeLimits::write_timeout`] (a client that asks and never reads) is
//!   dropped, with the answer it holds.
//! * A request head (request line and headers) may not pass
//!   [`ServeLimits::max_header_bytes`]: a longer one gets a 431 and the
//!   connection is closed, so a connection's read buffer stays small.
//! * At most [`ServeLimits::max_connections`] are open at once (256, or an
//!   eighth of the process's descriptor limit if that is less, so that two
//!   servers full of clients leave most descriptors to the profiler). A client
//!   arriving when all are taken makes room by closing the connection that
//!   has been idle longest (waiting for a request, or still sending a
//!   head: nothing in progress is lost); only when every connection has a
//!   request in progress is the new one closed at once. That way idle or
//!   trickling clients can neither exhaust descriptors nor shut a health
//!   probe out. (A newcomer waits in a task of its own for the slot it
//!   freed, so the accept loop never stalls; at most a quarter of the cap
//!   wait at once, each holding a descriptor beyond it.)
//! * A failed `accept` (EMFILE and the like) never ends the loop: it is
//!   counted, logged once and then in summaries, and the loop pauses
//!   briefly before the next one so it does not spin. Out of descriptors,
//!   it also closes its longest idle connection, so that the next client
//!   (a health probe) finds one free.
//!
//! Everything refused, dropped or failed is counted in [`ServerStats`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hearth_telemetry::{FailureLog, LogLine, SUMMARY_PERIOD};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The bounds one server enforces.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head, from the connection's
    /// start or its previous answer.
    pub header_read_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Longest a write to a client may wait before the connection is
    /// dropped.
    pub write_timeout: Duration,
    /// How long a newcomer waits for the slot of the idle connection it
    /// evicted before it is refused (the accept loop does not wait).
    pub slot_wait: Duration,
}

/// Connections a server allows by default: 256, or an eighth of the
/// process's descriptor limit (`RLIMIT_NOFILE`) when that is less.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    (soft / 8).clamp(16, 256)
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: default_max_connections(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            write_timeout: Duration::from_secs(10),
            slot_wait: Duration::from_secs(1),
        }
    }
}

/// What a server refused and why, for `/metrics`.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: AtomicU64,
    /// Closed at once because every connection had a request in progress.
    pub refused: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// `accept` calls that failed (EMFILE, ENFILE, ENOBUFS...).
    pub accept_errors: AtomicU64,
    /// Connections dropped because no complete request head came in time.
    pub header_timeouts: AtomicU64,
    /// Connections closed because their request head was too large.
    pub headers_too_large: AtomicU64,
    /// Connections dropped because their client stopped reading.
    pub write_timeouts: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// Pause after an `accept` error. Out of descriptors or memory, a new try
/// at once fails the same way: give connections time to close.
fn accept_backoff(e: &std::io::Error) -> Duration {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            Duration::from_millis(100)
        }
        _ => Duration::from_millis(5),
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests in progress.
    busy: AtomicU32,
    /// When it last became idle (ms since the server's start).
    idle_since_ms: AtomicU64,
    /// Told to close to make room.
    evict: Notify,
    /// Since when a write has been waiting for the client (ms since the
    /// server's start, +1); 0 when none is.
    write_blocked_since: AtomicU64,
}

/// A connection's socket, noting when writes to it stall.
struct Watched<T> {
    io: T,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl<T> Watched<T> {
    fn note<R>(&self, r: &Poll<R>) {
        match r {
            Poll::Pending => {
                let now = self.shared.now_ms() + 1;
                let _ = self.conn.write_blocked_since.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.conn.write_blocked_since.store(0, Ordering::Relaxed),
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.note(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
}

struct Shared {
    started: Instant,
    conns: Mutex<Conns>,
    stats: Arc<ServerStats>,
    /// Last time freed memory was handed back (ms since start, +1).
    last_trim_ms: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the longest idle connection to close; false if none is idle.
    fn evict_one(&self) -> bool {
        let conns = self.conns();
        let victim = conns
            .open
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                // A permit is kept if the task is not waiting yet.
                c.evict.notify_one();
                // Not picked again while it closes.
                c.busy.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// A closed connection leaves its buffers free in the allocator: hand
    /// them back now and then (at most once a second) so the agent's size
    /// returns after a crowd of clients leaves.
    fn connection_closed(&self) {
        let now = self.now_ms() + 1;
        let last = self.last_trim_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_trim_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tokio::task::spawn_blocking(release_free_memory);
        }
    }
}

/// Glibc keeps memory freed by a big query or by many connections in its
/// arenas unless asked, so that the agent's resident size would stay at its
/// highest. Give it back.
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Rate-limited log lines of one server: one line when a kind of trouble
/// starts, then at most one summary a period, and one when a whole period
/// passed without it.
struct ServerLogs {
    name: &'static str,
    capacity: FailureLog,
    capacity_seen: bool,
    accept: FailureLog,
    accept_seen: bool,
}

impl ServerLogs {
    fn new(name: &'static str) -> Self {
        ServerLogs {
            name,
            capacity: FailureLog::new(SUMMARY_PERIOD),
            capacity_seen: false,
            accept: FailureLog::new(SUMMARY_PERIOD),
            accept_seen: false,
        }
    }

    fn at_capacity(&mut self, cause: &str) {
        self.capacity_seen = true;
        let line = self.capacity.failure(Instant::now(), cause);
        self.emit("connection cap reached", line);
    }

    fn accept_failed(&mut self, e: &std::io::Error) {
        self.accept_seen = true;
        let line = self.accept.failure(Instant::now(), &e.to_string());
        self.emit("accepting connections fails", line);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let line = self.capacity.tick(now);
        self.emit("connection cap reached", line);
        let line = self.accept.tick(now);
        self.emit("accepting connections fails", line);
        if !std::mem::take(&mut self.capacity_seen) {
            let line = self.capacity.success(now);
            self.emit("connection cap reached", line);
        }
        if !std::mem::take(&mut self.accept_seen) {
            let line = self.accept.success(now);
            self.emit("accepting connections fails", line);
        }
    }

    fn emit(&self, what: &str, line: Option<LogLine>) {
        let name = self.name;
        match line {
            None => {}
            Some(LogLine::FirstFailure { cause }) => {
                tracing::warn!("{name} server: {what}: {cause}");
            }
            Some(LogLine::Summary {
                failures,
                last_cause,
                since,
            }) => tracing::warn!(
                "{name} server: {what}: {failures} more times (for {}s now; last: {last_cause})",
                since.as_secs()
            ),
            Some(LogLine::Recovered { failures, after }) => tracing::info!(
                "{name} server: no longer {what} ({failures} times over {}s)",
                after.as_secs()
            ),
        }
    }
}

/// Serves `router` on `listener` within `limits` until the runtime stops;
/// `name` says which server in log lines.
pub async fn serve_limited(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: Arc<ServerStats>,
    name: &'static str,
) {
    let shared = Arc::new(Shared {
        started: Instant::now(),
        conns: Mutex::new(Conns::default()),
        stats,
        last_trim_ms: AtomicU64::new(0),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let waiting = Arc::new(Semaphore::new((limits.max_connections / 4).max(4)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // hyper's smallest; what a head may use is bounded above.
        .max_buf_size(8192.max(limits.max_header_bytes))
        .keep_alive(true);
    let builder = Arc::new(builder);
    let service = TowerToHyperService::new(router);
    let mut logs = ServerLogs::new(name);
    let mut ticker = tokio::time::interval(SUMMARY_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ticker.tick() => {
                logs.tick();
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                logs.accept_failed(&e);
                // An idle connection's descriptor is better spent on the
                // client waiting in the backlog: try again soon after.
                let pause = if out_of_descriptors(&e) && shared.evict_one() {
                    shared.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    Duration::from_millis(10)
                } else {
                    accept_backoff(&e)
                };
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let serve = {
            let (shared, builder, service) = (shared.clone(), builder.clone(), service.clone());
            let write_timeout = limits.write_timeout;
            move |stream, permit| {
                serve_connection(stream, permit, shared, builder, service, write_timeout)
            }
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream, permit));
            continue;
        }
        // Full. The newcomer waits (in a task of its own, so the loop goes
        // on accepting) for the slot of the idle connection it evicts; the
        // semaphore is fair, so it gets the first slot freed. Few wait at
        // once, each holding a descriptor beyond the cap: when that many
        // do, the loop pauses (briefly) for one of them.
        let waiter = match waiting.clone().try_acquire_owned() {
            Ok(w) => Some(w),
            Err(_) => tokio::time::timeout(limits.slot_wait, waiting.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        if let Some(waiter) = waiter.filter(|_| shared.evict_one()) {
            shared.stats.evicted.fetch_add(1, Ordering::Relaxed);
            logs.at_capacity(&format!(
                "{} connections open: closing the longest idle one for each new client",
                limits.max_connections
            ));
            let (slots, shared) = (slots.clone(), shared.clone());
            let slot_wait = limits.slot_wait;
            tokio::spawn(async move {
                let permit = tokio::time::timeout(slot_wait, slots.acquire_owned()).await;
                drop(waiter);
                match permit {
                    Ok(Ok(permit)) => {
                        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        serve(stream, permit).await;
                    }
                    _ => {
                        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            continue;
        }
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        logs.at_capacity(&format!(
            "{} connections open, each with a request in progress: refusing new ones",
            limits.max_connections
        ));
        drop(stream);
    }
}

/// Marks a connection busy while a request is in progress.
struct Busy {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Busy {
    fn new(conn: &Arc<Conn>, shared: &Arc<Shared>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        Busy {
            conn: conn.clone(),
            shared: shared.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.shared.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Removes a connection from the table when its task ends, however.
struct Registered {
    id: u64,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.conns().open.remove(&self.id);
        self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.shared.connection_closed();
    }
}

async fn serve_connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    builder: Arc<http1::Builder>,
    service: TowerToHyperService<Router>,
    write_timeout: Duration,
) {
    let conn = Arc::new(Conn {
        busy: AtomicU32::new(0),
        idle_since_ms: AtomicU64::new(shared.now_ms()),
        evict: Notify::new(),
        write_blocked_since: AtomicU64::new(0),
    });
    let id = {
        let mut conns = shared.conns();
        let id = conns.next_id;
        conns.next_id += 1;
        conns.open.insert(id, conn.clone());
        id
    };
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let _registered = Registered {
        id,
        shared: shared.clone(),
        _permit: permit,
    };
    let svc = {
        let conn = conn.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |request| {
            let busy = Busy::new(&conn, &shared);
            let answer = service.call(request);
            async move {
                let r = answer.await;
                drop(busy);
                r
            }
        })
    };
    let io = Watched {
        io: TokioIo::new(stream),
        conn: conn.clone(),
        shared: shared.clone(),
    };
    let http = builder.serve_connection(io, svc);
    tokio::pin!(http);
    let write_timeout_ms = u64::try_from(write_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut check = tokio::time::interval(
        write_timeout.clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = http.as_mut() => break r,
            _ = conn.evict.notified() => {
                // Chosen while idle; one more than the mark the evictor
                // left means a request started since: let that one finish.
                if conn.busy.load(Ordering::Relaxed) <= 1 {
                    return;
                }
                http.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                let since = conn.write_blocked_since.load(Ordering::Relaxed);
                if since != 0 && (shared.now_ms() + 1).saturating_sub(since) > write_timeout_ms {
                    shared.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            shared.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        } else if e.is_parse_too_large() {
            shared
                .stats
                .headers_too_large
                .fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::debug!("connection ended: {e}");
        }
    }
}
