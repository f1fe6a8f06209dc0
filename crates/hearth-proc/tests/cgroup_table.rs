//! `classify_cgroup` against `/proc/<pid>/cgroup` contents as the kernel
//! writes them for each runtime, kubelet cgroup driver, cgroup version, QoS
//! class, nesting and cgroup namespace; a mutation smoke test over the same
//! contents; and a check against cgroups created for real (root only).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_proc::container::{classify_cgroup, Classification, ContainerRef, QosClass, Runtime};

// Container IDs (64 hex) and pod UIDs used by the table.
const C0: &str = "db7e8735d8cc32bcdbb02de79e132925197939aee24644a7ca3894251b6b3bb8";
const C1: &str = "6efda03048780aea4714e7f7b10bc3b3d2ce60318779c94ffa0f3d66c728145b";
const C2: &str = "a9aa2f7aa4d1b318c0b014967823453f9b4e2782e90cb8d1407d21ecc69d15b2";
const C3: &str = "6fd34d8b3d45dc0bef609a63b86d48187ecb7b6abd2596f60344aec19b225e2b";
const C4: &str = "14f4e6047623b95f9c603f545bf6924744e86dc565ba966ac25eeaae6d5ad3b5";
const C5: &str = "9a6605f3d55fe58ac6c683b1236bb5a8983d5ca3476b4124e516ce914389d1b9";
const C6: &str = "66221f4f35045ab93f76389d9c27da92f93275a577d64f20a703a7463a1fe837";
const C7: &str = "fc26936f0150e9166d5784812ca0fe7cd5377927c2597c63416323dcf08510ee";
const C8: &str = "187b95cac69e64d4936114528ed6773ffd0ca9a01a66f472dea55c15306507aa";
const C9: &str = "d8e9e0f49a0f1aa0ebced52d14cb8b15e170a2cbae72477e98ad0baa14afe8dc";
const C10: &str = "d4b936e2d676cd91c2facae952ca33d1f33312c39b571d0b8f1f21a56aef347d";
const C11: &str = "a8c33fc6b9df1eda52eb2bbe11cb8ca703f5942dd8b74ffd1d92ce6fc32dc601";
const C12: &str = "dce952102480eece51d7d40fe2538416ebeb20092887c8b300f6003010d5f2f2";
const C13: &str = "3c0f4ccbb0abcd3b179e799fbe983e378cc5cda8f121e737d51292196fbcc894";
const C14: &str = "5ce0a364cd23cba9317bab7f56a5b354427381daf2b5fee2c4587d5bf561da87";
const C15: &str = "8d719f98d25ff6cb2dc5cb8124e3470c734c847d074c1ef6cc88650a9eb7cd93";
const C16: &str = "94f4e951f409a30349a2423ae314137a49799a3d88324ff6a0fa2fe0c8c60960";
const C17: &str = "5b6d4746970b06d1d0ec0ff5482bd43323db40b54f4d2cfc6d79010e6b8029bd";
const C18: &str = "a4a7aca02062f9e74e42d37a29f7ad8984b2f3b4653c386ecbc32a2ac34fcb45";
const C19: &str = "d3b2ef62f41fb5bdc49b8b33b1163ea1b28db1f79a7c9412d566c4679b2ac9fe";
const C20: &str = "09491710927ca591f961372a03ccf3892a6fc9f66159cd0af787ad0b7920ad8d";
const C21: &str = "50cf771a953dbacf0265c18f838bd0ba802c9765a34a90adb01db1e4a9e3ff20";
const C22: &str = "f1267fc834ce8a19a6f74abaa462585af44a2f09513c7b43a012008cfa10ba3c";
const C23: &str = "6afd23434a6da10c020bc04baa3bdeaa0ebaf0b87a0e74d72ff1029eb06783c3";
const C24: &str = "7d85a553d8c3ee9f1c571ab43eaada956a5bfdb4a775ae2b75a6277af2b51839";
const C25: &str = "9ffe5b89f56b3668720a7a02f67cc5531247a9ccf6bb865dc6ac9614daf6a0d2";
/// Node containers of kind / minikube (the outer runtime's containers).
const NODE1: &str = "fd227ed2c84ce1c0d6b1b6ec2d1c2f0c3a466489ea1ab8e700df8ef34f5626a5";
const NODE2: &str = "864b5c9119e10f6fdc32aaf71f84e928529b3decee40ebe14216d664c18618d0";
const NODE3: &str = "c56453b24c848bfdd7c8e8da033c7051128fd7a927cedf93287eba821eb14018";
const NODE4: &str = "ca8765318f2380e01d374d71b73bb041d0062f0647c56beafeb43078fcdb7a85";

const U0: &str = "24c5c4d6-0a70-4195-817f-4f7eda0e2457";
const U1: &str = "1dd04247-8ee0-46b2-a31a-63fce23067df";
const U2: &str = "71676643-35b2-421b-a119-bebb0c66db38";
const U3: &str = "17f9c5a0-648e-4017-b4f4-3e3a68b06be4";
const U4: &str = "1521b0d9-0d8e-4d15-ad3b-5bb78b6c214b";
const U5: &str = "0f863272-1b4e-43fc-8a49-f9fb71af3602";
const U6: &str = "6d23a426-86fa-4b80-81d6-1e7cb12e9a82";
const U7: &str = "3d9c2ca3-7f16-4263-a265-c7e83ef37854";
const U8: &str = "4a497b84-18c8-4e8e-91e9-604162933a40";
const U9: &str = "ff30a601-5824-4446-b7cf-1a3bab1cd3c4";
const U10: &str = "2932ead5-eb7e-4d93-94b2-e21f78bd4668";
const U11: &str = "44a47078-c3f6-4a19-8f93-958aca99115d";
const U12: &str = "3736ff65-e62e-48b3-ba75-f46a33a6310b";
const U13: &str = "72fa30b6-817c-4850-910d-6965abfd7a37";
/// Static pods: the kubelet's hash of the manifest stands in for the UID.
const STATIC1: &str = "292a8603107755355dbf6ab6eb36b880";
const STATIC2: &str = "9260c50e2b1fa46fab781a3a4cb2b54f";

use QosClass::{BestEffort, Burstable, Guaranteed};
use Runtime::{Containerd, CriO, Docker, Podman};

/// A pod UID as a systemd slice name spells it (`-` is the slice level
/// separator there, so the kubelet writes `_`).
fn us(uid: &str) -> String {
    uid.replace('-', "_")
}

/// A pure cgroup v1 file (CentOS 7 / RHEL 7 kernel 3.10 layout), every
/// hierarchy at the same path.
fn v1(path: &str) -> String {
    [
        "11:hugetlb",
        "10:devices",
        "9:pids",
        "8:perf_event",
        "7:cpuset",
        "6:blkio",
        "5:net_cls,net_prio",
        "4:memory",
        "3:cpu,cpuacct",
        "2:freezer",
        "1:name=systemd",
    ]
    .iter()
    .map(|h| format!("{h}:{path}\n"))
    .collect()
}

/// A hybrid file (Ubuntu 20.04 / Debian 10 layout): v1 controllers, the
/// `name=systemd` hierarchy and the unified one. `rdma` and `misc` stay at
/// the root, as nobody moves processes there.
fn hybrid(path: &str, unified: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "13:misc:/\n12:pids:{path}\n11:cpuset:{path}\n10:rdma:/\n"
    ));
    for h in [
        "9:perf_event",
        "8:hugetlb",
        "7:freezer",
        "6:net_cls,net_prio",
        "5:memory",
        "4:blkio",
        "3:devices",
        "2:cpu,cpuacct",
        "1:name=systemd",
    ] {
        s.push_str(&format!("{h}:{path}\n"));
    }
    s.push_str(&format!("0::{unified}\n"));
    s
}

/// A cgroup v2 file: one line.
fn v2(path: &str) -> String {
    format!("0::{path}\n")
}

/// The systemd-driver pod slices above a container scope.
fn pod_slices(qos: QosClass, uid: &str) -> String {
    let uid = us(uid);
    match qos {
        Guaranteed => format!("/kubepods.slice/kubepods-pod{uid}.slice"),
        Burstable => {
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice")
        }
        BestEffort => {
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice")
        }
    }
}

/// The cgroupfs-driver pod directories above a container.
fn pod_dirs(qos: QosClass, uid: &str) -> String {
    match qos {
        Guaranteed => format!("/kubepods/pod{uid}"),
        Burstable => format!("/kubepods/burstable/pod{uid}"),
        BestEffort => format!("/kubepods/besteffort/pod{uid}"),
    }
}

#[derive(Debug, Clone)]
enum Want {
    Host,
    Monitor(&'static str),
    Container {
        id: &'static str,
        runtime: Option<Runtime>,
        pod: Option<&'static str>,
        qos: Option<QosClass>,
    },
}

impl Want {
    fn classification(&self) -> Classification {
        match self {
            Want::Host => Classification::Host,
            Want::Monitor(id) => Classification::RuntimeMonitor { id: id.to_string() },
            Want::Container {
                id,
                runtime,
                pod,
                qos,
            } => Classification::Container(ContainerRef {
                id: id.to_string(),
                runtime: *runtime,
                pod_uid: pod.map(str::to_string),
                qos: *qos,
            }),
        }
    }
}

/// A container in a Kubernetes pod.
fn pod(id: &'static str, runtime: Option<Runtime>, uid: &'static str, qos: QosClass) -> Want {
    Want::Container {
        id,
        runtime,
        pod: Some(uid),
        qos: Some(qos),
    }
}

/// A container outside Kubernetes.
fn bare(id: &'static str, runtime: Option<Runtime>) -> Want {
    Want::Container {
        id,
        runtime,
        pod: None,
        qos: None,
    }
}

struct Row {
    name: &'static str,
    contents: String,
    want: Want,
}

fn row(name: &'static str, contents: String, want: Want) -> Row {
    Row {
        name,
        contents,
        want,
    }
}

fn table() -> Vec<Row> {
    vec![
        // ---- containerd, systemd driver ----
        row(
            "containerd systemd v2 burstable",
            v2(&format!("{}/cri-containerd-{C0}.scope", pod_slices(Burstable, U0))),
            pod(C0, Some(Containerd), U0, Burstable),
        ),
        row(
            "containerd systemd v2 besteffort",
            v2(&format!("{}/cri-containerd-{C1}.scope", pod_slices(BestEffort, U1))),
            pod(C1, Some(Containerd), U1, BestEffort),
        ),
        row(
            "containerd systemd v2 guaranteed",
            v2(&format!("{}/cri-containerd-{C2}.scope", pod_slices(Guaranteed, U2))),
            pod(C2, Some(Containerd), U2, Guaranteed),
        ),
        row(
            "containerd systemd v1 burstable",
            v1(&format!("{}/cri-containerd-{C3}.scope", pod_slices(Burstable, U3))),
            pod(C3, Some(Containerd), U3, Burstable),
        ),
        row(
            "containerd systemd hybrid guaranteed",
            {
                let p = format!("{}/cri-containerd-{C4}.scope", pod_slices(Guaranteed, U4));
                hybrid(&p, &p)
            },
            pod(C4, Some(Containerd), U4, Guaranteed),
        ),
        row(
            "containerd pod sandbox (pause) systemd v2 besteffort: same shape as a container",
            v2(&format!("{}/cri-containerd-{C5}.scope", pod_slices(BestEffort, U1))),
            pod(C5, Some(Containerd), U1, BestEffort),
        ),
        row(
            // containerd told to use systemd cgroups while the kubelet's
            // driver says otherwise: the slice:prefix:id triple becomes a
            // directory name, under containerd's own service on some hierarchies.
            "containerd v1 slice:cri-containerd:id directory names",
            {
                let leaf = format!("kubepods-besteffort-pod{}.slice:cri-containerd:{C6}", us(U5));
                let svc = format!("/system.slice/containerd.service/{leaf}");
                format!(
                    "11:perf_event:/{leaf}\n10:blkio:{svc}\n9:cpu,cpuacct:{svc}\n8:cpuset:/{leaf}\n\
                     7:hugetlb:/{leaf}\n6:devices:{svc}\n5:pids:{svc}\n4:memory:{svc}\n\
                     3:net_cls,net_prio:/{leaf}\n2:freezer:/{leaf}\n1:name=systemd:{svc}\n"
                )
            },
            pod(C6, Some(Containerd), U5, BestEffort),
        ),
        // ---- containerd (or any runtime), cgroupfs driver ----
        row(
            "cgroupfs v1 besteffort (containerd)",
            v1(&format!("{}/{C7}", pod_dirs(BestEffort, U6))),
            pod(C7, None, U6, BestEffort),
        ),
        row(
            "cgroupfs v2 burstable (k3s)",
            v2(&format!("{}/{C8}", pod_dirs(Burstable, U7))),
            pod(C8, None, U7, Burstable),
        ),
        row(
            "cgroupfs v2 guaranteed",
            v2(&format!("{}/{C9}", pod_dirs(Guaranteed, U8))),
            pod(C9, None, U8, Guaranteed),
        ),
        row(
            "cgroupfs hybrid burstable, unified line at the root",
            hybrid(&format!("{}/{C10}", pod_dirs(Burstable, U9)), "/"),
            pod(C10, None, U9, Burstable),
        ),
        // ---- CRI-O ----
        row(
            "cri-o systemd v2 burstable",
            v2(&format!("{}/crio-{C11}.scope", pod_slices(Burstable, U10))),
            pod(C11, Some(CriO), U10, Burstable),
        ),
        row(
            "cri-o systemd v2 guaranteed, crun container subgroup",
            v2(&format!("{}/crio-{C12}.scope/container", pod_slices(Guaranteed, U11))),
            pod(C12, Some(CriO), U11, Guaranteed),
        ),
        row(
            "cri-o systemd v1 besteffort",
            v1(&format!("{}/crio-{C13}.scope", pod_slices(BestEffort, U12))),
            pod(C13, Some(CriO), U12, BestEffort),
        ),
        row(
            "cri-o conmon systemd v2",
            v2(&format!("{}/crio-conmon-{C11}.scope", pod_slices(Burstable, U10))),
            Want::Monitor(C11),
        ),
        row(
            "cri-o conmon systemd v1",
            v1(&format!("{}/crio-conmon-{C13}.scope", pod_slices(BestEffort, U12))),
            Want::Monitor(C13),
        ),
        row(
            "cri-o conmon in the pod slice (conmon_cgroup = pod): no container named",
            v2(&pod_slices(Burstable, U10)),
            Want::Host,
        ),
        row(
            "cri-o cgroupfs v1 burstable",
            v1(&format!("{}/crio-{C14}", pod_dirs(Burstable, U13))),
            pod(C14, Some(CriO), U13, Burstable),
        ),
        row(
            "cri-o cgroupfs v2 guaranteed",
            v2(&format!("{}/crio-{C15}", pod_dirs(Guaranteed, U0))),
            pod(C15, Some(CriO), U0, Guaranteed),
        ),
        row(
            "cri-o conmon cgroupfs v2",
            v2(&format!("{}/crio-conmon-{C14}", pod_dirs(Burstable, U13))),
            Want::Monitor(C14),
        ),
        // ---- Docker: cri-dockerd / dockershim and plain Docker ----
        row(
            "cri-dockerd systemd v2 besteffort",
            v2(&format!("{}/docker-{C16}.scope", pod_slices(BestEffort, U1))),
            pod(C16, Some(Docker), U1, BestEffort),
        ),
        row(
            "cri-dockerd systemd v2 guaranteed",
            v2(&format!("{}/docker-{C17}.scope", pod_slices(Guaranteed, U2))),
            pod(C17, Some(Docker), U2, Guaranteed),
        ),
        row(
            "dockershim systemd v1 besteffort (kube-proxy)",
            v1(&format!("{}/docker-{C18}.scope", pod_slices(BestEffort, U3))),
            pod(C18, Some(Docker), U3, BestEffort),
        ),
        row(
            "dockershim cgroupfs v1 burstable",
            v1(&format!("{}/{C19}", pod_dirs(Burstable, U4))),
            pod(C19, None, U4, Burstable),
        ),
        row(
            "docker cgroupfs v1",
            v1(&format!("/docker/{C20}")),
            bare(C20, Some(Docker)),
        ),
        row(
            "docker cgroupfs hybrid, name=systemd left at the root",
            {
                let p = format!("/docker/{C20}");
                hybrid(&p, "/").replace(&format!("1:name=systemd:{p}"), "1:name=systemd:/")
            },
            bare(C20, Some(Docker)),
        ),
        row(
            "docker systemd v2",
            v2(&format!("/system.slice/docker-{C21}.scope")),
            bare(C21, Some(Docker)),
        ),
        row(
            "docker systemd v1",
            v1(&format!("/system.slice/docker-{C21}.scope")),
            bare(C21, Some(Docker)),
        ),
        row(
            "docker-in-docker v1",
            v1(&format!("/docker/{NODE1}/docker/{C22}")),
            bare(C22, Some(Docker)),
        ),
        row(
            "docker daemon v2",
            v2("/system.slice/docker.service"),
            Want::Host,
        ),
        row(
            "docker daemon v1",
            v1("/system.slice/docker.service"),
            Want::Host,
        ),
        // ---- podman ----
        row(
            "podman rootful systemd v2",
            v2(&format!("/machine.slice/libpod-{C23}.scope")),
            bare(C23, Some(Podman)),
        ),
        row(
            "podman rootless systemd v2, crun container subgroup",
            v2(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C24}.scope/container"
            )),
            bare(C24, Some(Podman)),
        ),
        row(
            "podman conmon systemd v2",
            v2(&format!("/machine.slice/libpod-conmon-{C23}.scope")),
            Want::Monitor(C23),
        ),
        row(
            "podman rootless conmon v2",
            v2(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{C24}.scope"
            )),
            Want::Monitor(C24),
        ),
        row(
            "podman pod systemd v2: a podman pod is no Kubernetes pod",
            v2(&format!(
                "/machine.slice/machine-libpod_pod_{}.slice/libpod-{C25}.scope",
                NODE4
            )),
            bare(C25, Some(Podman)),
        ),
        row(
            "podman cgroupfs v1",
            v1(&format!("/libpod_parent/libpod-{C25}")),
            bare(C25, Some(Podman)),
        ),
        row(
            "podman cgroupfs conmon v1: no container named",
            v1("/libpod_parent/conmon"),
            Want::Host,
        ),
        // ---- nesting: kind and minikube ----
        row(
            "kind v2 seen from the host (node container, private cgroupns)",
            v2(&format!(
                "/system.slice/docker-{NODE1}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/\
                 cri-containerd-{C0}.scope",
                us(U5)
            )),
            pod(C0, Some(Containerd), U5, BestEffort),
        ),
        row(
            "kind v2 seen inside the node",
            v2(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/\
                 kubelet-kubepods-burstable-pod{}.slice/cri-containerd-{C1}.scope",
                us(U6)
            )),
            pod(C1, Some(Containerd), U6, Burstable),
        ),
        row(
            "kind v2 guaranteed",
            v2(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{}.slice/\
                 cri-containerd-{C2}.scope",
                us(U7)
            )),
            pod(C2, Some(Containerd), U7, Guaranteed),
        ),
        row(
            "kind v1 cgroupfs (older kind, cgroup root /kubelet)",
            v1(&format!("/docker/{NODE2}/kubelet/kubepods/burstable/pod{U8}/{C3}")),
            pod(C3, None, U8, Burstable),
        ),
        row(
            "kind node's own kubelet: the node container is the innermost",
            v2(&format!(
                "/system.slice/docker-{NODE1}.scope/system.slice/kubelet.service"
            )),
            bare(NODE1, Some(Docker)),
        ),
        row(
            "kind pod slice with no container below: the node container",
            v2(&format!(
                "/system.slice/docker-{NODE1}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice",
                us(U5)
            )),
            bare(NODE1, Some(Docker)),
        ),
        row(
            "minikube docker driver v1 cgroupfs, docker runtime inside",
            v1(&format!("/docker/{NODE3}/kubepods/besteffort/pod{U9}/{C4}")),
            pod(C4, None, U9, BestEffort),
        ),
        row(
            "minikube docker driver v1, cri-o systemd inside",
            v1(&format!(
                "/docker/{NODE3}/kubepods.slice/kubepods-besteffort.slice/\
                 kubepods-besteffort-pod{}.slice/crio-{C5}.scope",
                us(U10)
            )),
            pod(C5, Some(CriO), U10, BestEffort),
        ),
        row(
            "minikube docker driver v2, cri-dockerd systemd inside",
            v2(&format!(
                "/system.slice/docker-{NODE3}.scope{}/docker-{C6}.scope",
                pod_slices(Burstable, U11)
            )),
            pod(C6, Some(Docker), U11, Burstable),
        ),
        // ---- cgroup namespaces ----
        row(
            "cgroupns: another pod of the same QoS, systemd v2",
            v2(&format!(
                "/../../kubepods-besteffort-pod{}.slice/cri-containerd-{C7}.scope",
                us(U12)
            )),
            pod(C7, Some(Containerd), U12, BestEffort),
        ),
        row(
            "cgroupns: guaranteed pod seen from a burstable one, systemd v2",
            v2(&format!(
                "/../../../kubepods-pod{}.slice/cri-containerd-{C8}.scope",
                us(U13)
            )),
            pod(C8, Some(Containerd), U13, Guaranteed),
        ),
        row(
            "cgroupns: cgroupfs, QoS level visible",
            v2(&format!("/../../../burstable/pod{U0}/{C9}")),
            pod(C9, None, U0, Burstable),
        ),
        row(
            "cgroupns: cgroupfs, same QoS level (class not visible)",
            v2(&format!("/../../pod{U1}/{C10}")),
            Want::Container {
                id: C10,
                runtime: None,
                pod: Some(U1),
                qos: None,
            },
        ),
        row(
            "cgroupns: kind from a host-level pod in its own namespace",
            v2(&format!(
                "/../../../system.slice/docker-{NODE1}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{}.slice/\
                 cri-containerd-{C11}.scope",
                us(U2)
            )),
            pod(C11, Some(Containerd), U2, Burstable),
        ),
        row(
            "cgroupns: a process at the reader's own namespace root",
            v2("/"),
            Want::Host,
        ),
        row(
            "cgroupns: the runtime's service seen from a pod",
            v2("/../../../../system.slice/containerd.service"),
            Want::Host,
        ),
        // ---- static pods ----
        row(
            "static pod systemd v2 burstable (manifest hash, kube-apiserver)",
            v2(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC1}.slice/\
                 cri-containerd-{C12}.scope"
            )),
            pod(C12, Some(Containerd), STATIC1, Burstable),
        ),
        row(
            "static pod cgroupfs v1 guaranteed (etcd)",
            v1(&format!("/kubepods/pod{STATIC2}/{C13}")),
            pod(C13, None, STATIC2, Guaranteed),
        ),
        // ---- other orchestrators: a bare ID anywhere ----
        row(
            "bare id under an orchestrator's own parent (v1)",
            v1(&format!("/ecs/5a6f2c1e9b7d4e3f8a0b1c2d3e4f5a6b/{C14}")),
            bare(C14, None),
        ),
        row(
            "bare id under a containerd namespace (v2)",
            v2(&format!("/default/{C15}")),
            bare(C15, None),
        ),
        // ---- host processes ----
        row("systemd init v2", v2("/init.scope"), Want::Host),
        row(
            "user session v2",
            v2("/user.slice/user-1000.slice/session-3.scope"),
            Want::Host,
        ),
        row(
            "containerd and its shims v2",
            v2("/system.slice/containerd.service"),
            Want::Host,
        ),
        row(
            "kubelet hybrid",
            hybrid("/system.slice/kubelet.service", "/system.slice/kubelet.service"),
            Want::Host,
        ),
        row("sshd v1", v1("/system.slice/sshd.service"), Want::Host),
        row("kernel thread v1 (all at the root)", v1("/"), Want::Host),
        row(
            "memory controller under a 32-hex sandbox id",
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/51e7c857c3a7b127261f98b96061268e\n1:cpu:/\n0::/\n"
                .to_string(),
            Want::Host,
        ),
        row(
            "63-hex id is no id",
            v2(&format!("/system.slice/docker-{}.scope", &C16[..63])),
            Want::Host,
        ),
        row(
            "65-hex id is no id",
            v2(&format!("{}/cri-containerd-{C17}a.scope", pod_slices(Burstable, U0))),
            Want::Host,
        ),
        row(
            "non-hex id is no id",
            v2(&format!("{}/{}g", pod_dirs(BestEffort, U1), &C18[..63])),
            Want::Host,
        ),
        row(
            "garbage lines only",
            "\nnot a cgroup line\nx:y\n0::relative/path\n:::\n-1::/docker/x\n0\n"
                .to_string(),
            Want::Host,
        ),
        row(
            "garbage lines around a valid one",
            format!(
                "garbage\n12:pids\n0::kubepods/{C19}\nfoo:cpu:/docker/{C20}\n0::/system.slice/docker-{C19}.scope\n\u{0}\u{ff}\n"
            ),
            bare(C19, Some(Docker)),
        ),
        row(
            "invalid pod directory name gives no pod",
            v2(&format!("/kubepods/burstable/podnot-a-uid/{C21}")),
            Want::Container {
                id: C21,
                runtime: None,
                pod: None,
                qos: Some(Burstable),
            },
        ),
        row(
            "unified line decides over v1 lines",
            {
                let unified = format!("{}/crio-{C22}.scope", pod_slices(Burstable, U3));
                hybrid(&format!("/docker/{C23}"), &unified)
            },
            pod(C22, Some(CriO), U3, Burstable),
        ),
        row(
            "name=systemd line decides over controller lines",
            format!(
                "4:memory:/docker/{C23}\n3:cpu,cpuacct:/docker/{C23}\n1:name=systemd:/system.slice/docker-{C24}.scope\n"
            ),
            bare(C24, Some(Docker)),
        ),
        row(
            "CRLF line ends and an uppercase id",
            format!(
                "0::/system.slice/docker-{}.scope\r\n",
                C25.to_ascii_uppercase()
            ),
            bare(C25, Some(Docker)),
        ),
    ]
}

#[test]
fn table_rows() {
    let rows = table();
    assert!(rows.len() >= 45, "only {} rows", rows.len());
    let mut failures = Vec::new();
    for r in &rows {
        let got = classify_cgroup(&r.contents);
        let want = r.want.classification();
        if got != want {
            failures.push(format!(
                "{}:\n  contents: {:?}\n  want: {want:?}\n  got:  {got:?}",
                r.name, r.contents
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    println!("{} rows passed", rows.len());
}

#[test]
fn table_covers_every_form() {
    let rows = table();
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    let runtime = |rt: Runtime| move |r: &Row| matches!(r.want, Want::Container { runtime: Some(x), .. } if x == rt);
    let qos = |q: QosClass| move |r: &Row| matches!(r.want, Want::Container { qos: Some(x), .. } if x == q);
    for rt in [Containerd, CriO, Docker, Podman] {
        assert!(count(&runtime(rt)) >= 3, "{rt:?}");
    }
    for q in [Guaranteed, Burstable, BestEffort] {
        assert!(count(&qos(q)) >= 5, "{q:?}");
    }
    assert!(count(&|r| matches!(r.want, Want::Monitor(_))) >= 5);
    assert!(count(&|r| matches!(r.want, Want::Host)) >= 15);
    assert!(count(&|r| r.contents.contains("0::/..")) >= 5);
    assert!(count(&|r| r.contents.lines().count() > 1) >= 15);
    assert!(count(&|r| r.contents.contains(".slice/") || r.contents.contains(".slice:")) >= 15);
    assert!(count(&|r| r.contents.contains("/kubepods/")) >= 8);
}

/// xorshift64: a small seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn is_lower_hex_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Invariants every classification of any input keeps.
fn check_invariants(input: &str, got: &Classification) {
    let lowered = input.to_ascii_lowercase();
    let id = match got {
        Classification::Host => return,
        Classification::Container(c) => {
            if let Some(uid) = &c.pod_uid {
                assert!(
                    uid.bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-')),
                    "pod uid {uid:?} from {input:?}"
                );
            }
            &c.id
        }
        Classification::RuntimeMonitor { id } => id,
    };
    assert!(is_lower_hex_id(id), "id {id:?} from {input:?}");
    assert!(lowered.contains(id.as_str()), "id {id:?} not in {input:?}");
}

#[test]
fn mutation_smoke() {
    let rows = table();
    let seeds: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| r.contents.clone().into_bytes())
        .collect();
    const ALPHABET: &[u8] = b"/:-_.0123456789abcdefABCDEFgpodkubesliceScope\n\r ,=\0\xff";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut containers = 0usize;
    for _ in 0..50_000 {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(6) {
                0 => {
                    let at = rng.below(data.len() + 1);
                    data.truncate(at);
                }
                1 => {
                    if !data.is_empty() {
                        let at = rng.below(data.len());
                        data[at] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    // Splice a few lines of another row in.
                    let other = &seeds[rng.below(seeds.len())];
                    let lines: Vec<&[u8]> = other.split_inclusive(|&b| b == b'\n').collect();
                    let from = rng.below(lines.len());
                    let to = (from + 1 + rng.below(3)).min(lines.len());
                    let at = rng.below(data.len() + 1);
                    let piece: Vec<u8> = lines[from..to].concat();
                    data.splice(at..at, piece);
                }
                3 => {
                    let at = rng.below(data.len() + 1);
                    let b = ALPHABET[rng.below(ALPHABET.len())];
                    data.insert(at, b);
                }
                4 => {
                    // Duplicate a run (grows segments, repeats ids).
                    if !data.is_empty() {
                        let from = rng.below(data.len());
                        let to = (from + 1 + rng.below(80)).min(data.len());
                        let run = data[from..to].to_vec();
                        let at = rng.below(data.len() + 1);
                        data.splice(at..at, run);
                    }
                }
                _ => {
                    if !data.is_empty() {
                        let from = rng.below(data.len());
                        let to = (from + 1 + rng.below(16)).min(data.len());
                        data.drain(from..to);
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&data);
        let got = classify_cgroup(&text);
        check_invariants(&text, &got);
        if matches!(got, Classification::Container(_)) {
            containers += 1;
        }
    }
    // The mutations keep enough structure for most inputs to still parse.
    assert!(containers > 10_000, "only {containers} containers found");
    println!("50000 mutated inputs, {containers} classified as containers");
}

// ---- real cgroups ----

/// Whether a missing privilege or hierarchy must fail the test rather than
/// skip it (CI machines that are known to allow it set this).
fn require_privileged() -> bool {
    std::env::var("HEARTH_REQUIRE_PRIVILEGED").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints the skip (or panics when skipping is not allowed).
fn skip(test: &str, why: &str) {
    if require_privileged() {
        panic!("{test}: {why} (HEARTH_REQUIRE_PRIVILEGED is set)");
    }
    println!("SKIP {test}: {why}");
    let _ = io::stdout().flush();
}

/// Mount point of the cgroup v2 hierarchy, or of the v1 hierarchy holding
/// `controller`, from `/proc/self/mounts`.
fn cgroup_mount(v2: bool, controller: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (mount, fstype, options) = (f.get(1)?, f.get(2)?, f.get(3)?);
        let found = if v2 {
            *fstype == "cgroup2"
        } else {
            *fstype == "cgroup" && options.split(',').any(|o| o == controller)
        };
        found.then(|| PathBuf::from(mount))
    })
}

/// Per-run names, so a run that died halfway does not collide with the
/// next one.
fn unique_ids(salt: u64) -> (String, String, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = Rng((nanos ^ (u64::from(std::process::id()) << 32) ^ salt) | 1);
    let id: String = (0..4).map(|_| format!("{:016x}", rng.next())).collect();
    let u = format!("{:016x}{:016x}", rng.next(), rng.next());
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &u[0..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..32]
    );
    let scratch = format!(
        "hearth-test-{}-{:x}",
        std::process::id(),
        rng.next() & 0xffff_ffff
    );
    (id, uid, scratch)
}

/// Cgroups made for a test and a child moved into them; dropping it (also
/// while unwinding from a failed assertion) moves the child back, ends it
/// and removes the cgroups, innermost first.
struct Scratch {
    created: Vec<PathBuf>,
    child: Option<Child>,
    home: Option<PathBuf>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            created: Vec::new(),
            child: None,
            home: None,
        }
    }

    /// Creates `base/rel`, one directory at a time, remembering each.
    fn make(&mut self, base: &Path, rel: &str) -> io::Result<PathBuf> {
        let mut dir = base.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            fs::create_dir(&dir)?;
            self.created.push(dir.clone());
        }
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(home) = &self.home {
                let _ = fs::write(home.join("cgroup.procs"), child.id().to_string());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.created.iter().rev() {
            // The kernel may take a moment to notice the cgroup emptied.
            let mut result = fs::remove_dir(dir);
            for _ in 0..50 {
                if result.is_ok() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
                result = fs::remove_dir(dir);
            }
            if let Err(e) = result {
                eprintln!("could not remove {}: {e}", dir.display());
            }
        }
    }
}

/// The child's cgroup directory in the hierarchy mounted at `mount`, read
/// from its current placement, so it can be put back there.
fn home_of(mount: &Path, pid: u32, v2: bool, controller: &str) -> PathBuf {
    let contents = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let path = contents.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if v2 {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then_some(path)
    });
    match path {
        Some(p) if !p.contains("..") && mount.join(p.trim_start_matches('/')).is_dir() => {
            mount.join(p.trim_start_matches('/'))
        }
        _ => mount.to_path_buf(),
    }
}

/// Spawns a child, moves it into `leaf` and returns what its
/// `/proc/<pid>/cgroup` then says.
fn move_child_into(
    scratch: &mut Scratch,
    mount: &Path,
    leaf: &Path,
    v2: bool,
    controller: &str,
) -> io::Result<String> {
    let child = Command::new("sleep").arg("30").spawn()?;
    let pid = child.id();
    scratch.home = Some(home_of(mount, pid, v2, controller));
    scratch.child = Some(child);
    fs::write(leaf.join("cgroup.procs"), pid.to_string())?;
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
}

fn preflight(test: &str, v2: bool, controller: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "not root: cannot create cgroups");
        return None;
    }
    match cgroup_mount(v2, controller) {
        Some(m) => Some(m),
        None => {
            let what = if v2 {
                "no cgroup v2 hierarchy mounted".to_string()
            } else {
                format!("no cgroup v1 hierarchy with the {controller} controller mounted")
            };
            skip(test, &what);
            None
        }
    }
}

#[test]
fn real_cgroup_v2_systemd_layout() {
    const TEST: &str = "real_cgroup_v2_systemd_layout";
    let Some(mount) = preflight(TEST, true, "") else {
        return;
    };
    let (id, uid, scratch_name) = unique_ids(2);
    // Under a scratch parent, never at the root: a real kubelet on this
    // machine owns /kubepods.slice and removes pod cgroups it does not know.
    let rel = format!(
        "{scratch_name}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        us(&uid)
    );
    let mut scratch = Scratch::new();
    let leaf = match scratch.make(&mount, &rel) {
        Ok(leaf) => leaf,
        Err(e) => {
            return skip(
                TEST,
                &format!("cannot create cgroups under {}: {e}", mount.display()),
            )
        }
    };
    let contents = move_child_into(&mut scratch, &mount, &leaf, true, "")
        .unwrap_or_else(|e| panic!("moving a child into {}: {e}", leaf.display()));
    println!("/proc/<child>/cgroup:\n{contents}");
    let want = Classification::Container(ContainerRef {
        id: id.clone(),
        runtime: Some(Containerd),
        pod_uid: Some(uid.clone()),
        qos: Some(Burstable),
    });
    assert_eq!(classify_cgroup(&contents), want, "from {contents:?}");
}

#[test]
fn real_cgroup_v1_cgroupfs_layout() {
    const TEST: &str = "real_cgroup_v1_cgroupfs_layout";
    let controller = if cgroup_mount(false, "pids").is_some() {
        "pids"
    } else {
        "cpu"
    };
    let Some(mount) = preflight(TEST, false, controller) else {
        return;
    };
    let (id, uid, scratch_name) = unique_ids(1);
    let rel = format!("{scratch_name}/kubepods/besteffort/pod{uid}/{id}");
    let mut scratch = Scratch::new();
    let leaf = match scratch.make(&mount, &rel) {
        Ok(leaf) => leaf,
        Err(e) => {
            return skip(
                TEST,
                &format!("cannot create cgroups under {}: {e}", mount.display()),
            )
        }
    };
    let contents = move_child_into(&mut scratch, &mount, &leaf, false, controller)
        .unwrap_or_else(|e| panic!("moving a child into {}: {e}", leaf.display()));
    println!("/proc/<child>/cgroup:\n{contents}");
    let want = Classification::Container(ContainerRef {
        id: id.clone(),
        runtime: None,
        pod_uid: Some(uid.clone()),
        qos: Some(BestEffort),
    });

    // The controller's own line, alone.
    let line = contents
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == controller))
        })
        .unwrap_or_else(|| panic!("no {controller} line in {contents:?}"));
    assert_eq!(classify_cgroup(line), want, "from {line:?}");

    // The whole file: the unified and name=systemd lines come first, so it
    // only comes down to the controller line when they name no container
    // (true unless this test itself runs inside a container's cgroup).
    let others: String = contents
        .lines()
        .filter(|l| *l != line)
        .map(|l| format!("{l}\n"))
        .collect();
    if classify_cgroup(&others) == Classification::Host {
        assert_eq!(classify_cgroup(&contents), want, "from {contents:?}");
    } else {
        println!("note: the test's other hierarchies name a container; whole-file check skipped");
    }
}
