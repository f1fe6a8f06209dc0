//! Pods cloned from the fixtures in `pods/`, as many as a cluster needs:
//! each with its own name, uid, node, IPs and container ids, drawn from a
//! deterministic generator so that every run sees the same pods.
//!
//! Used by `benches/api_load.rs` (a 10,000-pod cluster) and by the node
//! benchmark's stand-in API server (`crates/hearth/examples/node_apiserver.rs`,
//! one node's 110 pods). Include it next to the fake API server, both at the
//! crate root (it loads the fixtures through `crate::fake_apiserver`):
//!
//! ```ignore
//! #[path = "support/fake_apiserver.rs"]
//! mod fake_apiserver;
//! #[path = "support/cluster.rs"]
//! mod cluster;
//! ```

// Each includer uses a different part of it.
#![allow(dead_code)]

use serde_json::{json, Value};

pub const DAEMONSETS: [&str; 4] = ["node-agent-", "kube-proxy-", "cni-node-", "log-shipper-"];

/// Deterministic generator (splitmix64): the same seed gives the same pods
/// (and, in api_load, the same churn).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }

    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Deployment,
    Ephemeral,
    StatefulSet,
    CronJob,
    Bare,
    DaemonSet,
    Static,
}

impl Shape {
    pub fn fixture(self) -> &'static str {
        match self {
            Shape::Deployment => "deployment",
            Shape::Ephemeral => "ephemeral",
            Shape::StatefulSet => "init",
            Shape::CronJob => "cronjob",
            Shape::Bare => "bare",
            Shape::DaemonSet => "daemonset",
            Shape::Static => "static",
        }
    }

    /// An application pod, weighted roughly as in a general-purpose cluster.
    pub fn workload(rng: &mut Rng) -> Shape {
        match rng.below(100) {
            0..=61 => Shape::Deployment,
            62..=64 => Shape::Ephemeral,
            65..=76 => Shape::StatefulSet,
            77..=91 => Shape::CronJob,
            _ => Shape::Bare,
        }
    }
}

pub struct Templates(Vec<(Shape, Value)>);

impl Templates {
    pub fn load() -> Templates {
        let shapes = [
            Shape::Deployment,
            Shape::Ephemeral,
            Shape::StatefulSet,
            Shape::CronJob,
            Shape::Bare,
            Shape::DaemonSet,
            Shape::Static,
        ];
        Templates(
            shapes
                .iter()
                .map(|&s| (s, crate::fake_apiserver::fixture(s.fixture())))
                .collect(),
        )
    }

    pub fn get(&self, shape: Shape) -> &Value {
        &self.0.iter().find(|(s, _)| *s == shape).unwrap().1
    }
}

pub fn node_name(n: usize) -> String {
    format!("node{n}")
}

/// A short unique name suffix (base 36).
pub fn suffix(mut serial: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    for _ in 0..5 {
        s.push(DIGITS[serial % 36]);
        serial /= 36;
    }
    assert_eq!(serial, 0, "name suffix overflow");
    String::from_utf8(s).unwrap()
}

/// A new pod from a fixture: own name, uid, node, IPs and container ids.
pub fn make_pod(
    t: &Templates,
    shape: Shape,
    serial: usize,
    node: usize,
    daemon: usize,
    rng: &mut Rng,
) -> Value {
    let mut pod = t.get(shape).clone();
    let node_s = node_name(node);
    let md = pod["metadata"].as_object_mut().unwrap();
    let name = match shape {
        Shape::Static => {
            let base = md["name"].as_str().unwrap().trim_end_matches("-node1");
            format!("{base}-{node_s}")
        }
        Shape::DaemonSet => {
            md.insert("generateName".into(), json!(DAEMONSETS[daemon]));
            format!("{}{}", DAEMONSETS[daemon], suffix(serial))
        }
        Shape::Bare => format!("{}-{}", md["name"].as_str().unwrap(), suffix(serial)),
        _ => format!("{}{}", md["generateName"].as_str().unwrap(), suffix(serial)),
    };
    md.insert("name".into(), json!(name));
    md.insert("uid".into(), json!(rng.uuid()));
    md.remove("resourceVersion");
    if shape == Shape::Static {
        let hash = rng.hex(32);
        let ann = md["annotations"].as_object_mut().unwrap();
        ann.insert("kubernetes.io/config.hash".into(), json!(hash));
        ann.insert("kubernetes.io/config.mirror".into(), json!(hash));
    }
    pod["spec"]["nodeName"] = json!(node_s);
    let host_ip = format!("10.0.{}.{}", node / 200, node % 200 + 10);
    let pod_ip = if shape == Shape::Static {
        host_ip.clone()
    } else {
        format!(
            "10.{}.{}.{}",
            100 + node / 250,
            node % 250,
            serial % 250 + 2
        )
    };
    let status = &mut pod["status"];
    status["hostIP"] = json!(host_ip);
    status["hostIPs"] = json!([{ "ip": host_ip }]);
    status["podIP"] = json!(pod_ip);
    status["podIPs"] = json!([{ "ip": pod_ip }]);
    for list in [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ] {
        let Some(statuses) = status.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for s in statuses {
            renew_id(&mut s["containerID"], rng);
            renew_id(&mut s["lastState"]["terminated"]["containerID"], rng);
        }
    }
    pod
}

/// Gives a `runtime://<id>` field a fresh id; leaves anything else alone.
pub fn renew_id(field: &mut Value, rng: &mut Rng) {
    let Some((runtime, _)) = field.as_str().and_then(|s| s.split_once("://")) else {
        return;
    };
    *field = json!(format!("{runtime}://{}", rng.hex(64)));
}

/// The pods of one node: its static pod, one pod of each of the four
/// DaemonSets, then `count - 5` application pods of the usual shapes
/// ([`Shape::workload`]). `serial` numbers the pods' names across the
/// cluster and is advanced past them.
pub fn node_pods(
    t: &Templates,
    node: usize,
    count: usize,
    serial: &mut usize,
    rng: &mut Rng,
) -> Vec<Value> {
    let mut pods = Vec::with_capacity(count);
    for k in 0..count {
        let (shape, daemon) = match k {
            0 => (Shape::Static, 0),
            1..=4 => (Shape::DaemonSet, k - 1),
            _ => (Shape::workload(rng), 0),
        };
        pods.push(make_pod(t, shape, *serial, node, daemon, rng));
        *serial += 1;
    }
    pods
}
