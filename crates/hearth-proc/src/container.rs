//! Which container, if any, a process runs in: read from `/proc/<pid>/cgroup`.
//!
//! Hearth groups samples by container and labels them with `container.id`
//! (the bare 64-hex ID, the only form the collector's Kubernetes metadata
//! matches on) and `container.runtime.name`. The kernel knows nothing about
//! containers; what it does know is each process's cgroup, and every
//! container runtime names the cgroup it creates after the container ID.
//! This module turns that path back into an ID, without asking any runtime.
//!
//! # What the paths look like
//!
//! The file has one `hierarchy-id:controllers:path` line per cgroup
//! hierarchy: many for cgroup v1 (`4:memory:/...`, `1:name=systemd:/...`),
//! one `0::/path` for cgroup v2, and both for hybrid systems. The path is
//! where the runtime (or the kubelet) put the process, and its shape depends
//! on who created it:
//!
//! | creator | cgroup segment |
//! |---|---|
//! | containerd, systemd driver | `cri-containerd-<id>.scope` |
//! | CRI-O, systemd driver | `crio-<id>.scope` (crun may add a `container` child) |
//! | CRI-O, cgroupfs driver | `crio-<id>` |
//! | Docker / cri-dockerd, systemd driver | `docker-<id>.scope` |
//! | Docker, cgroupfs driver | `docker/<id>` |
//! | podman, systemd | `libpod-<id>.scope` |
//! | podman, cgroupfs | `libpod_parent/libpod-<id>` |
//! | kubelet cgroupfs driver (any runtime) | `pod<uid>/<id>` |
//! | CRI-O and podman monitors (conmon) | `crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope` |
//! | containerd with a v1 systemd misconfiguration | `<pod slice>:cri-containerd:<id>` |
//!
//! Kubernetes pods sit above their containers: with the systemd driver in
//! `kubepods-<qos>-pod<uid>.slice` (the UID's dashes written as `_`, since
//! `-` separates levels in a slice name; Guaranteed pods have no QoS level:
//! `kubepods-pod<uid>.slice`), with the cgroupfs driver in
//! `/kubepods/<qos>/pod<uid>/` (Guaranteed: `/kubepods/pod<uid>/`). A
//! kubelet given its own cgroup root prefixes these names (kind nodes use
//! `kubelet.slice/kubelet-kubepods.slice/...`).
//!
//! Any other segment that is exactly 64 hex digits is taken as a container
//! of an unknown runtime: other orchestrators and plain containerd name
//! cgroups after the bare ID too.
//!
//! # Choices and their reasons
//!
//! * **Innermost container wins.** Local clusters (kind, minikube) run a
//!   container runtime inside a container, so a workload's path holds the
//!   node container's ID first and its own ID later. The workload is what
//!   Kubernetes metadata knows, so the last container segment is reported,
//!   with the pod and QoS class found between it and the previous one.
//! * **Line order.** The unified (`0::`) line is consulted first, then the
//!   `name=systemd` line, then every controller line in file order; the first
//!   one that names a container (or monitor) decides. On hybrid systems the
//!   unified line can be `/` while v1 controllers hold the real placement,
//!   and on some v1 setups only some controllers are moved.
//! * **Cgroup namespaces.** A reader in its own cgroup namespace sees other
//!   processes' paths relative to its own root, starting with `/..`. The
//!   `..` segments are skipped; the slice names carry their own QoS and pod,
//!   but a cgroupfs path may have lost its `kubepods` level, in which case
//!   the QoS class stays unknown. A process in the reader's own namespace
//!   root shows as `/` and cannot be attributed at all (it is reported as
//!   [`Classification::Host`]).
//! * **Pod sandboxes.** The pause container of each pod gets a scope of its
//!   own that looks exactly like any other container's; nothing in the path
//!   tells them apart. They are reported as containers, and the Kubernetes
//!   metadata (which lists the sandbox under no container) sorts them out.
//! * **Runtime monitors.** conmon watches a CRI-O or podman container from a
//!   scope named after the container's ID. It is not the workload, so it is
//!   reported separately as [`Classification::RuntimeMonitor`] to keep its
//!   CPU time off the container. When CRI-O is configured to put conmon in
//!   the pod's own cgroup, or podman's cgroupfs mode puts it in a `conmon`
//!   directory, the path names no container and the process is reported as
//!   host.
//! * **Static pods.** The kubelet names a static pod's cgroup after the pod
//!   manifest's hash (32 hex digits), not after the UID of the mirror pod the
//!   API server shows. That hash is still returned as `pod_uid`; matching
//!   with Kubernetes metadata is done on the container ID, which is right in
//!   both cases.
//! * **Runtime unknown.** The kubelet's cgroupfs driver names container
//!   cgroups by bare ID whatever the runtime is, so `runtime` is `None`
//!   there rather than a guess.
//!
//! The input comes from outside the profiler: parsing never panics, and
//! lines or segments that do not fit are ignored.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;

/// Length of a container ID in hex digits (a SHA-256 digest).
const ID_LEN: usize = 64;

/// The container runtime that created a container, as far as the cgroup path
/// tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Runtime {
    /// The value of the `container.runtime.name` resource attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod's Kubernetes quality-of-service class, which decides where the
/// kubelet puts the pod's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The class as the pod status spells it (`status.qosClass`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The QoS level names the kubelet uses in cgroup paths; Guaranteed pods
    /// have no level of their own.
    fn from_level(level: &str) -> Option<QosClass> {
        match level {
            "burstable" => Some(QosClass::Burstable),
            "besteffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The bare container ID: 64 lowercase hex digits, with no
    /// `<runtime>://` prefix (the form `container.id` takes).
    pub id: String,
    /// `None` when the path does not say, as with the kubelet's cgroupfs
    /// driver (`/kubepods/burstable/pod<uid>/<id>`) or a bare-ID cgroup.
    pub runtime: Option<Runtime>,
    /// The Kubernetes pod UID in its canonical dashed form, or a static
    /// pod's manifest hash; `None` outside Kubernetes pods.
    pub pod_uid: Option<String>,
    /// Only for paths under the kubelet's `kubepods` hierarchy, and only
    /// when the path shows it (see the module docs on cgroup namespaces).
    pub qos: Option<QosClass>,
}

/// What a process's cgroup says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Classification {
    /// Not in a container: host processes, system services, user sessions
    /// and the container runtimes' own daemons, or a path that cannot be
    /// attributed.
    Host,
    /// A container's process (possibly a pod's sandbox, see the module docs).
    Container(ContainerRef),
    /// A runtime's monitor process (conmon) watching the container with this
    /// ID; it is never the workload itself.
    RuntimeMonitor { id: String },
}

impl Classification {
    /// The container, when the process is in one.
    pub fn container(&self) -> Option<&ContainerRef> {
        match self {
            Classification::Container(c) => Some(c),
            _ => None,
        }
    }
}

/// Classifies a process from the contents of its `/proc/<pid>/cgroup`.
///
/// See the module docs for the path shapes recognized and for which line
/// decides on systems with several hierarchies.
pub fn classify_cgroup(contents: &str) -> Classification {
    let mut unified = None;
    let mut systemd = None;
    let mut controllers = Vec::new();
    for line in contents.lines() {
        let Some((hierarchy, path)) = parse_line(line) else {
            continue;
        };
        match hierarchy {
            Hierarchy::Unified => {
                unified.get_or_insert(path);
            }
            Hierarchy::NamedSystemd => {
                systemd.get_or_insert(path);
            }
            Hierarchy::Other => controllers.push(path),
        }
    }
    unified
        .into_iter()
        .chain(systemd)
        .chain(controllers)
        .map(classify_path)
        .find(|c| *c != Classification::Host)
        .unwrap_or(Classification::Host)
}

/// Which kind of hierarchy a line describes, in the order lines are trusted.
enum Hierarchy {
    /// cgroup v2: hierarchy 0 with no controllers listed.
    Unified,
    /// The v1 hierarchy systemd keeps for itself (`name=systemd`).
    NamedSystemd,
    /// Any v1 controller hierarchy.
    Other,
}

/// Splits `hierarchy-id:controllers:path`. The path itself may contain `:`
/// (cgroup names can), so only the first two colons separate fields.
fn parse_line(line: &str) -> Option<(Hierarchy, &str)> {
    let mut fields = line.splitn(3, ':');
    let id = fields.next()?;
    let controllers = fields.next()?;
    let path = fields.next()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || !path.starts_with('/') {
        return None;
    }
    let hierarchy = if id.bytes().all(|b| b == b'0') && controllers.is_empty() {
        Hierarchy::Unified
    } else if controllers.split(',').any(|c| c == "name=systemd") {
        Hierarchy::NamedSystemd
    } else {
        Hierarchy::Other
    };
    Some((hierarchy, path))
}

/// What the scan of one path knows about the nesting level it is in: the
/// Kubernetes pod and QoS class seen since the last container segment.
#[derive(Default)]
struct Level {
    /// A `kubepods` level (plain or as part of a slice name) has been seen,
    /// so a pod without a QoS level is Guaranteed.
    kubepods: bool,
    qos: Option<QosClass>,
    pod_uid: Option<String>,
}

/// Classifies one cgroup path, keeping the innermost container.
fn classify_path(path: &str) -> Classification {
    let mut found = Classification::Host;
    let mut level = Level::default();
    let mut prev = "";
    // Seen from another cgroup namespace, the path climbs out of the reader's
    // root first, and the `kubepods` level above may be out of sight: a bare
    // QoS level name is then trusted on its own.
    let relative = path.trim_start_matches('/').starts_with("..");
    // `:` splits too: some containerd setups on v1 write the systemd-style
    // `slice:prefix:id` triple as a single directory name.
    for token in path.split(['/', ':']) {
        if token.is_empty() || token == "." || token == ".." {
            continue;
        }
        match classify_token(token, prev) {
            Token::Container { id, runtime } => {
                let qos =
                    level
                        .qos
                        .or((level.kubepods && level.pod_uid.is_some())
                            .then_some(QosClass::Guaranteed));
                found = Classification::Container(ContainerRef {
                    id: id.to_ascii_lowercase(),
                    runtime,
                    pod_uid: level.pod_uid.take(),
                    qos,
                });
                // Whatever follows belongs to a runtime inside this container.
                level = Level::default();
            }
            Token::Monitor { id } => {
                found = Classification::RuntimeMonitor {
                    id: id.to_ascii_lowercase(),
                };
                level = Level::default();
            }
            Token::Kubepods => {
                level = Level {
                    kubepods: true,
                    ..Level::default()
                };
            }
            Token::Qos { qos, anchored } => {
                if anchored || level.kubepods || relative {
                    level.kubepods = true;
                    level.qos = Some(qos);
                    level.pod_uid = None;
                }
            }
            Token::PodSlice { uid, qos } => {
                level.kubepods = qos.is_some();
                level.qos = qos;
                level.pod_uid = Some(uid);
            }
            Token::PodDir { uid } => level.pod_uid = Some(uid),
            Token::Other => {}
        }
        prev = token;
    }
    found
}

/// What one path segment (or `:`-separated part of one) means.
enum Token<'a> {
    Container {
        id: &'a str,
        runtime: Option<Runtime>,
    },
    Monitor {
        id: &'a str,
    },
    /// The kubelet's top level: `kubepods` or `kubepods.slice` (possibly
    /// under a custom root: `kubelet-kubepods.slice`).
    Kubepods,
    /// A QoS level: `kubepods-burstable.slice` (`anchored`: the name itself
    /// says it is the kubelet's) or a cgroupfs `burstable`/`besteffort`
    /// directory, which only counts under `kubepods`.
    Qos {
        qos: QosClass,
        anchored: bool,
    },
    /// `kubepods[-<qos>]-pod<uid>.slice`; `qos` is `None` only when the
    /// slice name has no `kubepods` part to anchor it, and then the QoS
    /// class stays unknown.
    PodSlice {
        uid: String,
        qos: Option<QosClass>,
    },
    /// cgroupfs `pod<uid>`.
    PodDir {
        uid: String,
    },
    Other,
}

fn classify_token<'a>(token: &'a str, prev: &str) -> Token<'a> {
    if let Some(id) = container_id(token) {
        // A bare ID: its parent may still say who made it.
        let runtime = match prev {
            "docker" => Some(Runtime::Docker),
            "cri-containerd" => Some(Runtime::Containerd),
            "crio" => Some(Runtime::CriO),
            _ => None,
        };
        return Token::Container { id, runtime };
    }
    if let Some(name) = token.strip_suffix(".slice") {
        return classify_slice(name);
    }
    let unit = token.strip_suffix(".scope").unwrap_or(token);
    // Monitors first: their prefixes extend the containers' ones.
    for prefix in ["crio-conmon-", "libpod-conmon-"] {
        if let Some(id) = unit.strip_prefix(prefix).and_then(container_id) {
            return Token::Monitor { id };
        }
    }
    const PREFIXES: [(&str, Runtime); 4] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = unit.strip_prefix(prefix).and_then(container_id) {
            return Token::Container {
                id,
                runtime: Some(runtime),
            };
        }
    }
    if token == "kubepods" {
        return Token::Kubepods;
    }
    if let Some(qos) = QosClass::from_level(token) {
        return Token::Qos {
            qos,
            anchored: false,
        };
    }
    if let Some(uid) = token.strip_prefix("pod").and_then(pod_uid) {
        return Token::PodDir { uid };
    }
    Token::Other
}

/// A systemd slice name (without `.slice`): `-` separates the levels it is
/// nested in, so the last part says what this slice is and the one before it
/// gives the QoS level of a pod slice.
fn classify_slice(name: &str) -> Token<'_> {
    let mut parts = name.rsplit('-');
    let last = parts.next().unwrap_or("");
    let before = parts.next();
    let under_kubepods = name.split('-').any(|p| p == "kubepods");
    if last == "kubepods" {
        return Token::Kubepods;
    }
    if let Some(uid) = last.strip_prefix("pod").and_then(pod_uid) {
        let qos = match before {
            Some(level) => QosClass::from_level(level).or(Some(QosClass::Guaranteed)),
            None => None,
        };
        return Token::PodSlice {
            uid,
            qos: qos.filter(|_| under_kubepods),
        };
    }
    if under_kubepods {
        if let Some(qos) = QosClass::from_level(last) {
            return Token::Qos {
                qos,
                anchored: true,
            };
        }
    }
    Token::Other
}

/// `s` when it is a container ID: exactly 64 hex digits.
fn container_id(s: &str) -> Option<&str> {
    (s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

/// A pod UID as the kubelet writes it in a cgroup name, made canonical
/// (lowercase, dashed). Accepted: a UUID (dashes written as `_` in slice
/// names) or a static pod's 32-hex manifest hash. Anything else is not taken
/// for a pod, so a stray `pod...` directory does not invent one.
fn pod_uid(raw: &str) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = {
        let groups: Vec<&str> = uid.split('-').collect();
        groups.len() == 5
            && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups.iter().all(|g| is_hex(g))
    };
    let hash = uid.len() == 32 && is_hex(&uid);
    (uuid || hash).then_some(uid)
}

/// One process's classification and the fingerprint of the file it came
/// from.
#[derive(Debug, Clone)]
struct CacheEntry {
    classification: Classification,
    /// Hash of the `/proc/<pid>/cgroup` contents last read: a re-read that
    /// finds the same contents skips parsing. (64 bits; a collision would
    /// keep a stale answer until the next change, which is acceptable.)
    contents_hash: u64,
    stale: bool,
}

/// Classifications by pid, so `/proc/<pid>/cgroup` is read once per process
/// rather than once per sample.
///
/// A process can change cgroups (an exec into a container, a runtime moving
/// a process, systemd moving one into a scope), so entries do not last
/// forever: the process table calls [`refresh`](Self::refresh) when a
/// process execs and [`refresh_all`](Self::refresh_all) periodically, and
/// [`forget`](Self::forget) when a pid is reaped (pids are reused). A stale
/// entry is re-read on its next [`lookup`](Self::lookup).
#[derive(Debug, Default)]
pub struct ContainerCache {
    entries: HashMap<u32, CacheEntry>,
}

impl ContainerCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The classification of `pid`, reading its cgroup file with `read` when
    /// there is no entry or the entry is stale.
    ///
    /// When `read` fails (typically: the process has exited), a previous
    /// classification is kept and returned, since samples of a process that
    /// just exited still belong to its container; it is no longer marked
    /// stale, so a dead pid is not read again until the next refresh. With
    /// no previous classification, a failed read gives `None`.
    pub fn lookup(
        &mut self,
        pid: u32,
        read: impl FnOnce() -> io::Result<String>,
    ) -> Option<&Classification> {
        match self.entries.entry(pid) {
            Entry::Occupied(slot) => {
                let entry = slot.into_mut();
                if entry.stale {
                    entry.stale = false;
                    if let Ok(contents) = read() {
                        let hash = hash_contents(&contents);
                        if hash != entry.contents_hash {
                            entry.classification = classify_cgroup(&contents);
                            entry.contents_hash = hash;
                        }
                    }
                }
                Some(&entry.classification)
            }
            Entry::Vacant(slot) => {
                let contents = read().ok()?;
                let entry = slot.insert(CacheEntry {
                    classification: classify_cgroup(&contents),
                    contents_hash: hash_contents(&contents),
                    stale: false,
                });
                Some(&entry.classification)
            }
        }
    }

    /// The cached classification of `pid`, stale or not, without reading.
    pub fn get(&self, pid: u32) -> Option<&Classification> {
        self.entries.get(&pid).map(|e| &e.classification)
    }

    /// Marks `pid` to be re-read on its next lookup (after an exec).
    pub fn refresh(&mut self, pid: u32) {
        if let Some(entry) = self.entries.get_mut(&pid) {
            entry.stale = true;
        }
    }

    /// Marks every entry to be re-read on its next lookup (the periodic
    /// check for processes moved between cgroups).
    pub fn refresh_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.stale = true;
        }
    }

    /// Drops `pid` (after it exits and is reaped; its number may be reused).
    pub fn forget(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hash_contents(contents: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    contents.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2b9a0d8e4f6a7b5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a";

    #[test]
    fn cache_reads_once_until_refreshed() {
        let mut cache = ContainerCache::new();
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        let mut reads = 0;
        for _ in 0..3 {
            let got = cache.lookup(7, || {
                reads += 1;
                Ok(v2.clone())
            });
            assert!(matches!(got, Some(Classification::Container(_))));
        }
        assert_eq!(reads, 1);

        // Moved out of the container: seen only after a refresh.
        cache.refresh(7);
        let got = cache.lookup(7, || Ok("0::/user.slice\n".to_string()));
        assert_eq!(got, Some(&Classification::Host));

        // A failed re-read keeps the last answer and stops re-reading.
        cache.refresh_all();
        let got = cache.lookup(7, || Err(io::ErrorKind::NotFound.into()));
        assert_eq!(got, Some(&Classification::Host));
        let got = cache.lookup(7, || panic!("must not re-read"));
        assert_eq!(got, Some(&Classification::Host));

        cache.forget(7);
        assert!(cache.is_empty());
        assert_eq!(
            cache.lookup(7, || Err(io::ErrorKind::NotFound.into())),
            None
        );
        assert!(cache.get(7).is_none());
    }

    #[test]
    fn pod_uid_shapes() {
        assert_eq!(
            pod_uid("9692aa0e_748e_11e8_8dfa_76d458035df6").as_deref(),
            Some("9692aa0e-748e-11e8-8dfa-76d458035df6")
        );
        assert!(pod_uid("8daa50c3a64c9ff60bb9eab7b44b56fd").is_some());
        assert!(pod_uid("").is_none());
        assert!(pod_uid("s").is_none());
        assert!(pod_uid("9692aa0e_748e_11e8_8dfa_76d458035df").is_none());
    }

    #[test]
    fn runtime_names() {
        let all = [
            Runtime::Containerd,
            Runtime::CriO,
            Runtime::Docker,
            Runtime::Podman,
        ];
        let names: Vec<_> = all.iter().map(|r| r.to_string()).collect();
        assert_eq!(names, ["containerd", "cri-o", "docker", "podman"]);
    }
}
