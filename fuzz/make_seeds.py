#!/usr/bin/env python3
"""Writes the hand-made seed inputs of Hearth's fuzz targets to fuzz/seeds/.

The seeds are committed; run this again only to change them. Every input
is built here field by field (the formats are described in each target's
header comment), except `elf_binary/tiny-gcc`, which is a small program
compiled with gcc when gcc is installed. Regression inputs (crashes the
fuzzer found) live next to the seeds as `crash-*` files and are never
touched by this script.
"""

import os
import struct
import subprocess
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

# perf_event ABI values.
SAMPLE_IP, SAMPLE_TID, SAMPLE_TIME, SAMPLE_ADDR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
SAMPLE_CALLCHAIN, SAMPLE_ID, SAMPLE_CPU, SAMPLE_PERIOD = 1 << 5, 1 << 6, 1 << 7, 1 << 8
SAMPLE_STREAM_ID, SAMPLE_RAW, SAMPLE_REGS_USER = 1 << 9, 1 << 10, 1 << 12
SAMPLE_STACK_USER, SAMPLE_IDENTIFIER = 1 << 13, 1 << 16
REC_LOST, REC_COMM, REC_EXIT, REC_THROTTLE, REC_FORK = 2, 3, 4, 5, 7
REC_SAMPLE, REC_MMAP2, REC_LOST_SAMPLES = 9, 10, 13
MISC_COMM_EXEC, MISC_MMAP_BUILD_ID = 1 << 13, 1 << 14
CONTEXT_KERNEL, CONTEXT_USER = (1 << 64) - 128, (1 << 64) - 512

# What Hearth asks the kernel for (SampleFormat::hearth_default).
DEFAULT_TYPE = (SAMPLE_IP | SAMPLE_TID | SAMPLE_TIME | SAMPLE_CPU | SAMPLE_PERIOD
                | SAMPLE_CALLCHAIN | SAMPLE_REGS_USER | SAMPLE_STACK_USER)
DEFAULT_REGS = (1 << 6) | (1 << 7) | (1 << 8)  # bp, sp, ip


def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v & (2**64 - 1))


def trailer(pid, tid, time, cpu):
    """sample_id for TID | TIME | CPU."""
    return u32(pid) + u32(tid) + u64(time) + u32(cpu) + u32(0)


def padded(s, align=8):
    s += b"\0"
    return s + b"\0" * (-len(s) % align)


def sample(pid, tid, time, ip, sp, bp, stack, dyn_size=None, kernel=(), cpu=1,
           abi=2):
    chain = []
    if kernel:
        chain = [CONTEXT_KERNEL, *kernel, CONTEXT_USER]
    body = u64(ip) + u32(pid) + u32(tid) + u64(time) + u32(cpu) + u32(0)
    body += u64(1_000_000)  # period
    body += u64(len(chain)) + b"".join(u64(x) for x in chain)
    body += u64(abi)
    if abi:
        body += u64(bp) + u64(sp) + u64(ip)
    body += u64(len(stack))
    if stack:
        body += stack + u64(len(stack) if dyn_size is None else dyn_size)
    return body


def mmap2(pid, tid, addr, length, pgoff, path, time, prot=5, build_id=None):
    body = u32(pid) + u32(tid) + u64(addr) + u64(length) + u64(pgoff)
    if build_id is None:
        body += u32(8) + u32(1) + u64(1_310_719) + u64(0)  # maj, min, ino, gen
    else:
        body += bytes([len(build_id), 0, 0, 0]) + build_id.ljust(20, b"\0")
    body += u32(prot) + u32(2) + padded(path)
    return body + trailer(pid, tid, time, 0)


def comm(pid, tid, name, time):
    return u32(pid) + u32(tid) + padded(name) + trailer(pid, tid, time, 0)


def exit_fork(pid, ppid, tid, ptid, time):
    return (u32(pid) + u32(ppid) + u32(tid) + u32(ptid) + u64(time)
            + trailer(pid, tid, time, 0))


def lost(n, time):
    return u64(7) + u64(n) + trailer(0, 0, time, 0)


def header(rtype, misc, body):
    return u32(rtype) + u16(misc) + u16((8 + len(body)) & 0xFFFF)


def stack_words(sp, n):
    """A plausible stack: a frame-pointer chain with return addresses."""
    out = b""
    for i in range(n // 2):
        out += u64(sp + 16 * (i + 1)) + u64(0x401000 + 0x40 * i)
    return out


def fmt_prefix(sample_type, regs, sample_id_all=True, raw_bits=False):
    return u64(sample_type) + u64(regs) + bytes([int(sample_id_all) | (2 if raw_bits else 0)])


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 64 * 1024, (target, name)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def records():
    """(name, type, misc, body) of one record of each kind, default format."""
    sp = 0x7FFD_0000_1000
    return [
        ("sample", REC_SAMPLE, 2,
         sample(4242, 4243, 1_000_000, 0x401123, sp, sp + 16, stack_words(sp, 8),
                kernel=(0xFFFF_FFFF_8100_0010, 0xFFFF_FFFF_8100_0020))),
        ("sample-clamped", REC_SAMPLE, 2,
         sample(4242, 4242, 1_000_500, 0x401123, sp, sp, b"\x11" * 64, dyn_size=24)),
        ("sample-kthread", REC_SAMPLE, 1,
         sample(17, 17, 1_000_600, 0xFFFF_FFFF_8100_0000, 0, 0, b"", abi=0,
                kernel=(0xFFFF_FFFF_8100_0000,))),
        ("mmap2", REC_MMAP2, 2,
         mmap2(4242, 4242, 0x5555_5555_4000, 0x2000, 0x1000, b"/usr/bin/app", 999_000)),
        ("mmap2-build-id", REC_MMAP2, 2 | MISC_MMAP_BUILD_ID,
         mmap2(4242, 4242, 0x7F00_0000_0000, 0x10_0000, 0, b"/usr/lib/libc.so.6",
               999_100, build_id=bytes(range(1, 21)))),
        ("comm-exec", REC_COMM, MISC_COMM_EXEC, comm(4242, 4242, b"app", 998_000)),
        ("comm-thread", REC_COMM, 0, comm(4242, 4243, b"worker-1", 998_500)),
        ("fork", REC_FORK, 0, exit_fork(4242, 1, 4242, 1, 997_000)),
        ("exit", REC_EXIT, 0, exit_fork(4242, 1, 4243, 4242, 2_000_000)),
        ("lost", REC_LOST, 0, lost(12, 1_500_000)),
        ("lost-samples", REC_LOST_SAMPLES, 0, u64(3) + trailer(4242, 4242, 1_600_000, 1)),
        ("throttle", REC_THROTTLE, 0, u64(1_700_000) + u64(7) + u64(0)
         + trailer(0, 0, 1_700_000, 0)),
    ]


def perf_seeds():
    for name, rtype, misc, body in records():
        write("perf_record", name, header(rtype, misc, body) + body)
        write("perf_record_format", name,
              fmt_prefix(DEFAULT_TYPE, DEFAULT_REGS) + header(rtype, misc, body) + body)
    # Every optional field the parser knows, in the kernel's order.
    every = (SAMPLE_IDENTIFIER | SAMPLE_IP | SAMPLE_TID | SAMPLE_TIME | SAMPLE_ADDR
             | SAMPLE_ID | SAMPLE_STREAM_ID | SAMPLE_CPU | SAMPLE_PERIOD
             | SAMPLE_CALLCHAIN | SAMPLE_RAW | SAMPLE_REGS_USER | SAMPLE_STACK_USER)
    regs = 0xFF  # eight registers
    raw = b"rawdata"  # 4 + 7 = 11 bytes, padded to 16
    body = (u64(99) + u64(0x401000) + u32(5) + u32(6) + u64(123) + u64(0xDEAD)
            + u64(99) + u64(98) + u32(1) + u32(0) + u64(10_000)
            + u64(2) + u64(0x401000) + u64(0x402000)
            + u32(len(raw)) + raw + b"\0" * 5
            + u64(2) + b"".join(u64(i) for i in range(8))
            + u64(16) + b"S" * 16 + u64(16))
    write("perf_record_format", "sample-every-field",
          fmt_prefix(every, regs) + header(REC_SAMPLE, 2, body) + body)
    # sample_id trailer with IDENTIFIER | TID | TIME | ID | STREAM_ID | CPU.
    tr = u32(5) + u32(6) + u64(77) + u64(1) + u64(2) + u32(3) + u32(0) + u64(1)
    body = u32(5) + u32(6) + padded(b"full-trailer") + tr
    write("perf_record_format", "comm-full-trailer",
          fmt_prefix(every, regs) + header(REC_COMM, 0, body) + body)
    body = u32(5) + u32(5) + padded(b"no-trailer")
    write("perf_record_format", "comm-no-sample-id-all",
          fmt_prefix(DEFAULT_TYPE, DEFAULT_REGS, sample_id_all=False)
          + header(REC_COMM, 0, body) + body)
    write("perf_record_format", "unsupported-bits",
          fmt_prefix(DEFAULT_TYPE | (1 << 4) | (1 << 11), DEFAULT_REGS, raw_bits=True)
          + header(REC_SAMPLE, 2, b"\0" * 64) + b"\0" * 64)


def capture(records, sample_type=DEFAULT_TYPE, regs=DEFAULT_REGS, flags=1, freq=99):
    out = b"HEARTHC1" + u64(sample_type) + u64(regs) + u64(flags) + u64(freq)
    for cpu, rtype, misc, body in records:
        out += u32(rtype) + u16(misc) + u16(0) + u32(cpu) + u32(len(body)) + body
    return out


def capture_seeds():
    write("capture_replay", "header-only", capture([]))
    plain = [(0, rtype, misc, body) for _, rtype, misc, body in records()]
    write("capture_replay", "one-of-each", capture(plain))
    # A process whose executable is a real ELF file on every Linux host (the
    # fuzz target itself), so that samples reach the DWARF unwinder.
    sp = 0x7FFC_0000_0000
    base = 0x5600_0000_0000
    recs = [
        (0, REC_FORK, 0, exit_fork(777, 1, 777, 1, 10)),
        (0, REC_COMM, MISC_COMM_EXEC, comm(777, 777, b"self", 20)),
        (0, REC_MMAP2, 2, mmap2(777, 777, base, 0x40_0000, 0, b"/proc/self/exe", 30)),
        (0, REC_MMAP2, 2, mmap2(777, 777, base + 0x40_0000, 0x1000, 0, b"[vdso]", 31)),
    ]
    for i in range(4):
        ip = base + 0x1_0000 + 0x1234 * i
        recs.append((i % 2, REC_SAMPLE, 2,
                     sample(777, 777, 40 + i, ip, sp, sp + 16,
                            stack_words(sp, 16) + u64(base + 0x2_0000 + i) * 4)))
    recs.append((1, REC_EXIT, 0, exit_fork(777, 1, 777, 1, 3_000_000_000)))
    recs.append((1, REC_SAMPLE, 2, sample(777, 777, 3_000_000_001, base + 0x100, sp, sp,
                                          stack_words(sp, 4))))
    write("capture_replay", "self-exe", capture(recs))
    write("capture_replay", "no-sample-id-all",
          capture([(0, REC_COMM, 0, u32(9) + u32(9) + padded(b"x"))], flags=0))

    # Regressions: minimized inputs of crashes found by fuzzing.
    # An executable file mapping whose end overflows u64.
    write("capture_replay", "regress-mmap-end-overflow",
          capture([(0, REC_MMAP2, 2, mmap2(5, 5, 2**64 - 0x1000, 0x2000, 0, b"/x", 1))]))
    # Two LOST records whose counts add up past u64::MAX.
    write("capture_replay", "regress-lost-overflow",
          capture([(0, REC_LOST, 0, lost(2**64 - 1, 1)), (0, REC_LOST, 0, lost(1, 2))]))
    write("capture_replay", "regress-lost-samples-overflow",
          capture([(0, REC_LOST_SAMPLES, 0, u64(2**64 - 1) + trailer(0, 0, 1, 0)),
                   (0, REC_LOST_SAMPLES, 0, u64(1) + trailer(0, 0, 2, 0))]))
    # A mapping at a file offset near u64::MAX, sampled past its first byte.
    write("capture_replay", "regress-file-offset-overflow",
          capture([(0, REC_MMAP2, 2, mmap2(5, 5, 0x1000, 0x1000, 2**64 - 1, b"jit", 1)),
                   (0, REC_SAMPLE, 2, sample(5, 5, 2, 0x1001, 0x8000, 0, b""))]))


def batch_seeds():
    sp = 0x7FFD_0000_1000
    out = fmt_prefix(DEFAULT_TYPE, DEFAULT_REGS)
    items = [
        (0, REC_SAMPLE, 2, sample(10, 10, 500, 0x401000, sp, sp, stack_words(sp, 2))),
        (1, REC_SAMPLE, 2, sample(10, 11, 300, 0x401000, sp, sp, b"")),
        (1, REC_COMM, 0, comm(10, 11, b"t", 300)),
        (0, 99, 0, b"no time here"),
        (1, REC_FORK, 0, exit_fork(12, 10, 12, 10, 100)),
        (0, REC_SAMPLE, 2, b"\x01\x02"),  # does not parse: keeps its place
        (2, REC_LOST, 0, lost(1, 400)),
        (2, REC_EXIT, 0, exit_fork(12, 10, 12, 10, 300)),
    ]
    for cpu, rtype, misc, body in items:
        out += bytes([cpu, rtype]) + u16(misc) + u16(len(body)) + body
    write("batch_sort", "mixed", out)


def text_seeds():
    for name, text in [
        ("ranges", "0-3,8,10-11\n"),
        ("single", "0\n"),
        ("spaced", " 1 - 2 ,, 5 ,7-7\n"),
        ("big", "0-255\n"),
    ]:
        write("cpu_list", name, text.encode())
    maps = """\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1048602                    /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 1048602                    /usr/bin/cat
55d0c1c6e000-55d0c1c8f000 rw-p 00000000 00:00 0                          [heap]
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
7f1e2c200000-7f1e2c201000 r-xp 00000000 fd:00 42   /opt/my app/lib x.so (deleted)
7f3a1b628000-7f3a1b7bd000 r-xp 00028000 103:02 3932245                  /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1b7ee000-7ffd1b7f0000 r--p 00000000 00:00 0                          [vvar]
7ffd1b7f0000-7ffd1b7f2000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""
    write("procfs_maps", "cat", maps.encode())
    write("procfs_maps", "bad-lines", b"garbage line\n7f00-6f00 r-xp 0 0:0 0\n\n"
          b"1000-2000 r 0 0:0 0\n1000-2000 r-xp zz 0:0 0 /x\n")
    status = """\
Name:\tmy worker
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Ngid:\t0
Pid:\t4243
PPid:\t1
TracerPid:\t0
Uid:\t1000\t1000\t1000\t1000
Threads:\t4
"""
    write("procfs_status", "thread", status.encode())
    write("procfs_status", "odd", b"Name:\nTgid: -1\nPPid:\t99999999999\nName:\t\xff\xfe\n")
    write("procfs_comm", "plain", b"bash\n")
    write("procfs_comm", "kworker", b"kworker/0:1H-events_highpri\n")
    write("procfs_comm", "bytes", b"a\xffb\0junk\n")


def elf(sections, phdrs, entry=0x401000):
    """A little-endian ELF64 executable from (name, type, flags, addr, data)
    sections and (type, flags, offset, vaddr, size) program headers, where an
    offset of -i means 'where section i-1 starts'."""
    names = b"\0"
    name_off = []
    for s in sections + [(b".shstrtab",)]:
        name_off.append(len(names))
        names += s[0] + b"\0"
    data_start = 64 + 56 * len(phdrs)
    body = b""
    offsets = []
    for s in sections:
        body += b"\0" * (-(data_start + len(body)) % 16)
        offsets.append(data_start + len(body))
        body += s[4]
    shstr_off = data_start + len(body)
    body += names
    body += b"\0" * (-(data_start + len(body)) % 8)
    shoff = data_start + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    eh = ident + u16(2) + u16(62) + u32(1) + u64(entry) + u64(64) + u64(shoff)
    eh += u32(0) + u16(64) + u16(56) + u16(len(phdrs)) + u16(64)
    eh += u16(len(sections) + 2) + u16(len(sections) + 1)
    ph = b""
    for ptype, pflags, off, vaddr, size in phdrs:
        if off < 0:
            off = offsets[-off - 1]
        ph += u32(ptype) + u32(pflags) + u64(off) + u64(vaddr) + u64(vaddr)
        ph += u64(size) + u64(size) + u64(0x1000)

    def shdr(name, stype, flags, addr, off, size, align):
        return (u32(name) + u32(stype) + u64(flags) + u64(addr) + u64(off)
                + u64(size) + u32(0) + u32(0) + u64(align) + u64(0))

    sh = b"\0" * 64
    for i, (_, stype, sflags, addr, data) in enumerate(sections):
        sh += shdr(name_off[i], stype, sflags, addr, offsets[i], len(data), 4)
    sh += shdr(name_off[-1], 3, 0, 0, shstr_off, len(names), 1)
    return eh + ph + body + sh


def elf_seeds():
    note = u32(4) + u32(20) + u32(3) + b"GNU\0" + bytes(range(0xA0, 0xB4))
    text = b"\x55\x48\x89\xe5\x90\x5d\xc3" + b"\x90" * 9  # push rbp; mov rbp,rsp; ...; ret
    # A CIE and one FDE covering the 16 bytes of .text.
    cie = u32(0) + bytes([1]) + b"zR\0" + bytes([1, 0x78, 16, 1, 0x1B])
    cie += bytes([0x0C, 7, 8, 0x90, 1]) + b"\0" * 2
    cie = u32(len(cie)) + cie
    fde = u32(len(cie) + 4) + u32(0) + u32(16) + bytes([0]) + b"\0" * 3
    eh_frame = cie + u32(len(fde)) + fde + u32(0)
    hdr = bytes([1, 0x1B, 0x03, 0x3B]) + u32(0) + u32(1) + u32(0) + u32(0)
    got = u64(0) * 3
    SHT_PROGBITS, SHT_NOTE = 1, 7
    A, X, W = 2, 4, 1
    sections = [
        (b".note.gnu.build-id", SHT_NOTE, A, 0x400200, note),
        (b".text", SHT_PROGBITS, A | X, 0x401000, text),
        (b".eh_frame_hdr", SHT_PROGBITS, A, 0x402000, hdr),
        (b".eh_frame", SHT_PROGBITS, A, 0x402020, eh_frame),
        (b".got", SHT_PROGBITS, A | W, 0x403000, got),
    ]
    PT_LOAD, PT_NOTE = 1, 4
    phdrs = [
        (PT_LOAD, 4, 0, 0x400000, 0x200),
        (PT_LOAD, 5, -2, 0x401000, len(text)),
        (PT_NOTE, 4, -1, 0x400200, len(note)),
    ]
    image = elf(sections, phdrs)
    write("elf_binary", "hand-made", image)
    write("elf_binary", "header-only", image[:64 + 56 * len(phdrs)])
    gcc = subprocess.run(["sh", "-c", "command -v gcc"], capture_output=True)
    if gcc.returncode == 0:
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "t.c")
            exe = os.path.join(d, "t")
            with open(src, "w") as f:
                f.write("int main(void) { return 0; }\n")
            subprocess.run(["gcc", "-Os", "-s", "-Wl,--build-id", "-o", exe, src], check=True)
            with open(exe, "rb") as f:
                data = f.read()
            if len(data) < 64 * 1024:
                write("elf_binary", "tiny-gcc", data)


def ui_query_seeds():
    # Selection text, then 0xff and up to three little-endian u64s (from ms,
    # to ms, last seconds as f64 bits). The ids and names are those of
    # hearth_fuzz::ui_window, so that selections match something.
    cid = "c" * 64
    sels = {
        "all": "all", "host": "host", "pod": "pod:shop/web-1",
        "container": "container:" + cid, "process": f"process:{cid}:web",
        "process-host": "process:host:make",
        # A multi-byte character where labels cut ids (at 12 characters).
        "container-multibyte": "container:a" + "\u00e9" * 6,
    }
    for name, sel in sels.items():
        write("ui_query", name, sel.encode())
    write("ui_query", "pod-range", b"pod:shop/web-1\xff" + u64(1_000_000) + u64(1_010_000))
    write("ui_query", "all-last", b"all\xff" + u64(0) + u64(0) + struct.pack("<d", 7.5))


if __name__ == "__main__":
    perf_seeds()
    capture_seeds()
    batch_seeds()
    text_seeds()
    elf_seeds()
    ui_query_seeds()
