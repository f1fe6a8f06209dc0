//! The sample layout Hearth requests, shared by the session and the parser.

use perf_event_open_sys::bindings as b;

/// x86_64 user register numbers (`asm/perf_regs.h`) that unwinding needs.
pub const X86_REG_BP: u32 = 6;
pub const X86_REG_SP: u32 = 7;
pub const X86_REG_IP: u32 = 8;

/// Which optional fields the kernel writes into each record.
///
/// The parser only needs `sample_type` and the register mask; both are part
/// of a capture file so that recorded samples can be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleFormat {
    pub sample_type: u64,
    pub regs_user_mask: u64,
    /// Whether non-sample records carry the `sample_id` trailer.
    pub sample_id_all: bool,
}

impl SampleFormat {
    /// What Hearth asks for: ip, thread, time, cpu, period, kernel call
    /// chain, user registers and a copy of the user stack.
    pub fn hearth_default() -> Self {
        SampleFormat {
            sample_type: (b::PERF_SAMPLE_IP
                | b::PERF_SAMPLE_TID
                | b::PERF_SAMPLE_TIME
                | b::PERF_SAMPLE_CPU
                | b::PERF_SAMPLE_PERIOD
                | b::PERF_SAMPLE_CALLCHAIN
                | b::PERF_SAMPLE_REGS_USER
                | b::PERF_SAMPLE_STACK_USER) as u64,
            regs_user_mask: (1 << X86_REG_BP) | (1 << X86_REG_SP) | (1 << X86_REG_IP),
            sample_id_all: true,
        }
    }

    pub fn has(&self, bit: u32) -> bool {
        self.sample_type & bit as u64 != 0
    }

    /// Index of register `reg` inside the dumped register array, if dumped.
    pub fn reg_index(&self, reg: u32) -> Option<usize> {
        if reg >= 64 || self.regs_user_mask & (1 << reg) == 0 {
            return None;
        }
        Some((self.regs_user_mask & ((1u64 << reg) - 1)).count_ones() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_indices_follow_the_mask_order() {
        let f = SampleFormat::hearth_default();
        assert_eq!(f.reg_index(X86_REG_BP), Some(0));
        assert_eq!(f.reg_index(X86_REG_SP), Some(1));
        assert_eq!(f.reg_index(X86_REG_IP), Some(2));
        assert_eq!(f.reg_index(0), None);
        assert_eq!(f.reg_index(70), None);
    }
}
