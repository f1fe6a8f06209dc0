//! Pods, not PIDs: `hearth record --group-by pod` against a local server
//! that speaks the Kubernetes list/watch protocol, with a workload moved
//! into the cgroup kubelet would make for a fixture pod's container.

mod common;

#[path = "../../hearth-k8s/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::*;
use prost::Message;

/// The `app` container of the deployment fixture (shop/checkout-...).
const APP_ID: &str = "59ba1b0d5c9061582909406c2e416788f5ec52ed0108847512e1bc7656670b14";
const POD_UID: &str = "1509bb0a-9bf1-4331-8a11-8783593942a4";

#[test]
fn record_groups_samples_by_pod_with_metadata_from_the_api() {
    let test = "record_groups_samples_by_pod_with_metadata_from_the_api";
    if !require_root_perf(test) {
        return;
    }
    if !require_cgroup_v2(test) {
        return;
    }
    let server = fake_apiserver::FakeApiServer::start();
    for f in ["deployment", "cronjob", "other-node"] {
        server.add_fixture(f);
    }
    let dir = TempDir::new("pods");
    let kubeconfig = dir.path("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let bin = dir.path("checkout_app");
    std::fs::copy(workload("split_c"), &bin).expect("copy");
    let path = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{APP_ID}.scope",
        POD_UID.replace('-', "_")
    );
    let _placed = CgroupPlacement::new("/sys/fs/cgroup/unified", &path, &bin);
    std::thread::sleep(Duration::from_millis(200));

    let (folded, pprof) = (dir.path("p.folded"), dir.path("p.pb.gz"));
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "3",
            "-F",
            "199",
            "--group-by",
            "pod",
            "--node-name",
            "node1",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("-o")
        .arg(&folded)
        .arg("-o")
        .arg(&pprof));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let stacks = read_folded(&folded);
    let mine: u64 = stacks
        .iter()
        .filter(|s| {
            s.frames
                .get(..3)
                .is_some_and(|f| f == ["shop/checkout-7d4b9c8f6d-q2w9x", "app", "checkout_app"])
        })
        .map(|s| s.count)
        .sum();
    assert!(
        mine >= 100,
        "{mine} samples under shop/checkout-...;app;checkout_app"
    );
    assert!(
        stacks.iter().any(|s| s.frames[0] == "[host]"),
        "host processes are grouped as the host"
    );

    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&pprof).expect("pprof"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let p = hearth_export::pprof::proto::Profile::decode(bytes.as_slice()).expect("decode");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let sample = p
        .sample
        .iter()
        .find(|smp| {
            smp.label
                .iter()
                .any(|l| s(l.key) == "container.id" && s(l.str) == APP_ID)
        })
        .expect("a sample of the container");
    let label = |k: &str| {
        sample
            .label
            .iter()
            .find(|l| s(l.key) == k)
            .map(|l| s(l.str))
    };
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d4b9c8f6d-q2w9x"),
        ("k8s.pod.uid", POD_UID),
        ("k8s.container.name", "app"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.node.name", "node1"),
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("container.runtime.name", "containerd"),
        ("container.image.name", "registry.example.com/shop/checkout"),
    ] {
        assert_eq!(label(k), Some(v), "{k}");
    }
    // Only this node's pods were asked for.
    assert!(server
        .requests()
        .iter()
        .all(|r| r.query_param("fieldSelector").as_deref() == Some("spec.nodeName=node1")));
}
