//! What the page is told, from reports built as the reporter builds them.

mod support;

use std::io::Read;
use std::time::Duration;

use hearth_ui::query::{self, FlameNode, Selection, TimeRange};
use hearth_ui::{History, HistoryConfig};
use prost::Message;
use support::*;

fn history_of(windows: &[hearth_profile::Report]) -> History {
    let mut h = History::new(HistoryConfig::default());
    for w in windows {
        h.ingest(w);
    }
    h
}

/// Root-first name paths of the leaves, with their self counts.
fn leaves(f: &query::Flame) -> Vec<(String, u64)> {
    fn walk(f: &query::Flame, n: &FlameNode, path: &str, out: &mut Vec<(String, u64)>) {
        let p = if path.is_empty() {
            f.names[n.n as usize].clone()
        } else {
            format!("{path};{}", f.names[n.n as usize])
        };
        if n.s > 0 {
            out.push((p.clone(), n.s));
        }
        let child_sum: u64 = n.c.iter().map(|c| c.v).sum();
        assert!(
            child_sum + n.s <= n.v,
            "children and self exceed the node at {p}"
        );
        for c in &n.c {
            walk(f, c, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(f, &f.root, "", &mut out);
    out.sort();
    out
}

#[test]
fn flame_graph_of_everything_groups_by_pod_container_process() {
    let h = history_of(&[machine_window(1_000, 10)]);
    let f = query::flame(&h, &Selection::All, TimeRange::ALL);
    assert_eq!(f.total, 10 + 3 + 4 + 3);
    assert_eq!(f.root.v, f.total);
    let container_b = format!("container {}", "b".repeat(12));
    assert_eq!(
        leaves(&f),
        vec![
            ("all;[host];make;main;build".to_string(), 3),
            (
                format!("all;{container_b};batch;main;crunch;crunch;crunch"),
                4
            ),
            // `hash` was inlined into `parse`: two frames, outermost first.
            (
                "all;shop/web-7d9f-x2;web;nginx;main;serve;parse;hash".to_string(),
                10
            ),
            (
                "all;shop/web-7d9f-x2;web;nginx;main;serve;sys_write".to_string(),
                3
            ),
        ]
    );
}

#[test]
fn selections_narrow_the_graph_and_drop_the_levels_above() {
    let h = history_of(&[machine_window(1_000, 10)]);
    let total = |sel: &str| query::flame(&h, &Selection::parse(sel).unwrap(), TimeRange::ALL).total;
    assert_eq!(total("pod:shop/web-7d9f-x2"), 13);
    assert_eq!(total(&format!("container:{}", "a".repeat(64))), 13);
    assert_eq!(total(&format!("container:{}", "b".repeat(64))), 4);
    assert_eq!(total("host"), 3);
    assert_eq!(total("process:host:make"), 3);
    assert_eq!(total(&format!("process:{}:nginx", "a".repeat(64))), 13);
    // The same process name elsewhere is another selection.
    assert_eq!(total("process:host:nginx"), 0);
    assert_eq!(total("pod:nope/nope"), 0);
    // Ids come from the query string: a multi-byte character where the
    // label cuts the id (at 12) is no reason to fail.
    let odd = Selection::parse("container:aéééééé").unwrap();
    let f = query::flame(&h, &odd, TimeRange::ALL);
    assert_eq!(
        (f.total, f.names[f.root.n as usize].as_str()),
        (0, "container aéééééé")
    );

    let f = query::flame(
        &h,
        &Selection::parse("process:host:make").unwrap(),
        TimeRange::ALL,
    );
    assert_eq!(leaves(&f), vec![("make;main;build".to_string(), 3)]);
    let f = query::flame(
        &h,
        &Selection::parse("pod:shop/web-7d9f-x2").unwrap(),
        TimeRange::ALL,
    );
    assert!(leaves(&f)
        .iter()
        .all(|(p, _)| p.starts_with("shop/web-7d9f-x2;web;nginx;main")));
}

#[test]
fn bad_selections_and_ranges_are_errors_not_guesses() {
    for bad in [
        "pod:",
        "container:",
        "process:nohost",
        "bogus",
        "x:y",
        "pods:a",
    ] {
        assert!(Selection::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Selection::parse("").unwrap(), Selection::All);
    assert_eq!(
        Selection::parse("process:host:a:b").unwrap(),
        Selection::Process {
            container: None,
            name: "a:b".into()
        }
    );
    let h = history_of(&[machine_window(1_000, 10)]);
    assert!(TimeRange::from_params(&h, Some(5), Some(5), None).is_err());
    assert!(TimeRange::from_params(&h, None, None, Some(-1.0)).is_err());
    assert!(TimeRange::from_params(&h, None, None, Some(f64::NAN)).is_err());
    assert!(TimeRange::from_params(&h, None, None, Some(f64::INFINITY)).is_err());
    // Huge values saturate instead of overflowing.
    let r = TimeRange::from_params(&h, Some(u64::MAX), None, None);
    assert!(r.is_err() || r.unwrap().from_ns == u64::MAX);
    let r = TimeRange::from_params(&h, None, None, Some(1e300)).unwrap();
    assert_eq!(r.from_ns, 0);
}

#[test]
fn overview_lists_pods_containers_and_processes_with_shares() {
    let h = history_of(&[machine_window(1_000, 10), machine_window(1_005, 30)]);
    let o = query::overview(&h, TimeRange::ALL, &Selection::All);
    assert_eq!(o.total_samples, 20 + 40);
    let rows: Vec<(&str, &str, u8, u64)> = o
        .rows
        .iter()
        .map(|r| (r.kind, r.label.as_str(), r.depth, r.samples))
        .collect();
    let container_b = format!("container {}", "b".repeat(12));
    assert_eq!(
        rows,
        vec![
            ("pod", "shop/web-7d9f-x2", 0, 46),
            ("container", "web", 1, 46),
            ("process", "nginx", 2, 46),
            ("container", container_b.as_str(), 0, 8),
            ("process", "batch", 1, 8),
            ("host", "host (outside containers)", 0, 6),
            ("process", "make", 1, 6),
        ]
    );
    let make = o.rows.iter().find(|r| r.label == "make").unwrap();
    assert_eq!(make.processes, 2, "pids 300 and 301");
    assert_eq!(make.pid, None);
    let nginx = o.rows.iter().find(|r| r.label == "nginx").unwrap();
    assert_eq!(nginx.pid, Some(100));
    assert!((nginx.share - 46.0 / 60.0).abs() < 1e-9);
    // Every row's key selects exactly its samples.
    for r in &o.rows {
        let sel = Selection::parse(&r.key).unwrap();
        assert_eq!(
            query::flame(&h, &sel, TimeRange::ALL).total,
            r.samples,
            "{}",
            r.key
        );
    }
    assert_eq!(o.timeline.len(), 2);
    assert_eq!(o.timeline[1].samples, 40);

    // A range covering the second window only.
    let r = TimeRange::from_params(&h, Some(1_005_500), None, None).unwrap();
    assert_eq!(query::overview(&h, r, &Selection::All).total_samples, 40);
    let r = TimeRange::from_params(&h, None, None, Some(2.0)).unwrap();
    assert_eq!(query::overview(&h, r, &Selection::All).total_samples, 40);
}

#[test]
fn host_only_machines_list_processes_at_the_top() {
    let mut b = Builder::new(1_000, 5);
    b.sample(0, 1, "a", &["main"], 2);
    b.sample(0, 2, "b", &["main"], 1);
    let h = history_of(&[b.build()]);
    let o = query::overview(&h, TimeRange::ALL, &Selection::All);
    assert!(o.rows.iter().all(|r| r.kind == "process" && r.depth == 0));
    assert_eq!(o.rows[0].label, "a");
}

#[test]
fn differential_graph_carries_both_ranges() {
    let h = history_of(&[machine_window(1_000, 10), machine_window(1_005, 30)]);
    let base = TimeRange::from_params(&h, Some(1_000_000), Some(1_005_000), None).unwrap();
    let range = TimeRange::from_params(&h, Some(1_005_000), Some(1_010_000), None).unwrap();
    let d = query::diff(
        &h,
        &Selection::parse("process:host:make").unwrap(),
        range,
        base,
    );
    assert_eq!((d.total, d.base_total), (3, 3));
    let d = query::diff(&h, &Selection::All, range, base);
    assert_eq!((d.total, d.base_total), (40, 20));
    // Find parse;hash: 30 of 40 now, 10 of 20 before.
    fn find<'a>(f: &'a query::Flame, n: &'a FlameNode, name: &str) -> Option<&'a FlameNode> {
        if f.names[n.n as usize] == name {
            return Some(n);
        }
        n.c.iter().find_map(|c| find(f, c, name))
    }
    let hash = find(&d, &d.root, "hash").unwrap();
    assert_eq!((hash.v, hash.b), (30, 10));
}

#[test]
fn top_functions_count_recursion_once() {
    let h = history_of(&[machine_window(1_000, 10)]);
    let t = query::top(&h, &Selection::All, TimeRange::ALL, 100);
    assert_eq!(t.total, 20);
    let get = |n: &str| t.functions.iter().find(|f| f.name == n).unwrap();
    assert_eq!(get("crunch").self_samples, 4);
    assert_eq!(get("crunch").total_samples, 4, "recursion counted once");
    assert_eq!(get("main").total_samples, 20);
    assert_eq!(get("main").self_samples, 0);
    assert_eq!(get("hash").self_samples, 10);
    assert_eq!(get("parse").self_samples, 0, "hash was inlined into parse");
    assert_eq!(t.functions[0].name, "hash");
    assert_eq!(
        query::top(&h, &Selection::All, TimeRange::ALL, 2)
            .functions
            .len(),
        2
    );
}

#[test]
fn top_functions_count_a_name_from_two_files_once_per_stack() {
    let mut b = Builder::new(1_000, 5);
    b.sample(0, 1, "app", &["main", "step", "lib_step"], 6);
    b.sample(0, 1, "app", &["main", "other"], 4);
    let mut r = b.build();
    // `lib_step` becomes a second `step`, from another file: one name,
    // two frames, in the same stacks.
    r.mappings.push(hearth_profile::Mapping {
        path: std::sync::Arc::from("/usr/lib/libstep.so"),
        build_id: None,
        kernel: false,
    });
    let lib = r.mappings.len() - 1;
    for l in &mut r.locations {
        let f = l.lines[0].function;
        if &*r.functions[f].name == "lib_step" {
            r.functions[f].name = std::sync::Arc::from("step");
            l.mapping = Some(lib);
        }
    }
    let h = history_of(&[r]);
    let t = query::top(&h, &Selection::All, TimeRange::ALL, 100);
    assert_eq!(t.total, 10);
    let step: Vec<_> = t.functions.iter().filter(|f| f.name == "step").collect();
    assert_eq!(step.len(), 1, "one line per function name");
    assert_eq!((step[0].self_samples, step[0].total_samples), (6, 6));
}

#[test]
fn pprof_of_a_selection_round_trips() {
    let h = history_of(&[machine_window(1_000, 10), machine_window(1_005, 30)]);
    let sel = Selection::parse("pod:shop/web-7d9f-x2").unwrap();
    let report = query::report(&h, &sel, TimeRange::ALL);
    assert_eq!(report.total_samples(), 46);
    let mut gz = Vec::new();
    hearth_export::write_pprof_gz(&report, &mut gz).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let p = hearth_export::pprof::proto::Profile::decode(raw.as_slice()).unwrap();
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, 46);
    let names: Vec<&str> = p.string_table.iter().map(String::as_str).collect();
    for n in ["main", "serve", "parse", "hash", "sys_write", "nginx"] {
        assert!(names.contains(&n), "{n} missing from the pprof strings");
    }
    assert_eq!(report.duration_ns, 10 * SEC);
    // The container's attributes travel with the samples.
    assert!(report
        .resources
        .iter()
        .any(|r| r.attribute("k8s.pod.name") == Some("web-7d9f-x2")));
}

#[test]
fn compaction_changes_no_answer() {
    let mut h = History::new(HistoryConfig {
        retention: Duration::from_secs(3600),
        max_bytes: usize::MAX,
    });
    for i in 0..20 {
        h.ingest(&machine_window(1_000 + i * 5, i));
    }
    let before = query::flame(&h, &Selection::All, TimeRange::ALL);
    let top_before = query::top(&h, &Selection::All, TimeRange::ALL, 100);
    let overview_before = query::overview(&h, TimeRange::ALL, &Selection::All);
    h.compact();
    // Name indices may differ; paths, counts and everything else may not.
    let after = query::flame(&h, &Selection::All, TimeRange::ALL);
    assert_eq!(leaves(&after), leaves(&before));
    assert_eq!((after.total, after.pruned), (before.total, before.pruned));
    assert_eq!(
        query::top(&h, &Selection::All, TimeRange::ALL, 100),
        top_before
    );
    assert_eq!(
        query::overview(&h, TimeRange::ALL, &Selection::All),
        overview_before
    );
}

#[test]
fn a_snapshot_keeps_what_it_saw_while_the_history_moves_on() {
    let mut h = history_of(&[machine_window(1_000, 10), machine_window(1_005, 30)]);
    let snapshot = h.snapshot();
    let before = query::flame(&snapshot, &Selection::All, TimeRange::ALL);
    assert_eq!(before, query::flame(&h, &Selection::All, TimeRange::ALL));

    // Windows with stacks of their own (new table entries), a compaction
    // that renumbers everything, and the retention pushing the first out.
    let mut b = Builder::new(2_000, 5);
    b.sample(0, 400, "late", &["main", "fresh"], 7);
    h.ingest(&b.build());
    h.compact();
    let mut b = Builder::new(2_005 + 15 * 60, 5);
    b.sample(0, 401, "later", &["main", "newer"], 5);
    h.ingest(&b.build());

    assert_eq!(snapshot.windows().len(), 2);
    assert_eq!(
        query::flame(&snapshot, &Selection::All, TimeRange::ALL),
        before,
        "the snapshot changed under its query"
    );
    let now = query::flame(&h, &Selection::All, TimeRange::ALL);
    assert_ne!(now, before);
    assert!(now.names.iter().any(|n| n == "newer"));
    assert!(!before.names.iter().any(|n| n == "fresh" || n == "newer"));
}
