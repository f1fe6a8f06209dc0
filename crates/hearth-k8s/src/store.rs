//! This node's pods, by UID and by container id.
//!
//! One writer (the watch task) and any number of cheap cloned readers (the
//! sampling and export paths), which never wait on the network. A relist
//! is applied as a whole: pods absent from it count as deleted. Deleted
//! pods stay resolvable for a grace period, because samples taken just
//! before a deletion are exported after it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::meta::PodMeta;

/// Default time a deleted pod's metadata is kept.
pub const DEFAULT_DELETE_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Entry {
    pod: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<Arc<str>, Entry>,
    /// container id -> pod uid
    by_container: HashMap<String, Arc<str>>,
    /// static pod config hash -> mirror pod uid
    by_config_hash: HashMap<String, Arc<str>>,
    relisting: Option<HashSet<Arc<str>>>,
    synced: bool,
}

impl Inner {
    fn index(&mut self, pod: &Arc<PodMeta>) {
        for c in &pod.containers {
            for id in &c.ids {
                self.by_container.insert(id.id.clone(), pod.uid.clone());
            }
        }
        if let Some(hash) = pod.config_hash() {
            self.by_config_hash
                .insert(hash.to_string(), pod.uid.clone());
        }
    }

    fn unindex(&mut self, pod: &PodMeta) {
        for c in &pod.containers {
            for id in &c.ids {
                if self.by_container.get(&id.id) == Some(&pod.uid) {
                    self.by_container.remove(&id.id);
                }
            }
        }
        if let Some(hash) = pod.config_hash() {
            if self.by_config_hash.get(hash) == Some(&pod.uid) {
                self.by_config_hash.remove(hash);
            }
        }
    }

    fn apply(&mut self, pod: PodMeta) {
        let pod = Arc::new(pod);
        if let Some(old) = self.pods.remove(&pod.uid) {
            // Keep the ids of the old version reachable: a restarted
            // container's previous id may still be in flight.
            self.unindex(&old.pod);
            let mut merged = (*pod).clone();
            for c in &mut merged.containers {
                if let Some(oc) = old
                    .pod
                    .containers
                    .iter()
                    .find(|o| o.name == c.name && o.kind == c.kind)
                {
                    // Only the old version's current id: older ones are
                    // long past, and a crash-looping container must not
                    // grow the list with every restart.
                    if let Some(id) = oc.ids.first() {
                        if !c.ids.contains(id) {
                            c.ids.push(id.clone());
                        }
                    }
                }
            }
            let merged = Arc::new(merged);
            self.index(&merged);
            self.pods.insert(
                merged.uid.clone(),
                Entry {
                    pod: merged,
                    deleted_at: None,
                },
            );
            return;
        }
        self.index(&pod);
        self.pods.insert(
            pod.uid.clone(),
            Entry {
                pod,
                deleted_at: None,
            },
        );
    }
}

/// Shared handle; clones are readers and writers of the same store.
#[derive(Debug, Clone, Default)]
pub struct PodStore {
    inner: Arc<RwLock<Inner>>,
}

/// What a container id or pod UID resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub pod: Arc<PodMeta>,
    /// Index into `pod.containers`, when the container is known.
    pub container: Option<usize>,
    pub deleted: bool,
}

impl PodStore {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the maps half-updated in
    // a way readers care about, so a poisoned lock is simply taken over.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a pod.
    pub fn apply(&self, pod: PodMeta) {
        let mut inner = self.write();
        if let Some(seen) = &mut inner.relisting {
            seen.insert(pod.uid.clone());
        }
        inner.apply(pod);
    }

    /// Marks a pod deleted at `now`; it stays resolvable for the grace period.
    pub fn delete(&self, uid: &str, now: Instant) {
        let mut inner = self.write();
        if let Some(e) = inner.pods.get_mut(uid) {
            e.deleted_at.get_or_insert(now);
        }
    }

    /// Starts a relist: pods not applied before [`PodStore::end_relist`]
    /// are then marked deleted.
    pub fn begin_relist(&self) {
        self.write().relisting = Some(HashSet::new());
    }

    pub fn end_relist(&self, now: Instant) {
        let mut inner = self.write();
        let Some(seen) = inner.relisting.take() else {
            return;
        };
        for (uid, e) in inner.pods.iter_mut() {
            if !seen.contains(uid) {
                e.deleted_at.get_or_insert(now);
            }
        }
        inner.synced = true;
    }

    /// Whether a full list has been applied at least once.
    pub fn synced(&self) -> bool {
        self.read().synced
    }

    /// Forgets pods deleted more than `grace` before `now`. Returns how many.
    pub fn expire(&self, now: Instant, grace: Duration) -> usize {
        let mut inner = self.write();
        let expired: Vec<Arc<PodMeta>> = inner
            .pods
            .values()
            .filter(|e| {
                e.deleted_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace)
            })
            .map(|e| e.pod.clone())
            .collect();
        for pod in &expired {
            inner.unindex(pod);
            inner.pods.remove(&pod.uid);
        }
        expired.len()
    }

    /// The pod and container of a container id.
    pub fn by_container_id(&self, id: &str) -> Option<Resolved> {
        let inner = self.read();
        let uid = inner.by_container.get(id)?;
        let e = inner.pods.get(uid)?;
        let container = e
            .pod
            .containers
            .iter()
            .position(|c| c.ids.iter().any(|r| r.id == id));
        Some(Resolved {
            pod: e.pod.clone(),
            container,
            deleted: e.deleted_at.is_some(),
        })
    }

    /// The pod of a UID as a cgroup path gives it: the API UID, or a static
    /// pod's config hash.
    pub fn by_pod_uid(&self, uid: &str) -> Option<Resolved> {
        let inner = self.read();
        let e = inner.pods.get(uid).or_else(|| {
            inner
                .by_config_hash
                .get(uid)
                .and_then(|u| inner.pods.get(u))
        })?;
        Some(Resolved {
            pod: e.pod.clone(),
            container: None,
            deleted: e.deleted_at.is_some(),
        })
    }

    /// Pods held, deleted ones in their grace period included.
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{ContainerKind, ContainerMeta, RuntimeId};
    use std::collections::BTreeMap;

    fn id(c: char) -> RuntimeId {
        RuntimeId {
            id: c.to_string().repeat(64),
            runtime: "containerd".into(),
        }
    }

    fn pod(uid: &str, ids: &[RuntimeId]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: format!("pod-{uid}").into(),
            namespace: "ns".into(),
            node_name: Some("n1".into()),
            owner: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            containers: vec![ContainerMeta {
                name: "app".into(),
                kind: ContainerKind::Regular,
                image: None,
                ids: ids.to_vec(),
                restart_count: 0,
            }],
            resource_version: None,
        }
    }

    #[test]
    fn restart_keeps_old_id_and_deletion_has_grace() {
        let s = PodStore::new();
        let t0 = Instant::now();
        s.apply(pod("u1", &[id('a')]));
        // Restart: the status now shows a new id only.
        s.apply(pod("u1", &[id('b')]));
        assert!(
            s.by_container_id(&"a".repeat(64)).is_some(),
            "old id still resolves"
        );
        assert_eq!(
            s.by_container_id(&"b".repeat(64)).unwrap().container,
            Some(0)
        );
        s.delete("u1", t0);
        let r = s.by_pod_uid("u1").unwrap();
        assert!(r.deleted);
        assert_eq!(
            s.expire(t0 + Duration::from_secs(119), DEFAULT_DELETE_GRACE),
            0
        );
        assert!(s.by_container_id(&"b".repeat(64)).is_some());
        assert_eq!(
            s.expire(t0 + Duration::from_secs(120), DEFAULT_DELETE_GRACE),
            1
        );
        assert!(s.by_container_id(&"b".repeat(64)).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn crash_looping_container_keeps_a_bounded_id_list() {
        let s = PodStore::new();
        let ids: Vec<RuntimeId> = ('a'..='z').map(id).collect();
        for pair in ids.windows(2) {
            // Each status reports the current id and the previous one.
            s.apply(pod("u1", &[pair[1].clone(), pair[0].clone()]));
        }
        let r = s.by_container_id(&"z".repeat(64)).unwrap();
        assert!(
            r.pod.containers[0].ids.len() <= 3,
            "{}",
            r.pod.containers[0].ids.len()
        );
        assert!(s.by_container_id(&"y".repeat(64)).is_some());
        assert!(
            s.by_container_id(&"a".repeat(64)).is_none(),
            "long-gone ids are dropped"
        );
    }

    #[test]
    fn relist_marks_missing_pods_deleted() {
        let s = PodStore::new();
        let t0 = Instant::now();
        s.apply(pod("u1", &[id('a')]));
        s.apply(pod("u2", &[id('c')]));
        assert!(!s.synced());
        s.begin_relist();
        s.apply(pod("u2", &[id('c')]));
        s.end_relist(t0);
        assert!(s.synced());
        assert!(s.by_pod_uid("u1").unwrap().deleted);
        assert!(!s.by_pod_uid("u2").unwrap().deleted);
    }

    #[test]
    fn static_pods_resolve_by_config_hash() {
        let s = PodStore::new();
        let mut p = pod("api-uid", &[id('d')]);
        p.annotations.insert(
            crate::meta::CONFIG_HASH_ANNOTATION.into(),
            "f00dhash".into(),
        );
        s.apply(p);
        assert_eq!(&*s.by_pod_uid("f00dhash").unwrap().pod.uid, "api-uid");
    }
}
