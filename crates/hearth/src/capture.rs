//! Capture files: raw kernel records as they were drained, for replaying
//! the unwind and aggregation path without sampling (benchmarks, bug
//! reports). Little-endian throughout:
//!
//! ```text
//! magic "HEARTHC1" | sample_type u64 | regs_user_mask u64 | flags u64 | frequency u64
//! then per record: type u32 | misc u16 | 0 u16 | cpu u32 | len u32 | body[len]
//! ```

use std::io::{self, Read, Write};

use hearth_sampler::SampleFormat;

const MAGIC: &[u8; 8] = b"HEARTHC1";
const FLAG_SAMPLE_ID_ALL: u64 = 1;
/// Refuse records larger than this when reading (the kernel's limit is 64 KiB).
const MAX_RECORD: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a Hearth capture file (bad magic)")]
    BadMagic,
    #[error("capture file truncated")]
    Truncated,
    #[error("record of {0} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLarge(u32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub struct CaptureWriter<W: Write> {
    out: W,
}

impl<W: Write> CaptureWriter<W> {
    pub fn new(mut out: W, format: &SampleFormat, frequency_hz: u64) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&format.sample_type.to_le_bytes())?;
        out.write_all(&format.regs_user_mask.to_le_bytes())?;
        let flags = if format.sample_id_all {
            FLAG_SAMPLE_ID_ALL
        } else {
            0
        };
        out.write_all(&flags.to_le_bytes())?;
        out.write_all(&frequency_hz.to_le_bytes())?;
        Ok(CaptureWriter { out })
    }

    pub fn write(&mut self, cpu: u32, record_type: u32, misc: u16, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| io::Error::other("record too large"))?;
        self.out.write_all(&record_type.to_le_bytes())?;
        self.out.write_all(&misc.to_le_bytes())?;
        self.out.write_all(&0u16.to_le_bytes())?;
        self.out.write_all(&cpu.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(body)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A whole capture held in memory.
pub struct Capture {
    pub format: SampleFormat,
    pub frequency_hz: u64,
    data: Vec<u8>,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Capture {
    pub fn read(mut input: impl Read) -> Result<Capture, CaptureError> {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        Self::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Capture, CaptureError> {
        if data.get(..8) != Some(&MAGIC[..]) {
            return Err(CaptureError::BadMagic);
        }
        let header = |i: usize| u64_at(&data, 8 + 8 * i).ok_or(CaptureError::Truncated);
        let format = SampleFormat {
            sample_type: header(0)?,
            regs_user_mask: header(1)?,
            sample_id_all: header(2)? & FLAG_SAMPLE_ID_ALL != 0,
        };
        let frequency_hz = header(3)?;
        Ok(Capture {
            format,
            frequency_hz,
            data,
        })
    }

    /// Visits every record as `(cpu, type, misc, body)`; stops with an error
    /// at the first malformed one.
    pub fn for_each(&self, mut f: impl FnMut(u32, u32, u16, &[u8])) -> Result<usize, CaptureError> {
        let mut at = 40;
        let mut n = 0;
        while at < self.data.len() {
            let ty = u32_at(&self.data, at).ok_or(CaptureError::Truncated)?;
            let misc = u32_at(&self.data, at + 4).ok_or(CaptureError::Truncated)? as u16;
            let cpu = u32_at(&self.data, at + 8).ok_or(CaptureError::Truncated)?;
            let len = u32_at(&self.data, at + 12).ok_or(CaptureError::Truncated)?;
            if len > MAX_RECORD {
                return Err(CaptureError::TooLarge(len));
            }
            let start = at + 16;
            let body = self
                .data
                .get(start..start + len as usize)
                .ok_or(CaptureError::Truncated)?;
            f(cpu, ty, misc, body);
            at = start + len as usize;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let format = SampleFormat::hearth_default();
        let mut w = CaptureWriter::new(Vec::new(), &format, 99).unwrap();
        w.write(1, 9, 2, b"abcdefgh").unwrap();
        w.write(0, 3, 0, b"").unwrap();
        let bytes = w.finish().unwrap();
        let c = Capture::from_bytes(bytes.clone()).unwrap();
        assert_eq!((c.format, c.frequency_hz), (format, 99));
        let mut seen = Vec::new();
        let n = c
            .for_each(|cpu, ty, misc, body| seen.push((cpu, ty, misc, body.to_vec())))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0], (1, 9, 2, b"abcdefgh".to_vec()));
        for cut in 0..bytes.len() {
            let r = Capture::from_bytes(bytes[..cut].to_vec())
                .and_then(|c| c.for_each(|_, _, _, _| {}));
            if cut != 40 + 16 + 8 && cut != 40 {
                assert!(r.is_err(), "cut at {cut} accepted");
            }
        }
        assert!(matches!(
            Capture::from_bytes(b"nothing here at all....".to_vec()),
            Err(CaptureError::BadMagic)
        ));
    }
}
