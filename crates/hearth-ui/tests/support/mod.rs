//! Reports built by hand, as the agent's reporter would hand them over.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use hearth_profile::{
    ContainerKey, Function, Line, Location, Mapping, Report, ReportSample, Resource,
};

pub const SEC: u64 = 1_000_000_000;

pub struct Builder {
    pub report: Report,
    functions: HashMap<String, usize>,
    locations: HashMap<String, usize>,
}

impl Builder {
    /// A window of `seconds` starting at `start_s` (seconds since the epoch).
    pub fn new(start_s: u64, seconds: u64) -> Builder {
        let mut report = Report {
            start_unix_ns: start_s * SEC,
            duration_ns: seconds * SEC,
            frequency_hz: 19,
            ..Default::default()
        };
        report.resources.push(Resource::default());
        report.mappings.push(Mapping {
            path: Arc::from("/usr/bin/app"),
            build_id: Some("ab12".into()),
            kernel: false,
        });
        report.mappings.push(Mapping {
            path: Arc::from("[kernel.kallsyms]"),
            build_id: None,
            kernel: true,
        });
        Builder {
            report,
            functions: HashMap::new(),
            locations: HashMap::new(),
        }
    }

    /// A container resource (with pod attributes when `pod` is given);
    /// returns its index.
    pub fn container(&mut self, id: &str, name: &str, pod: Option<(&str, &str)>) -> usize {
        let mut attributes = vec![
            ("container.id".to_string(), id.to_string()),
            (
                "container.runtime.name".to_string(),
                "containerd".to_string(),
            ),
        ];
        if let Some((ns, pod)) = pod {
            attributes.push(("k8s.namespace.name".into(), ns.into()));
            attributes.push(("k8s.pod.name".into(), pod.into()));
            attributes.push(("k8s.pod.uid".into(), format!("uid-{pod}")));
            attributes.push(("k8s.container.name".into(), name.into()));
        }
        self.report.resources.push(Resource {
            container: Some(Arc::new(ContainerKey {
                id: Arc::from(id),
                runtime: Some(Arc::from("containerd")),
                pod_uid: pod.map(|(_, p)| Arc::from(format!("uid-{p}").as_str())),
            })),
            attributes,
        });
        self.report.resources.len() - 1
    }

    fn function(&mut self, name: &str) -> usize {
        if let Some(&f) = self.functions.get(name) {
            return f;
        }
        self.report.functions.push(Function {
            name: Arc::from(name),
            file: None,
        });
        self.functions
            .insert(name.to_string(), self.report.functions.len() - 1);
        self.report.functions.len() - 1
    }

    /// A location for `frame`: `k:name` is a kernel frame, `a+b` is `b`
    /// inlined into `a` (one address, two functions).
    fn location(&mut self, frame: &str) -> usize {
        if let Some(&l) = self.locations.get(frame) {
            return l;
        }
        let (kernel, name) = match frame.strip_prefix("k:") {
            Some(n) => (true, n),
            None => (false, frame),
        };
        // Innermost first, as in the report model.
        let mut lines: Vec<Line> = name
            .split('+')
            .map(|n| Line {
                function: self.function(n),
                line: 1,
            })
            .collect();
        lines.reverse();
        let address = 0x1000 + self.report.locations.len() as u64 * 16;
        self.report.locations.push(Location {
            mapping: Some(if kernel { 1 } else { 0 }),
            address,
            lines,
            kernel,
        });
        self.locations
            .insert(frame.to_string(), self.report.locations.len() - 1);
        self.report.locations.len() - 1
    }

    /// Samples of a root-first stack.
    pub fn sample(
        &mut self,
        resource: usize,
        pid: u32,
        process: &str,
        root_first: &[&str],
        count: u64,
    ) {
        let mut stack: Vec<usize> = root_first.iter().map(|f| self.location(f)).collect();
        stack.reverse();
        self.report.samples.push(ReportSample {
            stack,
            pid,
            tid: pid,
            process_name: Arc::from(process),
            thread_name: Arc::from(process),
            resource,
            count,
        });
    }

    pub fn build(self) -> Report {
        self.report
    }
}

/// One window as a small machine would have it: a pod's web server, a
/// container outside Kubernetes, and host processes.
pub fn machine_window(start_s: u64, hot: u64) -> Report {
    let mut b = Builder::new(start_s, 5);
    let web = b.container(&"a".repeat(64), "web", Some(("shop", "web-7d9f-x2")));
    let side = b.container(&"b".repeat(64), "", None);
    b.sample(web, 100, "nginx", &["main", "serve", "parse+hash"], hot);
    b.sample(web, 100, "nginx", &["main", "serve", "k:sys_write"], 3);
    b.sample(
        side,
        200,
        "batch",
        &["main", "crunch", "crunch", "crunch"],
        4,
    );
    b.sample(0, 300, "make", &["main", "build"], 2);
    b.sample(0, 301, "make", &["main", "build"], 1);
    b.build()
}
