//! Unwinding user stacks from a sample's registers and stack copy.
//!
//! DWARF CFI (`.eh_frame`, `.debug_frame`) comes from binaries the process
//! table already opened; where no rule covers an address, the unwinder falls
//! back to frame pointers. No I/O happens here: the process table hands in
//! the mappings, the sample hands in registers and stack bytes.
//!
//! Each process gets its own module list, rebuilt when its mappings change
//! (the table's `generation`); the rule cache is shared by all processes.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use hearth_proc::{Binary, Process, SectionRange};

/// Most frames taken from one stack.
pub const MAX_FRAMES: usize = 256;

/// A section of a shared binary, as framehop wants its data.
#[derive(Clone)]
pub struct SectionBytes {
    binary: Arc<Binary>,
    range: Range<usize>,
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.binary.bytes().get(self.range.clone()).unwrap_or(&[])
    }
}

/// Registers of the interrupted user context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// How an unwind ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the outermost frame.
    Complete,
    /// Stopped early: a frame could not be unwound (no rule and no usable
    /// frame pointer, or the stack copy was too short).
    Truncated,
    /// Stopped at [`MAX_FRAMES`].
    TooDeep,
}

struct ProcessUnwinder {
    generation: u64,
    unwinder: UnwinderX86_64<SectionBytes>,
    /// Estimated heap bytes of `unwinder`'s module list.
    bytes: u64,
}

/// Unwinders for every process, plus the shared rule cache.
pub struct StackUnwinder {
    processes: HashMap<u32, ProcessUnwinder>,
    cache: CacheX86_64,
}

impl Default for StackUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

fn section(
    binary: &Arc<Binary>,
    r: &Option<SectionRange>,
) -> (Option<Range<u64>>, Option<SectionBytes>) {
    match r {
        Some(r) => (
            Some(r.svma.clone()),
            Some(SectionBytes {
                binary: binary.clone(),
                range: r.file.clone(),
            }),
        ),
        None => (None, None),
    }
}

/// A process's unwinder, and an estimate of its heap bytes.
fn build(process: &Process) -> (UnwinderX86_64<SectionBytes>, u64) {
    let mut unwinder = UnwinderX86_64::new();
    let mut bytes = 0u64;
    for m in process.mappings() {
        let (Some(binary), Some(bias)) = (&m.binary, m.bias) else {
            continue;
        };
        let s = &binary.sections;
        let (text_svma, text) = section(binary, &s.text);
        let (eh_frame_svma, eh_frame) = section(binary, &s.eh_frame);
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(binary, &s.eh_frame_hdr);
        let (_, debug_frame) = section(binary, &s.debug_frame);
        let (got_svma, _) = section(binary, &s.got);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            got_svma,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            debug_frame,
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        };
        bytes += (std::mem::size_of::<Module<SectionBytes>>() + m.path.len()) as u64;
        unwinder.add_module(Module::new(m.path.to_string(), m.start..m.end, bias, info));
    }
    (unwinder, bytes)
}

impl StackUnwinder {
    pub fn new() -> Self {
        StackUnwinder {
            processes: HashMap::new(),
            cache: CacheX86_64::new(),
        }
    }

    /// Estimated heap bytes of the per-process unwinders and the rule cache.
    pub fn approx_bytes(&self) -> u64 {
        let per_process = std::mem::size_of::<(u32, ProcessUnwinder)>() as u64 + 8;
        self.processes
            .values()
            .map(|p| per_process + p.bytes)
            .sum::<u64>()
            + std::mem::size_of::<CacheX86_64>() as u64
    }

    /// Unwinds one user stack. `stack` is the copy that starts at `regs.sp`.
    /// Pushes lookup addresses (return addresses minus one; the first frame
    /// is the instruction pointer itself) onto `out`, leaf first.
    pub fn unwind(
        &mut self,
        process: &Process,
        regs: UserRegs,
        stack: &[u8],
        out: &mut Vec<u64>,
    ) -> Outcome {
        let entry = self
            .processes
            .entry(process.pid)
            .or_insert_with(|| ProcessUnwinder {
                generation: u64::MAX,
                unwinder: UnwinderX86_64::new(),
                bytes: 0,
            });
        if entry.generation != process.generation {
            (entry.unwinder, entry.bytes) = build(process);
            entry.generation = process.generation;
        }
        let sp = regs.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(word))
        };
        let mut iter = entry.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            &mut self.cache,
            &mut read_stack,
        );
        let start = out.len();
        loop {
            if out.len() - start >= MAX_FRAMES {
                return Outcome::TooDeep;
            }
            match iter.next() {
                Ok(Some(frame)) => out.push(frame.address_for_lookup()),
                Ok(None) => return Outcome::Complete,
                Err(_) => return Outcome::Truncated,
            }
        }
    }

    /// Drops the unwinder of a process that is gone.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Keeps only the unwinders of processes for which `alive` is true.
    pub fn retain(&mut self, mut alive: impl FnMut(u32) -> bool) {
        self.processes.retain(|pid, _| alive(*pid));
    }
}
