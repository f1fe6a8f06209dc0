//! A small hand-built report shared by the encoder tests.

use hearth_profile::{Function, GroupBy, Line, Location, Mapping, Report, ReportSample, Resource};

pub const KERNEL_ADDR: u64 = 0xffff_ffff_8100_0010;

fn function(name: &str, file: Option<&str>) -> Function {
    Function {
        name: name.into(),
        file: file.map(Into::into),
    }
}

fn location(
    mapping: Option<usize>,
    address: u64,
    lines: &[(usize, u32)],
    kernel: bool,
) -> Location {
    Location {
        mapping,
        address,
        lines: lines
            .iter()
            .map(|&(function, line)| Line { function, line })
            .collect(),
        kernel,
    }
}

fn sample(
    stack: &[usize],
    pid: u32,
    tid: u32,
    process: &str,
    thread: &str,
    count: u64,
) -> ReportSample {
    ReportSample {
        stack: stack.to_vec(),
        pid,
        tid,
        process_name: process.into(),
        thread_name: thread.into(),
        resource: 0,
        count,
    }
}

/// Two processes, an inlined frame, kernel frames (one with and one without
/// a mapping), recursion and a function name that needs sanitizing.
///
/// Root-first stacks:
/// * app/100 (5) and app/101 (3): `__libc_start_main;main;work;hash`
///   (`hash` inlined into `work`)
/// * app/100 (2): `__libc_start_main;main;read;entry_SYSCALL_64;do_syscall_64`
/// * db/200 (4): `main;recurse;recurse;recurse`
/// * db/201 (1): `weird;name\nwith newline`
pub fn two_processes() -> Report {
    Report {
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 2_500_000_000,
        frequency_hz: 100,
        mappings: vec![
            Mapping {
                path: "/usr/bin/app".into(),
                build_id: Some("abcd1234".into()),
                kernel: false,
            },
            Mapping {
                path: "/lib/libc.so.6".into(),
                build_id: None,
                kernel: false,
            },
            Mapping {
                path: "[kernel.kallsyms]".into(),
                build_id: None,
                kernel: true,
            },
        ],
        functions: vec![
            function("main", Some("src/main.rs")),      // 0
            function("work", Some("src/work.rs")),      // 1
            function("hash", Some("src/hash.rs")),      // 2
            function("entry_SYSCALL_64", None),         // 3
            function("do_syscall_64", None),            // 4
            function("read", None),                     // 5
            function("__libc_start_main", None),        // 6
            function("weird;name\nwith newline", None), // 7
            function("recurse", Some("src/main.rs")),   // 8
        ],
        locations: vec![
            location(Some(0), 0x1000, &[(0, 10)], false), // 0 main
            location(Some(0), 0x2000, &[(2, 7), (1, 42)], false), // 1 hash inlined into work
            location(Some(1), 0x3000, &[(5, 0)], false),  // 2 read
            location(Some(2), KERNEL_ADDR, &[(4, 0)], true), // 3 do_syscall_64
            location(None, KERNEL_ADDR + 0x40, &[(3, 0)], true), // 4 entry_SYSCALL_64
            location(Some(1), 0x100, &[(6, 0)], false),   // 5 __libc_start_main
            location(Some(0), 0x1800, &[(8, 20)], false), // 6 recurse
            location(Some(0), 0x1900, &[(7, 0)], false),  // 7 weird
        ],
        samples: vec![
            sample(&[1, 0, 5], 100, 100, "app", "app", 5),
            sample(&[1, 0, 5], 100, 101, "app", "worker", 3),
            sample(&[3, 4, 2, 0, 5], 100, 100, "app", "app", 2),
            sample(&[6, 6, 6, 0], 200, 200, "db", "db", 4),
            sample(&[7], 200, 201, "db", "io;thread", 1),
        ],
        lost_samples: 7,
        resources: vec![Resource::default()],
        group_by: GroupBy::Process,
    }
}
