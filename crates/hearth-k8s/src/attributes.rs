//! OpenTelemetry resource attributes of a container, resolved on the node.
//!
//! `service.*` follow the semantic conventions' order: the pod's
//! `resource.opentelemetry.io/*` annotations first, then (opt-in) the
//! well-known `app.kubernetes.io/*` labels, then the workload hierarchy from
//! ancestor to descendant. Labels and annotations are exported only through
//! explicit rules; nothing is exported by default.

use regex::Regex;

use crate::meta::{ContainerMeta, KeepFilter, PodMeta, RESOURCE_ANNOTATION_PREFIX};
use crate::workload::workload_of;

/// Which key a rule matches.
#[derive(Debug, Clone)]
pub enum KeyMatch {
    Exact(String),
    Regex(Regex),
}

/// Exports matching labels (or annotations) as attributes.
///
/// Written as `key`, `key=attribute.name`, `/regex/` or `/regex/=name`; in
/// a regex rule's name, `$1`.. stand for capture groups. Without a name the
/// attribute is `k8s.pod.label.<key>` (or `k8s.pod.annotation.<key>`).
#[derive(Debug, Clone)]
pub struct ExportRule {
    pub key: KeyMatch,
    pub rename: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("empty metadata export rule")]
    Empty,
    #[error("bad regex in rule {rule:?}: {source}")]
    Regex { rule: String, source: regex::Error },
}

impl ExportRule {
    pub fn parse(rule: &str) -> Result<ExportRule, RuleError> {
        let rule_t = rule.trim();
        if rule_t.is_empty() {
            return Err(RuleError::Empty);
        }
        if let Some(rest) = rule_t.strip_prefix('/') {
            let (pattern, rename) = match rest.rsplit_once("/=") {
                Some((p, r)) => (p, Some(r.to_string())),
                None => (rest.strip_suffix('/').unwrap_or(rest), None),
            };
            let re =
                Regex::new(&format!("^(?:{pattern})$")).map_err(|source| RuleError::Regex {
                    rule: rule.to_string(),
                    source,
                })?;
            return Ok(ExportRule {
                key: KeyMatch::Regex(re),
                rename: rename.filter(|r| !r.is_empty()),
            });
        }
        let (key, rename) = match rule_t.split_once('=') {
            Some((k, r)) => (
                k.trim(),
                Some(r.trim().to_string()).filter(|r| !r.is_empty()),
            ),
            None => (rule_t, None),
        };
        if key.is_empty() {
            return Err(RuleError::Empty);
        }
        Ok(ExportRule {
            key: KeyMatch::Exact(key.to_string()),
            rename,
        })
    }

    /// The attribute name for `key`, if the rule matches it.
    fn attribute(&self, key: &str, default_prefix: &str) -> Option<String> {
        match &self.key {
            KeyMatch::Exact(k) if k == key => Some(
                self.rename
                    .clone()
                    .unwrap_or_else(|| format!("{default_prefix}{key}")),
            ),
            KeyMatch::Exact(_) => None,
            KeyMatch::Regex(re) => {
                let caps = re.captures(key)?;
                Some(match &self.rename {
                    Some(template) => {
                        let mut out = String::new();
                        caps.expand(template, &mut out);
                        out
                    }
                    None => format!("{default_prefix}{key}"),
                })
            }
        }
    }

    fn matches(&self, key: &str) -> bool {
        match &self.key {
            KeyMatch::Exact(k) => k == key,
            KeyMatch::Regex(re) => re.is_match(key),
        }
    }
}

/// What to derive and export.
#[derive(Debug, Clone, Default)]
pub struct AttributeConfig {
    pub label_rules: Vec<ExportRule>,
    pub annotation_rules: Vec<ExportRule>,
    /// Use `app.kubernetes.io/{instance,name,version}` for `service.*`.
    pub use_well_known_labels: bool,
}

const WELL_KNOWN: [&str; 3] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
];

impl KeepFilter for AttributeConfig {
    fn keep_label(&self, key: &str) -> bool {
        (self.use_well_known_labels && WELL_KNOWN.contains(&key))
            || self.label_rules.iter().any(|r| r.matches(key))
    }

    fn keep_annotation(&self, key: &str) -> bool {
        self.annotation_rules.iter().any(|r| r.matches(key))
    }
}

/// Splits an image reference into name and tag:
/// `registry:5000/team/app:1.2@sha256:..` -> (`registry:5000/team/app`, `1.2`).
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match without_digest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (
                &without_digest[..at],
                Some(&without_digest[at + 1..]).filter(|t| !t.is_empty()),
            )
        }
        None => (without_digest, None),
    }
}

/// Attributes of `container` (or of the pod, when the container is unknown)
/// in `pod`, on node `node`. `container_id` and `runtime` come from the
/// process's cgroup, which knows them even when the pod status does not yet.
pub fn resource_attributes(
    pod: &PodMeta,
    container: Option<&ContainerMeta>,
    container_id: Option<&str>,
    runtime: Option<&str>,
    node: Option<&str>,
    config: &AttributeConfig,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &str| {
        if !v.is_empty() && !out.iter().any(|(ok, _)| ok == k) {
            out.push((k.to_string(), v.to_string()));
        }
    };
    let annotation = |name: &str| {
        pod.annotations
            .get(&format!("{RESOURCE_ANNOTATION_PREFIX}{name}"))
            .map(String::as_str)
    };
    let label = |k: &str| {
        if config.use_well_known_labels {
            pod.labels.get(k).map(String::as_str)
        } else {
            None
        }
    };
    let workload = workload_of(pod);

    // service.name: first value found, from annotation to container.
    let mut service_name = annotation("service.name")
        .or_else(|| label("app.kubernetes.io/instance"))
        .or_else(|| label("app.kubernetes.io/name"));
    for key in [
        "k8s.deployment.name",
        "k8s.replicaset.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.cronjob.name",
        "k8s.job.name",
    ] {
        service_name = service_name.or_else(|| workload.get(key));
    }
    let service_name = service_name
        .map(str::to_string)
        .unwrap_or_else(|| match container {
            // The pod name is the last resort before the container name:
            // a bare pod is its own service.
            _ if !pod.name.is_empty() => pod.name.to_string(),
            Some(c) => c.name.to_string(),
            None => String::new(),
        });
    push("service.name", &service_name);
    push(
        "service.namespace",
        annotation("service.namespace").unwrap_or(&pod.namespace),
    );
    let instance = match (annotation("service.instance.id"), container) {
        (Some(a), _) => a.to_string(),
        (None, Some(c)) => format!("{}.{}.{}", pod.namespace, pod.name, c.name),
        (None, None) => format!("{}.{}", pod.namespace, pod.name),
    };
    push("service.instance.id", &instance);
    if let Some(v) = annotation("service.version").or_else(|| label("app.kubernetes.io/version")) {
        push("service.version", v);
    }

    push("k8s.namespace.name", &pod.namespace);
    push("k8s.pod.name", &pod.name);
    push("k8s.pod.uid", &pod.uid);
    if let Some(n) = node.or(pod.node_name.as_deref()) {
        push("k8s.node.name", n);
    }
    for (k, v) in &workload.attributes {
        push(k, v);
    }
    if let Some(c) = container {
        push("k8s.container.name", &c.name);
        push("k8s.container.restart_count", &c.restart_count.to_string());
        if let Some(image) = &c.image {
            let (name, tag) = split_image(image);
            push("container.image.name", name);
            if let Some(tag) = tag {
                push("container.image.tag", tag);
            }
        }
    }
    let status_id = container_id.and_then(|id| pod.container_by_id(id));
    if let Some(id) = container_id {
        push("container.id", id);
    }
    if let Some(rt) = runtime.or(status_id.map(|(_, r)| r.runtime.as_str())) {
        push("container.runtime.name", rt);
    }
    // Other resource.opentelemetry.io/* annotations become attributes too.
    for (k, v) in &pod.annotations {
        if let Some(attr) = k.strip_prefix(RESOURCE_ANNOTATION_PREFIX) {
            push(attr, v);
        }
    }
    for (k, v) in &pod.labels {
        if let Some(attr) = config
            .label_rules
            .iter()
            .find_map(|r| r.attribute(k, "k8s.pod.label."))
        {
            push(&attr, v);
        }
    }
    for (k, v) in &pod.annotations {
        if let Some(attr) = config
            .annotation_rules
            .iter()
            .find_map(|r| r.attribute(k, "k8s.pod.annotation."))
        {
            push(&attr, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split() {
        assert_eq!(split_image("nginx"), ("nginx", None));
        assert_eq!(split_image("nginx:1.27"), ("nginx", Some("1.27")));
        assert_eq!(
            split_image("reg:5000/team/app"),
            ("reg:5000/team/app", None)
        );
        assert_eq!(
            split_image("reg:5000/team/app:v2@sha256:abcd"),
            ("reg:5000/team/app", Some("v2"))
        );
        assert_eq!(split_image("app@sha256:abcd"), ("app", None));
        assert_eq!(split_image(""), ("", None));
    }

    #[test]
    fn rules_parse_and_rename() {
        let r = ExportRule::parse("team").unwrap();
        assert_eq!(
            r.attribute("team", "k8s.pod.label.").as_deref(),
            Some("k8s.pod.label.team")
        );
        let r = ExportRule::parse("team=owner.team").unwrap();
        assert_eq!(r.attribute("team", "x.").as_deref(), Some("owner.team"));
        let r = ExportRule::parse("/example.com\\/(.*)/=ex.$1").unwrap();
        assert_eq!(
            r.attribute("example.com/tier", "x.").as_deref(),
            Some("ex.tier")
        );
        assert_eq!(r.attribute("other/tier", "x."), None);
        let r = ExportRule::parse("/app\\..*/").unwrap();
        assert_eq!(r.attribute("app.x", "p.").as_deref(), Some("p.app.x"));
        assert!(ExportRule::parse("/(/").is_err());
        assert!(ExportRule::parse("  ").is_err());
        assert!(ExportRule::parse("=x").is_err());
    }
}
