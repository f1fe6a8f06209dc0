//! Parsers of `/proc` files.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: &'static str,
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// Path or pseudo name (`[vdso]`, `[stack]`); empty for anonymous memory.
    /// A deleted file keeps its ` (deleted)` suffix. Bytes that are not
    /// UTF-8 are replaced (U+FFFD), and `path_exact` is then false.
    pub path: String,
    /// Whether `path` is the file's name byte for byte. A replaced name
    /// names no file: reach the file through `/proc/<pid>/map_files`.
    pub path_exact: bool,
}

impl MapsEntry {
    /// A mapping of a regular file (not anonymous, not a `[pseudo]` one).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Parses the whole of `/proc/<pid>/maps`, as text or as the raw bytes
/// read from the file: a path may hold any bytes but NUL and newline, and
/// one name that is not UTF-8 must not cost the other lines. Lines that
/// cannot be parsed are reported as errors; callers usually skip them and
/// keep the rest.
pub fn parse_maps<T: AsRef<[u8]> + ?Sized>(text: &T) -> Vec<Result<MapsEntry, ParseError>> {
    text.as_ref()
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .map(|(i, l)| {
            parse_maps_line(l).map_err(|reason| ParseError {
                file: "maps",
                line: i + 1,
                reason,
            })
        })
        .collect()
}

fn parse_maps_line(line: &[u8]) -> Result<MapsEntry, &'static str> {
    // address perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut field = || -> Result<&str, &'static str> {
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        let trimmed = &rest[start..];
        let end = trimmed
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        if f.is_empty() {
            Err("missing field")
        } else {
            std::str::from_utf8(f).map_err(|_| "field is not text")
        }
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let raw_path = &rest[start..];
    let (path, path_exact) = match std::str::from_utf8(raw_path) {
        Ok(p) => (p.to_string(), true),
        Err(_) => (String::from_utf8_lossy(raw_path).into_owned(), false),
    };

    let (start, end) = range.split_once('-').ok_or("address range without '-'")?;
    let start = u64::from_str_radix(start, 16).map_err(|_| "bad start address")?;
    let end = u64::from_str_radix(end, 16).map_err(|_| "bad end address")?;
    if end < start {
        return Err("end address below start");
    }
    let p = perms.as_bytes();
    if p.len() < 4 {
        return Err("short permission field");
    }
    let offset = u64::from_str_radix(offset, 16).map_err(|_| "bad offset")?;
    let (maj, min) = dev.split_once(':').ok_or("device without ':'")?;
    let dev_major = u32::from_str_radix(maj, 16).map_err(|_| "bad device major")?;
    let dev_minor = u32::from_str_radix(min, 16).map_err(|_| "bad device minor")?;
    let inode = inode.parse().map_err(|_| "bad inode")?;
    Ok(MapsEntry {
        start,
        end,
        readable: p[0] == b'r',
        executable: p[2] == b'x',
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
        path_exact,
    })
}

/// Fields of `/proc/<pid>/status` that the profiler uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: Option<String>,
    pub tgid: Option<u32>,
    pub ppid: Option<u32>,
}

pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => s.name = Some(value.to_string()),
            "Tgid" => s.tgid = value.parse().ok(),
            "PPid" => s.ppid = value.parse().ok(),
            _ => {}
        }
    }
    s
}

/// `/proc/<pid>/comm` (or a perf COMM record): at most 15 bytes, may hold any
/// bytes but NUL; trailing newline removed, invalid UTF-8 replaced.
pub fn parse_comm(raw: &[u8]) -> String {
    let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1048602                    /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 1048602                    /usr/bin/cat
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
7f1e2c200000-7f1e2c201000 r-xp 00000000 fd:00 42   /opt/my app/lib x.so (deleted)
7ffd1b7f0000-7ffd1b7f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
7f00-6f00 r-xp 0 0:0 0
";
        let parsed = parse_maps(text);
        assert_eq!(parsed.len(), 7);
        let exe = parsed[1].as_ref().unwrap();
        assert_eq!(
            (exe.start, exe.end, exe.offset),
            (0x55d0c0a02000, 0x55d0c0a07000, 0x2000)
        );
        assert!(exe.executable && exe.is_file());
        assert_eq!((exe.dev_major, exe.dev_minor, exe.inode), (8, 1, 1048602));
        assert_eq!(exe.path, "/usr/bin/cat");
        let anon = parsed[2].as_ref().unwrap();
        assert!(!anon.is_file() && anon.path.is_empty());
        let spaced = parsed[3].as_ref().unwrap();
        assert_eq!(spaced.path, "/opt/my app/lib x.so (deleted)");
        assert_eq!(spaced.dev_major, 0xfd);
        assert!(!parsed[4].as_ref().unwrap().is_file());
        assert!(parsed[5].is_err());
        assert!(parsed[6].is_err(), "end below start");
        assert!(parsed.iter().flatten().all(|e| e.path_exact));
    }

    #[test]
    fn non_utf8_maps_path_keeps_every_line() {
        let mut raw =
            b"55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 1048602  /tmp/a\xff\xfeb/prog\n"
                .to_vec();
        raw.extend_from_slice(
            b"7f1e2c200000-7f1e2c201000 r-xp 00000000 fd:00 42   /usr/lib/libc.so.6\n",
        );
        let parsed = parse_maps(&raw);
        assert_eq!(parsed.len(), 2);
        let odd = parsed[0].as_ref().unwrap();
        assert_eq!(odd.path, "/tmp/a\u{fffd}\u{fffd}b/prog");
        assert!(!odd.path_exact && odd.is_file() && odd.executable);
        assert_eq!((odd.start, odd.inode), (0x55d0c0a02000, 1048602));
        let libc = parsed[1].as_ref().unwrap();
        assert!(libc.path_exact);
        assert_eq!(libc.path, "/usr/lib/libc.so.6");
    }

    #[test]
    fn status_and_comm() {
        let s =
            parse_status("Name:\tmy proc\nUmask:\t0022\nTgid:\t42\nNgid:\t0\nPid:\t43\nPPid:\t1\n");
        assert_eq!(s.name.as_deref(), Some("my proc"));
        assert_eq!((s.tgid, s.ppid), (Some(42), Some(1)));
        assert_eq!(parse_status("Tgid: x\n").tgid, None);
        assert_eq!(parse_comm(b"bash\n"), "bash");
        assert_eq!(parse_comm(b"a\xffb\0junk"), "a\u{fffd}b");
    }
}
