//! A stand-in Kubernetes API server for one busy node, for
//! `scripts/bench-node.sh`: the fake API server of the integration tests
//! serving 110 pods on `node1` (by default), cloned from the test fixtures
//! as `benches/api_load.rs` clones them (a static pod, four DaemonSet pods,
//! then Deployments, StatefulSets, CronJob pods, ...), each with its own
//! name, uid and container ids.
//!
//! cargo run --release -p hearth --example node_apiserver -- KUBECONFIG CONTAINERS [PODS]
//!
//! Writes a kubeconfig for the server to KUBECONFIG, then one line per
//! running container of those pods to CONTAINERS (written whole, then
//! renamed into place: its presence means the server is ready):
//!
//! ```text
//! <cgroup path>\t<namespace>/<pod>\t<container>
//! ```
//!
//! where the cgroup path is the one the kubelet (cgroup v2, systemd driver)
//! and containerd would run that container in, relative to the cgroup2
//! mount. It then serves until its standard input reaches end of file.

#[path = "../../hearth-k8s/tests/support/cluster.rs"]
mod cluster;
#[path = "../../hearth-k8s/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

/// The node the pods are on (`hearth agent --node-name`).
const NODE: usize = 1;
const DEFAULT_PODS: usize = 110;
/// Fixed, so that every run serves the same pods.
const SEED: u64 = 0x6e6f_6465_0000_0110;

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("usage: node_apiserver KUBECONFIG CONTAINERS [PODS] (PODS: 5 to 10000)")]
    Usage,
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod}: {what}")]
    Pod { pod: String, what: String },
    #[error("reading standard input: {0}")]
    Stdin(std::io::Error),
}

/// A running container and the cgroup it would run in.
struct Placement {
    cgroup: String,
    pod: String,
    container: String,
}

fn pod_error(pod: &Value, what: impl Into<String>) -> Error {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("?");
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    Error::Pod {
        pod: format!("{ns}/{name}"),
        what: what.into(),
    }
}

/// The running containers of a pod (regular and ephemeral) with their
/// cgroups: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/
/// cri-containerd-<id>.scope`, without the QoS level for Guaranteed pods;
/// a static pod's cgroup is named by its config hash, not its API uid.
fn placements(pod: &Value) -> Result<Vec<Placement>, Error> {
    let meta = &pod["metadata"];
    let key = format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"]
            .as_str()
            .ok_or_else(|| pod_error(pod, "no metadata.name"))?
    );
    let uid = meta["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .or_else(|| meta["uid"].as_str())
        .ok_or_else(|| pod_error(pod, "no metadata.uid"))?
        .replace('-', "_");
    let slice = match pod["status"]["qosClass"].as_str() {
        Some("Guaranteed") => format!("kubepods.slice/kubepods-pod{uid}.slice"),
        Some("Burstable") => {
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice")
        }
        Some("BestEffort") => {
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice")
        }
        other => return Err(pod_error(pod, format!("QoS class {other:?}"))),
    };
    let mut out = Vec::new();
    for list in ["containerStatuses", "ephemeralContainerStatuses"] {
        let Some(statuses) = pod["status"][list].as_array() else {
            continue;
        };
        for s in statuses {
            if s["state"]["running"].is_null() {
                continue;
            }
            let Some((runtime, id)) = s["containerID"].as_str().and_then(|c| c.split_once("://"))
            else {
                continue;
            };
            let prefix = match runtime {
                "containerd" => "cri-containerd",
                "cri-o" => "crio",
                "docker" => "docker",
                other => return Err(pod_error(pod, format!("runtime {other:?}"))),
            };
            out.push(Placement {
                cgroup: format!("{slice}/{prefix}-{id}.scope"),
                pod: key.clone(),
                container: s["name"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    if out.is_empty() {
        return Err(pod_error(pod, "no running container"));
    }
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kubeconfig, containers) = match args.as_slice() {
        [k, c] | [k, c, _] => (PathBuf::from(k), PathBuf::from(c)),
        _ => return Err(Error::Usage),
    };
    let count = match args.get(2) {
        None => DEFAULT_PODS,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| (5..=10_000).contains(n))
            .ok_or(Error::Usage)?,
    };

    let templates = cluster::Templates::load();
    let mut rng = cluster::Rng(SEED);
    let pods = cluster::node_pods(&templates, NODE, count, &mut 0, &mut rng);
    let mut lines = String::new();
    for pod in &pods {
        for p in placements(pod)? {
            lines.push_str(&format!("{}\t{}\t{}\n", p.cgroup, p.pod, p.container));
        }
    }

    let server = fake_apiserver::FakeApiServer::start();
    for pod in &pods {
        server.add_pod(pod);
    }
    // Nobody replays the creations: drop the fake's copy of them.
    server.compact();
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(|source| Error::Write {
            path: kubeconfig.clone(),
            source,
        })?;
    let mut partial = containers.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    write(&partial, &lines)?;
    std::fs::rename(&partial, &containers).map_err(|source| Error::Write {
        path: containers.clone(),
        source,
    })?;
    eprintln!(
        "node_apiserver: {count} pods ({} running containers) on {} at {}",
        lines.lines().count(),
        cluster::node_name(NODE),
        server.url()
    );

    let mut sink = [0u8; 4096];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Stdin(e)),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node_apiserver: error: {e}");
            ExitCode::FAILURE
        }
    }
}
