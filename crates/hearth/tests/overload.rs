//! `hearth record` when it cannot keep up: frequencies beyond what the
//! kernel or the reader allow, ring buffers that overflow, and stop
//! signals while it is behind. These tests load both CPUs on purpose, so
//! they run in a test binary of their own (cargo runs test binaries one
//! after another) and one at a time: the CPU-share checks of the other
//! recording tests must not see their load.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::*;

/// Held by each test: they would disturb each other's timing too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Regression (runaway frequency): `-F 100000` once never finished,
/// ignored SIGTERM and grew past 20 GB. It is now lowered with one line
/// saying why, and the recording ends on time within a bounded memory.
#[test]
fn runaway_frequency_is_lowered_and_the_recording_ends_in_bounded_memory() {
    let _serial = one_at_a_time();
    if !require_root_perf("runaway_frequency_is_lowered_and_the_recording_ends_in_bounded_memory") {
        return;
    }
    let dir = TempDir::new("runaway");
    let folded = dir.path("m.folded");
    let done = Reaped::spawn(
        Command::new(hearth())
            .args(["record", "-F", "100000", "--duration", "2", "-o"])
            .arg(&folded),
    )
    .wait(Duration::from_secs(30));
    eprintln!(
        "-F 100000 --duration 2: {:.1} s, peak RSS {} KiB\n{}",
        done.wall.as_secs_f64(),
        done.max_rss_kib,
        done.stderr
    );
    assert!(!done.timed_out, "still running after 30 s");
    assert_eq!(done.exit_code(), Some(0), "{}", done.stderr);
    let lowered: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.starts_with("hearth: -F 100000 lowered to "))
        .collect();
    assert_eq!(
        lowered.len(),
        1,
        "one line says what was done: {}",
        done.stderr
    );
    assert!(
        lowered[0].contains("Hz"),
        "the line names the frequency used: {}",
        lowered[0]
    );
    assert!(
        done.wall < Duration::from_secs(12),
        "took {:?} for a 2 s recording",
        done.wall
    );
    assert!(
        done.max_rss_kib < 256 * 1024,
        "peak RSS {} KiB, over 256 MiB",
        done.max_rss_kib
    );
    assert!(!read_folded(&folded).is_empty(), "no stacks written");
}

/// Regression (runaway frequency): a recording that had fallen behind
/// ignored SIGTERM and SIGINT. Either must now end a whole-machine
/// recording at the highest frequency within 5 s: sampling stops (its
/// summary line is printed) within 5 s of the signal, and the output is
/// written. Symbolizing what the whole machine ran comes after; it takes
/// about a second in a release build, but several in this unoptimized
/// one on a busy machine, so the exit itself is held to a looser bound.
#[test]
fn sigterm_and_sigint_end_a_whole_machine_recording_within_5_s() {
    let _serial = one_at_a_time();
    if !require_root_perf("sigterm_and_sigint_end_a_whole_machine_recording_within_5_s") {
        return;
    }
    let dir = TempDir::new("sigterm");
    // Both CPUs busy, so that samples keep coming while Hearth stops.
    let bin = dir.path("split_sigterm");
    std::fs::copy(workload("split_c"), &bin).expect("copy workload");
    let _busy: Vec<KillOnDrop> = (0..2)
        .map(|_| KillOnDrop(spawn_workload(&bin, "60")))
        .collect();
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let folded = dir.path(&format!("{name}.folded"));
        let recorder = Reaped::spawn(
            Command::new(hearth())
                .args(["record", "-F", "100000", "-o"])
                .arg(&folded),
        );
        std::thread::sleep(Duration::from_secs(3));
        let sent = recorder.started.elapsed();
        recorder.signal(signal);
        let done = recorder.wait(Duration::from_secs(60));
        let stopped = done
            .stderr_lines
            .iter()
            .find(|(_, l)| l.starts_with("hearth: ") && l.contains(" samples from "))
            .map(|(t, _)| t.saturating_sub(sent));
        let exited = done.wall.saturating_sub(sent);
        eprintln!(
            "{name}: sampling stopped {stopped:?} and hearth exited {exited:?} after the signal\n{}",
            done.stderr
        );
        assert!(
            !done.timed_out,
            "{name}: still running 57 s after the signal"
        );
        assert_eq!(done.exit_code(), Some(0), "{name}: {}", done.stderr);
        let stopped = stopped.unwrap_or_else(|| panic!("{name}: no summary line"));
        assert!(
            stopped < Duration::from_secs(5),
            "{name}: sampling stopped {stopped:?} after the signal"
        );
        assert!(
            exited < Duration::from_secs(30),
            "{name}: exited {exited:?} after the signal"
        );
        let stacks = read_folded(&folded);
        assert!(
            stacks.iter().any(|s| s.frames[0] == "split_sigterm"),
            "{name}: the busy workload is not in the output"
        );
    }
}

/// Regression ("samples lost"): the kernel's PERF_RECORD_LOST counts lost
/// records of every kind, which Hearth reported as lost samples. The line
/// now says records, and its number is the sum of the kernel's records.
#[test]
fn lost_records_are_reported_as_records_with_the_kernels_count() {
    let _serial = one_at_a_time();
    if !require_perf("lost_records_are_reported_as_records_with_the_kernels_count") {
        return;
    }
    let dir = TempDir::new("lost");
    let capture = dir.path("c.cap");
    let w = workload("split_c");
    // Two busy processes at the highest frequency into an 8 KiB ring that
    // holds three samples: the reader cannot keep up.
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-F",
            "100000",
            "--ring-kib",
            "8",
            "--stack-bytes",
            "2048",
            "--top",
            "1",
            "--capture",
        ])
        .arg(&capture)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "{0} 2 >/dev/null & {0} 2 >/dev/null; wait",
            w.display()
        )));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let reported: u64 = err
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("; ")?;
            let (n, what) = rest.split_once(' ')?;
            what.starts_with("records lost (samples and process events alike")
                .then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no 'records lost' in {err}"));
    let cap = hearth::capture::Capture::read(std::fs::File::open(&capture).unwrap()).unwrap();
    let mut kernel = 0u64;
    cap.for_each(|_, ty, misc, body| {
        if let Ok(hearth_sampler::Record::Lost(l)) =
            hearth_sampler::parse_record(&cap.format, ty, misc, body)
        {
            kernel += l.lost;
        }
    })
    .unwrap();
    eprintln!("records lost: hearth says {reported}, the kernel's LOST records sum to {kernel}");
    assert!(kernel > 0, "the ring did not overflow");
    assert_eq!(reported, kernel);
    assert!(!err.contains("samples lost"), "{err}");
}
