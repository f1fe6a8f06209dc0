//! End-to-end tests of `hearth record` against real perf events, real
//! processes and real binaries built without frame pointers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// Frequency for ground-truth runs: a few hundred Hz, prime.
const TRUTH_HZ: &str = "397";

struct TruthRun {
    _dir: TempDir,
    stdout: String,
    folded: Vec<Stack>,
    pprof: std::path::PathBuf,
    svg: std::path::PathBuf,
}

/// Records `binary 10` once with every output format.
fn record_truth(binary: &Path) -> TruthRun {
    let dir = TempDir::new("truth");
    let (folded, pprof, svg) = (dir.path("p.folded"), dir.path("p.pb.gz"), dir.path("p.svg"));
    let out = run(Command::new(hearth())
        .args(["record", "-F", TRUTH_HZ, "-o"])
        .arg(&folded)
        .arg("-o")
        .arg(&pprof)
        .arg("-o")
        .arg(&svg)
        .arg("--")
        .arg(binary)
        .arg("10"));
    assert!(
        out.status.success(),
        "hearth record failed: {}",
        text(&out.stderr)
    );
    TruthRun {
        stdout: text(&out.stdout),
        folded: read_folded(&folded),
        pprof,
        svg,
        _dir: dir,
    }
}

fn c_run() -> Option<&'static TruthRun> {
    static RUN: OnceLock<Option<TruthRun>> = OnceLock::new();
    RUN.get_or_init(|| require_perf("c workload").then(|| record_truth(&workload("split_c"))))
        .as_ref()
}

/// Checks leaf shares against the workload's own measurement, and that the
/// stacks are complete: main, run_rounds, then the full chain to the leaf.
fn check_ground_truth(run: &TruthRun, process: &str, prefix: &str) {
    let (truth70, truth30) = truth(&run.stdout);
    let f = |name: &str| format!("{prefix}{name}");
    let chains = [
        (
            f("leaf_seventy"),
            vec![
                f("run_rounds"),
                f("alpha_one"),
                f("alpha_two"),
                f("alpha_three"),
                f("leaf_seventy"),
            ],
        ),
        (
            f("leaf_thirty"),
            vec![
                f("run_rounds"),
                f("beta_one"),
                f("beta_two"),
                f("beta_three"),
                f("leaf_thirty"),
            ],
        ),
    ];
    let main = f("main");
    let (mut total, mut complete, mut leaf70, mut leaf30) = (0u64, 0u64, 0u64, 0u64);
    for s in run.folded.iter().filter(|s| s.frames[0] == process) {
        total += s.count;
        let Some(m) = s.frames.iter().position(|fr| *fr == main) else {
            continue;
        };
        let after = &s.frames[m + 1..];
        let mut ok = after.first().is_none_or(|fr| *fr == f("run_rounds"));
        for (leaf, chain) in &chains {
            if s.frames.contains(leaf) {
                ok &= after.starts_with(chain);
                if leaf.ends_with("leaf_seventy") {
                    leaf70 += s.count;
                } else {
                    leaf30 += s.count;
                }
            }
        }
        if ok {
            complete += s.count;
        }
    }
    assert!(total >= 1000, "{process}: only {total} samples");
    let share70 = leaf70 as f64 / (leaf70 + leaf30) as f64;
    let share30 = leaf30 as f64 / (leaf70 + leaf30) as f64;
    let complete_share = complete as f64 / total as f64;
    eprintln!(
        "{process}: {total} samples; leaf_seventy {share70:.4} (truth {truth70}), \
         leaf_thirty {share30:.4} (truth {truth30}); complete stacks {complete_share:.4}"
    );
    assert!(
        (share70 - truth70).abs() <= 0.03,
        "leaf_seventy share {share70} vs truth {truth70}"
    );
    assert!(
        (share30 - truth30).abs() <= 0.03,
        "leaf_thirty share {share30} vs truth {truth30}"
    );
    assert!(
        complete_share >= 0.99,
        "only {complete_share:.4} of stacks reach {main} with the full chain"
    );
}

#[test]
fn c_workload_without_frame_pointers_matches_ground_truth() {
    if let Some(run) = c_run() {
        check_ground_truth(run, "split_c", "");
    }
}

#[test]
fn rust_release_workload_matches_ground_truth() {
    if !require_perf("rust_release_workload_matches_ground_truth") {
        return;
    }
    let run = record_truth(&workload("split_rust"));
    check_ground_truth(&run, "split_rust", "split_rust::");
}

/// Self counts per leaf function from folded output.
fn folded_self_counts(stacks: &[Stack]) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for s in stacks {
        if let Some(leaf) = s.frames.last() {
            *m.entry(leaf.clone()).or_insert(0) += s.count;
        }
    }
    m
}

#[test]
fn pprof_output_is_read_by_go_tool_pprof_and_agrees_with_folded() {
    let Some(run) = c_run() else { return };
    let go = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-nodecount=10000",
            "-sample_index=samples",
        ])
        .arg(&run.pprof)
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .stdin(Stdio::null())
        .output();
    let go = match go {
        Ok(o) => o,
        Err(e) => panic!("cannot run `go tool pprof` ({e}): run `bash scripts/setup-tests.sh`"),
    };
    let out = text(&go.stdout);
    assert!(
        go.status.success(),
        "go tool pprof failed: {}",
        text(&go.stderr)
    );
    // "Showing nodes accounting for 2498, 100% of 2498 total"
    let total: u64 = out
        .lines()
        .find_map(|l| {
            l.split(" of ")
                .nth(1)?
                .strip_suffix(" total")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no total in pprof output:\n{out}"));
    let folded_total: u64 = run.folded.iter().map(|s| s.count).sum();
    assert_eq!(total, folded_total, "pprof and folded totals differ");
    let self_counts = folded_self_counts(&run.folded);
    for leaf in ["leaf_seventy", "leaf_thirty"] {
        let flat: u64 = out
            .lines()
            .find(|l| l.split_whitespace().last() == Some(leaf))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{leaf} missing from pprof -top:\n{out}"));
        assert_eq!(
            Some(&flat),
            self_counts.get(leaf),
            "{leaf}: pprof flat vs folded self"
        );
    }
}

#[test]
fn flame_graph_svg_is_well_formed_and_names_the_workload() {
    let Some(run) = c_run() else { return };
    let svg = std::fs::read_to_string(&run.svg).expect("svg written");
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut depth = 0i64;
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "SVG is not well-formed at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unbalanced SVG");
    assert!(elements > 20, "suspiciously small SVG");
    for name in ["leaf_seventy", "leaf_thirty", "alpha_three", "run_rounds"] {
        assert!(svg.contains(name), "SVG does not name {name}");
    }
}

#[test]
fn short_lived_processes_keep_their_function_names() {
    if !require_perf("short_lived_processes_keep_their_function_names") {
        return;
    }
    let dir = TempDir::new("short");
    let folded = dir.path("s.folded");
    let out = run(Command::new(hearth())
        .args(["record", "-F", "997", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(workload("spawner"))
        .args(["5"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spawned: u64 = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("spawned=")?.trim().parse().ok())
        .expect("spawned= line");
    assert!(
        spawned >= 500,
        "spawner started only {spawned} processes in 5 s"
    );
    let stacks = read_folded(&folded);
    // "Named": every frame resolved to a function (start-up code in the
    // dynamic loader counts: it is the process's code too). The stricter
    // share of stacks inside the workload's own chain is reported as well.
    let (mut total, mut named, mut in_chain) = (0u64, 0u64, 0u64);
    for s in stacks.iter().filter(|s| s.frames[0] == "shortlived") {
        total += s.count;
        let has = |f: &str| s.frames.iter().any(|fr| fr == f);
        if s.frames.len() > 1 && !s.frames.iter().any(|f| f.starts_with("[unknown]")) {
            named += s.count;
        }
        if has("main") && has("short_outer") && has("short_middle") && has("short_leaf") {
            in_chain += s.count;
        }
    }
    let share = named as f64 / total.max(1) as f64;
    let chain = in_chain as f64 / total.max(1) as f64;
    eprintln!("{spawned} processes, {total} samples: {share:.4} fully named, {chain:.4} in the workload's chain");
    assert!(
        total >= 200,
        "only {total} samples of short-lived processes"
    );
    assert!(
        share >= 0.90,
        "only {share:.4} of short-lived samples carry their names"
    );
    assert!(
        chain >= 0.75,
        "only {chain:.4} of short-lived samples are in the workload's chain"
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

#[test]
fn whole_machine_mode_sees_a_running_workload() {
    if !require_root_perf("whole_machine_mode_sees_a_running_workload") {
        return;
    }
    // Other tests run split_c at the same time: use a copy with its own name.
    let dir = TempDir::new("machine");
    let bin = dir.path("split_machine");
    std::fs::copy(workload("split_c"), &bin).expect("copy workload");
    let mut child = spawn_workload(&bin, "6");
    // And a process that lives in system calls, so that kernel stacks are
    // there to see whatever else the machine does (an idle machine has
    // few). dd copying /dev/zero to /dev/null spends nearly all its time in
    // the kernel; it too gets a name of its own.
    let dd = dir.path("hearth_dd");
    std::fs::copy("/bin/dd", &dd).expect("copy dd");
    let syscalls = KillOnDrop(
        spawn_copied(
            Command::new(&dd)
                .args(["if=/dev/zero", "of=/dev/null", "bs=65536"])
                .stderr(Stdio::null()),
        )
        .expect("start dd"),
    );
    let folded = dir.path("m.folded");
    // CPU time of the workload over the recording window only (hearth
    // symbolizes after the window, while the workload keeps running).
    let recorder = Command::new(hearth())
        .args(["record", "-d", "3", "-F", "199", "-o"])
        .arg(&folded)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth");
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(3));
    let after = cpu_ticks(child.id());
    let out = recorder.wait_with_output().expect("hearth output");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stacks = read_folded(&folded);
    let workload: u64 = stacks
        .iter()
        .filter(|s| s.frames[0] == "split_machine")
        .map(|s| s.count)
        .sum();
    // A CPU-clock sample stands for 1/199 s of CPU: compare with the CPU
    // time the kernel accounted to the workload meanwhile. The margin
    // covers clock-tick granularity and hearth's start-up latency.
    let expected = (after - before) as f64 / clock_ticks_per_second() * 199.0;
    eprintln!(
        "whole machine: {workload} workload samples, {expected:.0} expected from its CPU time"
    );
    assert!(
        (workload as f64) >= 0.8 * expected && (workload as f64) <= 1.15 * expected + 5.0,
        "{workload} samples for {expected:.0} expected"
    );
    let leaf: u64 = stacks
        .iter()
        .filter(|s| s.frames[0] == "split_machine" && s.frames.iter().any(|f| f == "leaf_seventy"))
        .map(|s| s.count)
        .sum();
    assert!(
        leaf * 10 >= workload * 6,
        "leaf_seventy {leaf} of {workload}"
    );
    drop(syscalls);
    let in_syscall = |s: &&Stack| {
        s.frames
            .iter()
            .any(|f| f.starts_with("entry_SYSCALL") || f.contains("_sys_"))
    };
    let dd_stacks = || stacks.iter().filter(|s| s.frames[0] == "hearth_dd");
    let dd_samples: u64 = dd_stacks().map(|s| s.count).sum();
    let dd_kernel: u64 = dd_stacks().filter(in_syscall).map(|s| s.count).sum();
    eprintln!("whole machine: dd {dd_samples} samples, {dd_kernel} inside a system call");
    assert!(
        dd_samples >= 20 && dd_kernel * 2 >= dd_samples,
        "dd copying /dev/zero lives in the kernel, yet {dd_kernel} of its {dd_samples} \
         samples have a system call's kernel frames"
    );
}

#[test]
fn pid_mode_records_only_that_process() {
    if !require_perf("pid_mode_records_only_that_process") {
        return;
    }
    let mut child = spawn_workload(&workload("split_c"), "5");
    let dir = TempDir::new("pid");
    let folded = dir.path("p.folded");
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "2",
            "-F",
            "199",
            "--pid",
            &child.id().to_string(),
            "-o",
        ])
        .arg(&folded));
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stacks = read_folded(&folded);
    assert!(!stacks.is_empty());
    assert!(
        stacks.iter().all(|s| s.frames[0] == "split_c"),
        "other processes recorded"
    );
    assert!(stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| f == "leaf_seventy")));
}

#[test]
fn missing_process_is_one_clear_error() {
    let out = run(Command::new(hearth()).args(["record", "-d", "1", "--pid", "4000000"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("process 4000000 does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn unsupported_output_extension_fails_before_recording() {
    let out = run(Command::new(hearth()).args(["record", "-d", "30", "-o", "/tmp/x.txt"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(".pb.gz") && err.contains(".folded") && err.contains(".svg"),
        "{err}"
    );
}

#[test]
fn command_that_cannot_start_is_an_error() {
    let out = run(Command::new(hearth()).args(["record", "--", "/nonexistent/program"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot start /nonexistent/program"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn command_exit_status_is_passed_on() {
    if !require_perf("command_exit_status_is_passed_on") {
        return;
    }
    let out = run(Command::new(hearth()).args(["record", "--", "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn stripped_binary_still_unwinds_and_gets_placeholder_names() {
    if !require_perf("stripped_binary_still_unwinds_and_gets_placeholder_names") {
        return;
    }
    let dir = TempDir::new("strip");
    let bin = dir.path("split_stripped");
    std::fs::copy(workload("split_c"), &bin).expect("copy");
    let strip = Command::new("strip")
        .arg("--strip-all")
        .arg(&bin)
        .status()
        .expect("run strip");
    assert!(strip.success());
    let folded = dir.path("s.folded");
    let out = run(Command::new(hearth())
        .args(["record", "-F", "199", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(&bin)
        .arg("2"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stacks = read_folded(&folded);
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert!(total >= 100);
    // No symbols: placeholders name the binary and offset, and DWARF CFI
    // (kept by strip) still carries the stack through libc to _start.
    let placeholder = stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.starts_with("[unknown] split_stripped+0x"))
        })
        .filter(|s| s.frames.iter().any(|f| f == "__libc_start_call_main"))
        .map(|s| s.count)
        .sum::<u64>();
    assert!(
        placeholder * 10 >= total * 9,
        "{placeholder} of {total} samples unwound with placeholders"
    );
}

#[test]
fn deleted_binary_of_a_running_process_is_still_symbolized() {
    if !require_perf("deleted_binary_of_a_running_process_is_still_symbolized") {
        return;
    }
    let dir = TempDir::new("deleted");
    let bin = dir.path("split_deleted");
    std::fs::copy(workload("split_c"), &bin).expect("copy");
    let mut child = spawn_workload(&bin, "5");
    std::fs::remove_file(&bin).expect("delete binary");
    let folded = dir.path("d.folded");
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "2",
            "-F",
            "199",
            "--pid",
            &child.id().to_string(),
            "-o",
        ])
        .arg(&folded));
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stacks = read_folded(&folded);
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f == "leaf_seventy")),
        "deleted binary not symbolized: {stacks:?}"
    );
}

/// Runs hearth as the unprivileged `nobody` user.
fn as_nobody(args: &[&str]) -> std::process::Output {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(hearth())
        .args(args)
        .current_dir("/"))
}

fn paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2)
}

#[test]
fn unprivileged_whole_machine_fails_with_one_line_naming_the_remedy() {
    if !require_root_perf("unprivileged_whole_machine_fails_with_one_line_naming_the_remedy") {
        return;
    }
    if paranoid() <= 0 {
        eprintln!("SKIP: kernel.perf_event_paranoid <= 0 lets anyone sample the whole machine");
        return;
    }
    let out = as_nobody(&["record", "-d", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for remedy in ["root", "CAP_PERFMON", "perf_event_paranoid"] {
        assert!(err.contains(remedy), "{err}");
    }
}

#[test]
fn unprivileged_command_recording_works_with_user_stacks() {
    if !require_root_perf("unprivileged_command_recording_works_with_user_stacks") {
        return;
    }
    if paranoid() > 2 {
        eprintln!("SKIP: kernel.perf_event_paranoid > 2 forbids unprivileged sampling");
        return;
    }
    let split = workload("split_c");
    let out = as_nobody(&[
        "record",
        "-F",
        "199",
        "--top",
        "5",
        "--",
        split.to_str().unwrap(),
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("leaf_seventy") && table.contains("leaf_thirty"),
        "{table}"
    );
}

/// Regression (non-UTF-8 maps path): one mapped path that is not UTF-8
/// made `/proc/<pid>/maps` unreadable as text, so the process lost all
/// its stacks (and could hide that way). Here the executable itself lives
/// under such a path, and its functions must still be named.
#[test]
fn non_utf8_mapped_path_does_not_hide_a_process() {
    if !require_root_perf("non_utf8_mapped_path_does_not_hide_a_process") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("nonutf8");
    let odd = dir.0.join(std::ffi::OsStr::from_bytes(b"odd-\xff\xfe-dir"));
    std::fs::create_dir(&odd).expect("mkdir with a non-UTF-8 name");
    let bin = odd.join("split_odd");
    std::fs::copy(workload("split_c"), &bin).expect("copy workload");
    let child = KillOnDrop(spawn_workload(&bin, "6"));
    let pid = child.0.id();
    let maps = std::fs::read(format!("/proc/{pid}/maps")).expect("maps");
    assert!(
        std::str::from_utf8(&maps).is_err(),
        "the test needs a maps file that is not UTF-8"
    );
    let folded = dir.path("o.folded");
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "2",
            "-F",
            "199",
            "--pid",
            &pid.to_string(),
            "-o",
        ])
        .arg(&folded));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stacks = read_folded(&folded);
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    let named: u64 = stacks
        .iter()
        .filter(|s| {
            ["main", "run_rounds", "leaf_seventy"]
                .iter()
                .all(|f| s.frames.iter().any(|fr| fr == f))
        })
        .map(|s| s.count)
        .sum();
    eprintln!("non-UTF-8 path: {named} of {total} samples reach leaf_seventy from main");
    assert!(total >= 100, "only {total} samples");
    assert!(
        named * 2 >= total,
        "only {named} of {total} samples name the workload's functions: {stacks:?}"
    );
}

/// Regression (exit status): a command killed by a signal made Hearth
/// exit 129 whatever the signal; shells report 128 plus its number.
#[test]
fn command_killed_by_a_signal_exits_128_plus_the_signal() {
    if !require_perf("command_killed_by_a_signal_exits_128_plus_the_signal") {
        return;
    }
    for (signal, code) in [("KILL", 137), ("TERM", 143), ("SEGV", 139), ("ABRT", 134)] {
        let out = run(Command::new(hearth()).args([
            "record",
            "-F",
            "49",
            "--top",
            "1",
            "--",
            "sh",
            "-c",
            &format!("kill -{signal} $$"),
        ]));
        assert_eq!(
            out.status.code(),
            Some(code),
            "SIG{signal}: {}",
            text(&out.stderr)
        );
    }
}

/// Regression (unwritable output): an output that cannot be written
/// failed only after the whole recording. It must fail at once, before
/// sampling, naming the path, and leave nothing behind for the others.
#[test]
fn unwritable_output_fails_before_recording() {
    let dir = TempDir::new("unwritable");
    let fine = dir.path("fine.folded");
    let missing_dir = dir.path("no/such/dir/p.svg");
    let mut cases = vec![missing_dir];
    // Root writes through permission bits: a read-only file system stops it.
    let _ro = is_root().then(|| {
        let ro = Tmpfs::mount(dir.path("ro"), "ro,size=64k");
        cases.push(ro.dir.join("p.svg"));
        ro
    });
    for bad in cases {
        let started = std::time::Instant::now();
        let out = run(Command::new(hearth())
            .args(["record", "-d", "60", "-o"])
            .arg(&fine)
            .arg("-o")
            .arg(&bad));
        let took = started.elapsed();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(took < Duration::from_secs(5), "failed only after {took:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&bad.display().to_string()) && err.contains("cannot write"),
            "{err}"
        );
        assert!(!err.contains("samples"), "it recorded first: {err}");
        let left: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "no" && n != "ro")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Regression (full disk): a write error left a truncated output and the
/// outputs after it were never written. Now the failed one leaves nothing,
/// the others are written, and the exit status says which one failed.
#[test]
fn full_disk_leaves_no_truncated_output_and_writes_the_others() {
    if !require_root_perf("full_disk_leaves_no_truncated_output_and_writes_the_others") {
        return;
    }
    let dir = TempDir::new("fulldisk");
    let small = Tmpfs::mount(dir.path("small"), "size=64k");
    // Fill it up to its last few KiB: room to claim the output, none for
    // a flame graph.
    let filler = small.dir.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = [0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let size = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(size - 8192)
        .unwrap();
    let svg = small.dir.join("p.svg");
    let folded = dir.path("p.folded");
    let out = run(Command::new(hearth())
        .args(["record", "-F", "199", "-o"])
        .arg(&svg)
        .arg("-o")
        .arg(&folded)
        .arg("--")
        .arg(workload("split_c"))
        .arg("1"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("hearth: error: writing")
            && l.contains(&svg.display().to_string())
            && l.contains("No space left")),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&small.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("filler")], "{err}");
    assert!(
        read_folded(&folded)
            .iter()
            .any(|s| s.frames.iter().any(|f| f == "leaf_seventy")),
        "the other output was not written: {err}"
    );
}

/// Regression: "process N does not exist" was printed for a process that
/// exists but Hearth may not read. Run as nobody against pid 1.
#[test]
fn unreadable_process_is_not_reported_as_missing() {
    if !is_root() {
        skip_or_fail(
            "unreadable_process_is_not_reported_as_missing",
            "needs root to become nobody",
        );
        return;
    }
    let out = as_nobody(&["record", "-d", "1", "--pid", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    for needed in ["not permitted to read process 1", "root", "CAP_SYS_PTRACE"] {
        assert!(err.contains(needed), "{needed:?} missing: {err}");
    }
}
