//! A bounds-checked parser of raw perf records.
//!
//! Input is the record body as it sits in the ring buffer (without the
//! 8-byte `perf_event_header`), plus the header's `type` and `misc`. Every
//! length and count is checked against the bytes actually present; a bad
//! record is an error, never a panic, and never a read past the slice.

use perf_event_open_sys::bindings as b;

use crate::format::SampleFormat;

pub const RECORD_MMAP2: u32 = b::PERF_RECORD_MMAP2;
pub const RECORD_COMM: u32 = b::PERF_RECORD_COMM;
pub const RECORD_EXIT: u32 = b::PERF_RECORD_EXIT;
pub const RECORD_FORK: u32 = b::PERF_RECORD_FORK;
pub const RECORD_LOST: u32 = b::PERF_RECORD_LOST;
pub const RECORD_SAMPLE: u32 = b::PERF_RECORD_SAMPLE;
pub const RECORD_LOST_SAMPLES: u32 = b::PERF_RECORD_LOST_SAMPLES;

/// `misc` bit of a COMM record written by `exec`.
pub const MISC_COMM_EXEC: u16 = b::PERF_RECORD_MISC_COMM_EXEC as u16;
/// `misc` bit of an MMAP2 record that carries a build id instead of an inode.
pub const MISC_MMAP_BUILD_ID: u16 = b::PERF_RECORD_MISC_MMAP_BUILD_ID as u16;
/// Call-chain context markers (`PERF_CONTEXT_*`), as unsigned values.
pub const CONTEXT_KERNEL: u64 = b::PERF_CONTEXT_KERNEL;
pub const CONTEXT_USER: u64 = b::PERF_CONTEXT_USER;
/// Any call-chain entry at or above this value is a context marker.
pub const CONTEXT_MAX: u64 = b::PERF_CONTEXT_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{record} record truncated: needed {needed} bytes at offset {offset}, have {len}")]
    Truncated {
        record: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("sample format requests fields this parser does not support (sample_type {0:#x})")]
    UnsupportedFormat(u64),
    #[error("{0} record has a string without a terminating NUL")]
    UnterminatedString(&'static str),
}

/// The `sample_id` trailer of non-sample records (`sample_id_all`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleId {
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub time: Option<u64>,
    pub cpu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRecord<'a> {
    pub ip: u64,
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub cpu: u32,
    pub period: u64,
    /// Call-chain entries, raw little-endian `u64`s (markers included).
    callchain: &'a [u8],
    /// `PERF_SAMPLE_REGS_ABI_*`; 0 means no user registers (kernel thread).
    pub regs_abi: u64,
    regs: &'a [u8],
    /// The valid part of the user stack copy (`dyn_size` bytes), starting at
    /// the user stack pointer.
    pub user_stack: &'a [u8],
}

impl<'a> SampleRecord<'a> {
    /// Call-chain entries in order (leaf first), markers included.
    pub fn callchain(&self) -> impl Iterator<Item = u64> + 'a {
        self.callchain.chunks_exact(8).map(le_u64)
    }

    pub fn callchain_len(&self) -> usize {
        self.callchain.len() / 8
    }

    /// The kernel part of the call chain: entries after `PERF_CONTEXT_KERNEL`
    /// and before any other marker.
    pub fn kernel_callchain(&self) -> impl Iterator<Item = u64> + 'a {
        let mut in_kernel = false;
        self.callchain().filter(move |&ip| {
            if ip >= CONTEXT_MAX {
                in_kernel = ip == CONTEXT_KERNEL;
                return false;
            }
            in_kernel
        })
    }

    /// The dumped user register at `index` of the register mask order.
    pub fn user_reg(&self, index: usize) -> Option<u64> {
        if self.regs_abi == 0 {
            return None;
        }
        self.regs.chunks_exact(8).nth(index).map(le_u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmap2Record<'a> {
    pub pid: u32,
    pub tid: u32,
    pub addr: u64,
    pub len: u64,
    pub pgoff: u64,
    /// Device and inode, when the record carries them (not a build id).
    pub maj: u32,
    pub min: u32,
    pub ino: u64,
    pub build_id: Option<&'a [u8]>,
    pub prot: u32,
    pub flags: u32,
    pub filename: &'a [u8],
    pub id: SampleId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommRecord<'a> {
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a [u8],
    /// Written by `exec`: the process image was replaced.
    pub exec: bool,
    pub id: SampleId,
}

/// FORK and EXIT share one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitForkRecord {
    pub pid: u32,
    pub ppid: u32,
    pub tid: u32,
    pub ptid: u32,
    pub time: u64,
    pub id: SampleId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRecord {
    pub lost: u64,
    pub id: SampleId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Sample(SampleRecord<'a>),
    Mmap2(Mmap2Record<'a>),
    Comm(CommRecord<'a>),
    Fork(ExitForkRecord),
    Exit(ExitForkRecord),
    /// Records (of any kind) dropped because the ring buffer was full.
    Lost(LostRecord),
    /// Samples dropped by the kernel for other reasons.
    LostSamples(LostRecord),
    /// A record type Hearth does not use.
    Other(u32),
}

impl Record<'_> {
    /// Kernel timestamp, when the record carries one.
    pub fn time(&self) -> Option<u64> {
        match self {
            Record::Sample(s) => Some(s.time),
            Record::Mmap2(r) => r.id.time,
            Record::Comm(r) => r.id.time,
            Record::Fork(r) | Record::Exit(r) => Some(r.time),
            Record::Lost(r) | Record::LostSamples(r) => r.id.time,
            Record::Other(_) => None,
        }
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    record: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], record: &'static str) -> Self {
        Cursor {
            data,
            pos: 0,
            record,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let out = &self.data[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(ParseError::Truncated {
                record: self.record,
                offset: self.pos,
                needed: n,
                len: self.data.len(),
            }),
        }
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        self.bytes(8).map(le_u64)
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` 8-byte words, with the count checked before any multiplication
    /// can overflow.
    fn words(&mut self, n: u64) -> Result<&'a [u8], ParseError> {
        let remaining = (self.data.len() - self.pos) / 8;
        if n > remaining as u64 {
            return Err(ParseError::Truncated {
                record: self.record,
                offset: self.pos,
                needed: usize::try_from(n)
                    .unwrap_or(usize::MAX / 8)
                    .saturating_mul(8),
                len: self.data.len(),
            });
        }
        self.bytes(n as usize * 8)
    }
}

const SUPPORTED_SAMPLE_BITS: u64 = (b::PERF_SAMPLE_IDENTIFIER
    | b::PERF_SAMPLE_IP
    | b::PERF_SAMPLE_TID
    | b::PERF_SAMPLE_TIME
    | b::PERF_SAMPLE_ADDR
    | b::PERF_SAMPLE_ID
    | b::PERF_SAMPLE_STREAM_ID
    | b::PERF_SAMPLE_CPU
    | b::PERF_SAMPLE_PERIOD
    | b::PERF_SAMPLE_CALLCHAIN
    | b::PERF_SAMPLE_RAW
    | b::PERF_SAMPLE_REGS_USER
    | b::PERF_SAMPLE_STACK_USER) as u64;

/// Parses one record body. `body` excludes the 8-byte header.
pub fn parse_record<'a>(
    format: &SampleFormat,
    record_type: u32,
    misc: u16,
    body: &'a [u8],
) -> Result<Record<'a>, ParseError> {
    match record_type {
        RECORD_SAMPLE => parse_sample(format, body).map(Record::Sample),
        RECORD_MMAP2 => parse_mmap2(format, misc, body).map(Record::Mmap2),
        RECORD_COMM => parse_comm(format, misc, body).map(Record::Comm),
        RECORD_FORK => parse_exit_fork(format, body, "FORK").map(Record::Fork),
        RECORD_EXIT => parse_exit_fork(format, body, "EXIT").map(Record::Exit),
        RECORD_LOST => {
            let (main, id) = split_sample_id(format, body, "LOST")?;
            let mut c = Cursor::new(main, "LOST");
            let _event_id = c.u64()?;
            let lost = c.u64()?;
            Ok(Record::Lost(LostRecord { lost, id }))
        }
        RECORD_LOST_SAMPLES => {
            let (main, id) = split_sample_id(format, body, "LOST_SAMPLES")?;
            let lost = Cursor::new(main, "LOST_SAMPLES").u64()?;
            Ok(Record::LostSamples(LostRecord { lost, id }))
        }
        other => Ok(Record::Other(other)),
    }
}

fn parse_sample<'a>(format: &SampleFormat, body: &'a [u8]) -> Result<SampleRecord<'a>, ParseError> {
    if format.sample_type & !SUPPORTED_SAMPLE_BITS != 0 {
        return Err(ParseError::UnsupportedFormat(format.sample_type));
    }
    let mut c = Cursor::new(body, "SAMPLE");
    let mut s = SampleRecord {
        ip: 0,
        pid: 0,
        tid: 0,
        time: 0,
        cpu: 0,
        period: 0,
        callchain: &[],
        regs_abi: 0,
        regs: &[],
        user_stack: &[],
    };
    if format.has(b::PERF_SAMPLE_IDENTIFIER) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_IP) {
        s.ip = c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_TID) {
        s.pid = c.u32()?;
        s.tid = c.u32()?;
    }
    if format.has(b::PERF_SAMPLE_TIME) {
        s.time = c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_ADDR) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_ID) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_STREAM_ID) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_CPU) {
        s.cpu = c.u32()?;
        c.u32()?;
    }
    if format.has(b::PERF_SAMPLE_PERIOD) {
        s.period = c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_CALLCHAIN) {
        let nr = c.u64()?;
        s.callchain = c.words(nr)?;
    }
    if format.has(b::PERF_SAMPLE_RAW) {
        let size = c.u32()? as usize;
        c.bytes(size)?;
        // The u32 size plus the data are padded to 8 bytes by the kernel.
        let pad = (8 - (4 + size) % 8) % 8;
        c.bytes(pad)?;
    }
    if format.has(b::PERF_SAMPLE_REGS_USER) {
        s.regs_abi = c.u64()?;
        if s.regs_abi != 0 {
            s.regs = c.words(format.regs_user_mask.count_ones() as u64)?;
        }
    }
    if format.has(b::PERF_SAMPLE_STACK_USER) {
        let size = c.u64()?;
        if size > 0 {
            let data = c.bytes(usize::try_from(size).unwrap_or(usize::MAX))?;
            let dyn_size = c.u64()?;
            // The kernel never reports more valid bytes than it copied;
            // a capture file might, so clamp.
            let valid = usize::try_from(dyn_size)
                .unwrap_or(usize::MAX)
                .min(data.len());
            s.user_stack = &data[..valid];
        }
    }
    Ok(s)
}

/// Splits off the `sample_id` trailer that `sample_id_all` appends.
fn split_sample_id<'a>(
    format: &SampleFormat,
    body: &'a [u8],
    record: &'static str,
) -> Result<(&'a [u8], SampleId), ParseError> {
    if !format.sample_id_all {
        return Ok((body, SampleId::default()));
    }
    let bits = [
        b::PERF_SAMPLE_TID,
        b::PERF_SAMPLE_TIME,
        b::PERF_SAMPLE_ID,
        b::PERF_SAMPLE_STREAM_ID,
        b::PERF_SAMPLE_CPU,
        b::PERF_SAMPLE_IDENTIFIER,
    ];
    let len: usize = bits.iter().filter(|&&bit| format.has(bit)).count() * 8;
    if body.len() < len {
        return Err(ParseError::Truncated {
            record,
            offset: 0,
            needed: len,
            len: body.len(),
        });
    }
    let (main, trailer) = body.split_at(body.len() - len);
    let mut c = Cursor::new(trailer, record);
    let mut id = SampleId::default();
    if format.has(b::PERF_SAMPLE_TID) {
        id.pid = Some(c.u32()?);
        id.tid = Some(c.u32()?);
    }
    if format.has(b::PERF_SAMPLE_TIME) {
        id.time = Some(c.u64()?);
    }
    if format.has(b::PERF_SAMPLE_ID) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_STREAM_ID) {
        c.u64()?;
    }
    if format.has(b::PERF_SAMPLE_CPU) {
        id.cpu = Some(c.u32()?);
    }
    Ok((main, id))
}

/// A NUL-terminated string inside a padded field.
fn c_string<'a>(rest: &'a [u8], record: &'static str) -> Result<&'a [u8], ParseError> {
    match rest.iter().position(|&b| b == 0) {
        Some(end) => Ok(&rest[..end]),
        None => Err(ParseError::UnterminatedString(record)),
    }
}

fn parse_mmap2<'a>(
    format: &SampleFormat,
    misc: u16,
    body: &'a [u8],
) -> Result<Mmap2Record<'a>, ParseError> {
    let (main, id) = split_sample_id(format, body, "MMAP2")?;
    let mut c = Cursor::new(main, "MMAP2");
    let pid = c.u32()?;
    let tid = c.u32()?;
    let addr = c.u64()?;
    let len = c.u64()?;
    let pgoff = c.u64()?;
    let union = c.bytes(24)?;
    let (maj, min, ino, build_id) = if misc & MISC_MMAP_BUILD_ID != 0 {
        let size = (union[0] as usize).min(20);
        (0, 0, 0, Some(&union[4..4 + size]))
    } else {
        let word =
            |i: usize| u32::from_le_bytes([union[i], union[i + 1], union[i + 2], union[i + 3]]);
        (word(0), word(4), le_u64(&union[8..16]), None)
    };
    let prot = c.u32()?;
    let flags = c.u32()?;
    let filename = c_string(&main[c.pos..], "MMAP2")?;
    Ok(Mmap2Record {
        pid,
        tid,
        addr,
        len,
        pgoff,
        maj,
        min,
        ino,
        build_id,
        prot,
        flags,
        filename,
        id,
    })
}

fn parse_comm<'a>(
    format: &SampleFormat,
    misc: u16,
    body: &'a [u8],
) -> Result<CommRecord<'a>, ParseError> {
    let (main, id) = split_sample_id(format, body, "COMM")?;
    let mut c = Cursor::new(main, "COMM");
    let pid = c.u32()?;
    let tid = c.u32()?;
    let comm = c_string(&main[c.pos..], "COMM")?;
    Ok(CommRecord {
        pid,
        tid,
        comm,
        exec: misc & MISC_COMM_EXEC != 0,
        id,
    })
}

fn parse_exit_fork(
    format: &SampleFormat,
    body: &[u8],
    record: &'static str,
) -> Result<ExitForkRecord, ParseError> {
    let (main, id) = split_sample_id(format, body, record)?;
    let mut c = Cursor::new(main, record);
    Ok(ExitForkRecord {
        pid: c.u32()?,
        ppid: c.u32()?,
        tid: c.u32()?,
        ptid: c.u32()?,
        time: c.u64()?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(pid: u32, tid: u32, time: u64, cpu: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&pid.to_le_bytes());
        v.extend_from_slice(&tid.to_le_bytes());
        v.extend_from_slice(&time.to_le_bytes());
        v.extend_from_slice(&cpu.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn sample_body(stack: &[u8], dyn_size: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0x401000u64.to_le_bytes()); // ip
        v.extend_from_slice(&10u32.to_le_bytes()); // pid
        v.extend_from_slice(&11u32.to_le_bytes()); // tid
        v.extend_from_slice(&999u64.to_le_bytes()); // time
        v.extend_from_slice(&1u32.to_le_bytes()); // cpu
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&1000u64.to_le_bytes()); // period
        v.extend_from_slice(&4u64.to_le_bytes()); // callchain nr
        for ip in [
            CONTEXT_KERNEL,
            0xffff_ffff_8100_0010,
            0xffff_ffff_8100_0020,
            CONTEXT_USER,
        ] {
            v.extend_from_slice(&ip.to_le_bytes());
        }
        v.extend_from_slice(&2u64.to_le_bytes()); // regs abi (64-bit)
        for r in [0x7000u64, 0x7ff0, 0x401000] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        v.extend_from_slice(&(stack.len() as u64).to_le_bytes());
        v.extend_from_slice(stack);
        v.extend_from_slice(&dyn_size.to_le_bytes());
        v
    }

    #[test]
    fn parses_a_full_sample() {
        let f = SampleFormat::hearth_default();
        let body = sample_body(&[7u8; 32], 16);
        let Record::Sample(s) = parse_record(&f, RECORD_SAMPLE, 0, &body).unwrap() else {
            panic!("not a sample");
        };
        assert_eq!(
            (s.pid, s.tid, s.time, s.cpu, s.period),
            (10, 11, 999, 1, 1000)
        );
        assert_eq!(s.callchain_len(), 4);
        assert_eq!(
            s.kernel_callchain().collect::<Vec<_>>(),
            vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020]
        );
        assert_eq!(s.user_reg(1), Some(0x7ff0));
        assert_eq!(s.user_stack.len(), 16, "clamped to dyn_size");
    }

    #[test]
    fn every_truncation_of_a_sample_is_an_error() {
        let f = SampleFormat::hearth_default();
        let body = sample_body(&[7u8; 32], 32);
        for cut in 0..body.len() {
            assert!(
                parse_record(&f, RECORD_SAMPLE, 0, &body[..cut]).is_err(),
                "cut at {cut} parsed"
            );
        }
    }

    #[test]
    fn huge_callchain_count_is_rejected_without_overflow() {
        let f = SampleFormat::hearth_default();
        let mut body = sample_body(&[], 0);
        // Overwrite nr with u64::MAX.
        body[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_record(&f, RECORD_SAMPLE, 0, &body),
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn parses_mmap2_and_comm_with_trailer() {
        let f = SampleFormat::hearth_default();
        let mut m = Vec::new();
        m.extend_from_slice(&5u32.to_le_bytes());
        m.extend_from_slice(&5u32.to_le_bytes());
        m.extend_from_slice(&0x5555_0000u64.to_le_bytes());
        m.extend_from_slice(&0x2000u64.to_le_bytes());
        m.extend_from_slice(&0x1000u64.to_le_bytes());
        m.extend_from_slice(&8u32.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&1234u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&5u32.to_le_bytes()); // prot r-x
        m.extend_from_slice(&2u32.to_le_bytes());
        m.extend_from_slice(b"/usr/bin/x\0\0\0\0\0\0");
        m.extend_from_slice(&trailer(5, 5, 77, 0));
        let Record::Mmap2(r) = parse_record(&f, RECORD_MMAP2, 0, &m).unwrap() else {
            panic!()
        };
        assert_eq!(r.filename, b"/usr/bin/x");
        assert_eq!(
            (r.addr, r.len, r.pgoff, r.maj, r.min, r.ino),
            (0x5555_0000, 0x2000, 0x1000, 8, 1, 1234)
        );
        assert_eq!(r.id.time, Some(77));

        let mut c = Vec::new();
        c.extend_from_slice(&5u32.to_le_bytes());
        c.extend_from_slice(&6u32.to_le_bytes());
        c.extend_from_slice(b"worker\0\0");
        c.extend_from_slice(&trailer(5, 6, 78, 1));
        let Record::Comm(r) = parse_record(&f, RECORD_COMM, MISC_COMM_EXEC, &c).unwrap() else {
            panic!()
        };
        assert_eq!((r.comm, r.exec, r.tid), (&b"worker"[..], true, 6));

        // No NUL in the name: an error, not a read past the end.
        let mut bad = c.clone();
        bad[8..16].copy_from_slice(b"workerXX");
        let cut = &bad[..16 + 24];
        assert!(parse_record(&f, RECORD_COMM, 0, cut).is_err());
    }
}
