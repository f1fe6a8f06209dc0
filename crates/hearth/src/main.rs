//! `hearth`: the command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth::recorder::{record, KubernetesOptions, RecordOptions, RecordTarget};
use hearth_export::OutputFormat;
use hearth_k8s::attributes::{AttributeConfig, ExportRule};
use hearth_profile::GroupBy;

/// Default sampling frequency. A prime just under 20 Hz: cheap enough to run
/// always, and it does not beat in step with timers that fire at round
/// intervals (10 ms, 50 ms, 1 s), which would bias what gets sampled.
const DEFAULT_FREQUENCY_HZ: u64 = 19;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Continuous CPU profiler for Linux and Kubernetes"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    /// Default: warn for record, info for agent.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Record a profile of the whole machine, of processes, or of a command.
    Record(Box<RecordArgs>),
    /// Profile the whole machine continuously (the node agent).
    Agent(Box<AgentArgs>),
}

#[derive(Args)]
struct AgentArgs {
    /// Configuration file (TOML, see docs); flags and OTEL_* variables
    /// override what it says.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Samples per second per CPU [default: 19]; lowered, with a warning,
    /// to the kernel's limit (kernel.perf_event_max_sample_rate) and to
    /// Hearth's own ceiling (README.md, "Sampling frequency").
    #[arg(short = 'F', long, value_name = "HZ", value_parser = clap::value_parser!(u64).range(1..))]
    frequency: Option<u64>,
    /// Reporting interval in seconds, each window varying by ±10% [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    interval: Option<Duration>,
    /// Address for /metrics, /healthz and /readyz, or "off" [default:
    /// 127.0.0.1:9464]. Binding beyond loopback exposes the agent's metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// On SIGTERM/SIGINT, how long the last windows may take to be sent
    /// before the agent exits anyway (what is left is counted as dropped).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    shutdown_timeout: Duration,
    #[command(flatten)]
    otlp: OtlpArgs,
    /// Bytes of user stack copied per sample, for DWARF unwinding.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(512..=65_528))]
    stack_bytes: u32,
    /// Ring buffer per CPU, in KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    ring_kib: u64,
    /// The agent's memory budget in MiB, shared by its parts: the page's
    /// history, the export queue and the symbolizer each get a share unless
    /// their own flag sets it (README.md, "Memory") [default: 128].
    #[arg(long, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(hearth::agent::memory::MIN_MEMORY_MIB..=1_048_576))]
    memory_mib: Option<u64>,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
    #[command(flatten)]
    ui: UiArgs,
}

/// The local profile page (flame graphs of the last minutes).
#[derive(Args)]
struct UiArgs {
    /// Address of the profile page, or "off" [default: 127.0.0.1:7070].
    /// Only loopback addresses unless --ui-allow-remote is given.
    #[arg(long, value_name = "ADDR")]
    ui_listen: Option<String>,
    /// Allow --ui-listen on an address reachable from other machines. The
    /// page has no authentication and shows what every process runs: put
    /// it behind something that has.
    #[arg(long)]
    ui_allow_remote: bool,
    /// How much history the page keeps, e.g. 900, 15m, 1h [default: 15m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ui_history: Option<Duration>,
    /// Upper bound of the memory the page's history may hold, in MiB; the
    /// oldest windows go first [default: a quarter of --memory-mib].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    ui_memory_mib: Option<u64>,
}

impl UiArgs {
    fn options(
        &self,
        file: &hearth::agent::config_file::UiSection,
        budget: &hearth::agent::memory::MemoryBudget,
    ) -> Result<Option<hearth::agent::ui_sink::UiOptions>> {
        let listen = self
            .ui_listen
            .clone()
            .or(file.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:7070".into());
        let listen = match listen.trim() {
            "off" | "" => return Ok(None),
            addr => addr.parse().with_context(|| {
                format!("profile page address {addr:?} is not like 127.0.0.1:7070")
            })?,
        };
        let mut history = hearth_ui::HistoryConfig {
            max_bytes: budget.share_usize(hearth::agent::memory::Part::UiHistory),
            ..Default::default()
        };
        if let Some(d) = self.ui_history.or(file
            .history_minutes
            .filter(|m| *m > 0.0 && m.is_finite() && *m < 1e7)
            .map(|m| Duration::from_secs_f64(m * 60.0)))
        {
            history.retention = d;
        }
        if let Some(mib) = self
            .ui_memory_mib
            .or(file.memory_mib.filter(|m| *m > 0).map(|m| m as u64))
        {
            history.max_bytes = usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        }
        Ok(Some(hearth::agent::ui_sink::UiOptions {
            listen,
            allow_remote: self.ui_allow_remote || file.allow_remote.unwrap_or(false),
            history,
        }))
    }
}

#[derive(Args)]
#[command(after_help = "Examples:
  hearth record --duration 10 -o machine.svg         the whole machine for 10 s (root)
  hearth record --pid 1234 -o app.pb.gz -o app.svg   a running process, until Ctrl-C
  hearth record -o build.folded -- make -j2          a command and its children")]
struct RecordArgs {
    /// Stop after this many seconds (default: when the target exits, or Ctrl-C).
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Record this process and all its threads (repeatable).
    #[arg(short, long = "pid", value_name = "PID", conflicts_with = "command")]
    pids: Vec<u32>,
    /// Samples per second per CPU; lowered, with a warning, to the
    /// kernel's limit (kernel.perf_event_max_sample_rate) and to Hearth's
    /// own ceiling (README.md, "Sampling frequency").
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = DEFAULT_FREQUENCY_HZ,
          value_parser = clap::value_parser!(u64).range(1..))]
    frequency: u64,
    /// Output file (repeatable); format by extension: .pb.gz (pprof),
    /// .folded (folded stacks), .svg (flame graph). Without -o, a table of
    /// the top functions is printed.
    #[arg(short, long = "output", value_name = "FILE")]
    outputs: Vec<PathBuf>,
    /// Rows of the top-functions table.
    #[arg(long, default_value_t = 25)]
    top: usize,
    /// Bytes of user stack copied per sample, for DWARF unwinding.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(512..=65_528))]
    stack_bytes: u32,
    /// Ring buffer per CPU, in KiB (a power of two is used) [default: room
    /// for about 250 ms of samples at the chosen frequency, at least 1 MiB].
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    ring_kib: Option<u64>,
    /// Group samples above the process by container or by pod: adds root
    /// frames to folded stacks and flame graphs, and labels to pprof.
    #[arg(long, value_enum, default_value_t = GroupArg::Process)]
    group_by: GroupArg,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
    /// Also save the raw kernel records to FILE (for replay benchmarks).
    #[arg(long, value_name = "FILE", hide = true)]
    capture: Option<PathBuf>,
    /// Command to start and record, with its children.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// OTLP export. Nothing is sent unless an endpoint is given here, in
/// OTEL_EXPORTER_OTLP_(PROFILES_)ENDPOINT, or in the configuration file.
#[derive(Args)]
struct OtlpArgs {
    /// Collector endpoint, e.g. http://collector:4317 (gRPC) or
    /// http://collector:4318 (HTTP; /v1development/profiles is appended).
    #[arg(long = "otlp-endpoint", value_name = "URL")]
    endpoint: Option<String>,
    /// grpc or http/protobuf [default: grpc].
    #[arg(long = "otlp-protocol", value_name = "PROTOCOL")]
    protocol: Option<String>,
    /// Header sent with every export, KEY=VALUE (repeatable).
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// gzip or none [default: as OTEL_EXPORTER_OTLP_COMPRESSION says, else none].
    #[arg(long = "otlp-compression", value_name = "ALGORITHM")]
    compression: Option<String>,
    /// Per-attempt timeout in seconds [default: 10].
    #[arg(long = "otlp-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// CA certificate (PEM) to verify the collector with.
    #[arg(long = "otlp-ca-cert", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long = "otlp-client-cert", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long = "otlp-client-key", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// Bound of the export queue in MiB; the oldest requests are dropped
    /// beyond it [default: 64].
    #[arg(long = "otlp-queue-mib", value_name = "MIB")]
    queue_mib: Option<usize>,
}

fn parse_protocol(s: &str) -> Result<hearth_otlp::Protocol> {
    match s.trim() {
        "grpc" => Ok(hearth_otlp::Protocol::Grpc),
        "http/protobuf" => Ok(hearth_otlp::Protocol::HttpProtobuf),
        other => anyhow::bail!("unknown OTLP protocol {other:?}: use grpc or http/protobuf"),
    }
}

fn parse_compression(s: &str) -> Result<hearth_otlp::Compression> {
    match s.trim() {
        "gzip" => Ok(hearth_otlp::Compression::Gzip),
        "none" => Ok(hearth_otlp::Compression::None),
        other => anyhow::bail!("unknown OTLP compression {other:?}: use gzip or none"),
    }
}

/// The exporter configuration: flags over OTEL_* variables over the file.
///
/// An endpoint or protocol from a flag (or, without the variables, from the
/// file) is fed to the standard variable parser as the per-signal variable,
/// so that every other OTEL_EXPORTER_OTLP_* setting still applies to it.
fn otlp_config(
    args: &OtlpArgs,
    file: &hearth::agent::config_file::OtlpSection,
) -> Result<Option<hearth_otlp::ExporterConfig>> {
    use hearth_otlp::{EnvConfig, ExporterConfig, Protocol};
    let env_var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let env_has = |suffix: &str| {
        env_var(&format!("OTEL_EXPORTER_OTLP_PROFILES_{suffix}")).is_some()
            || env_var(&format!("OTEL_EXPORTER_OTLP_{suffix}")).is_some()
    };
    let protocol_override = args.protocol.clone().or_else(|| {
        (!env_has("PROTOCOL"))
            .then(|| file.protocol.clone())
            .flatten()
    });
    let endpoint_override = args.endpoint.clone().or_else(|| {
        (!env_has("ENDPOINT"))
            .then(|| file.endpoint.clone())
            .flatten()
    });
    let protocol_for_endpoint = match &protocol_override {
        Some(p) => parse_protocol(p)?,
        None => match env_var("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL")
            .or_else(|| env_var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) => parse_protocol(&p)?,
            None => Protocol::Grpc,
        },
    };
    // The per-signal endpoint is used as is: give HTTP its full path.
    let endpoint_override = endpoint_override.map(|e| match protocol_for_endpoint {
        Protocol::HttpProtobuf if !e.trim_end_matches('/').ends_with("/v1development/profiles") => {
            hearth_otlp::http_signal_url(&e)
        }
        _ => e,
    });
    let env = ExporterConfig::from_env(|k| match k {
        "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT" if endpoint_override.is_some() => {
            endpoint_override.clone()
        }
        "OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL" if protocol_override.is_some() => {
            protocol_override.clone()
        }
        _ => std::env::var(k).ok(),
    })
    .context("OTLP exporter settings (OTEL_EXPORTER_OTLP_* variables and --otlp-* flags)")?;
    let mut c = match env {
        EnvConfig::SdkDisabled => {
            tracing::info!("OTEL_SDK_DISABLED=true: not exporting");
            return Ok(None);
        }
        EnvConfig::Export(c) => c,
        EnvConfig::NoEndpoint => return Ok(None),
    };
    // The file fills in what the variables left unset.
    if !env_has("HEADERS") {
        c.headers
            .extend(file.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if !env_has("COMPRESSION") {
        if let Some(x) = &file.compression {
            c.compression = parse_compression(x)?;
        }
    }
    if !env_has("TIMEOUT") {
        if let Some(t) = file.timeout_seconds.filter(|t| *t > 0.0) {
            c.timeout = Duration::from_secs_f64(t);
        }
    }
    if !env_has("CERTIFICATE") && file.ca_cert.is_some() {
        c.tls.ca_cert = file.ca_cert.clone();
    }
    if !env_has("CLIENT_CERTIFICATE") && file.client_cert.is_some() {
        c.tls.client_cert = file.client_cert.clone();
    }
    if !env_has("CLIENT_KEY") && file.client_key.is_some() {
        c.tls.client_key = file.client_key.clone();
    }
    if let Some(q) = file.queue_mib.filter(|q| *q > 0) {
        c.queue_bytes = q << 20;
    }
    // Flags last.
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .with_context(|| format!("--otlp-header {h:?} is not KEY=VALUE"))?;
        c.headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(x) = &args.compression {
        c.compression = parse_compression(x)?;
    }
    if let Some(t) = args.timeout {
        c.timeout = t;
    }
    if args.ca_cert.is_some() {
        c.tls.ca_cert = args.ca_cert.clone();
    }
    if args.client_cert.is_some() {
        c.tls.client_cert = args.client_cert.clone();
    }
    if args.client_key.is_some() {
        c.tls.client_key = args.client_key.clone();
    }
    if let Some(q) = args.queue_mib {
        anyhow::ensure!(q > 0, "--otlp-queue-mib must be at least 1");
        c.queue_bytes = q << 20;
    }
    Ok(Some(c))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GroupArg {
    Process,
    Container,
    Pod,
}

/// Pod metadata: used when a node name is given and a cluster is
/// configured (in-cluster service account, `KUBECONFIG`, or --kubeconfig).
#[derive(Args)]
struct KubernetesArgs {
    /// This node's name (set it from the downward API in a DaemonSet).
    #[arg(long, env = "KUBERNETES_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Kubeconfig file (default: in-cluster credentials, then $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Export pod labels matching RULE as attributes (repeatable):
    /// `key`, `key=attribute.name`, `/regex/` or `/regex/=name_$1`.
    /// Nothing is exported by default.
    #[arg(long = "k8s-label", value_name = "RULE")]
    labels: Vec<String>,
    /// Export pod annotations matching RULE (same forms as --k8s-label).
    #[arg(long = "k8s-annotation", value_name = "RULE")]
    annotations: Vec<String>,
    /// Derive service.* from the app.kubernetes.io/{instance,name,version}
    /// labels (after the resource.opentelemetry.io/* annotations).
    #[arg(long = "k8s-well-known-labels")]
    well_known_labels: bool,
    /// Seconds a deleted pod's metadata is kept for late samples.
    #[arg(long = "k8s-delete-grace", value_name = "SECONDS", default_value = "120", value_parser = parse_seconds)]
    delete_grace: Duration,
}

impl KubernetesArgs {
    fn options(&self) -> Result<Option<KubernetesOptions>> {
        let Some(node_name) = self.node_name.clone().filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if self.kubeconfig.is_none() && !hearth_k8s::watch::cluster_configured() {
            return Ok(None);
        }
        let parse = |rules: &[String]| -> Result<Vec<ExportRule>> {
            rules
                .iter()
                .map(|r| ExportRule::parse(r).with_context(|| format!("metadata rule {r:?}")))
                .collect()
        };
        Ok(Some(KubernetesOptions {
            kubeconfig: self.kubeconfig.clone(),
            node_name,
            attributes: Arc::new(AttributeConfig {
                label_rules: parse(&self.labels)?,
                annotation_rules: parse(&self.annotations)?,
                use_well_known_labels: self.well_known_labels,
            }),
            delete_grace: self.delete_grace,
        }))
    }
}

/// Room for about a quarter of a second of samples per CPU, so that a
/// recorder briefly starved of CPU does not lose records; 1 to 16 MiB.
fn default_ring_bytes(frequency_hz: u64, stack_bytes: u32) -> usize {
    let per_sample = u64::from(stack_bytes) + 512;
    let quarter_second = frequency_hz.saturating_mul(per_sample) / 4;
    (quarter_second as usize).clamp(1 << 20, 16 << 20)
}

/// A duration: seconds, or a number with `s`, `m` or `h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    let d = parse_seconds(num.trim())?;
    let secs = d.as_secs_f64() * scale;
    if secs >= 1e9 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !(secs > 0.0 && secs.is_finite() && secs < 1e9) {
        return Err(format!(
            "duration must be a positive number of seconds, got {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `RUST_LOG` if set and valid, else `level`; the client libraries' per
/// request lines stay out unless asked for (see `hearth::log_filter`).
fn init_logging(level: &str) {
    use hearth::log_filter::with_client_libraries_quiet as quiet;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(quiet(&s)).ok())
        .or_else(|| EnvFilter::try_new(quiet(level)).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet("warn")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Hearth's exit status for a command's: its exit code, or 128 plus the
/// number of the signal that killed it, as shells report it.
fn command_exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        // Stopped or continued: not an end, but say it was not a success.
        (None, None) => 1,
    }
}

/// The line that ends sampling, e.g. `hearth: 1500 samples from 3
/// processes in 5.0 s at 99 Hz`, with what was lost, if anything.
fn sampled_summary(s: &hearth::recorder::Sampled) -> String {
    let mut line = String::new();
    if !s.kernel_stacks {
        line.push_str("note: kernel stacks were not sampled (not permitted); user stacks only\n");
    }
    line.push_str(&format!(
        "hearth: {} samples from {} processes in {:.1} s at {} Hz",
        s.samples,
        s.processes_seen,
        s.duration.as_secs_f64(),
        s.frequency_hz,
    ));
    if s.lost_records > 0 {
        // The kernel's count covers every kind of record, not samples only.
        line.push_str(&format!(
            "; {} records lost (samples and process events alike: a ring buffer was full; \
             raise --ring-kib or lower -F)",
            s.lost_records
        ));
    }
    if s.unprocessed_records > 0 {
        line.push_str(&format!(
            "; {} records left unprocessed (stopped while behind)",
            s.unprocessed_records
        ));
    }
    line
}

fn run_record(args: RecordArgs) -> Result<ExitCode> {
    // Check every output before spending time recording: the format by
    // the name, and that the file can be created.
    let outputs = args
        .outputs
        .iter()
        .map(|p| OutputFormat::from_path(p).map(|f| (p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = hearth::outputs::claim_all(&outputs)?;
    let frequency = hearth_sampler::bound_frequency(args.frequency);
    if frequency.lowered_by.is_some() {
        eprintln!("hearth: {frequency}");
    }
    let target = if !args.command.is_empty() {
        RecordTarget::Command(args.command)
    } else if !args.pids.is_empty() {
        RecordTarget::Pids(args.pids)
    } else {
        RecordTarget::System
    };
    let kubernetes = args.kubernetes.options()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let opts = RecordOptions {
        target,
        duration: args.duration,
        frequency_hz: frequency.hz,
        user_stack_bytes: args.stack_bytes,
        ring_bytes_per_cpu: match args.ring_kib {
            Some(kib) => (kib as usize) * 1024,
            None => default_ring_bytes(frequency.hz, args.stack_bytes),
        },
        capture: args.capture,
        group_by: match args.group_by {
            GroupArg::Process => GroupBy::Process,
            GroupArg::Container => GroupBy::Container,
            GroupArg::Pod => GroupBy::Pod,
        },
        kubernetes,
    };
    // Said when sampling stops: symbolizing can take seconds more.
    let recording = record(&opts, stop, |sampled| {
        eprintln!("{}", sampled_summary(sampled))
    })?;
    let report = &recording.report;
    tracing::info!(stats = ?recording.stats, "conversion finished");
    let no_outputs = outputs.is_empty();
    let (written, failed) = hearth::outputs::write_all(outputs, report);
    for path in &written {
        eprintln!("hearth: wrote {}", path.display());
    }
    if no_outputs {
        print!("{}", hearth_export::top_table(report, args.top));
    }
    if !failed.is_empty() {
        for e in &failed {
            eprintln!("hearth: error: {e}");
        }
        return Ok(ExitCode::from(1));
    }
    // Pass the command's own exit status on.
    let code = recording.child_status.map_or(0, command_exit_code);
    Ok(ExitCode::from(code))
}

fn run_agent(args: AgentArgs) -> Result<ExitCode> {
    let file = match &args.config {
        Some(path) => hearth::agent::config_file::FileConfig::load(path)?,
        None => hearth::agent::config_file::FileConfig::default(),
    };
    let metrics_listen = match args
        .metrics_listen
        .clone()
        .or(file.metrics_listen.clone())
        .unwrap_or_else(|| "127.0.0.1:9464".into())
        .as_str()
    {
        "off" | "" => None,
        addr => Some(
            addr.parse()
                .with_context(|| format!("metrics address {addr:?} is not like 127.0.0.1:9464"))?,
        ),
    };
    // Kubernetes settings: flags, else the file.
    let mut kubernetes = args.kubernetes;
    let k = &file.kubernetes;
    if kubernetes.node_name.is_none() {
        kubernetes.node_name = k.node_name.clone();
    }
    if kubernetes.kubeconfig.is_none() {
        kubernetes.kubeconfig = k.kubeconfig.clone();
    }
    if kubernetes.labels.is_empty() {
        kubernetes.labels = k.labels.clone();
    }
    if kubernetes.annotations.is_empty() {
        kubernetes.annotations = k.annotations.clone();
    }
    kubernetes.well_known_labels |= k.well_known_labels.unwrap_or(false);
    if let Some(g) = k.delete_grace_seconds.filter(|g| *g >= 0.0) {
        if kubernetes.delete_grace == Duration::from_secs(120) {
            kubernetes.delete_grace = Duration::from_secs_f64(g);
        }
    }
    let memory_mib = args
        .memory_mib
        .or(file.memory_mib)
        .unwrap_or(hearth::agent::memory::DEFAULT_MEMORY_MIB);
    anyhow::ensure!(
        memory_mib >= hearth::agent::memory::MIN_MEMORY_MIB,
        "memory_mib must be at least {}",
        hearth::agent::memory::MIN_MEMORY_MIB
    );
    let memory = hearth::agent::memory::MemoryBudget::from_mib(memory_mib);
    let mut otlp = otlp_config(&args.otlp, &file.otlp)?;
    if let Some(c) = otlp.as_mut() {
        if args.otlp.queue_mib.is_none() && file.otlp.queue_mib.filter(|q| *q > 0).is_none() {
            c.queue_bytes = memory.share_usize(hearth::agent::memory::Part::ExportQueue);
        }
    }
    let (extra_resource_attributes, bad) = hearth::enrich::parse_resource_attributes(
        &std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default(),
    );
    if !bad.is_empty() {
        tracing::warn!("ignoring malformed OTEL_RESOURCE_ATTRIBUTES entries: {bad:?}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let interval = args
        .interval
        .or(file
            .interval_seconds
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64))
        .unwrap_or(Duration::from_secs(5));
    let frequency = hearth_sampler::bound_frequency(
        args.frequency
            .or(file.frequency)
            .unwrap_or(DEFAULT_FREQUENCY_HZ),
    );
    if frequency.lowered_by.is_some() {
        tracing::warn!("{frequency}");
    }
    let opts = hearth::agent::AgentOptions {
        frequency_hz: frequency.hz,
        interval,
        user_stack_bytes: args.stack_bytes,
        ring_bytes_per_cpu: (args.ring_kib as usize) * 1024,
        metrics_listen,
        kubernetes: kubernetes.options()?,
        otlp,
        extra_resource_attributes,
        shutdown_deadline: args.shutdown_timeout,
        ui: args.ui.options(&file.ui, &memory)?,
        memory,
        ..Default::default()
    };
    tracing::info!(memory_mib, "memory budget");
    let sinks: Vec<Box<dyn hearth::agent::ReportSink>> = Vec::new();
    hearth::agent::run(opts, sinks, stop)?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match (&cli.command, cli.log_level.as_deref()) {
        (_, Some(level)) => level.to_string(),
        (Commands::Agent(_), None) => "info".to_string(),
        (Commands::Record(_), None) => "warn".to_string(),
    };
    init_logging(&default_level);
    // Before any file of another process is mapped: a file truncated under
    // its mapping must read as zeros, not end Hearth with SIGBUS.
    if let Err(e) = hearth_proc::fault_guard::install() {
        tracing::warn!("cannot guard mapped files against truncation: {e}");
    }
    let result = match cli.command {
        Commands::Record(args) => run_record(*args),
        Commands::Agent(args) => run_agent(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_or_hours() {
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration(" 1.5h "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        for bad in ["", "m", "0", "-5m", "15x", "1e12h", "NaNm"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
