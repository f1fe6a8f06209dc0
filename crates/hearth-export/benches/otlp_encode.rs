//! Encode time of one reporting window: OTLP request and pprof profile.
//!
//! Builds synthetic reports shaped like a busy Kubernetes node's window
//! (1k, 10k and 50k distinct stacks of depth ~30 over ~2k functions, ~100
//! processes in 10 containers plus the host, kernel tails on a third of the
//! stacks, some inlined frames, demangled Rust/C++ names) and times
//! `hearth_export::otlp::encode_otlp` and `hearth_export::encode_pprof` on
//! them: the median of N runs of this thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so other load on the machine does not count.
//!
//! Run: `cargo bench -p hearth-export --bench otlp_encode`
//! (`-- --runs N` to change the number of runs per size).

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use hearth_export::encode_pprof;
use hearth_export::otlp::encode_otlp;
use hearth_profile::{
    ContainerKey, Function, GroupBy, Line, Location, Mapping, Report, ReportSample, Resource,
};

/// Deterministic generator (xorshift64*), so every run builds the same reports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Skewed towards small values: a few hot items, a long tail.
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
}

const CRATES: &[&str] = &[
    "tokio",
    "hyper",
    "h2",
    "tonic",
    "prost",
    "serde_json",
    "rustls",
    "ring",
    "axum",
    "tower",
    "futures_util",
    "regex",
    "sqlx",
    "reqwest",
    "bytes",
    "tracing",
    "std",
    "core",
    "alloc",
    "hashbrown",
    "parking_lot",
    "crossbeam_channel",
    "rayon_core",
    "mio",
    "app",
];
const MODULES: &[&str] = &[
    "runtime",
    "scheduler",
    "multi_thread",
    "worker",
    "proto",
    "h1",
    "conn",
    "codec",
    "io",
    "task",
    "harness",
    "raw",
    "server",
    "client",
    "pool",
    "frame",
    "decode",
    "encode",
    "de",
    "ser",
    "sync",
    "mpsc",
    "net",
    "tcp",
    "handlers",
    "storage",
    "index",
    "query",
    "cache",
];
const TYPES: &[&str] = &[
    "Context",
    "Worker",
    "Conn<I, B, T>",
    "Dispatcher<D, Bs, I, T>",
    "Harness<T, S>",
    "Core<T, S>",
    "Decoder",
    "Encoder<B>",
    "Deserializer<R>",
    "RawTable<T, A>",
    "Vec<T, A>",
    "HashMap<K, V, S>",
    "Sender<T>",
    "Receiver<T>",
    "TcpStream",
    "Router<S>",
    "Service",
    "Pool<T>",
    "Handle",
    "Buf",
    "Parser",
    "Index",
    "Segment",
    "Cache<K, V>",
    "Request<B>",
];
const METHODS: &[&str] = &[
    "run",
    "poll",
    "poll_read",
    "poll_write",
    "poll_ready",
    "call",
    "decode",
    "encode",
    "deserialize_map",
    "serialize_field",
    "insert",
    "get",
    "reserve_rehash",
    "push",
    "extend",
    "next",
    "recv",
    "send",
    "flush",
    "parse",
    "lookup",
    "merge",
    "compact",
    "handle_request",
    "process_batch",
    "write_all",
    "read_buf",
    "clone",
    "drop",
    "resize",
    "find_inner",
];
const CPP_NS: &[&str] = &[
    "std",
    "Envoy::Http",
    "Envoy::Network",
    "absl",
    "google::protobuf",
    "grpc_core",
    "rocksdb",
    "v8::internal",
    "folly",
    "boost::asio::detail",
];
const KERNEL: &[&str] = &[
    "entry_SYSCALL_64_after_hwframe",
    "do_syscall_64",
    "x64_sys_call",
    "__x64_sys_read",
    "__x64_sys_write",
    "__x64_sys_epoll_wait",
    "__x64_sys_futex",
    "__x64_sys_sendto",
    "__x64_sys_recvfrom",
    "__x64_sys_openat",
    "__x64_sys_mmap",
    "ksys_read",
    "ksys_write",
    "vfs_read",
    "vfs_write",
    "new_sync_read",
    "ext4_file_read_iter",
    "filemap_read",
    "copy_page_to_iter",
    "_copy_to_iter",
    "rep_movs_alternative",
    "tcp_sendmsg",
    "tcp_sendmsg_locked",
    "tcp_push",
    "__tcp_push_pending_frames",
    "tcp_write_xmit",
    "__tcp_transmit_skb",
    "ip_queue_xmit",
    "__ip_queue_xmit",
    "ip_finish_output2",
    "__dev_queue_xmit",
    "tcp_recvmsg",
    "tcp_recvmsg_locked",
    "skb_copy_datagram_iter",
    "do_epoll_wait",
    "ep_poll",
    "schedule",
    "__schedule",
    "futex_wait",
    "futex_wake",
    "do_futex",
    "__handle_mm_fault",
    "handle_mm_fault",
    "do_user_addr_fault",
    "exc_page_fault",
    "asm_exc_page_fault",
    "clear_page_erms",
    "do_anonymous_page",
    "alloc_pages_mpol",
    "__alloc_pages",
    "get_page_from_freelist",
    "do_sys_openat2",
    "path_openat",
    "link_path_walk",
    "lookup_fast",
    "__d_lookup_rcu",
    "security_file_open",
    "finish_task_switch",
    "asm_sysvec_apic_timer_interrupt",
    "sysvec_apic_timer_interrupt",
];
const COMMS: &[&str] = &[
    "envoy",
    "postgres",
    "redis-server",
    "java",
    "node",
    "python3",
    "api-server",
    "worker",
    "nginx",
    "kubelet",
    "containerd",
    "coredns",
    "prometheus",
    "fluent-bit",
    "otelcol",
];
const THREADS: &[&str] = &[
    "tokio-runtime-w",
    "worker",
    "wrk:worker_",
    "grpc_global_tim",
    "GC Thread#",
    "epoll",
    "io-uring-sq",
    "pool-1-thread-",
    "rocksdb:low",
    "event-loop",
    "main",
];

struct Shape {
    stacks: usize,
    functions: usize,
    processes: usize,
    containers: usize,
}

struct Proc {
    pid: u32,
    name: Arc<str>,
    threads: Vec<(u32, Arc<str>)>,
    resource: usize,
    /// Locations of this process's own code and shared libraries.
    pool: Vec<usize>,
}

/// Builds one window's report.
fn build_report(shape: &Shape, seed: u64) -> Report {
    let mut rng = Rng(seed | 1);

    // Mappings: the kernel, shared libraries, one binary per program.
    let mut mappings = vec![Mapping {
        path: "[kernel.kallsyms]".into(),
        build_id: Some(rng.hex(40)),
        kernel: true,
    }];
    for lib in [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        mappings.push(Mapping {
            path: lib.into(),
            build_id: Some(rng.hex(40)),
            kernel: false,
        });
    }
    let first_binary = mappings.len();
    for i in 0..40 {
        let comm = COMMS[i % COMMS.len()];
        mappings.push(Mapping {
            path: format!("/usr/local/bin/{comm}-{i}").into(),
            build_id: Some(rng.hex(40)),
            kernel: false,
        });
    }

    // Functions: ~10% kernel, ~15% shared libraries, the rest program code.
    let mut functions = Vec::with_capacity(shape.functions);
    let mut function_mapping = Vec::with_capacity(shape.functions);
    let kernel_functions = shape.functions / 10;
    let lib_functions = shape.functions * 15 / 100;
    for i in 0..shape.functions {
        let (name, file, mapping): (String, Option<Arc<str>>, usize) = if i < kernel_functions {
            let base = KERNEL[i % KERNEL.len()];
            let name = if i < KERNEL.len() {
                base.to_string()
            } else {
                format!("{base}.part.{}", i / KERNEL.len())
            };
            (name, None, 0)
        } else if i < kernel_functions + lib_functions {
            let ns = rng.pick(CPP_NS);
            let t = rng.pick(TYPES);
            let m = rng.pick(METHODS);
            let name = format!("{ns}::{t}::{m}_{i}(unsigned long, char const*)");
            (name, None, 1 + rng.below(first_binary - 1))
        } else {
            let c = rng.pick(CRATES);
            let m1 = rng.pick(MODULES);
            let m2 = rng.pick(MODULES);
            let t = rng.pick(TYPES);
            let m = rng.pick(METHODS);
            let name = format!("{c}::{m1}::{m2}::{t}::{m}_{i}");
            let file = format!("/build/{c}-1.{}.0/src/{m1}/{m2}.rs", rng.below(40));
            let mapping = first_binary + rng.below(mappings.len() - first_binary);
            (name, Some(file.into()), mapping)
        };
        functions.push(Function {
            name: name.into(),
            file,
        });
        function_mapping.push(mapping);
    }

    // Locations: one to three call sites per function, 10% with an inlined
    // callee (two lines).
    let mut locations = Vec::new();
    let mut kernel_locations = Vec::new();
    let mut user_locations_by_mapping = vec![Vec::new(); mappings.len()];
    for (f, &mapping) in function_mapping.iter().enumerate() {
        let kernel = mapping == 0;
        let base = if kernel {
            0xffff_ffff_8100_0000 + (f as u64) * 0x400
        } else {
            0x1_0000 + (f as u64) * 0x200
        };
        for site in 0..1 + rng.below(3) {
            let mut lines = Vec::new();
            if !kernel && rng.below(10) == 0 {
                lines.push(Line {
                    function: kernel_functions + rng.below(shape.functions - kernel_functions),
                    line: 1 + rng.below(900) as u32,
                });
            }
            lines.push(Line {
                function: f,
                line: if kernel {
                    0
                } else {
                    1 + rng.below(2000) as u32
                },
            });
            let index = locations.len();
            locations.push(Location {
                mapping: Some(mapping),
                address: base + (site as u64) * 0x31,
                lines,
                kernel,
            });
            if kernel {
                kernel_locations.push(index);
            } else {
                user_locations_by_mapping[mapping].push(index);
            }
        }
    }

    // Resources: the host and the containers of a few pods.
    let mut resources = vec![Resource {
        container: None,
        attributes: vec![
            ("host.name".into(), "node-a1b2c3".into()),
            ("k8s.node.name".into(), "node-a1b2c3".into()),
        ],
    }];
    for c in 0..shape.containers {
        let id = rng.hex(64);
        let pod_uid = format!(
            "{}-{}-{}-{}-{}",
            rng.hex(8),
            rng.hex(4),
            rng.hex(4),
            rng.hex(4),
            rng.hex(12)
        );
        let app = COMMS[c % COMMS.len()];
        let pod = format!("{app}-{}-{}", rng.hex(10), rng.hex(5));
        resources.push(Resource {
            container: Some(Arc::new(ContainerKey {
                id: id.clone().into(),
                runtime: Some("containerd".into()),
                pod_uid: Some(pod_uid.clone().into()),
            })),
            attributes: vec![
                ("container.id".into(), id),
                ("container.runtime.name".into(), "containerd".into()),
                (
                    "container.image.name".into(),
                    format!("registry.example.com/team/{app}"),
                ),
                (
                    "container.image.tag".into(),
                    format!("v1.{}.{}", c, rng.below(20)),
                ),
                ("k8s.container.name".into(), app.into()),
                ("k8s.pod.name".into(), pod.clone()),
                ("k8s.pod.uid".into(), pod_uid),
                ("k8s.namespace.name".into(), format!("team-{}", c % 4)),
                ("k8s.deployment.name".into(), app.into()),
                ("k8s.node.name".into(), "node-a1b2c3".into()),
                ("service.name".into(), app.into()),
                ("service.namespace".into(), format!("team-{}", c % 4)),
                (
                    "service.instance.id".into(),
                    format!("team-{}.{pod}.{app}", c % 4),
                ),
                ("host.name".into(), "node-a1b2c3".into()),
            ],
        });
    }

    // Processes: each runs one program binary plus the shared libraries.
    let libs: Vec<usize> = (1..first_binary)
        .flat_map(|m| user_locations_by_mapping[m].iter().copied())
        .collect();
    let mut procs = Vec::with_capacity(shape.processes);
    for p in 0..shape.processes {
        let binary = first_binary + p % (mappings.len() - first_binary);
        let name = COMMS[p % COMMS.len()];
        let pid = 1000 + (p as u32) * 37;
        let threads = (0..1 + rng.below(8))
            .map(|t| {
                let base = THREADS[rng.below(THREADS.len())];
                (pid + t as u32, Arc::from(format!("{base}{t}").as_str()))
            })
            .collect();
        let mut pool = user_locations_by_mapping[binary].clone();
        // Programs share code in practice (the same crates, libraries): add
        // a slice of other binaries' locations.
        for _ in 0..pool.len().max(20) {
            let other = first_binary + rng.below(mappings.len() - first_binary);
            let locs = &user_locations_by_mapping[other];
            if !locs.is_empty() {
                pool.push(locs[rng.below(locs.len())]);
            }
        }
        procs.push(Proc {
            pid,
            name: name.into(),
            threads,
            resource: if p % 3 == 0 {
                0
            } else {
                1 + p % shape.containers
            },
            pool,
        });
    }

    // Stacks: walks that branch from shared prefixes, so that many stacks
    // share their roots as real call trees do.
    let mut seen = HashSet::new();
    let mut samples = Vec::with_capacity(shape.stacks);
    while samples.len() < shape.stacks {
        let proc = &procs[rng.skewed(procs.len())];
        let (tid, thread_name) = proc.threads[rng.below(proc.threads.len())].clone();
        let depth = 20 + rng.below(21);
        let mut root_first = Vec::with_capacity(depth + 10);
        // _start / __libc_start_main / main-like roots from libc and the binary.
        root_first.push(libs[(proc.pid as usize) % libs.len()]);
        root_first.push(proc.pool[0]);
        let mut state = u64::from(proc.pid);
        while root_first.len() < depth {
            // Few choices near the root, more further down.
            let fanout = 1 + root_first.len() as u64 / 4;
            state = state
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(rng.next() % fanout + 1);
            let from_libs = state % 11 == 0;
            let loc = if from_libs {
                libs[(state >> 8) as usize % libs.len()]
            } else {
                proc.pool[(state >> 8) as usize % proc.pool.len()]
            };
            root_first.push(loc);
        }
        if rng.below(3) == 0 {
            let k = 4 + rng.below(8);
            for _ in 0..k {
                root_first.push(kernel_locations[rng.below(kernel_locations.len())]);
            }
        }
        root_first.reverse();
        let stack = root_first; // now leaf first
        if !seen.insert(stack.clone()) {
            continue;
        }
        samples.push(ReportSample {
            stack,
            pid: proc.pid,
            tid,
            process_name: proc.name.clone(),
            thread_name,
            resource: proc.resource,
            count: 1 + rng.skewed(6) as u64,
        });
    }

    Report {
        start_unix_ns: 1_760_000_000_000_000_000,
        duration_ns: 5_000_000_000,
        frequency_hz: 19,
        mappings,
        functions,
        locations,
        samples,
        resources,
        lost_samples: 0,
        group_by: GroupBy::Process,
    }
}

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Timing {
    cpu_ns: u64,
    wall_ns: u64,
    bytes: usize,
}

fn time_encoder(report: &Report, runs: usize, encode: fn(&Report) -> Vec<u8>) -> Timing {
    // One warm-up run, not counted.
    let bytes = black_box(encode(black_box(report))).len();
    let mut cpu = Vec::with_capacity(runs);
    let mut wall = Vec::with_capacity(runs);
    for _ in 0..runs {
        let w0 = Instant::now();
        let c0 = thread_cpu_ns();
        let out = encode(black_box(report));
        let c1 = thread_cpu_ns();
        let w1 = w0.elapsed();
        black_box(out);
        cpu.push(c1 - c0);
        wall.push(w1.as_nanos() as u64);
    }
    Timing {
        cpu_ns: median(cpu),
        wall_ns: median(wall),
        bytes,
    }
}

fn main() {
    let mut runs = 21;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `cargo bench` passes `--bench`; ignore what we do not know.
        if a == "--runs" {
            runs = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .expect("--runs needs a positive number");
        }
    }

    println!("otlp_encode: median of {runs} runs, thread CPU time (wall in parentheses)");
    println!();
    println!(
        "| distinct stacks | samples | functions | locations | processes | resources \
         | OTLP encode µs/window | OTLP ns/stack | OTLP ns/sample | OTLP bytes \
         | pprof encode µs/window | pprof ns/stack | pprof ns/sample | pprof bytes (raw) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for stacks in [1_000, 10_000, 50_000] {
        let shape = Shape {
            stacks,
            functions: 2_000,
            processes: 100,
            containers: 10,
        };
        let report = build_report(&shape, 0x5eed_0000 + stacks as u64);
        let total = report.total_samples();
        let pids: HashSet<u32> = report.samples.iter().map(|s| s.pid).collect();
        let otlp = time_encoder(&report, runs, encode_otlp);
        let pprof = time_encoder(&report, runs, encode_pprof);
        let us = |ns: u64| ns as f64 / 1_000.0;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ({:.0}) | {:.0} | {:.0} | {} | {:.0} ({:.0}) | {:.0} | {:.0} | {} |",
            report.samples.len(),
            total,
            report.functions.len(),
            report.locations.len(),
            pids.len(),
            report.resources.len(),
            us(otlp.cpu_ns),
            us(otlp.wall_ns),
            otlp.cpu_ns as f64 / report.samples.len() as f64,
            otlp.cpu_ns as f64 / total as f64,
            otlp.bytes,
            us(pprof.cpu_ns),
            us(pprof.wall_ns),
            pprof.cpu_ns as f64 / report.samples.len() as f64,
            pprof.cpu_ns as f64 / total as f64,
            pprof.bytes,
        );
    }
}
