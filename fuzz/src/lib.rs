//! Helpers shared by Hearth's fuzz targets: reading fixed-size fields off
//! the front of a fuzz input, and the invariants every parsed record must
//! satisfy.

use hearth_sampler::record::{
    RECORD_COMM, RECORD_EXIT, RECORD_FORK, RECORD_LOST, RECORD_LOST_SAMPLES, RECORD_MMAP2,
    RECORD_SAMPLE,
};
use hearth_sampler::{parse_record, ParseError, Record, SampleFormat};

/// `sample_type` bits the record parser understands (`PERF_SAMPLE_*`).
pub const SUPPORTED_SAMPLE_BITS: u64 = (1 << 0) // IP
    | (1 << 1) // TID
    | (1 << 2) // TIME
    | (1 << 3) // ADDR
    | (1 << 5) // CALLCHAIN
    | (1 << 6) // ID
    | (1 << 7) // CPU
    | (1 << 8) // PERIOD
    | (1 << 9) // STREAM_ID
    | (1 << 10) // RAW
    | (1 << 12) // REGS_USER
    | (1 << 13) // STACK_USER
    | (1 << 16); // IDENTIFIER

/// Little-endian fields taken off the front of a byte string. Reads past
/// the end yield zeros, so every input maps to some value.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    fn fixed<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.fixed::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.fixed())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.fixed())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.fixed())
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A sample format chosen by the input: `sample_type u64 | regs_user_mask
/// u64 | flags u8`. Flag bit 0 is `sample_id_all`; unless flag bit 1 is
/// set, `sample_type` is restricted to the bits the parser supports, so
/// that most inputs reach the field-by-field code.
pub fn format_from(r: &mut Reader<'_>) -> SampleFormat {
    let sample_type = r.u64();
    let regs_user_mask = r.u64();
    let flags = r.u8();
    SampleFormat {
        sample_type: if flags & 2 != 0 {
            sample_type
        } else {
            sample_type & SUPPORTED_SAMPLE_BITS
        },
        regs_user_mask,
        sample_id_all: flags & 1 != 0,
    }
}

/// Whether `part` lies inside `whole` (empty slices may point anywhere).
pub fn within(whole: &[u8], part: &[u8]) -> bool {
    if part.is_empty() {
        return true;
    }
    let start = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    p >= start && p + part.len() <= start + whole.len()
}

/// Parses one record and checks what any result must satisfy: slices stay
/// inside the body, counts agree with the format, the parse is repeatable.
pub fn check_record(format: &SampleFormat, record_type: u32, misc: u16, body: &[u8]) {
    let parsed = parse_record(format, record_type, misc, body);
    assert_eq!(
        parsed,
        parse_record(format, record_type, misc, body),
        "parse is not deterministic"
    );
    let record = match parsed {
        Ok(r) => r,
        Err(e) => {
            if let ParseError::Truncated {
                offset,
                needed,
                len,
                ..
            } = e
            {
                assert!(len <= body.len() && offset <= len, "{e:?}");
                assert!(offset.saturating_add(needed) > len, "{e:?}");
            }
            // The message must format without panicking.
            let _ = e.to_string();
            return;
        }
    };
    let _ = record.time();
    match record {
        Record::Sample(s) => {
            assert_eq!(record_type, RECORD_SAMPLE);
            assert_eq!(format.sample_type & !SUPPORTED_SAMPLE_BITS, 0);
            let chain = s.callchain_len();
            assert!(chain <= body.len() / 8, "call chain longer than the body");
            assert_eq!(s.callchain().count(), chain);
            assert!(s.kernel_callchain().count() <= chain);
            assert!(within(body, s.user_stack), "user stack outside the record");
            let regs = (0..=64).filter_map(|i| s.user_reg(i)).count();
            if s.regs_abi != 0 {
                assert_eq!(regs as u32, format.regs_user_mask.count_ones());
            } else {
                assert_eq!(regs, 0);
            }
            let used = chain * 8 + regs * 8 + s.user_stack.len();
            assert!(used <= body.len(), "{used} bytes used of {}", body.len());
        }
        Record::Mmap2(m) => {
            assert_eq!(record_type, RECORD_MMAP2);
            assert!(within(body, m.filename), "file name outside the record");
            assert!(!m.filename.contains(&0));
            if let Some(id) = m.build_id {
                assert!(id.len() <= 20 && within(body, id));
            }
        }
        Record::Comm(c) => {
            assert_eq!(record_type, RECORD_COMM);
            assert!(within(body, c.comm), "comm outside the record");
            assert!(!c.comm.contains(&0));
        }
        Record::Fork(_) => assert_eq!(record_type, RECORD_FORK),
        Record::Exit(_) => assert_eq!(record_type, RECORD_EXIT),
        Record::Lost(_) => assert_eq!(record_type, RECORD_LOST),
        Record::LostSamples(_) => assert_eq!(record_type, RECORD_LOST_SAMPLES),
        Record::Other(t) => {
            assert_eq!(t, record_type);
            assert!(![
                RECORD_SAMPLE,
                RECORD_MMAP2,
                RECORD_COMM,
                RECORD_FORK,
                RECORD_EXIT,
                RECORD_LOST,
                RECORD_LOST_SAMPLES
            ]
            .contains(&t));
        }
    }
}

/// A small report (two processes, one in a pod's container, kernel and
/// inlined frames) for the profile page's targets.
pub fn ui_window(start_s: u64) -> hearth_profile::Report {
    use hearth_profile::{ContainerKey, Function, Line, Location, Report, ReportSample, Resource};
    use std::sync::Arc;
    let f = |n: &str| Function {
        name: Arc::from(n),
        file: None,
    };
    let loc = |fns: &[usize], kernel: bool| Location {
        mapping: None,
        address: 0,
        lines: fns.iter().map(|&function| Line { function, line: 0 }).collect(),
        kernel,
    };
    let sample = |stack: Vec<usize>, pid: u32, resource: usize, count: u64| ReportSample {
        stack,
        pid,
        tid: pid,
        process_name: Arc::from(if pid == 1 { "web" } else { "make" }),
        thread_name: Arc::from("t"),
        resource,
        count,
    };
    Report {
        start_unix_ns: start_s * 1_000_000_000,
        duration_ns: 5_000_000_000,
        frequency_hz: 19,
        functions: vec![f("main"), f("serve"), f("hash"), f("sys_read")],
        locations: vec![loc(&[0], false), loc(&[2, 1], false), loc(&[3], true)],
        samples: vec![
            sample(vec![1, 0], 1, 1, 7),
            sample(vec![2, 1, 0], 1, 1, 2),
            sample(vec![0], 2, 0, 3),
        ],
        resources: vec![
            Resource::default(),
            Resource {
                container: Some(Arc::new(ContainerKey {
                    id: Arc::from("c".repeat(64).as_str()),
                    runtime: None,
                    pod_uid: Some(Arc::from("uid-1")),
                })),
                attributes: vec![
                    ("container.id".into(), "c".repeat(64)),
                    ("k8s.namespace.name".into(), "shop".into()),
                    ("k8s.pod.name".into(), "web-1".into()),
                ],
            },
        ],
        ..Default::default()
    }
}
