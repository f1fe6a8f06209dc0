//! Recent profiles, kept in memory for the page.
//!
//! Each reporting window becomes a list of `(group, stack, count)` entries;
//! frames, stacks and groups are interned once for the whole history, so
//! fifteen minutes of a busy machine cost little more than its distinct
//! stacks. Two bounds hold at all times:
//! * age: windows that ended more than `retention` before the newest one
//!   are dropped;
//! * bytes: when the estimated size passes `max_bytes`, the oldest windows
//!   are dropped until it fits (the newest window is always kept).
//!
//! Interned tables only grow between compactions; a compaction rebuilds
//! them from the windows still held, so frames and stacks of processes
//! that are gone are forgotten too.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use hearth_profile::Report;

/// Index into [`History::frames`].
pub type FrameId = u32;
/// Index into [`History::stacks`].
pub type StackId = u32;
/// Index into [`History::groups`].
pub type GroupId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    User,
    Kernel,
}

/// One function of a stack (inlined functions are frames of their own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    pub name: Arc<str>,
    pub kind: FrameKind,
    /// The file the code came from, when known.
    pub mapping: Option<Arc<str>>,
}

/// The pod a process ran in, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: Option<Arc<str>>,
    pub name: Option<Arc<str>>,
    pub uid: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Bare container id.
    pub id: Arc<str>,
    /// `k8s.container.name`, when the pod is known.
    pub name: Option<Arc<str>>,
    pub runtime: Option<Arc<str>>,
}

/// Where samples come from: a process, with its container and pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    pub pod: Option<PodRef>,
    pub container: Option<ContainerRef>,
    pub pid: u32,
    pub process: Arc<str>,
}

/// Samples of one stack in one process during a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub group: GroupId,
    pub stack: StackId,
    pub count: u32,
}

/// One reporting window.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub frequency_hz: u64,
    pub entries: Vec<Entry>,
    pub samples: u64,
    pub lost_samples: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// How far back windows are kept (default 15 minutes).
    pub retention: Duration,
    /// Upper bound of the estimated memory held (default 256 MiB).
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(15 * 60),
            max_bytes: 256 << 20,
        }
    }
}

/// Counters of what the bounds did, for logs and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub windows_expired: u64,
    /// Windows dropped early because the byte bound was reached.
    pub windows_evicted: u64,
    pub compactions: u64,
}

/// Estimated cost of an interned value beyond its payload: the map's slot
/// (a fat pointer and an id, at the map's load factor and growth slack),
/// the vector's slot, and the `Arc` header. Calibrated against the heap
/// actually held (see tests/memory_bound.rs).
const INTERN_OVERHEAD: usize = 112;
/// Heap cost of a shared string beyond its bytes (`Arc` header, allocator
/// rounding).
const STR_OVERHEAD: usize = 24;
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
const WINDOW_OVERHEAD: usize = std::mem::size_of::<Window>() + 16;

/// Items a chunk of a [`Table`] holds.
const CHUNK: usize = 1024;

/// An append-only list of interned values, in shared chunks of [`CHUNK`]:
/// cloning it for a [`Snapshot`] copies one pointer per chunk. Appending
/// while a snapshot holds the last chunk copies that chunk only (at most
/// `CHUNK` pointers); full chunks are never copied.
#[derive(Debug)]
struct Table<T: ?Sized> {
    chunks: Vec<Arc<Vec<Arc<T>>>>,
    len: usize,
}

impl<T: ?Sized> Default for Table<T> {
    fn default() -> Self {
        Table {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: ?Sized> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T: ?Sized> Table<T> {
    fn push(&mut self, item: Arc<T>) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            let chunk = Arc::make_mut(last);
            chunk.reserve_exact(CHUNK.saturating_sub(chunk.len()));
            chunk.push(item);
            self.len += 1;
        }
    }

    fn get(&self, id: u32) -> Option<&T> {
        let i = id as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK).map(|a| &**a)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Values stored once, referred to by index: the ids (which only the
/// writer needs) and the table (which snapshots share).
#[derive(Debug)]
struct Interner<T: ?Sized + Hash + Eq> {
    ids: HashMap<Arc<T>, u32>,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The id of `value` in `table`, and whether it was new.
    fn intern<Q>(
        &mut self,
        table: &mut Table<T>,
        value: &Q,
        make: impl FnOnce(&Q) -> Arc<T>,
    ) -> (u32, bool)
    where
        Arc<T>: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        if let Some(&id) = self.ids.get(value) {
            return (id, false);
        }
        let id = u32::try_from(table.len()).unwrap_or(u32::MAX);
        let item = make(value);
        self.ids.insert(item.clone(), id);
        table.push(item);
        (id, true)
    }
}

fn frame_bytes(f: &Frame) -> usize {
    // Mapping paths are shared by many frames: counted as if not.
    INTERN_OVERHEAD
        + std::mem::size_of::<Frame>()
        + STR_OVERHEAD
        + f.name.len()
        + f.mapping.as_ref().map_or(0, |m| m.len())
}

fn stack_bytes(s: &[FrameId]) -> usize {
    INTERN_OVERHEAD + std::mem::size_of_val(s)
}

fn group_bytes(g: &Group) -> usize {
    let opt = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| STR_OVERHEAD + s.len());
    INTERN_OVERHEAD
        + std::mem::size_of::<Group>()
        + STR_OVERHEAD
        + g.process.len()
        + g.pod
            .as_ref()
            .map_or(0, |p| opt(&p.namespace) + opt(&p.name) + opt(&p.uid))
        + g.container.as_ref().map_or(0, |c| {
            STR_OVERHEAD + c.id.len() + opt(&c.name) + opt(&c.runtime)
        })
}

fn window_bytes(w: &Window) -> usize {
    WINDOW_OVERHEAD + w.entries.capacity() * ENTRY_BYTES
}

/// What queries read: the windows and the tables they refer to, shared
/// with the [`History`] they came from.
///
/// Taking one ([`History::snapshot`]) copies a pointer per window and per
/// chunk of [`CHUNK`] table entries, so a query holds the history's lock
/// only for that and computes without it: the reporter never waits for a
/// query. A snapshot costs no memory of its own until the history lets go
/// of what it shares: a window evicted, or a compaction that rewrites the
/// windows and tables, leaves the old ones to the snapshot until the query
/// ends. With at most a few queries at once (the server bounds them) that
/// is a few generations of the history at worst, and only while they run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    config: HistoryConfig,
    frames: Table<Frame>,
    stacks: Table<[FrameId]>,
    groups: Table<Group>,
    windows: VecDeque<Arc<Window>>,
    table_bytes: usize,
    window_bytes: usize,
    stats: HistoryStats,
}

impl Snapshot {
    pub fn config(&self) -> HistoryConfig {
        self.config
    }

    /// Estimated bytes held: tables plus windows.
    pub fn bytes(&self) -> usize {
        self.table_bytes + self.window_bytes
    }

    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    pub fn windows(&self) -> impl DoubleEndedIterator<Item = &Window> + ExactSizeIterator {
        self.windows.iter().map(|w| &**w)
    }

    pub fn frame(&self, id: FrameId) -> Option<&Frame> {
        self.frames.get(id)
    }

    /// Frames of a stack, root first.
    pub fn stack(&self, id: StackId) -> &[FrameId] {
        self.stacks.get(id).unwrap_or(&[])
    }

    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    /// Number of interned frames, stacks and groups.
    pub fn table_sizes(&self) -> (usize, usize, usize) {
        (self.frames.len(), self.stacks.len(), self.groups.len())
    }
}

/// The history's writer: the [`Snapshot`] it keeps current (every read
/// goes through it, by `Deref`) and the maps that intern new values.
#[derive(Debug)]
pub struct History {
    view: Snapshot,
    frame_ids: Interner<Frame>,
    stack_ids: Interner<[FrameId]>,
    group_ids: Interner<Group>,
    /// Table entries right after the last compaction.
    live_after_compaction: usize,
}

impl std::ops::Deref for History {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.view
    }
}

impl History {
    pub fn new(config: HistoryConfig) -> Self {
        History {
            view: Snapshot {
                config,
                frames: Table::default(),
                stacks: Table::default(),
                groups: Table::default(),
                windows: VecDeque::new(),
                table_bytes: 0,
                window_bytes: 0,
                stats: HistoryStats::default(),
            },
            frame_ids: Interner::default(),
            stack_ids: Interner::default(),
            group_ids: Interner::default(),
            live_after_compaction: 0,
        }
    }

    /// A copy of what queries read that shares everything with the
    /// history: cheap to take under the lock (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        self.view.clone()
    }

    /// Adds one window's report, then applies the bounds.
    pub fn ingest(&mut self, report: &Report) {
        let mut counts: HashMap<(GroupId, StackId), u64> = HashMap::new();
        let mut stack = Vec::new();
        let mut group_of_resource: HashMap<(usize, u32, &str), GroupId> = HashMap::new();
        for sample in &report.samples {
            stack.clear();
            for &loc in sample.stack.iter().rev() {
                let Some(location) = report.locations.get(loc) else {
                    continue;
                };
                let mapping = location
                    .mapping
                    .and_then(|m| report.mappings.get(m))
                    .map(|m| m.path.clone());
                let kind = if location.kernel {
                    FrameKind::Kernel
                } else {
                    FrameKind::User
                };
                for line in location.lines.iter().rev() {
                    let Some(function) = report.functions.get(line.function) else {
                        continue;
                    };
                    let frame = Frame {
                        name: function.name.clone(),
                        kind,
                        mapping: mapping.clone(),
                    };
                    let (id, new) = self
                        .frame_ids
                        .intern(&mut self.view.frames, &frame, |f| Arc::new(f.clone()));
                    if new {
                        self.view.table_bytes += frame_bytes(&frame);
                    }
                    stack.push(id);
                }
            }
            let (stack_id, new) =
                self.stack_ids
                    .intern(&mut self.view.stacks, stack.as_slice(), |s: &[u32]| {
                        Arc::from(s)
                    });
            if new {
                self.view.table_bytes += stack_bytes(&stack);
            }
            let key = (sample.resource, sample.pid, &*sample.process_name);
            let group_id = match group_of_resource.get(&key) {
                Some(&g) => g,
                None => {
                    let group =
                        group_for(report, sample.resource, sample.pid, &sample.process_name);
                    let (g, new) = self
                        .group_ids
                        .intern(&mut self.view.groups, &group, |g| Arc::new(g.clone()));
                    if new {
                        self.view.table_bytes += group_bytes(&group);
                    }
                    group_of_resource.insert(key, g);
                    g
                }
            };
            *counts.entry((group_id, stack_id)).or_default() += sample.count;
        }
        let mut entries: Vec<Entry> = counts
            .into_iter()
            .map(|((group, stack), count)| Entry {
                group,
                stack,
                count: u32::try_from(count).unwrap_or(u32::MAX),
            })
            .collect();
        entries.sort_unstable_by_key(|e| (e.group, e.stack));
        entries.shrink_to_fit();
        let window = Window {
            start_unix_ns: report.start_unix_ns,
            end_unix_ns: report.start_unix_ns.saturating_add(report.duration_ns),
            frequency_hz: report.frequency_hz,
            samples: entries.iter().map(|e| u64::from(e.count)).sum(),
            lost_samples: report.lost_samples,
            entries,
        };
        self.view.window_bytes += window_bytes(&window);
        // Windows arrive in order; a clock step backwards must not make an
        // older window look newest, so keep the deque sorted.
        let at = self
            .windows
            .partition_point(|w| w.end_unix_ns <= window.end_unix_ns);
        self.view.windows.insert(at, Arc::new(window));
        self.enforce_bounds();
    }

    fn enforce_bounds(&mut self) {
        let newest = self.view.windows.back().map_or(0, |w| w.end_unix_ns);
        let retention = u64::try_from(self.view.config.retention.as_nanos()).unwrap_or(u64::MAX);
        let cutoff = newest.saturating_sub(retention);
        while self.view.windows.len() > 1
            && self
                .windows
                .front()
                .is_some_and(|w| w.end_unix_ns <= cutoff)
        {
            self.pop_oldest();
            self.view.stats.windows_expired += 1;
        }
        let live = self.view.frames.len() + self.view.stacks.len() + self.view.groups.len();
        let grown = live > 2 * self.live_after_compaction + 4096;
        if grown {
            self.compact();
        }
        if self.bytes() > self.view.config.max_bytes {
            // Tables may hold what expired windows used: drop that first
            // (unless that was just done).
            if !grown {
                self.compact();
            }
            let mut rounds = 0;
            while self.bytes() > self.view.config.max_bytes
                && self.view.windows.len() > 1
                && rounds < 8
            {
                // Drop the oldest windows until they fit beside the tables
                // as they are; the compaction after it shrinks the tables,
                // so this errs towards dropping a little too much.
                let room = self
                    .view
                    .config
                    .max_bytes
                    .saturating_sub(self.view.table_bytes);
                while self.view.window_bytes > room && self.view.windows.len() > 1 {
                    self.pop_oldest();
                    self.view.stats.windows_evicted += 1;
                }
                self.compact();
                rounds += 1;
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(w) = self.view.windows.pop_front() {
            self.view.window_bytes = self.view.window_bytes.saturating_sub(window_bytes(&w));
        }
    }

    /// Rebuilds the tables from what the windows still refer to.
    pub fn compact(&mut self) {
        let (mut frame_ids, mut stack_ids, mut group_ids) = (
            Interner::<Frame>::default(),
            Interner::<[FrameId]>::default(),
            Interner::<Group>::default(),
        );
        let mut frames = Table::<Frame>::default();
        let mut stacks = Table::<[FrameId]>::default();
        let mut groups = Table::<Group>::default();
        let mut stack_map: HashMap<StackId, StackId> = HashMap::new();
        let mut group_map: HashMap<GroupId, GroupId> = HashMap::new();
        let mut frame_map: HashMap<FrameId, FrameId> = HashMap::new();
        let mut table_bytes = 0;
        let mut remapped = Vec::new();
        let Snapshot {
            windows,
            frames: old_frames,
            stacks: old_stacks,
            groups: old_groups,
            ..
        } = &mut self.view;
        for window in windows.iter_mut() {
            // In place, unless a snapshot holds the window: then a copy
            // takes the new ids and the snapshot keeps the old one.
            for entry in &mut Arc::make_mut(window).entries {
                let stack = match stack_map.get(&entry.stack) {
                    Some(&s) => s,
                    None => {
                        remapped.clear();
                        for &f in old_stacks.get(entry.stack).unwrap_or(&[]) {
                            let nf = match frame_map.get(&f) {
                                Some(&nf) => nf,
                                None => {
                                    let Some(frame) = old_frames.get(f) else {
                                        continue;
                                    };
                                    let (nf, _) = frame_ids
                                        .intern(&mut frames, frame, |f| Arc::new(f.clone()));
                                    table_bytes += frame_bytes(frame);
                                    frame_map.insert(f, nf);
                                    nf
                                }
                            };
                            remapped.push(nf);
                        }
                        let (s, new) =
                            stack_ids
                                .intern(&mut stacks, remapped.as_slice(), |s: &[u32]| Arc::from(s));
                        if new {
                            table_bytes += stack_bytes(&remapped);
                        }
                        stack_map.insert(entry.stack, s);
                        s
                    }
                };
                let group = match group_map.get(&entry.group) {
                    Some(&g) => g,
                    None => {
                        let Some(g_old) = old_groups.get(entry.group) else {
                            continue;
                        };
                        let (g, _) = group_ids.intern(&mut groups, g_old, |g| Arc::new(g.clone()));
                        table_bytes += group_bytes(g_old);
                        group_map.insert(entry.group, g);
                        g
                    }
                };
                entry.stack = stack;
                entry.group = group;
            }
        }
        self.view.frames = frames;
        self.view.stacks = stacks;
        self.view.groups = groups;
        self.frame_ids = frame_ids;
        self.stack_ids = stack_ids;
        self.group_ids = group_ids;
        self.view.table_bytes = table_bytes;
        self.live_after_compaction =
            self.view.frames.len() + self.view.stacks.len() + self.view.groups.len();
        self.view.stats.compactions += 1;
    }
}

fn attr(report: &Report, resource: usize, key: &str) -> Option<Arc<str>> {
    report
        .resources
        .get(resource)
        .and_then(|r| r.attribute(key))
        .map(Arc::from)
}

fn group_for(report: &Report, resource: usize, pid: u32, process: &Arc<str>) -> Group {
    let key = report
        .resources
        .get(resource)
        .and_then(|r| r.container.as_ref());
    let container = attr(report, resource, "container.id")
        .or_else(|| key.map(|k| k.id.clone()))
        .map(|id| ContainerRef {
            id,
            name: attr(report, resource, "k8s.container.name"),
            runtime: attr(report, resource, "container.runtime.name")
                .or_else(|| key.and_then(|k| k.runtime.clone())),
        });
    let pod = PodRef {
        namespace: attr(report, resource, "k8s.namespace.name"),
        name: attr(report, resource, "k8s.pod.name"),
        uid: attr(report, resource, "k8s.pod.uid").or_else(|| key.and_then(|k| k.pod_uid.clone())),
    };
    let has_pod = pod.name.is_some() || pod.uid.is_some();
    Group {
        pod: has_pod.then_some(pod),
        container,
        pid,
        process: process.clone(),
    }
}
