//! Deterministic fuzzing of every parser of outside input, small enough for
//! every `cargo test` run (the coverage-guided fuzzer in `fuzz/` goes much
//! further, but needs its own build; see `scripts/fuzz.sh`).
//!
//! A seeded xorshift generator builds valid inputs field by field, then
//! mutates them (bit flips, interesting values, truncation, insertion,
//! splices of other inputs) and feeds them to each parser, tens of
//! thousands of times in all. No input may panic; parsed records may only
//! point inside the bytes they came from; records built without mutation
//! must parse back to what was built. A failing input is printed in hex.

use std::collections::HashSet;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use hearth::batch::Batch;
use hearth::capture::{Capture, CaptureWriter};
use hearth::converter::{Converter, PidFilter};
use hearth_proc::procfs::{parse_comm, parse_maps, parse_status};
use hearth_proc::{Binary, ProcessTable, SectionRange};
use hearth_sampler::record::{
    CONTEXT_KERNEL, CONTEXT_USER, MISC_COMM_EXEC, MISC_MMAP_BUILD_ID, RECORD_COMM, RECORD_EXIT,
    RECORD_FORK, RECORD_LOST, RECORD_LOST_SAMPLES, RECORD_MMAP2, RECORD_SAMPLE,
};
use hearth_sampler::session::parse_cpu_list;
use hearth_sampler::{parse_record, Record, SampleFormat};

// ---------------------------------------------------------------------------
// Random numbers and mutations.

/// xorshift64* with a fixed seed per test: every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // One round of splitmix so that nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Values that sit on the edges of checks: zero, powers of two, the
    /// ends of each integer width.
    fn edge_u64(&mut self) -> u64 {
        const EDGES: [u64; 20] = [
            0,
            1,
            2,
            7,
            8,
            16,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xfff,
            0x1000,
            0xffff,
            0x1_0000,
            u32::MAX as u64,
            1 << 32,
            i64::MAX as u64,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        match self.below(4) {
            0 => self.next(),
            1 => self.next() % 64,
            _ => *self.pick(&EDGES),
        }
    }
}

/// One to four random edits of `data`; `donors` are other valid inputs to
/// splice from.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, donors: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xff, b'\n', b' ', b'-', b'/']);
            }
            2 | 3 if len > 0 => {
                // An edge value written over a field, usually aligned.
                let width = *rng.pick(&[1usize, 2, 4, 8, 8]);
                let mut at = rng.below(len);
                if !rng.one_in(4) {
                    at -= at % width;
                }
                let v = rng.edge_u64().to_le_bytes();
                let end = (at + width).min(len);
                data[at..end].copy_from_slice(&v[..end - at]);
            }
            4 => {
                let cut = rng.below(len + 1);
                data.truncate(cut);
            }
            5 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let extra = rng.bytes(n);
                data.splice(at..at, extra);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                data.drain(at..at + n);
            }
            7 if !donors.is_empty() => {
                let donor = rng.pick(donors);
                let at = rng.below(len + 1);
                let from = rng.below(donor.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&donor[from..]);
            }
            8 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, chunk);
            }
            9 if len >= 8 => {
                // Small arithmetic on an aligned word (lengths and counts).
                let at = rng.below(len / 8) * 8;
                let mut w = [0u8; 8];
                w.copy_from_slice(&data[at..at + 8]);
                let delta = rng.below(17) as i64 - 8;
                let v = u64::from_le_bytes(w).wrapping_add(delta as u64);
                data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let n = rng.below(8);
                let extra = rng.bytes(n);
                data.extend_from_slice(&extra);
            }
        }
    }
    data.truncate(1 << 16);
}

fn hex(data: &[u8]) -> String {
    let shown = &data[..data.len().min(4096)];
    let mut s: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    if shown.len() < data.len() {
        s.push_str(&format!("... ({} bytes)", data.len()));
    }
    s
}

/// Runs `f`; if it panics, prints the input that did it, then fails.
fn guard<R>(what: &str, input: &[u8], f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            eprintln!("{what} panicked on input (hex): {}", hex(input));
            resume_unwind(panic)
        }
    }
}

// ---------------------------------------------------------------------------
// Building perf records for any sample format.

const SAMPLE_IP: u64 = 1 << 0;
const SAMPLE_TID: u64 = 1 << 1;
const SAMPLE_TIME: u64 = 1 << 2;
const SAMPLE_ADDR: u64 = 1 << 3;
const SAMPLE_CALLCHAIN: u64 = 1 << 5;
const SAMPLE_ID: u64 = 1 << 6;
const SAMPLE_CPU: u64 = 1 << 7;
const SAMPLE_PERIOD: u64 = 1 << 8;
const SAMPLE_STREAM_ID: u64 = 1 << 9;
const SAMPLE_RAW: u64 = 1 << 10;
const SAMPLE_REGS_USER: u64 = 1 << 12;
const SAMPLE_STACK_USER: u64 = 1 << 13;
const SAMPLE_IDENTIFIER: u64 = 1 << 16;
const SUPPORTED: u64 = SAMPLE_IP
    | SAMPLE_TID
    | SAMPLE_TIME
    | SAMPLE_ADDR
    | SAMPLE_CALLCHAIN
    | SAMPLE_ID
    | SAMPLE_CPU
    | SAMPLE_PERIOD
    | SAMPLE_STREAM_ID
    | SAMPLE_RAW
    | SAMPLE_REGS_USER
    | SAMPLE_STACK_USER
    | SAMPLE_IDENTIFIER;
const RECORD_THROTTLE: u32 = 5;
const KNOWN_TYPES: [u32; 8] = [
    RECORD_SAMPLE,
    RECORD_MMAP2,
    RECORD_COMM,
    RECORD_FORK,
    RECORD_EXIT,
    RECORD_LOST,
    RECORD_LOST_SAMPLES,
    RECORD_THROTTLE,
];

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string NUL-terminated and padded to 8 bytes, as the kernel writes it.
fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
    while out.len() % 8 != 0 {
        out.push(0);
    }
}

fn has(format: &SampleFormat, bit: u64) -> bool {
    format.sample_type & bit != 0
}

#[derive(Debug, Clone, Default)]
struct SampleSpec {
    ip: u64,
    pid: u32,
    tid: u32,
    time: u64,
    cpu: u32,
    period: u64,
    callchain: Vec<u64>,
    raw: Vec<u8>,
    regs_abi: u64,
    regs: Vec<u64>,
    stack: Vec<u8>,
    dyn_size: u64,
}

fn sample_body(format: &SampleFormat, s: &SampleSpec) -> Vec<u8> {
    let mut out = Vec::new();
    if has(format, SAMPLE_IDENTIFIER) {
        put_u64(&mut out, 0x1d);
    }
    if has(format, SAMPLE_IP) {
        put_u64(&mut out, s.ip);
    }
    if has(format, SAMPLE_TID) {
        put_u32(&mut out, s.pid);
        put_u32(&mut out, s.tid);
    }
    if has(format, SAMPLE_TIME) {
        put_u64(&mut out, s.time);
    }
    if has(format, SAMPLE_ADDR) {
        put_u64(&mut out, 0xadd);
    }
    if has(format, SAMPLE_ID) {
        put_u64(&mut out, 0x1d);
    }
    if has(format, SAMPLE_STREAM_ID) {
        put_u64(&mut out, 0x5d);
    }
    if has(format, SAMPLE_CPU) {
        put_u32(&mut out, s.cpu);
        put_u32(&mut out, 0);
    }
    if has(format, SAMPLE_PERIOD) {
        put_u64(&mut out, s.period);
    }
    if has(format, SAMPLE_CALLCHAIN) {
        put_u64(&mut out, s.callchain.len() as u64);
        for &ip in &s.callchain {
            put_u64(&mut out, ip);
        }
    }
    if has(format, SAMPLE_RAW) {
        put_u32(&mut out, s.raw.len() as u32);
        out.extend_from_slice(&s.raw);
        while out.len() % 8 != 0 {
            out.push(0);
        }
    }
    if has(format, SAMPLE_REGS_USER) {
        put_u64(&mut out, s.regs_abi);
        if s.regs_abi != 0 {
            for &r in &s.regs {
                put_u64(&mut out, r);
            }
        }
    }
    if has(format, SAMPLE_STACK_USER) {
        put_u64(&mut out, s.stack.len() as u64);
        if !s.stack.is_empty() {
            out.extend_from_slice(&s.stack);
            put_u64(&mut out, s.dyn_size);
        }
    }
    out
}

/// The `sample_id` trailer of non-sample records, when the format has one.
fn put_trailer(out: &mut Vec<u8>, format: &SampleFormat, pid: u32, tid: u32, time: u64) {
    if !format.sample_id_all {
        return;
    }
    if has(format, SAMPLE_TID) {
        put_u32(out, pid);
        put_u32(out, tid);
    }
    if has(format, SAMPLE_TIME) {
        put_u64(out, time);
    }
    if has(format, SAMPLE_ID) {
        put_u64(out, 0x1d);
    }
    if has(format, SAMPLE_STREAM_ID) {
        put_u64(out, 0x5d);
    }
    if has(format, SAMPLE_CPU) {
        put_u32(out, 1);
        put_u32(out, 0);
    }
    if has(format, SAMPLE_IDENTIFIER) {
        put_u64(out, 0x1d);
    }
}

#[allow(clippy::too_many_arguments)]
fn mmap2_body(
    format: &SampleFormat,
    pid: u32,
    addr: u64,
    len: u64,
    pgoff: u64,
    build_id: Option<&[u8]>,
    prot: u32,
    path: &[u8],
    time: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, pid);
    put_u32(&mut out, pid);
    put_u64(&mut out, addr);
    put_u64(&mut out, len);
    put_u64(&mut out, pgoff);
    match build_id {
        Some(id) => {
            out.push(id.len() as u8);
            out.extend_from_slice(&[0; 3]);
            out.extend_from_slice(id);
            out.resize(out.len() + 20 - id.len(), 0);
        }
        None => {
            put_u32(&mut out, 8);
            put_u32(&mut out, 1);
            put_u64(&mut out, 0x4_0001);
            put_u64(&mut out, 0);
        }
    }
    put_u32(&mut out, prot);
    put_u32(&mut out, 2);
    put_cstr(&mut out, path);
    put_trailer(&mut out, format, pid, pid, time);
    out
}

fn comm_body(format: &SampleFormat, pid: u32, tid: u32, name: &[u8], time: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, pid);
    put_u32(&mut out, tid);
    put_cstr(&mut out, name);
    put_trailer(&mut out, format, pid, tid, time);
    out
}

fn exit_fork_body(format: &SampleFormat, pid: u32, ppid: u32, tid: u32, time: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, pid);
    put_u32(&mut out, ppid);
    put_u32(&mut out, tid);
    put_u32(&mut out, if pid == ppid { pid } else { ppid });
    put_u64(&mut out, time);
    put_trailer(&mut out, format, pid, tid, time);
    out
}

fn lost_body(format: &SampleFormat, lost: u64, time: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, 7);
    put_u64(&mut out, lost);
    put_trailer(&mut out, format, 0, 0, time);
    out
}

fn lost_samples_body(format: &SampleFormat, lost: u64, time: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, lost);
    put_trailer(&mut out, format, 0, 0, time);
    out
}

fn random_format(rng: &mut Rng) -> SampleFormat {
    let sample_type = if rng.one_in(8) {
        rng.next()
    } else {
        rng.next() & SUPPORTED
    };
    let regs_user_mask = match rng.below(4) {
        0 => 0,
        1 => rng.next(),
        2 => SampleFormat::hearth_default().regs_user_mask,
        _ => rng.next() & rng.next() & rng.next(),
    };
    SampleFormat {
        sample_type,
        regs_user_mask,
        sample_id_all: !rng.one_in(4),
    }
}

fn random_name(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(20);
    (0..n)
        .map(|_| match rng.below(4) {
            0 => rng.next() as u8 | 1,
            _ => b'a' + rng.below(26) as u8,
        })
        .filter(|&b| b != 0)
        .collect()
}

fn random_sample(rng: &mut Rng, format: &SampleFormat) -> SampleSpec {
    let mut chain = Vec::new();
    if rng.one_in(2) {
        chain.push(CONTEXT_KERNEL);
        for _ in 0..rng.below(4) {
            chain.push(0xffff_ffff_8100_0000 + rng.below(0x10000) as u64);
        }
    }
    if rng.one_in(2) {
        chain.push(CONTEXT_USER);
        for _ in 0..rng.below(4) {
            chain.push(rng.next() >> 17);
        }
    }
    let regs_abi = if rng.one_in(5) { 0 } else { 2 };
    let regs = (0..format.regs_user_mask.count_ones())
        .map(|_| rng.next())
        .collect();
    let words = rng.below(9);
    let stack = rng.bytes(words * 8);
    let raw_len = rng.below(12);
    let raw = rng.bytes(raw_len);
    SampleSpec {
        ip: rng.next() >> 17,
        pid: 1 + rng.below(4) as u32,
        tid: 1 + rng.below(6) as u32,
        time: rng.next() >> 20,
        cpu: rng.below(4) as u32,
        period: rng.next() % 1_000_000,
        callchain: chain,
        raw,
        regs_abi,
        regs,
        dyn_size: match rng.below(3) {
            0 => rng.edge_u64(),
            _ => stack.len() as u64,
        },
        stack,
    }
}

/// A valid record of a random kind for `format`: `(type, misc, body)`.
fn random_record(rng: &mut Rng, format: &SampleFormat) -> (u32, u16, Vec<u8>) {
    let time = rng.next() >> 20;
    let pid = 1 + rng.below(4) as u32;
    match rng.below(8) {
        0 | 1 => {
            let s = random_sample(rng, format);
            (RECORD_SAMPLE, 2, sample_body(format, &s))
        }
        2 => {
            let id_len = rng.below(21);
            let build_id = rng.one_in(3).then(|| rng.bytes(id_len));
            let misc = if build_id.is_some() {
                MISC_MMAP_BUILD_ID
            } else {
                0
            };
            let name = random_name(rng);
            let body = mmap2_body(
                format,
                pid,
                rng.next() >> 16,
                rng.edge_u64(),
                rng.edge_u64(),
                build_id.as_deref(),
                rng.below(8) as u32,
                &name,
                time,
            );
            (RECORD_MMAP2, misc | 2, body)
        }
        3 => {
            let exec = rng.one_in(2);
            let name = random_name(rng);
            let body = comm_body(format, pid, pid + rng.below(2) as u32, &name, time);
            (RECORD_COMM, if exec { MISC_COMM_EXEC } else { 0 }, body)
        }
        4 => (
            RECORD_FORK,
            0,
            exit_fork_body(format, pid, 1 + rng.below(4) as u32, pid, time),
        ),
        5 => (RECORD_EXIT, 0, exit_fork_body(format, pid, pid, pid, time)),
        6 => (RECORD_LOST, 0, lost_body(format, rng.edge_u64(), time)),
        _ => {
            let ty = if rng.one_in(2) {
                RECORD_LOST_SAMPLES
            } else {
                rng.next() as u32
            };
            (ty, 0, lost_samples_body(format, rng.edge_u64(), time))
        }
    }
}

fn within(whole: &[u8], part: &[u8]) -> bool {
    let start = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    part.is_empty() || (p >= start && p + part.len() <= start + whole.len())
}

/// Parses one record and checks the invariants of any result.
fn check_record<'a>(
    format: &SampleFormat,
    ty: u32,
    misc: u16,
    body: &'a [u8],
) -> Option<Record<'a>> {
    let record = guard("parse_record", body, || {
        parse_record(format, ty, misc, body)
    });
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    match &record {
        Record::Sample(s) => {
            assert_eq!(ty, RECORD_SAMPLE);
            assert_eq!(
                format.sample_type & !SUPPORTED,
                0,
                "unsupported bits parsed"
            );
            assert!(s.callchain_len() * 8 <= body.len(), "call chain too long");
            assert_eq!(s.callchain().count(), s.callchain_len());
            assert!(s.kernel_callchain().count() <= s.callchain_len());
            assert!(within(body, s.user_stack), "user stack outside the body");
            let regs = (0..=64).filter_map(|i| s.user_reg(i)).count();
            assert!(regs * 8 + s.callchain_len() * 8 + s.user_stack.len() <= body.len());
        }
        Record::Mmap2(m) => {
            assert!(within(body, m.filename), "file name outside the body");
            assert!(m
                .build_id
                .is_none_or(|id| within(body, id) && id.len() <= 20));
        }
        Record::Comm(c) => assert!(within(body, c.comm), "comm outside the body"),
        Record::Other(t) => assert_eq!(*t, ty),
        _ => {}
    }
    Some(record)
}

// ---------------------------------------------------------------------------
// perf records.

#[test]
fn perf_records_with_the_default_format() {
    let format = SampleFormat::hearth_default();
    let mut rng = Rng::new(1);
    let seeds: Vec<(u32, u16, Vec<u8>)> =
        (0..64).map(|_| random_record(&mut rng, &format)).collect();
    let donors: Vec<Vec<u8>> = seeds.iter().map(|s| s.2.clone()).collect();
    let mut parsed = 0;
    for _ in 0..40_000 {
        let (mut ty, mut misc, mut body) = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut body, &donors);
        if rng.one_in(16) {
            ty = if rng.one_in(2) {
                *rng.pick(&KNOWN_TYPES)
            } else {
                rng.next() as u32
            };
        }
        if rng.one_in(16) {
            misc = rng.next() as u16;
        }
        parsed += usize::from(check_record(&format, ty, misc, &body).is_some());
    }
    assert!(parsed > 2_000, "mutations should not all fail ({parsed})");
}

/// Every record built for a random format parses back to what was built;
/// mutated ones never panic.
#[test]
fn perf_records_with_random_formats() {
    let mut rng = Rng::new(2);
    for _ in 0..4_000 {
        let format = random_format(&mut rng);
        let unsupported = format.sample_type & !SUPPORTED != 0;

        let spec = random_sample(&mut rng, &format);
        let body = sample_body(&format, &spec);
        match check_record(&format, RECORD_SAMPLE, 2, &body) {
            Some(Record::Sample(s)) => {
                assert!(!unsupported);
                let want = |bit, v: u64| if has(&format, bit) { v } else { 0 };
                assert_eq!(s.ip, want(SAMPLE_IP, spec.ip));
                assert_eq!(u64::from(s.pid), want(SAMPLE_TID, spec.pid.into()));
                assert_eq!(u64::from(s.tid), want(SAMPLE_TID, spec.tid.into()));
                assert_eq!(s.time, want(SAMPLE_TIME, spec.time));
                assert_eq!(u64::from(s.cpu), want(SAMPLE_CPU, spec.cpu.into()));
                assert_eq!(s.period, want(SAMPLE_PERIOD, spec.period));
                if has(&format, SAMPLE_CALLCHAIN) {
                    assert_eq!(s.callchain().collect::<Vec<_>>(), spec.callchain);
                } else {
                    assert_eq!(s.callchain_len(), 0);
                }
                if has(&format, SAMPLE_REGS_USER) && spec.regs_abi != 0 {
                    assert_eq!(s.regs_abi, spec.regs_abi);
                    for (i, &r) in spec.regs.iter().enumerate() {
                        assert_eq!(s.user_reg(i), Some(r));
                    }
                    assert_eq!(s.user_reg(spec.regs.len()), None);
                } else {
                    assert_eq!(s.user_reg(0), None);
                }
                if has(&format, SAMPLE_STACK_USER) {
                    let valid = spec.dyn_size.min(spec.stack.len() as u64) as usize;
                    assert_eq!(s.user_stack, &spec.stack[..valid]);
                } else {
                    assert!(s.user_stack.is_empty());
                }
            }
            other => assert!(unsupported, "{format:?} {spec:?}: {other:?}"),
        }

        // Non-sample records parse whatever the sample_type.
        let time = rng.next() >> 20;
        let name = random_name(&mut rng);
        let body = comm_body(&format, 7, 8, &name, time);
        match check_record(&format, RECORD_COMM, MISC_COMM_EXEC, &body) {
            Some(Record::Comm(c)) => {
                assert_eq!((c.pid, c.tid, c.comm, c.exec), (7, 8, &name[..], true));
                let with_time = format.sample_id_all && has(&format, SAMPLE_TIME);
                assert_eq!(c.id.time, with_time.then_some(time));
            }
            other => panic!("{format:?}: comm did not parse: {other:?}"),
        }
        let body = mmap2_body(&format, 9, 0x1000, 0x2000, 0, None, 5, &name, time);
        match check_record(&format, RECORD_MMAP2, 0, &body) {
            Some(Record::Mmap2(m)) => {
                assert_eq!(
                    (m.pid, m.addr, m.len, m.filename),
                    (9, 0x1000, 0x2000, &name[..])
                );
            }
            other => panic!("{format:?}: mmap2 did not parse: {other:?}"),
        }
        let body = exit_fork_body(&format, 3, 2, 3, time);
        assert!(matches!(
            check_record(&format, RECORD_FORK, 0, &body),
            Some(Record::Fork(f)) if (f.pid, f.ppid, f.time) == (3, 2, time)
        ));

        // Then mutations of each, sometimes read with another format.
        let donors = [
            sample_body(&format, &spec),
            comm_body(&format, 7, 8, &name, time),
        ];
        for _ in 0..8 {
            let (ty, misc, mut body) = random_record(&mut rng, &format);
            mutate(&mut rng, &mut body, &donors);
            let read_with = if rng.one_in(4) {
                random_format(&mut rng)
            } else {
                format
            };
            check_record(&read_with, ty, misc, &body);
        }
    }
}

// ---------------------------------------------------------------------------
// Text from /proc and /sys.

fn mutate_text(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = rng.pick(seeds).clone();
    mutate(rng, &mut data, seeds);
    if rng.one_in(3) {
        // Line-level splice: whole lines of other seeds.
        let donor = rng.pick(seeds);
        let lines: Vec<&[u8]> = donor.split(|&b| b == b'\n').collect();
        let line = rng.pick(&lines);
        let at = rng.below(data.len() + 1);
        let mut piece = line.to_vec();
        piece.push(b'\n');
        data.splice(at..at, piece);
    }
    data
}

#[test]
fn cpu_lists() {
    let mut rng = Rng::new(3);
    let seeds: Vec<Vec<u8>> = [
        "0-3,8,10-11\n",
        "0\n",
        "0-255",
        " 1 - 2 ,, 5 ,7-7\n",
        "3-1",
        "0-65536",
        "18446744073709551615",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert_eq!(
        parse_cpu_list("0-3,8,10-11\n"),
        Ok(vec![0, 1, 2, 3, 8, 10, 11])
    );
    let mut ok = 0;
    for _ in 0..30_000 {
        let data = if rng.one_in(2) {
            mutate_text(&mut rng, &seeds)
        } else {
            let n = rng.below(24);
            (0..n)
                .map(|_| *rng.pick(b"0123456789-, \n\t9"))
                .collect::<Vec<u8>>()
        };
        let text = String::from_utf8_lossy(&data);
        let parsed = guard("parse_cpu_list", &data, || parse_cpu_list(&text));
        if let Ok(cpus) = parsed {
            ok += 1;
            assert!(!cpus.is_empty());
            assert!(cpus.len() <= text.split(',').count() * 65_537);
        }
    }
    assert!(ok > 1_000, "{ok} lists parsed");
}

const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1048602                    /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 1048602                    /usr/bin/cat
55d0c1c6e000-55d0c1c8f000 rw-p 00000000 00:00 0                          [heap]
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
7f1e2c200000-7f1e2c201000 r-xp 00000000 fd:00 42   /opt/my app/lib x.so (deleted)
7f3a1b628000-7f3a1b7bd000 r-xp 00028000 103:02 3932245                  /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1b7f0000-7ffd1b7f2000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

#[test]
fn proc_maps() {
    let mut rng = Rng::new(4);
    let mut seeds: Vec<Vec<u8>> = vec![MAPS.as_bytes().to_vec()];
    seeds.extend(MAPS.lines().map(|l| l.as_bytes().to_vec()));
    if let Ok(own) = std::fs::read("/proc/self/maps") {
        seeds.push(own);
    }
    let mut entries = 0;
    for _ in 0..20_000 {
        let data = mutate_text(&mut rng, &seeds);
        // Raw bytes, as read from the file: paths need not be UTF-8.
        let parsed = guard("parse_maps", &data, || parse_maps(&data));
        let lines = data
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .count();
        assert_eq!(parsed.len(), lines);
        for e in parsed.iter().flatten() {
            entries += 1;
            assert!(e.start <= e.end);
            let _ = e.is_file();
        }
    }
    assert!(entries > 10_000, "{entries} entries parsed");
}

#[test]
fn proc_status_and_comm() {
    let mut rng = Rng::new(5);
    let status = b"Name:\tmy worker\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Ngid:\t0\nPid:\t4243\nPPid:\t1\nTracerPid:\t0\nThreads:\t4\n"
        .to_vec();
    let mut seeds = vec![status, b"Name:\nTgid: -1\nPPid:\t99999999999\n".to_vec()];
    if let Ok(own) = std::fs::read("/proc/self/status") {
        seeds.push(own);
    }
    for _ in 0..20_000 {
        let data = mutate_text(&mut rng, &seeds);
        let text = String::from_utf8_lossy(&data);
        let s = guard("parse_status", &data, || parse_status(&text));
        assert!(s.name.is_none_or(|n| !n.contains('\n')));
    }
    let comms: Vec<Vec<u8>> = [
        &b"bash\n"[..],
        b"kworker/0:1H-events",
        b"a\xffb\0junk\n",
        b"",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    for _ in 0..20_000 {
        let data = mutate_text(&mut rng, &comms);
        let name = guard("parse_comm", &data, || parse_comm(&data));
        assert!(!name.contains('\0'));
    }
}

// ---------------------------------------------------------------------------
// ELF files.

struct SectionSpec {
    name: &'static str,
    kind: u32,
    flags: u64,
    addr: u64,
    data: Vec<u8>,
}

/// A small little-endian ELF64 executable. Program headers are
/// `(type, flags, index of the section they start at, size)`.
fn build_elf(sections: &[SectionSpec], phdrs: &[(u32, u32, usize, u64)]) -> Vec<u8> {
    let mut names = vec![0u8];
    let mut name_at = Vec::new();
    for s in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
        name_at.push(names.len() as u32);
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let data_start = 64 + 56 * phdrs.len();
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    for s in sections {
        while (data_start + body.len()) % 16 != 0 {
            body.push(0);
        }
        offsets.push((data_start + body.len()) as u64);
        body.extend_from_slice(&s.data);
    }
    let names_at = (data_start + body.len()) as u64;
    body.extend_from_slice(&names);
    while (data_start + body.len()) % 8 != 0 {
        body.push(0);
    }
    let shoff = (data_start + body.len()) as u64;

    let mut out = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    put_u32(&mut out, 1);
    put_u64(&mut out, 0x401000);
    put_u64(&mut out, 64);
    put_u64(&mut out, shoff);
    put_u32(&mut out, 0);
    for v in [
        64,
        56,
        phdrs.len(),
        64,
        sections.len() + 2,
        sections.len() + 1,
    ] {
        out.extend_from_slice(&(v as u16).to_le_bytes());
    }
    for &(kind, flags, section, size) in phdrs {
        let (offset, vaddr) = (offsets[section], sections[section].addr);
        put_u32(&mut out, kind);
        put_u32(&mut out, flags);
        for v in [offset, vaddr, vaddr, size, size, 0x1000] {
            put_u64(&mut out, v);
        }
    }
    out.extend_from_slice(&body);
    let mut shdr = |name: u32, kind: u32, flags: u64, addr: u64, off: u64, size: u64| {
        put_u32(&mut out, name);
        put_u32(&mut out, kind);
        for v in [flags, addr, off, size] {
            put_u64(&mut out, v);
        }
        put_u32(&mut out, 0);
        put_u32(&mut out, 0);
        put_u64(&mut out, 8);
        put_u64(&mut out, 0);
    };
    shdr(0, 0, 0, 0, 0, 0);
    for (i, s) in sections.iter().enumerate() {
        shdr(
            name_at[i],
            s.kind,
            s.flags,
            s.addr,
            offsets[i],
            s.data.len() as u64,
        );
    }
    shdr(
        name_at[sections.len()],
        3,
        0,
        0,
        names_at,
        names.len() as u64,
    );
    out
}

fn sample_elf(rng: &mut Rng) -> Vec<u8> {
    const TEXT: u64 = 0x401000;
    const EH_FRAME: u64 = 0x402040;
    let mut note = Vec::new();
    for v in [4u32, 20, 3] {
        put_u32(&mut note, v);
    }
    note.extend_from_slice(b"GNU\0");
    note.extend_from_slice(&rng.bytes(20));
    // push rbp; mov rbp, rsp; nop...; pop rbp; ret
    let mut text = b"\x55\x48\x89\xe5".to_vec();
    text.resize(15, 0x90);
    text.extend_from_slice(b"\x5d\xc3");
    // One CIE (CFA = rsp + 8, return address at CFA - 8) and one FDE
    // covering .text, with pc-relative 4-byte pointers.
    let mut cie = vec![0, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b];
    cie.extend_from_slice(&[0x0c, 7, 8, 0x90, 1, 0, 0]);
    let mut eh_frame = Vec::new();
    put_u32(&mut eh_frame, cie.len() as u32);
    eh_frame.extend_from_slice(&cie);
    let fde_at = eh_frame.len() as u64;
    let pc_field = EH_FRAME + fde_at + 8;
    let mut fde = Vec::new();
    put_u32(&mut fde, (fde_at + 4) as u32);
    put_u32(&mut fde, TEXT.wrapping_sub(pc_field) as u32);
    put_u32(&mut fde, text.len() as u32);
    fde.extend_from_slice(&[0, 0, 0, 0]);
    put_u32(&mut eh_frame, fde.len() as u32);
    eh_frame.extend_from_slice(&fde);
    put_u32(&mut eh_frame, 0);
    let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
    for v in [0u32, 1, 0, 0] {
        put_u32(&mut hdr, v);
    }
    let sections = [
        SectionSpec {
            name: ".note.gnu.build-id",
            kind: 7,
            flags: 2,
            addr: 0x400200,
            data: note,
        },
        SectionSpec {
            name: ".text",
            kind: 1,
            flags: 6,
            addr: TEXT,
            data: text,
        },
        SectionSpec {
            name: ".eh_frame_hdr",
            kind: 1,
            flags: 2,
            addr: 0x402000,
            data: hdr,
        },
        SectionSpec {
            name: ".eh_frame",
            kind: 1,
            flags: 2,
            addr: EH_FRAME,
            data: eh_frame.clone(),
        },
        SectionSpec {
            name: ".debug_frame",
            kind: 1,
            flags: 0,
            addr: 0,
            data: eh_frame,
        },
        SectionSpec {
            name: ".got",
            kind: 1,
            flags: 3,
            addr: 0x403000,
            data: vec![0; 24],
        },
    ];
    let phdrs = [(1, 4, 0, 0x200), (1, 5, 1, 0x20), (4, 4, 0, 36)];
    build_elf(&sections, &phdrs)
}

/// A file that no other test (or concurrent run) uses, removed on drop.
///
/// Each input gets a new file: rewriting one file in place is slow on
/// some file systems, which flush a file truncated and written again.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn write(tag: &str, n: usize, data: &[u8]) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("hearth-smoke-{tag}-{}-{nanos}-{n}", std::process::id());
        let file = ScratchFile(std::env::temp_dir().join(name));
        std::fs::write(&file.0, data).expect("write a temporary file");
        file
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp dir")
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn elf_files() {
    let mut rng = Rng::new(6);
    let seeds: Vec<Vec<u8>> = (0..4).map(|_| sample_elf(&mut rng)).collect();
    // The seed itself parses as built.
    let file = ScratchFile::write("elf", 0, &seeds[0]);
    let b = Binary::open(file.path().into(), file.path()).expect("hand-made ELF parses");
    assert_eq!(b.build_id.as_ref().map(|id| id.len()), Some(20));
    assert_eq!(b.segments.len(), 2);
    for s in [
        &b.sections.text,
        &b.sections.eh_frame,
        &b.sections.eh_frame_hdr,
    ] {
        assert!(s.is_some(), "{:?}", b.sections);
    }
    // Mapped from offset 0, .text's address maps to its file offset.
    let text = b.sections.text.clone().unwrap();
    let bias = b.load_bias(0x5555_0000_0000, 0).unwrap();
    assert_eq!(
        text.svma.start.wrapping_add(bias),
        0x5555_0000_0000 + text.file.start as u64
    );
    drop(b);

    let mut opened = 0;
    for i in 1..=6_000 {
        let mut data = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut data, &seeds);
        let file = ScratchFile::write("elf", i, &data);
        let result = guard("Binary::open", &data, || {
            Binary::open(file.path().into(), file.path())
        });
        // The mapping stays valid without the name.
        drop(file);
        let Ok(b) = result else {
            continue;
        };
        opened += 1;
        guard("Binary methods", &data, || {
            assert_eq!(b.bytes(), &data[..]);
            let s = &b.sections;
            for r in [
                &s.text,
                &s.eh_frame,
                &s.eh_frame_hdr,
                &s.debug_frame,
                &s.got,
            ]
            .into_iter()
            .flatten()
            {
                assert!(r.file.end <= data.len(), "section past the end: {r:?}");
                assert_eq!(b.section_bytes(r), &data[r.file.clone()]);
            }
            let bogus = SectionRange {
                svma: 0..0,
                file: rng.edge_u64() as usize..rng.edge_u64() as usize,
            };
            let _ = b.section_bytes(&bogus);
            for _ in 0..4 {
                let _ = b.load_bias(rng.edge_u64(), rng.edge_u64());
            }
            for seg in &b.segments {
                let _ = b.load_bias(rng.next(), seg.offset);
            }
            let _ = b.build_id_hex();
        });
    }
    assert!(opened > 1_000, "{opened} mutated files opened");
}

// ---------------------------------------------------------------------------
// Capture replay and batches.

/// Addresses where generated mappings live, and their paths: a real ELF
/// file (this test's executable), the vDSO, anonymous code, a missing file.
const BASES: [u64; 4] = [
    0x40_0000,
    0x5555_0000_0000,
    0x7fff_f7f0_0000,
    0x7f00_0000_0000,
];
const PATHS: [&[u8]; 6] = [
    b"/proc/self/exe",
    b"[vdso]",
    b"jit",
    b"/nonexistent/libx.so",
    b"/proc/self/exe (deleted)",
    b"",
];

/// A capture whose records tell a coherent story (forks, names, mappings,
/// samples inside them, exits, gaps that reap) before any mutation.
fn random_capture(rng: &mut Rng) -> Vec<u8> {
    let format = if rng.one_in(4) {
        random_format(rng)
    } else {
        SampleFormat::hearth_default()
    };
    let mut w = CaptureWriter::new(Vec::new(), &format, 99).unwrap();
    let mut time = rng.below(1000) as u64;
    for _ in 0..1 + rng.below(24) {
        time = match rng.below(16) {
            0 => time + 1_500_000_000,
            1 => time.saturating_sub(500),
            _ => time + rng.below(1000) as u64,
        };
        let pid = 1 + rng.below(3) as u32;
        let (ty, misc, body) = match rng.below(10) {
            0..=3 => {
                let mut s = random_sample(rng, &format);
                s.pid = pid;
                s.time = time;
                let base = *rng.pick(&BASES);
                s.ip = base + rng.below(0x2_0000) as u64;
                let sp = 0x7ffc_0000_0000u64;
                if s.regs.len() >= 3 {
                    s.regs_abi = 2;
                    // bp, sp, ip in mask order for the default mask.
                    s.regs[0] = sp + 16;
                    s.regs[1] = sp;
                    s.regs[2] = s.ip;
                }
                s.stack.clear();
                for i in 0..rng.below(24) as u64 {
                    let word = match rng.below(3) {
                        0 => sp + 16 * (i + 1),
                        1 => *rng.pick(&BASES) + rng.below(0x2_0000) as u64,
                        _ => rng.next(),
                    };
                    s.stack.extend_from_slice(&word.to_le_bytes());
                }
                s.dyn_size = s.stack.len() as u64;
                (RECORD_SAMPLE, 2, sample_body(&format, &s))
            }
            4 => {
                let base = *rng.pick(&BASES);
                let len = if rng.one_in(8) {
                    rng.edge_u64()
                } else {
                    0x40_0000
                };
                let pgoff = if rng.one_in(8) { rng.edge_u64() } else { 0 };
                let prot = if rng.one_in(8) { 1 } else { 5 };
                let path = *rng.pick(&PATHS);
                let body = mmap2_body(&format, pid, base, len, pgoff, None, prot, path, time);
                (RECORD_MMAP2, 2, body)
            }
            5 => {
                let name = random_name(rng);
                let misc = if rng.one_in(3) { MISC_COMM_EXEC } else { 0 };
                let tid = pid + rng.below(2) as u32;
                (RECORD_COMM, misc, comm_body(&format, pid, tid, &name, time))
            }
            6 => {
                let parent = 1 + rng.below(3) as u32;
                (
                    RECORD_FORK,
                    0,
                    exit_fork_body(&format, pid, parent, pid, time),
                )
            }
            7 => (RECORD_EXIT, 0, exit_fork_body(&format, pid, pid, pid, time)),
            _ => random_record(rng, &format),
        };
        w.write(rng.below(4) as u32, ty, misc, &body).unwrap();
    }
    w.finish().unwrap()
}

fn replay(data: Vec<u8>, filter: PidFilter) {
    let input = data.clone();
    guard("capture replay", &input, move || {
        let Ok(capture) = Capture::from_bytes(data) else {
            return;
        };
        let table = ProcessTable::with_proc_root("/nonexistent-proc");
        let mut converter = Converter::new(capture.format, table, filter);
        let mut visited = 0;
        let result = capture.for_each(|_, ty, misc, body| {
            visited += 1;
            converter.handle(ty, misc, body);
        });
        if let Ok(n) = result {
            assert_eq!(n as u64, visited);
        }
        let stats = converter.stats;
        assert_eq!(stats.records, visited);
        assert!(stats.samples + stats.parse_errors <= stats.records);
        let agg = converter.take_aggregate();
        assert_eq!(agg.counts.values().sum::<u64>(), agg.total_samples);
        assert!(agg.total_samples <= stats.samples);
    });
}

#[test]
fn capture_replay() {
    let mut rng = Rng::new(7);
    let donors: Vec<Vec<u8>> = (0..16).map(|_| random_capture(&mut rng)).collect();
    for i in 0..3_000 {
        let mut data = random_capture(&mut rng);
        if rng.one_in(3) {
            mutate(&mut rng, &mut data, &donors);
        }
        let filter = if i % 8 == 0 {
            PidFilter::Tree(HashSet::from([1, 2]))
        } else {
            PidFilter::All
        };
        replay(data, filter);
    }
}

/// Inputs the fuzzer found, minimized (also in `fuzz/seeds/capture_replay`).
#[test]
fn capture_replay_regressions() {
    let format = SampleFormat::hearth_default();
    let capture = |records: &[(u32, Vec<u8>)]| {
        let mut w = CaptureWriter::new(Vec::new(), &format, 99).unwrap();
        for (ty, body) in records {
            w.write(0, *ty, 2, body).unwrap();
        }
        w.finish().unwrap()
    };
    let sample = SampleSpec {
        ip: 0x1001,
        pid: 5,
        tid: 5,
        time: 2,
        regs_abi: 2,
        regs: vec![0, 0x8000, 0x1001],
        ..SampleSpec::default()
    };
    let cases = [
        // An executable file mapping whose end overflows u64.
        capture(&[(
            RECORD_MMAP2,
            mmap2_body(&format, 5, u64::MAX - 0xfff, 0x2000, 0, None, 5, b"/x", 1),
        )]),
        // Lost counts that add up past u64::MAX.
        capture(&[
            (RECORD_LOST, lost_body(&format, u64::MAX, 1)),
            (RECORD_LOST, lost_body(&format, 1, 2)),
        ]),
        capture(&[
            (RECORD_LOST_SAMPLES, lost_samples_body(&format, u64::MAX, 1)),
            (RECORD_LOST_SAMPLES, lost_samples_body(&format, 1, 2)),
        ]),
        // A mapping at a file offset near u64::MAX, sampled past its start.
        capture(&[
            (
                RECORD_MMAP2,
                mmap2_body(&format, 5, 0x1000, 0x1000, u64::MAX, None, 5, b"jit", 1),
            ),
            (RECORD_SAMPLE, sample_body(&format, &sample)),
        ]),
    ];
    for case in cases {
        replay(case, PidFilter::All);
    }
}

#[test]
fn batches_sort_any_records() {
    let mut rng = Rng::new(8);
    let mut batch = Batch::new();
    for _ in 0..4_000 {
        let format = if rng.one_in(4) {
            random_format(&mut rng)
        } else {
            SampleFormat::hearth_default()
        };
        let n = rng.below(40);
        let mut records: Vec<(u32, u32, u16, Vec<u8>)> = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut ty, misc, mut body) = random_record(&mut rng, &format);
            if rng.one_in(4) {
                let donors: Vec<Vec<u8>> = records.iter().map(|r| r.3.clone()).collect();
                mutate(&mut rng, &mut body, &donors);
            }
            if rng.one_in(16) {
                ty = rng.next() as u32 % 16;
            }
            records.push((rng.below(4) as u32, ty, misc, body));
        }
        // Expected: a stable sort by time, where a record without one takes
        // its predecessor's (0 for the first).
        let mut last = 0;
        let mut order: Vec<(u64, usize)> = Vec::with_capacity(n);
        for (i, (_, ty, misc, body)) in records.iter().enumerate() {
            let time = check_record(&format, *ty, *misc, body)
                .and_then(|r| r.time())
                .unwrap_or(last);
            last = time;
            order.push((time, i));
        }
        order.sort_by_key(|&(time, _)| time);

        batch.clear();
        for (cpu, ty, misc, body) in &records {
            batch.push(&format, *cpu, *ty, *misc, body);
        }
        assert_eq!(batch.len(), n);
        let mut seen = Vec::with_capacity(n);
        batch.for_each_sorted(|cpu, ty, misc, body| seen.push((cpu, ty, misc, body.to_vec())));
        let expected: Vec<_> = order.iter().map(|&(_, i)| records[i].clone()).collect();
        assert_eq!(seen, expected);
    }
}
