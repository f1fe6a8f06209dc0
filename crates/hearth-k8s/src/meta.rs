//! The parts of a Pod that Hearth uses, and nothing else.
//!
//! A DaemonSet keeps every pod of its node in memory; full API objects
//! (managedFields, specs, conditions) are many times larger than this.
//! Labels and annotations are kept only when a caller-supplied filter asks
//! for them. API objects are outside input: missing or odd fields degrade to
//! "unknown", never to a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

/// A container id as the pod status reports it (`<runtime>://<id>`), split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeId {
    /// Bare id, 64 lowercase hex characters.
    pub id: String,
    /// `containerd`, `cri-o`, `docker`, ... as the status names it.
    pub runtime: String,
}

/// Parses `containerd://<64 hex>`; anything else is `None`.
pub fn parse_container_id(s: &str) -> Option<RuntimeId> {
    let (runtime, id) = s.split_once("://")?;
    let id = id.to_ascii_lowercase();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || runtime.is_empty() {
        return None;
    }
    Some(RuntimeId {
        id,
        runtime: runtime.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: Arc<str>,
    pub kind: ContainerKind,
    pub image: Option<Arc<str>>,
    /// The current id and, after restarts, the previous one (late samples
    /// of the old instance still resolve).
    pub ids: Vec<RuntimeId>,
    pub restart_count: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub node_name: Option<Arc<str>>,
    /// The controller owner reference, if any.
    pub owner: Option<Owner>,
    /// Labels kept by the filter (plus `pod-template-hash`, always).
    pub labels: BTreeMap<String, String>,
    /// Annotations kept by the filter (plus `resource.opentelemetry.io/*`
    /// and the static-pod ones, always).
    pub annotations: BTreeMap<String, String>,
    pub containers: Vec<ContainerMeta>,
    pub resource_version: Option<String>,
}

/// Annotation of mirror pods: the static pod's config hash, which is what
/// the kubelet uses instead of the API UID in cgroup paths.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const RESOURCE_ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";

/// Which labels and annotations to keep, besides the ones Hearth itself needs.
pub trait KeepFilter: Send + Sync {
    fn keep_label(&self, key: &str) -> bool;
    fn keep_annotation(&self, key: &str) -> bool;
}

/// Keeps nothing beyond what Hearth needs.
pub struct KeepNothing;

impl KeepFilter for KeepNothing {
    fn keep_label(&self, _: &str) -> bool {
        false
    }
    fn keep_annotation(&self, _: &str) -> bool {
        false
    }
}

fn statuses(
    list: Option<&Vec<ContainerStatus>>,
    kind: ContainerKind,
) -> impl Iterator<Item = (&ContainerStatus, ContainerKind)> {
    list.into_iter().flatten().map(move |s| (s, kind))
}

impl PodMeta {
    /// Extracts the metadata; `None` for a pod without UID, name or namespace.
    pub fn from_pod(pod: &Pod, keep: &dyn KeepFilter) -> Option<PodMeta> {
        let md = &pod.metadata;
        let uid = md.uid.as_deref().filter(|s| !s.is_empty())?;
        let name = md.name.as_deref().filter(|s| !s.is_empty())?;
        let namespace = md.namespace.as_deref().unwrap_or("default");
        let labels = md
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() == POD_TEMPLATE_HASH_LABEL || keep.keep_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let annotations = md
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                k.starts_with(RESOURCE_ANNOTATION_PREFIX)
                    || k.as_str() == CONFIG_HASH_ANNOTATION
                    || k.as_str() == CONFIG_MIRROR_ANNOTATION
                    || keep.keep_annotation(k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let owner = md
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .or_else(|| md.owner_references.as_ref().and_then(|o| o.first()))
            .map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
            });

        // Images come from the spec; ids from the status.
        let spec = pod.spec.as_ref();
        let image_of = |kind: ContainerKind, name: &str| -> Option<Arc<str>> {
            let spec = spec?;
            let image = match kind {
                ContainerKind::Regular => spec
                    .containers
                    .iter()
                    .find(|c| c.name == name)?
                    .image
                    .clone(),
                ContainerKind::Init => spec
                    .init_containers
                    .iter()
                    .flatten()
                    .find(|c| c.name == name)?
                    .image
                    .clone(),
                ContainerKind::Ephemeral => spec
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .find(|c| c.name == name)?
                    .image
                    .clone(),
            };
            image.filter(|i| !i.is_empty()).map(Arc::from)
        };
        let status = pod.status.as_ref();
        let mut containers = Vec::new();
        let all = statuses(
            status.and_then(|s| s.container_statuses.as_ref()),
            ContainerKind::Regular,
        )
        .chain(statuses(
            status.and_then(|s| s.init_container_statuses.as_ref()),
            ContainerKind::Init,
        ))
        .chain(statuses(
            status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
            ContainerKind::Ephemeral,
        ));
        for (s, kind) in all {
            let mut ids = Vec::new();
            if let Some(id) = s.container_id.as_deref().and_then(parse_container_id) {
                ids.push(id);
            }
            let last = s
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .and_then(|t| t.container_id.as_deref())
                .and_then(parse_container_id);
            if let Some(last) = last {
                if !ids.contains(&last) {
                    ids.push(last);
                }
            }
            containers.push(ContainerMeta {
                name: Arc::from(s.name.as_str()),
                kind,
                image: image_of(kind, &s.name)
                    .or_else(|| Some(Arc::<str>::from(s.image.as_str())).filter(|i| !i.is_empty())),
                ids,
                restart_count: s.restart_count,
            });
        }
        Some(PodMeta {
            uid: Arc::from(uid),
            name: Arc::from(name),
            namespace: Arc::from(namespace),
            node_name: spec.and_then(|s| s.node_name.as_deref()).map(Arc::from),
            owner,
            labels,
            annotations,
            containers,
            resource_version: md.resource_version.clone(),
        })
    }

    /// The static pod's config hash (mirror pods only).
    pub fn config_hash(&self) -> Option<&str> {
        self.annotations
            .get(CONFIG_HASH_ANNOTATION)
            .map(String::as_str)
    }

    pub fn container_by_id(&self, id: &str) -> Option<(&ContainerMeta, &RuntimeId)> {
        self.containers
            .iter()
            .find_map(|c| c.ids.iter().find(|r| r.id == id).map(|r| (c, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        assert_eq!(
            parse_container_id(&format!("containerd://{id}")),
            Some(RuntimeId {
                id: id.clone(),
                runtime: "containerd".into()
            })
        );
        assert_eq!(
            parse_container_id(&format!("cri-o://{}", id.to_uppercase())).map(|r| r.id),
            Some(id.clone())
        );
        assert_eq!(parse_container_id(&id), None);
        assert_eq!(parse_container_id("docker://abc"), None);
        assert_eq!(parse_container_id(&format!("://{id}")), None);
        assert_eq!(
            parse_container_id(&format!("containerd://{}", "g".repeat(64))),
            None
        );
    }
}
