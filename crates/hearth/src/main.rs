//! `hearth`: the command line.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
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
    Record(RecordArgs),
    /// Profile the whole machine continuously (the node agent).
    Agent(AgentArgs),
}

#[derive(Args)]
struct AgentArgs {
    /// Samples per second per CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = DEFAULT_FREQUENCY_HZ,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    frequency: u64,
    /// Reporting interval in seconds (each window varies by ±10%).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    interval: Duration,
    /// Address for /metrics, /healthz and /readyz; "off" to disable.
    /// Loopback by default: binding elsewhere exposes the agent's metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    /// Bytes of user stack copied per sample, for DWARF unwinding.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(512..=65_528))]
    stack_bytes: u32,
    /// Ring buffer per CPU, in KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    ring_kib: u64,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
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
    /// Samples per second per CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = DEFAULT_FREQUENCY_HZ,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
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
    /// Ring buffer per CPU, in KiB (a power of two is used).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    ring_kib: u64,
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

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_record(args: RecordArgs) -> Result<ExitCode> {
    // Check every output before spending time recording.
    let outputs = args
        .outputs
        .iter()
        .map(|p| OutputFormat::from_path(p).map(|f| (p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
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
        frequency_hz: args.frequency,
        user_stack_bytes: args.stack_bytes,
        ring_bytes_per_cpu: (args.ring_kib as usize) * 1024,
        capture: args.capture,
        group_by: match args.group_by {
            GroupArg::Process => GroupBy::Process,
            GroupArg::Container => GroupBy::Container,
            GroupArg::Pod => GroupBy::Pod,
        },
        kubernetes,
    };
    let recording = record(&opts, stop)?;
    let report = &recording.report;
    if !recording.kernel_stacks {
        eprintln!("note: kernel stacks were not sampled (not permitted); user stacks only");
    }
    eprintln!(
        "hearth: {} samples from {} processes in {:.1} s at {} Hz{}",
        report.total_samples(),
        recording.processes_seen,
        report.duration_ns as f64 / 1e9,
        report.frequency_hz,
        if report.lost_samples > 0 {
            format!(
                ", {} lost (ring buffer full: raise --ring-kib)",
                report.lost_samples
            )
        } else {
            String::new()
        }
    );
    tracing::info!(stats = ?recording.stats, "conversion finished");
    for (path, format) in &outputs {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::new(file);
        hearth_export::write_report(report, *format, &mut w)
            .with_context(|| format!("writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("hearth: wrote {}", path.display());
    }
    if outputs.is_empty() {
        print!("{}", hearth_export::top_table(report, args.top));
    }
    // Pass the command's own exit status on.
    let code = match recording.child_status {
        Some(status) => status.code().unwrap_or(128 + 1) as u8,
        None => 0,
    };
    Ok(ExitCode::from(code))
}

fn run_agent(args: AgentArgs) -> Result<ExitCode> {
    let metrics_listen = match args.metrics_listen.as_str() {
        "off" | "" => None,
        addr => Some(addr.parse().with_context(|| {
            format!("--metrics-listen {addr:?} is not an address like 127.0.0.1:9464")
        })?),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let opts = hearth::agent::AgentOptions {
        frequency_hz: args.frequency,
        interval: args.interval,
        user_stack_bytes: args.stack_bytes,
        ring_bytes_per_cpu: (args.ring_kib as usize) * 1024,
        metrics_listen,
        kubernetes: args.kubernetes.options()?,
        ..Default::default()
    };
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
    let result = match cli.command {
        Commands::Record(args) => run_record(args),
        Commands::Agent(args) => run_agent(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
