#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (mm-core/fuzz/corpus and
vmm/fuzz/corpus): small, hand-made inputs that reach past each parser's
first checks. Run from the repository root; deterministic. Reproducers of
bugs are kept beside the seeds (named for what they found) and are not
written by this script."""
import os, random, struct

rng = random.Random(17)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def put(crate, target, name, data):
    d = os.path.join(ROOT, crate, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def rand(n):
    return bytes(rng.getrandbits(8) for _ in range(n))

# ELF64 little-endian x86-64: header, program headers, optional sections.
def elf(etype, entry, phdrs, body=b"", sections=None):
    phoff = 64
    ph = b"".join(struct.pack("<IIQQQQQQ", *p) for p in phdrs)
    data = bytearray(64) + ph + body
    shoff = shnum = shstrndx = 0
    if sections:
        names = b"\0" + b"".join(n + b"\0" for n, *_ in sections) + b".shstrtab\0"
        sh = [bytes(64)]
        off_name = 1
        for n, kind, content, link, entsize in sections:
            while len(data) % 8:
                data.append(0)
            sh.append(struct.pack("<IIQQQQIIQQ", off_name, kind, 0, 0, len(data), len(content), link, 1 if kind == 2 else 0, 8, entsize))
            data += content
            off_name += len(n) + 1
        sh.append(struct.pack("<IIQQQQIIQQ", off_name, 3, 0, 0, len(data), len(names), 0, 0, 1, 0))
        data += names
        while len(data) % 8:
            data.append(0)
        shoff, shnum, shstrndx = len(data), len(sh), len(sh) - 1
        data += b"".join(sh)
    hdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    hdr += struct.pack("<HHIQQQIHHHHHH", etype, 62, 1, entry, phoff, shoff, 0, 64, 56, len(phdrs), 64, shnum, shstrndx)
    data[:64] = hdr
    return bytes(data)

PT_LOAD, PT_INTERP, PT_PHDR = 1, 3, 6
code = b"\x90" * 16 + b"\xf4"
hdr_len = 64 + 56 * 2
# mm-core elf: a static executable, a static PIE with PT_PHDR, a dynamic one.
put("mm-core", "elf", "static-exec", elf(2, 0x401000, [(PT_LOAD, 5, 0, 0x400000, 0x400000, 0x200, 0x2000, 0x1000), (PT_LOAD, 6, 0, 0x600000, 0x600000, 0, 0x1000, 0x1000)], body=bytes(0x200 - hdr_len)))
put("mm-core", "elf", "static-pie", elf(3, 0x1000, [(PT_PHDR, 4, 64, 64, 64, 112, 112, 8), (PT_LOAD, 5, 0, 0, 0, 0x100, 0x2000, 0x1000)], body=bytes(0x100 - hdr_len)))
put("mm-core", "elf", "dynamic", elf(2, 0x401000, [(PT_INTERP, 4, 0xb0, 0, 0, 12, 12, 1), (PT_LOAD, 5, 0, 0x400000, 0x400000, 0xc0, 0x1000, 0x1000)], body=b"/lib/ld.so\0\0".ljust(0xc0 - hdr_len, b"\0")))
put("mm-core", "elf", "truncated", elf(2, 0x401000, [(PT_LOAD, 5, 0, 0x400000, 0x400000, 0x200, 0x2000, 0x1000)])[:100])

# vmm kernel_elf: a kernel with a symbol table, a 32-bit one, a bzImage-like one.
sym = lambda name, value, size: struct.pack("<IBBHQQ", name, 0x12, 0, 1, value, size)
strtab = b"\0kmain\0start\0"
symtab = bytes(24) + sym(1, 0x100000, 8) + sym(7, 0x100008, 9)
kern = elf(2, 0x100000, [(PT_LOAD, 5, 0x1000, 0x100000, 0x100000, len(code), 0x2000, 0x1000)],
           body=bytes(0x1000 - 64 - 56) + code,
           sections=[(b".text", 1, code, 0, 0), (b".symtab", 2, symtab, 3, 24), (b".strtab", 3, strtab, 0, 0)])
put("vmm", "kernel_elf", "kernel-with-symbols", kern)
put("vmm", "kernel_elf", "entry-outside", kern[:24] + struct.pack("<Q", 0x300000) + kern[32:])
k32 = bytearray(kern); k32[4] = 1
put("vmm", "kernel_elf", "elfclass32", bytes(k32))
bz = bytearray(0x300); bz[0x202:0x206] = b"HdrS"
put("vmm", "kernel_elf", "bzimage", bytes(bz))
put("vmm", "kernel_elf", "mz", b"MZ" + rand(62))

# vmm gdb: what gdb sends when it attaches, reads, runs monitor commands,
# tries to write and step, and detaches; noise and a corrupt packet.
def pkt(body):
    return b"$" + body + b"#%02x" % (sum(body) & 0xff)
def mon(cmd):
    return pkt(b"qRcmd," + cmd.encode().hex().encode())
attach = b"+" + pkt(b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;xmlRegisters=i386") + b"+"
attach += pkt(b"vMustReplyEmpty") + b"+" + pkt(b"QStartNoAckMode") + b"+"
attach += pkt(b"qXfer:features:read:target.xml:0,ffb") + pkt(b"?") + pkt(b"qAttached") + pkt(b"g")
put("vmm", "gdb", "attach", attach)
put("vmm", "gdb", "read-memory", attach + pkt(b"m10000,10") + pkt(b"m0,8") + pkt(b"mffffffffffffff00,100") + pkt(b"p10") + pkt(b"D;1"))
put("vmm", "gdb", "monitor", attach + mon("help") + mon("pt $pc") + mon("mem") + mon("cpu") + mon("walk:0x10000") + mon("buddyinfo") + mon("verify all") + pkt(b"k"))
put("vmm", "gdb", "write-and-run", attach + pkt(b"M10000,2:9090") + pkt(b"G" + b"00" * 64) + pkt(b"Z0,10000,1") + pkt(b"vCont;s:p1.-1") + pkt(b"c") + b"\x03" + pkt(b"vKill;1"))
put("vmm", "gdb", "noise", b"hello+-" + pkt(b"g")[:-1] + b"z" + b"$?#00" + b"$m0,4$?#3f" + pkt(b"qC"))
put("vmm", "gdb", "monitor-args", b"pt $pc + 8 kernel::kmain - 0x10  -  $sp+ 4\tmem")

# vmm ports: (tag & 7) % 6 picks the step (0 out, 1 in, 2 mmio write, 3 mmio
# read, 4 RAM write, 5 console input); width from tag >> 3 (1 2 4 8).
W = {1: 0, 2: 1, 4: 2, 8: 3}
out = lambda idx, v, w=1: bytes([0 | W[w] << 3]) + struct.pack("<H", idx) + v.to_bytes(w, "little")
inp = lambda idx, w=1: bytes([1 | W[w] << 3]) + struct.pack("<H", idx)
mw = lambda off, v, w=4: bytes([2 | W[w] << 3]) + struct.pack("<H", off) + v.to_bytes(w, "little")
mr = lambda off, w=4: bytes([3 | W[w] << 3]) + struct.pack("<H", off)
ram = lambda addr, b: bytes([4]) + struct.pack("<IB", addr, len(b)) + b
con = lambda b, esc=False: bytes([5 | (8 if esc else 0)]) + bytes([len(b)]) + b
# PORTS indexes: 0 exit, 1 symbol, 2 symbol+4, 3 results, 4 descriptor,
# 5 descriptor high, 6 checkpoint, 7 stdout, 8 stderr, 9.. COM1+0..7.
s = b"".join(out(3, c) for c in b"buddy alloc pass 3 blocks\nslab uaf fail poisoned\ngarbage\n")
s += b"".join(out(6, c) for c in b"cow-shared\0")
s += out(1, 0x1234, 4) + out(2, 0, 4) + b"".join(inp(1) for _ in range(4))
s += out(4, 0x5000, 4) + out(5, 1, 4)
put("vmm", "ports", "results-checkpoints-symbols", s)
s = b"".join(out(9, c) for c in b"hi\n") + inp(14) + out(12, 0x80) + out(9, 1) + out(12, 3) + inp(13)
s += con(b"ls\x01a\x01x", esc=True) + inp(9) + inp(9) + inp(14) + out(7, 0x41) + out(8, 0x42) + inp(7)
put("vmm", "ports", "serial-console", s)
# virtio-mmio: the driver's negotiation, a queue at 0x1000/0x2000/0x3000,
# one read request (header at 0x8000, data at 0x9000, status at 0x8100).
def vq():
    s = mr(0x000) + mr(0x004) + mr(0x008) + mw(0x070, 0) + mw(0x070, 1) + mw(0x070, 3)
    s += mw(0x014, 1) + mr(0x010) + mw(0x024, 1) + mw(0x020, 1) + mw(0x024, 0) + mw(0x020, 0) + mw(0x070, 11) + mr(0x070)
    s += mw(0x030, 0) + mr(0x034) + mw(0x038, 16)
    for off, v in [(0x080, 0x1000), (0x084, 0), (0x090, 0x2000), (0x094, 0), (0x0a0, 0x3000), (0x0a4, 0)]:
        s += mw(off, v)
    s += mw(0x044, 1) + mw(0x070, 15) + mr(0x100, 8)
    return s
desc = struct.pack("<QIHH", 0x8000, 16, 1, 1) + struct.pack("<QIHH", 0x9000, 512, 3, 2) + struct.pack("<QIHH", 0x8100, 1, 2, 0)
req = vq() + ram(0x1000, desc) + ram(0x8000, struct.pack("<IIQ", 0, 0, 1)) + ram(0x2000, struct.pack("<HHH", 0, 1, 0))
req += mw(0x050, 0) + mr(0x060) + mw(0x064, 1)
put("vmm", "ports", "virtio-read-request", req)
loop = vq() + ram(0x1000, struct.pack("<QIHH", 0x8000, 16, 1, 0)) + ram(0x2000, struct.pack("<HHH", 0, 200, 0)) + mw(0x050, 0)
put("vmm", "ports", "virtio-descriptor-loop", loop)
put("vmm", "ports", "register-noise", b"".join(mw(rng.randrange(0x140), rng.getrandbits(32)) for _ in range(40)))

# vmm guest_state: a valid header (first byte even) over random RAM,
# and over zeros.
for i in range(3):
    put("vmm", "guest_state", "random-%d" % i, bytes([2 * i]) + rand(600 + 700 * i))
put("vmm", "guest_state", "zeros", bytes(4096))

# mm-core walker, alloc, descriptor: random seeds of a few sizes.
for n in (64, 512, 2048):
    put("mm-core", "walker", "random-%d" % n, rand(n))
    put("mm-core", "alloc", "random-%d" % n, rand(n))
    put("mm-core", "descriptor", "random-%d" % n, rand(n))
put("mm-core", "descriptor", "header", b"MMEMUDSC" + struct.pack("<I", 5) + bytes(2036))

# vmm snapshot: the one-page snapshot is written by the unit test
# (MMEMU_WRITE_SNAPSHOT_SEED=1 cargo test -p vmm --lib snapshot_seed);
# cut copies of it here.
core = os.path.join(ROOT, "vmm", "fuzz", "corpus", "snapshot", "one-page-guest")
if os.path.exists(core):
    b = open(core, "rb").read()
    put("vmm", "snapshot", "truncated-notes", b[:700])
    put("vmm", "snapshot", "truncated-ram", b[:len(b) - 100])

# mm-core acpi: memory with an RSDP (v2) at 0x40, an XSDT at 0x80 and a
# MADT at 0x100 listing two enabled local APICs and an x2APIC; the first
# two bytes give the RSDP's address. A v1 RSDP with an RSDT too.
def csum(b):
    return (-sum(b)) & 0xff
def sdt(sig, body):
    h = bytearray(sig + struct.pack("<IB", 36 + len(body), 1) + b"\0" + b"MMEMU " + b"MMEMUTBL" + struct.pack("<I", 1) + b"MMEU" + struct.pack("<I", 1))
    t = h + body
    t[9] = csum(t)
    return bytes(t)
madt = sdt(b"APIC", struct.pack("<II", 0xfee00000, 1) + bytes([0, 8, 0, 0]) + struct.pack("<I", 1) + bytes([0, 8, 1, 1]) + struct.pack("<I", 1) + bytes([9, 16, 0, 0]) + struct.pack("<III", 7, 1, 7))
def mem_with(rsdp, root):
    m = bytearray(0x200)
    m[0:2] = struct.pack("<H", 0x40)
    m[0x40:0x40 + len(rsdp)] = rsdp
    m[0x80:0x80 + len(root)] = root
    m[0x100:0x100 + len(madt)] = madt
    return bytes(m)
r2 = bytearray(b"RSD PTR " + b"\0" + b"MMEMU " + bytes([2]) + struct.pack("<I", 0x80) + struct.pack("<IQ", 36, 0x80) + b"\0\0\0\0")
r2[8] = csum(r2[:20]); r2[32] = csum(r2)
put("mm-core", "acpi", "rsdp2-xsdt-madt", mem_with(bytes(r2), sdt(b"XSDT", struct.pack("<Q", 0x100))))
r1 = bytearray(b"RSD PTR " + b"\0" + b"MMEMU " + bytes([0]) + struct.pack("<I", 0x80))
r1[8] = csum(r1)
put("mm-core", "acpi", "rsdp1-rsdt-madt", mem_with(bytes(r1), sdt(b"RSDT", struct.pack("<I", 0x100))))
put("mm-core", "acpi", "random", rand(512))
