//! Container attribution with real cgroups: busy workloads are moved into
//! cgroups with the exact paths kubelet creates, and `hearth record
//! --group-by container` must attribute their samples to the right
//! container id and runtime.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use prost::Message;

const V2_ROOT: &str = "/sys/fs/cgroup/unified";
const V1_ROOT: &str = "/sys/fs/cgroup/pids";

fn labels_by_process(pprof_gz: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(pprof_gz).expect("open pprof"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let p = hearth_export::pprof::proto::Profile::decode(bytes.as_slice()).expect("decode pprof");
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    p.sample
        .iter()
        .map(|smp| {
            let labels: Vec<(String, String)> =
                smp.label.iter().map(|l| (s(l.key), s(l.str))).collect();
            let process = labels
                .iter()
                .find(|(k, _)| k == "process_name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (process, labels)
        })
        .collect()
}

#[test]
fn kubelet_cgroup_paths_attribute_samples_to_the_right_container() {
    if !require_root_perf("kubelet_cgroup_paths_attribute_samples_to_the_right_container") {
        return;
    }
    if !Path::new(V2_ROOT).join("cgroup.procs").exists()
        || !Path::new(V1_ROOT).join("cgroup.procs").exists()
    {
        skip_or_fail(
            "kubelet_cgroup_paths_attribute_samples_to_the_right_container",
            "cgroup v1 pids and v2 hierarchies are not both mounted",
        );
        return;
    }
    let dir = TempDir::new("cgroups");
    let (bin_systemd, bin_cgroupfs) = (dir.path("split_in_v2"), dir.path("split_in_v1"));
    std::fs::copy(workload("split_c"), &bin_systemd).expect("copy");
    std::fs::copy(workload("split_c"), &bin_cgroupfs).expect("copy");

    // systemd driver, cgroup v2, containerd, Burstable pod.
    let id_v2 = "3f1a9c7e5b2d4f6081a3c5e7092b4d6f8a1c3e5f7b9d2f4a6c8e0b1d3f5a7c9e";
    let uid_v2 = "6c1f3a52-9d4e-4b7a-8e21-5f0c9d3b7a14";
    let v2_path = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id_v2}.scope",
        uid_v2.replace('-', "_")
    );
    // cgroupfs driver, cgroup v1, CRI-O, BestEffort pod.
    let id_v1 = "a0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff";
    let uid_v1 = "0d9e8f7a-6b5c-4d3e-a2f1-0e9d8c7b6a59";
    let v1_path = format!("kubepods/besteffort/pod{uid_v1}/crio-{id_v1}");

    let _v2 = CgroupPlacement::new(V2_ROOT, &v2_path, &bin_systemd);
    let _v1 = CgroupPlacement::new(V1_ROOT, &v1_path, &bin_cgroupfs);
    std::thread::sleep(Duration::from_millis(200));

    let (folded, pprof) = (dir.path("c.folded"), dir.path("c.pb.gz"));
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "3",
            "-F",
            "199",
            "--group-by",
            "container",
            "-o",
        ])
        .arg(&folded)
        .arg("-o")
        .arg(&pprof));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let samples = labels_by_process(&pprof);
    for (process, id, runtime, uid) in [
        ("split_in_v2", id_v2, "containerd", uid_v2),
        ("split_in_v1", id_v1, "cri-o", uid_v1),
    ] {
        let mine: Vec<_> = samples.iter().filter(|(p, _)| p == process).collect();
        assert!(mine.len() >= 2, "{process}: {} samples", mine.len());
        for (_, labels) in &mine {
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(lk, _)| lk == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(get("container.id"), Some(id), "{process}: {labels:?}");
            assert_eq!(get("container.runtime.name"), Some(runtime), "{process}");
            assert_eq!(get("k8s.pod.uid"), Some(uid), "{process}");
        }
        eprintln!(
            "{process}: {} sample entries attributed to {}",
            mine.len(),
            &id[..12]
        );
    }
    // Host processes are grouped as the host.
    let stacks = read_folded(&folded);
    assert!(stacks
        .iter()
        .any(|s| s.frames[0] == format!("container {}", &id_v2[..12])
            && s.frames[1] == "split_in_v2"));
    assert!(stacks
        .iter()
        .any(|s| s.frames[0] == format!("container {}", &id_v1[..12])
            && s.frames[1] == "split_in_v1"));
    assert!(stacks.iter().all(|s| !s.frames[0].is_empty()));
}
