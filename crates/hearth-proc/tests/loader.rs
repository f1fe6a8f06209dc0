//! The loader threads: loads arrive without the caller waiting, a load
//! that hangs (here an open of a FIFO nobody writes, as an open on a hung
//! network mount) is answered as failed after the stall limit, its device
//! is refused from then on while other files still load, and the mark
//! goes when the stuck thread comes back. The same for a `/proc` read that
//! hangs: its process is skipped until the read returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_proc::binary::DescriptorBudget;
use hearth_proc::loader::{Loader, Outcome, ProcAnswer, ProcRead, Stalled, STALL};
use hearth_proc::{BinaryKey, LoadError};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("hearth-loader-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

/// Polls until an outcome for `key` arrives or `limit` passes.
fn outcome_for(loader: &mut Loader, key: &BinaryKey, limit: Duration) -> Option<Outcome> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        for o in loader.wait(Duration::from_millis(50)) {
            if matches!(&o, Outcome::Loaded { key: k, .. } if k == key) {
                return Some(o);
            }
        }
    }
    None
}

fn loaded_ok(o: Option<Outcome>) -> bool {
    matches!(o, Some(Outcome::Loaded { opened, .. }) if opened.result.is_ok())
}

#[test]
fn a_hung_open_is_answered_as_failed_and_its_device_refused_while_others_load() {
    let d = dir("hang");
    let fifo = d.0.join("never-written");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap().to_string();

    let mut loader = Loader::start(DescriptorBudget::new(16), "/proc").unwrap();
    // A device of its own, so that the refusal is about it alone.
    let hung = BinaryKey::Inode {
        major: 0,
        minor: 4242,
        inode: 1,
    };
    let started = Instant::now();
    assert!(loader.load(
        hung.clone(),
        "/hung/app".into(),
        vec![fifo.to_str().unwrap().to_string()]
    ));
    // The caller never waited: the request is queued, the open hangs.
    assert!(started.elapsed() < Duration::from_millis(100));
    let o = outcome_for(&mut loader, &hung, STALL * 3).expect("an answer for the hung load");
    let waited = started.elapsed();
    match o {
        Outcome::Loaded { opened, .. } => assert!(
            matches!(opened.result, Err(LoadError::Unresponsive { .. })),
            "{:?}",
            opened.result
        ),
        _ => unreachable!(),
    }
    assert!(waited >= STALL, "answered after {waited:?}");
    assert_eq!(loader.stats.stalls, 1);
    assert!(loader.is_unresponsive(&hung));
    assert_eq!(loader.take_stalled().len(), 1);

    // Another file on the same device: refused at once.
    let same_device = BinaryKey::Inode {
        major: 0,
        minor: 4242,
        inode: 2,
    };
    assert!(loader.load(same_device.clone(), "/hung/lib".into(), vec![exe.clone()]));
    let o = outcome_for(&mut loader, &same_device, Duration::from_secs(5));
    assert!(
        matches!(&o, Some(Outcome::Loaded { opened, .. })
            if matches!(opened.result, Err(LoadError::Unresponsive { .. }))),
        "not refused"
    );
    // A file elsewhere still loads, on a fresh thread.
    let elsewhere = BinaryKey::Path(exe.as_str().into());
    assert!(loader.load(elsewhere.clone(), exe.as_str().into(), vec![exe.clone()]));
    assert!(loaded_ok(outcome_for(
        &mut loader,
        &elsewhere,
        Duration::from_secs(10)
    )));
    assert_eq!(loader.threads(), 2, "one stuck, one replacing it");

    // The file system answers again: the stuck thread comes back (the open
    // returns; a FIFO does not parse) and the device's mark goes.
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while loader.is_unresponsive(&hung) {
        assert!(Instant::now() < end, "the mark stayed");
        loader.poll();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(writer);
}

#[test]
fn changed_binaries_are_found_by_a_check_on_a_loader_thread() {
    let d = dir("check");
    let p = d.0.join("app");
    std::fs::copy(std::env::current_exe().unwrap(), &p).unwrap();
    let p = p.to_str().unwrap().to_string();
    let b = Arc::new(hearth_proc::Binary::open(p.as_str().into(), &p).unwrap());
    let key = BinaryKey::Path(p.as_str().into());
    let mut loader = Loader::start(DescriptorBudget::new(16), "/proc").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
        .unwrap();
    loader.check(vec![(key.clone(), b.clone())]);
    assert!(loader.check_pending());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let changed = loader
            .wait(Duration::from_millis(50))
            .into_iter()
            .find_map(|o| match o {
                Outcome::Changed(list) => Some(list),
                _ => None,
            });
        if let Some(list) = changed {
            assert_eq!(list.len(), 1);
            assert!(Arc::ptr_eq(&list[0].1, &b));
            break;
        }
        assert!(Instant::now() < end, "no answer to the check");
    }
    assert!(!loader.check_pending());
}

/// Polls until an answer to a `/proc` read of `pid` arrives or `limit` passes.
fn proc_answer_for(loader: &mut Loader, pid: u32, limit: Duration) -> Option<ProcAnswer> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        for o in loader.wait(Duration::from_millis(50)) {
            if let Outcome::Proc { pid: p, answer } = o {
                if p == pid {
                    return Some(answer);
                }
            }
        }
    }
    None
}

#[test]
fn a_hung_proc_read_is_answered_as_stalled_and_its_process_skipped_while_others_read() {
    // A proc root of our own: process 7's comm is a FIFO nobody writes
    // (as a maps read waiting on a process stuck in a hung page fault);
    // process 8 is this test's own /proc entry.
    let d = dir("proc");
    let hung = d.0.join("7");
    std::fs::create_dir_all(&hung).unwrap();
    let fifo = hung.join("comm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(format!("/proc/{}", std::process::id()), d.0.join("8")).unwrap();

    let mut loader = Loader::start(DescriptorBudget::new(16), d.0.to_str().unwrap()).unwrap();
    let started = Instant::now();
    assert!(loader.read_proc(7, ProcRead::Process));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "the caller waited"
    );
    let a = proc_answer_for(&mut loader, 7, STALL * 3).expect("an answer for the hung read");
    assert!(matches!(a, ProcAnswer::Stalled(ProcRead::Process)));
    assert!(started.elapsed() >= STALL);
    assert_eq!(loader.take_stalled(), vec![Stalled::Proc(7)]);

    // The same process again: answered at once, without a read.
    let again = Instant::now();
    assert!(loader.read_proc(7, ProcRead::Cgroup));
    let a = proc_answer_for(&mut loader, 7, Duration::from_secs(5)).expect("an answer");
    assert!(matches!(a, ProcAnswer::Stalled(ProcRead::Cgroup)));
    assert!(again.elapsed() < STALL);
    // Another process reads, on a fresh thread.
    assert!(loader.read_proc(8, ProcRead::Process));
    match proc_answer_for(&mut loader, 8, Duration::from_secs(10)) {
        Some(ProcAnswer::Process(Some(files))) => {
            assert!(!files.comm.is_empty() && !files.maps.is_empty())
        }
        _ => panic!("no read of a live process"),
    }
    assert!(loader.read_proc(8, ProcRead::Cgroup));
    assert!(matches!(
        proc_answer_for(&mut loader, 8, Duration::from_secs(10)),
        Some(ProcAnswer::Cgroup(Some(_)))
    ));
    // Many cgroups in one request: one answer each, the stuck one at once.
    assert!(loader.read_cgroups(vec![8, 7, 8]));
    let mut answers = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while answers.len() < 3 && Instant::now() < end {
        for o in loader.wait(Duration::from_millis(50)) {
            if let Outcome::Proc { pid, answer } = o {
                answers.push((pid, matches!(answer, ProcAnswer::Cgroup(Some(_)))));
            }
        }
    }
    assert_eq!(answers, vec![(8, true), (7, false), (8, true)]);

    // The stuck read returns: process 7 is read again.
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(writer);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "process 7 stayed skipped");
        assert!(loader.read_proc(7, ProcRead::Cgroup));
        match proc_answer_for(&mut loader, 7, Duration::from_secs(5)) {
            // No cgroup file in our root: read, and found gone.
            Some(ProcAnswer::Cgroup(None)) => break,
            Some(ProcAnswer::Stalled(_)) => std::thread::sleep(Duration::from_millis(50)),
            // The stuck read's own answer, late.
            Some(ProcAnswer::Process(_)) => {}
            other => panic!("unexpected answer: {}", other.is_some()),
        }
    }
}
