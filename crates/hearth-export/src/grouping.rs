//! Root frames above the process, for reports grouped by container or pod.

use hearth_profile::{GroupBy, Report, ReportSample, Resource};

/// Frame for processes outside any container.
pub const HOST_FRAME: &str = "[host]";

/// A container's label: its Kubernetes name, else `container <short id>`.
/// Shared with the profile page, so that both name containers alike.
pub fn container_label(name: Option<&str>, id: Option<&str>) -> Option<String> {
    match (name, id) {
        (Some(name), _) => Some(name.to_string()),
        // By characters: the page passes ids from its query string.
        (None, Some(id)) => Some(format!(
            "container {}",
            id.chars().take(12).collect::<String>()
        )),
        (None, None) => None,
    }
}

/// A pod's label: `namespace/name`, else `pod <uid>` (the UID from the
/// cgroup path, when the API server has not named the pod).
pub fn pod_label(namespace: Option<&str>, name: Option<&str>, uid: Option<&str>) -> Option<String> {
    match (namespace, name, uid) {
        (Some(ns), Some(name), _) => Some(format!("{ns}/{name}")),
        (_, _, Some(uid)) => Some(format!("pod {uid}")),
        _ => None,
    }
}

/// Container frame: its label, else the host frame.
fn container_frame(r: &Resource) -> String {
    container_label(
        r.attribute("k8s.container.name"),
        r.attribute("container.id"),
    )
    .unwrap_or_else(|| HOST_FRAME.to_string())
}

/// Pod frame: its label, else `[no pod]`.
fn pod_frame(r: &Resource) -> String {
    pod_label(
        r.attribute("k8s.namespace.name"),
        r.attribute("k8s.pod.name"),
        r.attribute("k8s.pod.uid"),
    )
    .unwrap_or_else(|| "[no pod]".to_string())
}

/// Frames to put above the process name, outermost first.
pub fn root_frames(report: &Report, sample: &ReportSample) -> Vec<String> {
    let Some(r) = report.resource_of(sample).filter(|r| r.container.is_some()) else {
        return match report.group_by {
            GroupBy::Process => Vec::new(),
            GroupBy::Container | GroupBy::Pod => vec![HOST_FRAME.to_string()],
        };
    };
    match report.group_by {
        GroupBy::Process => Vec::new(),
        GroupBy::Container => vec![container_frame(r)],
        GroupBy::Pod => vec![pod_frame(r), container_frame(r)],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hearth_profile::{ContainerKey, GroupBy, Resource};

    use crate::folded::folded_lines;
    use crate::pprof::build_profile;
    use crate::testdata::two_processes;

    fn grouped(group_by: GroupBy) -> hearth_profile::Report {
        let mut r = two_processes();
        r.group_by = group_by;
        let key = Arc::new(ContainerKey {
            id: "ab".repeat(32).into(),
            runtime: Some("containerd".into()),
            pod_uid: Some("uid-1".into()),
        });
        r.resources = vec![
            Resource::default(),
            Resource {
                container: Some(key),
                attributes: vec![
                    ("container.id".into(), "ab".repeat(32)),
                    ("k8s.namespace.name".into(), "shop".into()),
                    ("k8s.pod.name".into(), "web-1".into()),
                    ("k8s.container.name".into(), "app".into()),
                ],
            },
        ];
        // The "db" process runs in the container, "app" on the host.
        for s in &mut r.samples {
            s.resource = usize::from(&*s.process_name == "db");
        }
        r
    }

    #[test]
    fn container_and_pod_become_root_frames() {
        let by_process = folded_lines(&grouped(GroupBy::Process));
        assert!(by_process
            .iter()
            .all(|l| l.starts_with("app;") || l.starts_with("db;")));
        let by_container = folded_lines(&grouped(GroupBy::Container));
        assert!(
            by_container
                .iter()
                .any(|l| l.starts_with("app;db;main;recurse")),
            "{by_container:?}"
        );
        assert!(by_container.iter().any(|l| l.starts_with("[host];app;")));
        let by_pod = folded_lines(&grouped(GroupBy::Pod));
        assert!(
            by_pod.iter().any(|l| l.starts_with("shop/web-1;app;db;")),
            "{by_pod:?}"
        );
        assert!(by_pod.iter().any(|l| l.starts_with("[host];app;")));
    }

    #[test]
    fn grouped_pprof_samples_carry_resource_labels() {
        let p = build_profile(&grouped(GroupBy::Pod));
        let s = |i: i64| p.string_table[i as usize].as_str();
        let labelled = p
            .sample
            .iter()
            .filter(|smp| {
                smp.label
                    .iter()
                    .any(|l| s(l.key) == "k8s.pod.name" && s(l.str) == "web-1")
            })
            .count();
        assert!(labelled > 0);
        let plain = build_profile(&grouped(GroupBy::Process));
        assert!(plain.sample.iter().all(|smp| smp
            .label
            .iter()
            .all(|l| plain.string_table[l.key as usize] != "k8s.pod.name")));
    }
}
