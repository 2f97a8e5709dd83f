#!/usr/bin/env python3
# respages2.py PID BINPATH OUT: resident pages of PID's mappings of BINPATH with their folio kind (kpageflags).
import sys, struct, os
pid, binpath, out = sys.argv[1], sys.argv[2], sys.argv[3]
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL = 15, 16
res = []
kpf = open("/proc/kpageflags", "rb")
with open(f"/proc/{pid}/maps") as f, open(f"/proc/{pid}/pagemap", "rb") as pm:
    for line in f:
        parts = line.split()
        if len(parts) < 6 or parts[5] != binpath:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        off = int(parts[2], 16)
        n = (hi - lo) // 4096
        pm.seek(lo // 4096 * 8)
        data = pm.read(n * 8)
        for i in range(n):
            (e,) = struct.unpack_from("<Q", data, i * 8)
            if e >> 63:
                pfn = e & ((1 << 55) - 1)
                large = "?"
                if pfn:
                    kpf.seek(pfn * 8)
                    (fl,) = struct.unpack("<Q", kpf.read(8))
                    large = "L" if fl & ((1 << KPF_COMPOUND_HEAD) | (1 << KPF_COMPOUND_TAIL)) else "s"
                res.append((lo + i * 4096, off + i * 4096, parts[1], large))
with open(out, "w") as o:
    for va, fo, perm, large in res:
        o.write(f"{va:x} {fo:x} {perm} {large}\n")
