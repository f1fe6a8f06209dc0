//! The workload that owns a pod, from the pod alone.
//!
//! Watching ReplicaSets and Jobs cluster-wide costs far more memory than the
//! pods of one node; the names follow from the pod itself:
//! * a Deployment's ReplicaSet is named `<deployment>-<pod-template-hash>`
//!   and every pod of it carries the `pod-template-hash` label;
//! * a CronJob's Job is named `<cronjob>-<scheduled time in minutes>`, a
//!   number of eight or more digits (a Job named otherwise is left alone).

use crate::meta::{PodMeta, POD_TEMPLATE_HASH_LABEL};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// `(attribute, value)` pairs such as `("k8s.deployment.name", "web")`.
    pub attributes: Vec<(&'static str, String)>,
}

impl Workload {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn cronjob_of(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit()) && !prefix.is_empty())
        .then_some(prefix)
}

pub fn workload_of(pod: &PodMeta) -> Workload {
    let mut w = Workload::default();
    let Some(owner) = &pod.owner else {
        return w;
    };
    let mut push = |k: &'static str, v: &str| w.attributes.push((k, v.to_string()));
    match owner.kind.as_str() {
        "ReplicaSet" => {
            push("k8s.replicaset.name", &owner.name);
            push("k8s.replicaset.uid", &owner.uid);
            if let Some(hash) = pod.labels.get(POD_TEMPLATE_HASH_LABEL) {
                if let Some(deployment) = owner
                    .name
                    .strip_suffix(hash.as_str())
                    .and_then(|p| p.strip_suffix('-'))
                {
                    if !deployment.is_empty() {
                        push("k8s.deployment.name", deployment);
                    }
                }
            }
        }
        "StatefulSet" => {
            push("k8s.statefulset.name", &owner.name);
            push("k8s.statefulset.uid", &owner.uid);
        }
        "DaemonSet" => {
            push("k8s.daemonset.name", &owner.name);
            push("k8s.daemonset.uid", &owner.uid);
        }
        "Job" => {
            push("k8s.job.name", &owner.name);
            push("k8s.job.uid", &owner.uid);
            if let Some(cronjob) = cronjob_of(&owner.name) {
                push("k8s.cronjob.name", cronjob);
            }
        }
        _ => {}
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Owner;
    use std::collections::BTreeMap;

    fn pod(kind: &str, name: &str, hash: Option<&str>) -> PodMeta {
        let mut labels = BTreeMap::new();
        if let Some(h) = hash {
            labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), h.to_string());
        }
        PodMeta {
            uid: "u".into(),
            name: "p".into(),
            namespace: "n".into(),
            node_name: None,
            owner: Some(Owner {
                kind: kind.into(),
                name: name.into(),
                uid: "o".into(),
            }),
            labels,
            annotations: BTreeMap::new(),
            containers: vec![],
            resource_version: None,
        }
    }

    #[test]
    fn deployments_and_cronjobs_follow_from_names() {
        let w = workload_of(&pod("ReplicaSet", "web-api-7d4b9c8f6d", Some("7d4b9c8f6d")));
        assert_eq!(w.get("k8s.deployment.name"), Some("web-api"));
        assert_eq!(w.get("k8s.replicaset.name"), Some("web-api-7d4b9c8f6d"));
        // A bare ReplicaSet: its name does not end with the hash.
        let w = workload_of(&pod("ReplicaSet", "standalone", Some("abc")));
        assert_eq!(w.get("k8s.deployment.name"), None);
        assert_eq!(
            workload_of(&pod("ReplicaSet", "-h", Some("h"))).get("k8s.deployment.name"),
            None
        );
        let w = workload_of(&pod("Job", "nightly-report-29012345", None));
        assert_eq!(w.get("k8s.cronjob.name"), Some("nightly-report"));
        assert_eq!(
            workload_of(&pod("Job", "migrate-2", None)).get("k8s.cronjob.name"),
            None
        );
        assert_eq!(
            workload_of(&pod("StatefulSet", "db", None)).get("k8s.statefulset.name"),
            Some("db")
        );
        assert_eq!(workload_of(&pod("Node", "node1", None)).attributes.len(), 0);
    }
}
