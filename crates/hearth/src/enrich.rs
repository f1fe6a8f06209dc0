//! Attaching Kubernetes and host attributes to a report's resources.
//!
//! Done when a report is built, not when samples are taken: a sample whose
//! pod was not yet known still carries its container id and pod UID (from
//! its cgroup) and gets the pod's metadata if the pod is known by then.

use hearth_k8s::attributes::{resource_attributes, AttributeConfig};
use hearth_k8s::store::PodStore;
use hearth_profile::Report;

/// Where attributes come from.
pub struct Enricher<'a> {
    pub store: Option<&'a PodStore>,
    pub config: &'a AttributeConfig,
    pub node_name: Option<&'a str>,
    pub host_name: Option<String>,
    /// Added to every resource unless already set (`OTEL_RESOURCE_ATTRIBUTES`).
    pub extra: &'a [(String, String)],
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value,key2=value2`, values
/// percent-encoded. Malformed entries are skipped and returned apart.
pub fn parse_resource_attributes(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => match percent_decode(v.trim()) {
                Some(v) => good.push((k.trim().to_string(), v)),
                None => bad.push(entry.to_string()),
            },
            _ => bad.push(entry.to_string()),
        }
    }
    (good, bad)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The host's name, as `uname -n` gives it.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Enricher<'_> {
    pub fn enrich(&self, report: &mut Report) {
        for resource in &mut report.resources {
            let mut attrs = Vec::new();
            if let (Some(store), Some(c)) = (self.store, &resource.container) {
                let resolved = store
                    .by_container_id(&c.id)
                    .or_else(|| c.pod_uid.as_deref().and_then(|uid| store.by_pod_uid(uid)));
                if let Some(r) = resolved {
                    let container = r.container.and_then(|i| r.pod.containers.get(i));
                    attrs = resource_attributes(
                        &r.pod,
                        container,
                        Some(&c.id),
                        c.runtime.as_deref(),
                        self.node_name,
                        self.config,
                    );
                }
            }
            // What the cgroup said, where the pod did not say better.
            for (k, v) in std::mem::take(&mut resource.attributes) {
                if !attrs.iter().any(|(ak, _)| *ak == k) {
                    attrs.push((k, v));
                }
            }
            if let Some(node) = self.node_name {
                if !attrs.iter().any(|(k, _)| k == "k8s.node.name") {
                    attrs.push(("k8s.node.name".into(), node.to_string()));
                }
            }
            if let Some(host) = &self.host_name {
                attrs.push(("host.name".into(), host.clone()));
            }
            for (k, v) in self.extra {
                if !attrs.iter().any(|(ak, _)| ak == k) {
                    attrs.push((k.clone(), v.clone()));
                }
            }
            resource.attributes = attrs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes_from_env() {
        let (good, bad) = parse_resource_attributes(
            "deployment.environment=prod, k8s.cluster.name=eu%2C1,broken,=x,bad=%zz",
        );
        assert_eq!(
            good,
            vec![
                ("deployment.environment".to_string(), "prod".to_string()),
                ("k8s.cluster.name".to_string(), "eu,1".to_string())
            ]
        );
        assert_eq!(bad, vec!["broken", "=x", "bad=%zz"]);
    }
}
