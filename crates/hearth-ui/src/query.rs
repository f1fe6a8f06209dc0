//! What the page asks of the history: selections, time ranges, and the
//! answers (the list of what uses CPU, flame graphs, top functions, pprof).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use hearth_profile::{
    ContainerKey, Function, GroupBy, Line, Location, Mapping, Report, ReportSample, Resource,
};
use serde::Serialize;

use crate::history::{FrameId, FrameKind, Group, Snapshot, Window};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("unknown selection {0:?}: use all, host, pod:<key>, container:<id> or process:<container id or host>:<name>")]
    Selection(String),
    #[error("bad time range: {0}")]
    Range(String),
}

/// Hashing for the ids the history assigns (frames, stacks, groups,
/// nodes): a multiply and a rotate per word, several times cheaper than the
/// default SipHash on the maps queries fill. The ids are ours, not chosen
/// by whoever sends a query, so collision attacks are not a concern.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

const ID_HASH_K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(ID_HASH_K);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// What part of the machine a query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Processes outside any container.
    Host,
    /// A pod by [`pod_key`].
    Pod(String),
    /// A container by its bare id.
    Container(String),
    /// Processes of one name, in a container (by id) or on the host.
    Process {
        container: Option<String>,
        name: String,
    },
}

/// A pod's key: `namespace/name` when known, else `uid:<uid>`.
pub fn pod_key(group: &Group) -> Option<String> {
    let pod = group.pod.as_ref()?;
    match (&pod.namespace, &pod.name, &pod.uid) {
        (Some(ns), Some(name), _) => Some(format!("{ns}/{name}")),
        (_, _, Some(uid)) => Some(format!("uid:{uid}")),
        (None, Some(name), None) => Some(name.to_string()),
        (_, None, None) => None,
    }
}

impl Selection {
    /// Parses the `sel` query parameter (the `key` of an overview row).
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::Selection(s.chars().take(200).collect());
        if s.is_empty() || s == "all" {
            return Ok(Selection::All);
        }
        if s == "host" {
            return Ok(Selection::Host);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "pod" if !rest.is_empty() => Ok(Selection::Pod(rest.to_string())),
            "container" if !rest.is_empty() => Ok(Selection::Container(rest.to_string())),
            "process" => {
                let (container, name) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Selection::Process {
                    container: (container != "host").then(|| container.to_string()),
                    name: name.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }

    pub fn matches(&self, g: &Group) -> bool {
        match self {
            Selection::All => true,
            Selection::Host => g.container.is_none(),
            Selection::Pod(key) => pod_key(g).as_deref() == Some(key.as_str()),
            Selection::Container(id) => g.container.as_ref().is_some_and(|c| *c.id == **id),
            Selection::Process { container, name } => {
                *g.process == **name && g.container.as_ref().map(|c| &*c.id) == container.as_deref()
            }
        }
    }

    /// Frames the flame graph shows between its root and the process's own
    /// stack: the levels of grouping below the selection.
    fn group_frames(&self, g: &Group) -> Vec<String> {
        let mut out = Vec::with_capacity(3);
        if matches!(self, Selection::All) {
            match (pod_label(g), &g.container) {
                (Some(pod), _) => out.push(pod),
                (None, Some(c)) => out.push(container_label(c)),
                (None, None) => out.push("[host]".to_string()),
            }
        }
        if matches!(self, Selection::All | Selection::Pod(_)) && g.pod.is_some() {
            if let Some(c) = &g.container {
                out.push(container_label(c));
            }
        }
        if !matches!(self, Selection::Process { .. }) {
            out.push(g.process.to_string());
        }
        out
    }
}

/// The pod's label, as the exported flame graphs name it.
fn pod_label(g: &Group) -> Option<String> {
    let pod = g.pod.as_ref()?;
    Some(
        hearth_export::grouping::pod_label(
            pod.namespace.as_deref(),
            pod.name.as_deref(),
            pod.uid.as_deref(),
        )
        .unwrap_or_else(|| "[pod]".to_string()),
    )
}

/// The container's label, as the exported flame graphs name it.
fn container_label(c: &crate::history::ContainerRef) -> String {
    hearth_export::grouping::container_label(c.name.as_deref(), Some(&c.id)).unwrap_or_default()
}

/// Windows that overlap `[from, to)`, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ns: u64,
    pub to_ns: u64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        from_ns: 0,
        to_ns: u64::MAX,
    };

    /// From the query's `from`/`to` (milliseconds since the epoch) or
    /// `last` (seconds before the newest window's end).
    pub fn from_params(
        history: &Snapshot,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        last_s: Option<f64>,
    ) -> Result<Self, QueryError> {
        let newest = history.windows().next_back().map_or(0, |w| w.end_unix_ns);
        if let Some(last) = last_s {
            if !(last.is_finite() && last > 0.0) {
                return Err(QueryError::Range(format!(
                    "last={last} is not a positive number of seconds"
                )));
            }
            let span = (last * 1e9).min(u64::MAX as f64) as u64;
            return Ok(TimeRange {
                from_ns: newest.saturating_sub(span),
                to_ns: u64::MAX,
            });
        }
        let ms = |v: u64| v.saturating_mul(1_000_000);
        let range = TimeRange {
            from_ns: from_ms.map_or(0, ms),
            to_ns: to_ms.map_or(u64::MAX, ms),
        };
        if range.from_ns >= range.to_ns {
            return Err(QueryError::Range("from must be before to".into()));
        }
        Ok(range)
    }

    pub fn overlaps(&self, w: &Window) -> bool {
        w.end_unix_ns > self.from_ns && w.start_unix_ns < self.to_ns
    }
}

fn windows_in(history: &Snapshot, range: TimeRange) -> impl Iterator<Item = &Window> {
    history.windows().filter(move |w| range.overlaps(w))
}

/// A line of the list of what uses CPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// The selection this row stands for (`sel` parameter).
    pub key: String,
    /// `pod`, `container`, `host` or `process`.
    pub kind: &'static str,
    pub label: String,
    /// Nesting level in the list: 0 for pods, containers outside pods and
    /// the host; processes one below their container.
    pub depth: u8,
    pub samples: u64,
    /// Share of all samples in the range.
    pub share: f64,
    /// Distinct PIDs seen (processes) or processes (other rows).
    pub processes: usize,
    /// The PID when there was just one.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    pub start_ms: u64,
    pub end_ms: u64,
    pub samples: u64,
    /// Samples of the selection.
    pub selected: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overview {
    /// Start of the oldest and end of the newest window held, ms.
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub retention_s: f64,
    pub frequency_hz: u64,
    pub total_samples: u64,
    pub lost_samples: u64,
    pub rows: Vec<Row>,
    /// Every window held, whatever the range.
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Default)]
struct Tally {
    samples: u64,
    pids: std::collections::HashSet<u32>,
}

impl Tally {
    fn add(&mut self, pid: u32, n: u64) {
        self.samples += n;
        self.pids.insert(pid);
    }
}

/// The list of what used CPU in `range`, largest first, processes under
/// their container and containers under their pod.
pub fn overview(history: &Snapshot, range: TimeRange, selection: &Selection) -> Overview {
    // (pod key, container id, process name)
    type ProcessKey = (Option<String>, Option<Arc<str>>, Arc<str>);
    let mut by_process: HashMap<ProcessKey, Tally> = HashMap::new();
    let mut pod_labels: HashMap<String, String> = HashMap::new();
    let mut container_labels: HashMap<Arc<str>, String> = HashMap::new();
    // Samples per group (process) first: one map update per entry, and
    // the rest once per group.
    let mut per_group: IdMap<u32, u64> = IdMap::default();
    let mut total = 0u64;
    let mut lost = 0u64;
    for w in windows_in(history, range) {
        lost += w.lost_samples;
        for e in &w.entries {
            *per_group.entry(e.group).or_default() += u64::from(e.count);
            total += u64::from(e.count);
        }
    }
    for (group, samples) in per_group {
        let Some(g) = history.group(group) else {
            continue;
        };
        let pod = pod_key(g);
        if let Some(p) = &pod {
            pod_labels
                .entry(p.clone())
                .or_insert_with(|| pod_label(g).unwrap_or_default());
        }
        if let Some(c) = &g.container {
            container_labels
                .entry(c.id.clone())
                .or_insert_with(|| container_label(c));
        }
        let key = (
            pod,
            g.container.as_ref().map(|c| c.id.clone()),
            g.process.clone(),
        );
        by_process.entry(key).or_default().add(g.pid, samples);
    }
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };

    // Roll processes up into containers, containers into pods.
    type ContainerProcs = Vec<(Arc<str>, Tally)>;
    let mut pods: HashMap<Option<String>, HashMap<Option<Arc<str>>, ContainerProcs>> =
        HashMap::new();
    for ((pod, container, name), tally) in by_process {
        pods.entry(pod)
            .or_default()
            .entry(container)
            .or_default()
            .push((name, tally));
    }
    let sum_procs = |procs: &ContainerProcs| procs.iter().map(|(_, t)| t.samples).sum::<u64>();
    let mut rows = Vec::new();
    let push_processes = |rows: &mut Vec<Row>,
                          container: &Option<Arc<str>>,
                          mut procs: ContainerProcs,
                          depth: u8| {
        procs.sort_by(|a, b| b.1.samples.cmp(&a.1.samples).then_with(|| a.0.cmp(&b.0)));
        for (name, t) in procs {
            rows.push(Row {
                key: format!("process:{}:{name}", container.as_deref().unwrap_or("host")),
                kind: "process",
                label: name.to_string(),
                depth,
                samples: t.samples,
                share: share(t.samples),
                processes: t.pids.len(),
                pid: if t.pids.len() == 1 {
                    t.pids.iter().next().copied()
                } else {
                    None
                },
            });
        }
    };
    // Top level: pods, containers outside pods, and the host, by samples.
    enum Top {
        Pod(String, HashMap<Option<Arc<str>>, ContainerProcs>),
        Container(Arc<str>, ContainerProcs),
        Host(ContainerProcs),
    }
    let mut tops: Vec<(u64, Top)> = Vec::new();
    for (pod, containers) in pods {
        if let Some(pod) = pod {
            let n = containers.values().map(&sum_procs).sum();
            tops.push((n, Top::Pod(pod, containers)));
            continue;
        }
        for (container, procs) in containers {
            let n = sum_procs(&procs);
            match container {
                Some(id) => tops.push((n, Top::Container(id, procs))),
                None => tops.push((n, Top::Host(procs))),
            }
        }
    }
    let top_key = |t: &Top| match t {
        Top::Pod(p, _) => format!("0{p}"),
        Top::Container(id, _) => format!("1{id}"),
        Top::Host(_) => "2".to_string(),
    };
    tops.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| top_key(&a.1).cmp(&top_key(&b.1)))
    });
    let has_groups = tops.iter().any(|(_, t)| !matches!(t, Top::Host(_)));
    for (n, top) in tops {
        match top {
            Top::Pod(pod, containers) => {
                rows.push(Row {
                    key: format!("pod:{pod}"),
                    kind: "pod",
                    label: pod_labels.get(&pod).cloned().unwrap_or_else(|| pod.clone()),
                    depth: 0,
                    samples: n,
                    share: share(n),
                    processes: containers.values().map(Vec::len).sum(),
                    pid: None,
                });
                let mut containers: Vec<_> = containers.into_iter().collect();
                containers.sort_by(|a, b| {
                    sum_procs(&b.1)
                        .cmp(&sum_procs(&a.1))
                        .then_with(|| a.0.cmp(&b.0))
                });
                for (container, procs) in containers {
                    let c = sum_procs(&procs);
                    if let Some(id) = &container {
                        rows.push(Row {
                            key: format!("container:{id}"),
                            kind: "container",
                            label: container_labels.get(id).cloned().unwrap_or_default(),
                            depth: 1,
                            samples: c,
                            share: share(c),
                            processes: procs.len(),
                            pid: None,
                        });
                    }
                    push_processes(&mut rows, &container, procs, 2);
                }
            }
            Top::Container(id, procs) => {
                rows.push(Row {
                    key: format!("container:{id}"),
                    kind: "container",
                    label: container_labels.get(&id).cloned().unwrap_or_default(),
                    depth: 0,
                    samples: n,
                    share: share(n),
                    processes: procs.len(),
                    pid: None,
                });
                push_processes(&mut rows, &Some(id), procs, 1);
            }
            Top::Host(procs) => {
                // A host row only helps when there are containers beside it.
                let depth = if has_groups {
                    rows.push(Row {
                        key: "host".into(),
                        kind: "host",
                        label: "host (outside containers)".into(),
                        depth: 0,
                        samples: n,
                        share: share(n),
                        processes: procs.len(),
                        pid: None,
                    });
                    1
                } else {
                    0
                };
                push_processes(&mut rows, &None, procs, depth);
            }
        }
    }

    let mut in_selection = group_matcher(history, selection);
    let mut selected_of = |w: &Window| -> u64 {
        if *selection == Selection::All {
            return w.samples;
        }
        w.entries
            .iter()
            .filter(|e| in_selection(e.group))
            .map(|e| u64::from(e.count))
            .sum()
    };
    let timeline = history
        .windows()
        .map(|w| TimelinePoint {
            start_ms: w.start_unix_ns / 1_000_000,
            end_ms: w.end_unix_ns / 1_000_000,
            samples: w.samples,
            selected: selected_of(w),
        })
        .collect();
    Overview {
        oldest_ms: history
            .windows()
            .next()
            .map_or(0, |w| w.start_unix_ns / 1_000_000),
        newest_ms: history
            .windows()
            .next_back()
            .map_or(0, |w| w.end_unix_ns / 1_000_000),
        retention_s: history.config().retention.as_secs_f64(),
        frequency_hz: history.windows().next_back().map_or(0, |w| w.frequency_hz),
        total_samples: total,
        lost_samples: lost,
        rows,
        timeline,
    }
}

/// Whether a group is in the selection, worked out once per group: a
/// pod selection builds the pod's key to compare it.
fn group_matcher<'a>(history: &'a Snapshot, sel: &'a Selection) -> impl FnMut(u32) -> bool + 'a {
    let mut known: IdMap<u32, bool> = IdMap::default();
    move |group| {
        *known
            .entry(group)
            .or_insert_with(|| history.group(group).is_some_and(|g| sel.matches(g)))
    }
}

/// Sums a selection's samples over a range, per (group, stack).
fn collect(history: &Snapshot, range: TimeRange, sel: &Selection) -> IdMap<(u32, u32), u64> {
    let mut in_selection = group_matcher(history, sel);
    let mut out: IdMap<(u32, u32), u64> = IdMap::default();
    for w in windows_in(history, range) {
        for e in &w.entries {
            if in_selection(e.group) {
                *out.entry((e.group, e.stack)).or_default() += u64::from(e.count);
            }
        }
    }
    out
}

/// Kind of a flame graph frame, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Root,
    /// Pod, container or process.
    Group,
    User,
    Kernel,
}

/// A flame graph as nested nodes. `names` holds each distinct frame name
/// once; nodes refer to it by index, which keeps big graphs small on the
/// wire.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Flame {
    pub names: Vec<String>,
    pub root: FlameNode,
    /// Samples of the (comparison) range.
    pub total: u64,
    /// Samples of the baseline range (differential graphs only).
    pub base_total: u64,
    /// Samples in frames too small to draw, left out of the tree (they
    /// still count in their parents' widths).
    pub pruned: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlameNode {
    /// Index into [`Flame::names`].
    pub n: u32,
    pub k: NodeKind,
    /// Samples in this frame and below.
    pub v: u64,
    /// Samples with this frame as the leaf.
    pub s: u64,
    /// Baseline samples (differential graphs only).
    #[serde(skip_serializing_if = "is_zero")]
    pub b: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub c: Vec<FlameNode>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Frames whose share of the graph is below this are left out.
pub const PRUNE_BELOW: f64 = 1.0 / 10_000.0;

#[derive(Default)]
struct Trie {
    names: Vec<String>,
    name_ids: HashMap<(String, NodeKind), u32>,
    /// Arena: name, kind, value, self, base.
    nodes: Vec<(u32, NodeKind, u64, u64, u64)>,
    children: IdMap<(u32, u32), u32>,
    kids: Vec<Vec<u32>>,
}

impl Trie {
    fn new(root_name: &str) -> Self {
        let mut t = Trie::default();
        let n = t.name(root_name, NodeKind::Root);
        t.nodes.push((n, NodeKind::Root, 0, 0, 0));
        t.kids.push(Vec::new());
        t
    }

    fn name(&mut self, name: &str, kind: NodeKind) -> u32 {
        if let Some(&id) = self.name_ids.get(&(name.to_string(), kind)) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.name_ids.insert((name.to_string(), kind), id);
        id
    }

    fn child(&mut self, parent: u32, name: u32, kind: NodeKind) -> u32 {
        if let Some(&c) = self.children.get(&(parent, name)) {
            return c;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push((name, kind, 0, 0, 0));
        self.kids.push(Vec::new());
        self.kids[parent as usize].push(id);
        self.children.insert((parent, name), id);
        id
    }

    fn build(&self, id: u32, min: u64, pruned: &mut u64) -> FlameNode {
        let (n, k, v, s, b) = self.nodes[id as usize];
        let mut c: Vec<FlameNode> = Vec::new();
        for &kid in &self.kids[id as usize] {
            let (_, _, kv, _, kb) = self.nodes[kid as usize];
            if kv.max(kb) < min {
                *pruned += kv;
                continue;
            }
            c.push(self.build(kid, min, pruned));
        }
        // Heaviest first; equal ones by name, so that answers do not depend
        // on the order the tables were built in.
        c.sort_by(|a, b| {
            (b.v + b.b)
                .cmp(&(a.v + a.b))
                .then_with(|| self.names[a.n as usize].cmp(&self.names[b.n as usize]))
        });
        FlameNode { n, k, v, s, b, c }
    }
}

/// Adds one range's samples to the trie (`base` selects the baseline value).
fn add_to_trie(
    trie: &mut Trie,
    history: &Snapshot,
    sel: &Selection,
    counts: IdMap<(u32, u32), u64>,
    base: bool,
) -> u64 {
    let mut frame_names: IdMap<FrameId, (u32, NodeKind)> = IdMap::default();
    // Group -> the trie node its grouping frames lead to. Processes that
    // share those frames (say, 800 short-lived `cc1`) share the node, so
    // each of their stacks is walked once, not once per process.
    let mut group_end: IdMap<u32, u32> = IdMap::default();
    // Path-end node -> the nodes from the root to it.
    let mut chains: IdMap<u32, Vec<u32>> = IdMap::default();
    let mut per_end: IdMap<(u32, u32), u64> = IdMap::default();
    let mut total = 0;
    for ((group, stack), count) in counts {
        total += count;
        let end = match group_end.get(&group) {
            Some(&e) => e,
            None => {
                let frames = history
                    .group(group)
                    .map(|g| sel.group_frames(g))
                    .unwrap_or_default();
                let mut chain = vec![0u32];
                let mut node = 0u32;
                for f in &frames {
                    let name = trie.name(f, NodeKind::Group);
                    node = trie.child(node, name, NodeKind::Group);
                    chain.push(node);
                }
                chains.entry(node).or_insert(chain);
                group_end.insert(group, node);
                node
            }
        };
        *per_end.entry((end, stack)).or_default() += count;
    }
    let bump = |trie: &mut Trie, node: u32, count: u64| {
        let e = &mut trie.nodes[node as usize];
        if base {
            e.4 += count;
        } else {
            e.2 += count;
        }
    };
    for ((end, stack), count) in per_end {
        for &n in chains.get(&end).map_or(&[][..], Vec::as_slice) {
            bump(trie, n, count);
        }
        let mut node = end;
        for &f in history.stack(stack) {
            let (name, kind) = match frame_names.get(&f) {
                Some(&nk) => nk,
                None => {
                    let (label, kind) = match history.frame(f) {
                        Some(fr) => (
                            &*fr.name,
                            match fr.kind {
                                FrameKind::User => NodeKind::User,
                                FrameKind::Kernel => NodeKind::Kernel,
                            },
                        ),
                        None => ("[unknown]", NodeKind::User),
                    };
                    let n = trie.name(label, kind);
                    frame_names.insert(f, (n, kind));
                    (n, kind)
                }
            };
            node = trie.child(node, name, kind);
            bump(trie, node, count);
        }
        if !base {
            trie.nodes[node as usize].3 += count;
        }
    }
    total
}

fn selection_label(sel: &Selection) -> String {
    match sel {
        Selection::All => "all".into(),
        Selection::Host => "host".into(),
        Selection::Pod(k) => k.clone(),
        Selection::Container(id) => {
            hearth_export::grouping::container_label(None, Some(id)).unwrap_or_default()
        }
        Selection::Process { name, .. } => name.clone(),
    }
}

/// The flame graph of a selection over a range.
pub fn flame(history: &Snapshot, sel: &Selection, range: TimeRange) -> Flame {
    let mut trie = Trie::new(&selection_label(sel));
    let counts = collect(history, range, sel);
    let total = add_to_trie(&mut trie, history, sel, counts, false);
    finish(trie, total, 0)
}

/// A differential flame graph: `range` against `base`.
pub fn diff(history: &Snapshot, sel: &Selection, range: TimeRange, base: TimeRange) -> Flame {
    let mut trie = Trie::new(&selection_label(sel));
    let base_total = add_to_trie(&mut trie, history, sel, collect(history, base, sel), true);
    let total = add_to_trie(&mut trie, history, sel, collect(history, range, sel), false);
    finish(trie, total, base_total)
}

fn finish(trie: Trie, total: u64, base_total: u64) -> Flame {
    let min = ((total.max(base_total) as f64) * PRUNE_BELOW).floor() as u64;
    let mut pruned = 0;
    let root = trie.build(0, min.max(1), &mut pruned);
    Flame {
        names: trie.names,
        root,
        total,
        base_total,
        pruned,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopFunction {
    pub name: String,
    pub kind: FrameKind,
    /// Samples with the function as the leaf.
    pub self_samples: u64,
    /// Samples with the function anywhere on the stack.
    pub total_samples: u64,
    pub self_share: f64,
    pub total_share: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Top {
    pub total: u64,
    pub functions: Vec<TopFunction>,
}

/// Functions of a selection by self samples (then total), at most `limit`.
pub fn top(history: &Snapshot, sel: &Selection, range: TimeRange, limit: usize) -> Top {
    // Each distinct stack once, whatever processes it ran in.
    let mut per_stack: IdMap<u32, u64> = IdMap::default();
    let mut total = 0u64;
    for ((_, stack), count) in collect(history, range, sel) {
        *per_stack.entry(stack).or_default() += count;
        total += count;
    }
    // One line per function (name and kind), whatever file it came from:
    // frames are mapped to their function once, and a function's total
    // counts once per stack (recursion, or one name from two files).
    let mut function_of: IdMap<FrameId, Option<usize>> = IdMap::default();
    let mut index: HashMap<(Arc<str>, FrameKind), usize> = HashMap::new();
    // (self, total) of each function of `index`.
    let mut counts: Vec<(u64, u64)> = Vec::new();
    let mut seen: Vec<usize> = Vec::new();
    for (stack, count) in per_stack {
        seen.clear();
        let frames = history.stack(stack);
        for (i, &f) in frames.iter().enumerate() {
            let function = *function_of.entry(f).or_insert_with(|| {
                let frame = history.frame(f)?;
                let key = (frame.name.clone(), frame.kind);
                Some(*index.entry(key).or_insert_with(|| {
                    counts.push((0, 0));
                    counts.len() - 1
                }))
            });
            let Some(function) = function else {
                continue;
            };
            let e = &mut counts[function];
            if i + 1 == frames.len() {
                e.0 += count;
            }
            if !seen.contains(&function) {
                e.1 += count;
                seen.push(function);
            }
        }
    }
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let mut functions: Vec<TopFunction> = index
        .into_iter()
        .map(|((name, kind), i)| {
            let (s, t) = counts[i];
            TopFunction {
                name: name.to_string(),
                kind,
                self_samples: s,
                total_samples: t,
                self_share: share(s),
                total_share: share(t),
            }
        })
        .collect();
    functions.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then_with(|| a.name.cmp(&b.name))
    });
    functions.truncate(limit);
    Top { total, functions }
}

/// A report of a selection over a range, for the pprof download. Each
/// frame becomes one location (the history keeps functions, not
/// addresses), and each process keeps its PID and container.
pub fn report(history: &Snapshot, sel: &Selection, range: TimeRange) -> Report {
    let mut report = Report {
        group_by: GroupBy::Process,
        ..Default::default()
    };
    let in_range: Vec<&Window> = windows_in(history, range).collect();
    report.start_unix_ns = in_range.first().map_or(0, |w| w.start_unix_ns);
    report.duration_ns = in_range
        .last()
        .map_or(0, |w| w.end_unix_ns.saturating_sub(report.start_unix_ns));
    report.frequency_hz = in_range.last().map_or(0, |w| w.frequency_hz);
    report.lost_samples = in_range.iter().map(|w| w.lost_samples).sum();
    report.resources.push(Resource::default());

    let mut locations: HashMap<FrameId, usize> = HashMap::new();
    let mut functions: HashMap<(Arc<str>, FrameKind), usize> = HashMap::new();
    let mut mappings: HashMap<(Arc<str>, bool), usize> = HashMap::new();
    let mut resources: HashMap<Arc<str>, usize> = HashMap::new();
    let mut counts: Vec<((u32, u32), u64)> = collect(history, range, sel).into_iter().collect();
    counts.sort_unstable();
    for ((group, stack), count) in counts {
        let Some(g) = history.group(group) else {
            continue;
        };
        let mut sample_stack = Vec::new();
        for &f in history.stack(stack).iter().rev() {
            let Some(frame) = history.frame(f) else {
                continue;
            };
            let loc = *locations.entry(f).or_insert_with(|| {
                let kernel = frame.kind == FrameKind::Kernel;
                let function = *functions
                    .entry((frame.name.clone(), frame.kind))
                    .or_insert_with(|| {
                        report.functions.push(Function {
                            name: frame.name.clone(),
                            file: None,
                        });
                        report.functions.len() - 1
                    });
                let mapping = frame.mapping.clone().map(|path| {
                    *mappings.entry((path.clone(), kernel)).or_insert_with(|| {
                        report.mappings.push(Mapping {
                            path,
                            build_id: None,
                            kernel,
                        });
                        report.mappings.len() - 1
                    })
                });
                report.locations.push(Location {
                    mapping,
                    address: 0,
                    lines: vec![Line { function, line: 0 }],
                    kernel,
                });
                report.locations.len() - 1
            });
            sample_stack.push(loc);
        }
        let resource = match &g.container {
            None => 0,
            Some(c) => *resources.entry(c.id.clone()).or_insert_with(|| {
                let mut attributes = vec![("container.id".to_string(), c.id.to_string())];
                let mut push = |k: &str, v: &Option<Arc<str>>| {
                    if let Some(v) = v {
                        attributes.push((k.to_string(), v.to_string()));
                    }
                };
                push("container.runtime.name", &c.runtime);
                push("k8s.container.name", &c.name);
                if let Some(p) = &g.pod {
                    push("k8s.namespace.name", &p.namespace);
                    push("k8s.pod.name", &p.name);
                    push("k8s.pod.uid", &p.uid);
                }
                report.resources.push(Resource {
                    container: Some(Arc::new(ContainerKey {
                        id: c.id.clone(),
                        runtime: c.runtime.clone(),
                        pod_uid: g.pod.as_ref().and_then(|p| p.uid.clone()),
                    })),
                    attributes,
                });
                report.resources.len() - 1
            }),
        };
        report.samples.push(ReportSample {
            stack: sample_stack,
            pid: g.pid,
            tid: g.pid,
            process_name: g.process.clone(),
            thread_name: g.process.clone(),
            resource,
            count,
        });
    }
    report
}
