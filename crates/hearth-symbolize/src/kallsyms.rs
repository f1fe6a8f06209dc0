//! Kernel symbols from `/proc/kallsyms`, with as little work as possible.
//!
//! A recording needs the names of a few hundred kernel addresses, while
//! kallsyms lists well over 100,000 symbols. The file is read in one go
//! and indexed as `(address, offset of the name in the text)` pairs: no
//! string is copied until an address is looked up, and only the names
//! that are asked for are decoded.
//!
//! Lookups follow the usual kallsyms convention: an address belongs to the
//! symbol with the greatest start address at or below it; of several
//! symbols at that same address, the first one listed wins.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The kernel's symbol list, as read from kallsyms.
pub struct KernelSymbols {
    text: String,
    /// Start address and offset of the name in `text`, sorted by address
    /// (ties keep the order of the file).
    syms: Vec<(u64, usize)>,
}

/// What a kernel address resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    pub name: &'a str,
    /// Start address of the symbol.
    pub addr: u64,
}

impl KernelSymbols {
    /// Reads and indexes a kallsyms file (`/proc/kallsyms`, or a copy).
    pub fn load(path: &Path) -> io::Result<KernelSymbols> {
        let mut file = File::open(path)?;
        // /proc files report no size; a kallsyms of 120,000 symbols is
        // about 5 MiB, so start big enough to avoid most regrowth.
        let mut text = Vec::with_capacity(8 << 20);
        file.read_to_end(&mut text)?;
        Ok(Self::parse(text))
    }

    /// Indexes kallsyms text: lines of `address type name [module]`.
    /// Lines that do not parse, and symbols at address 0 (what an
    /// unprivileged reader sees), are left out.
    pub fn parse(text: Vec<u8>) -> KernelSymbols {
        // kallsyms is ASCII; anything else is kept, with replacement
        // characters, rather than refused.
        let text = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let mut syms = Vec::with_capacity(text.len() / 40);
        let base = text.as_ptr() as usize;
        for line in text.split('\n') {
            if let Some((addr, name)) = parse_line(line.as_bytes()) {
                syms.push((addr, line.as_ptr() as usize - base + name));
            }
        }
        // Stable, and linear on the (usual) already sorted input.
        syms.sort_by_key(|&(addr, _)| addr);
        KernelSymbols { text, syms }
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The symbol `addr` falls in, if any symbol starts at or below it.
    pub fn find(&self, addr: u64) -> Option<KernelSymbol<'_>> {
        let after = self.syms.partition_point(|&(a, _)| a <= addr);
        let (found, _) = *self.syms.get(after.checked_sub(1)?)?;
        // The first listed of the symbols at that address.
        let first = self.syms[..after].partition_point(|&(a, _)| a < found);
        let (sym_addr, offset) = self.syms[first];
        Some(KernelSymbol {
            name: self.name_at(offset),
            addr: sym_addr,
        })
    }

    fn name_at(&self, offset: usize) -> &str {
        let rest = &self.text[offset..];
        let len = rest
            .bytes()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        // Whitespace is ASCII, so `len` is on a character boundary.
        rest.get(..len).unwrap_or(rest)
    }
}

/// `(address, offset of the name in the line)`. The name itself is not
/// scanned: its end is found when it is looked up.
fn parse_line(line: &[u8]) -> Option<(u64, usize)> {
    let ws = |b: &u8| b.is_ascii_whitespace();
    let start = line.iter().position(|b| !ws(b))?;
    let addr_len = line[start..].iter().position(ws)?;
    let addr = parse_hex(&line[start..start + addr_len])?;
    let mut pos = start + addr_len;
    pos += line[pos..].iter().position(|b| !ws(b))?;
    // The type letter.
    pos += line[pos..].iter().position(ws)?;
    pos += line[pos..].iter().position(|b| !ws(b))?;
    (addr != 0).then_some((addr, pos))
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(x);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms(text: &str) -> KernelSymbols {
        KernelSymbols::parse(text.as_bytes().to_vec())
    }

    #[test]
    fn finds_the_enclosing_symbol() {
        let k = syms(
            "ffffffff81000000 T _stext\n\
             ffffffff81000010 t first\n\
             ffffffff81000100 T second\n\
             ffffffffc0201000 t in_module\t[some_mod]\n",
        );
        assert_eq!(k.len(), 4);
        let find = |a| k.find(a).map(|s| (s.name.to_string(), s.addr));
        assert_eq!(
            find(0xffffffff81000010),
            Some(("first".into(), 0xffffffff81000010))
        );
        assert_eq!(
            find(0xffffffff810000ff),
            Some(("first".into(), 0xffffffff81000010))
        );
        assert_eq!(
            find(0xffffffff81000100),
            Some(("second".into(), 0xffffffff81000100))
        );
        assert_eq!(
            find(0xffffffffc0201234),
            Some(("in_module".into(), 0xffffffffc0201000))
        );
        assert_eq!(find(0xffffffff80ffffff), None);
    }

    #[test]
    fn first_listed_wins_at_equal_addresses() {
        let k = syms(
            "ffffffff81000000 T srso_alias_untrain_ret\n\
             ffffffff81000000 T _stext\n\
             ffffffff81000000 T _text\n\
             ffffffff81000040 T next\n",
        );
        assert_eq!(
            k.find(0xffffffff81000000).unwrap().name,
            "srso_alias_untrain_ret"
        );
        assert_eq!(
            k.find(0xffffffff8100003f).unwrap().name,
            "srso_alias_untrain_ret"
        );
    }

    #[test]
    fn unsorted_input_and_bad_lines() {
        let k = syms(
            "ffffffff81000200 T later\n\
             0000000000000000 T hidden\n\
             garbage\n\
             \n\
             zzzz T bad_address\n\
             ffffffff81000100 T earlier\n\
             ffffffff81000300 T",
        );
        assert_eq!(k.len(), 2);
        assert_eq!(k.find(0xffffffff81000150).unwrap().name, "earlier");
        assert_eq!(k.find(0xffffffff81000250).unwrap().name, "later");
        assert!(syms("").is_empty());
        assert!(syms("0000000000000000 T a\n0000000000000000 T b\n")
            .find(5)
            .is_none());
    }
}
