#!/usr/bin/env python3
# respages.py PID BINPATH OUT: resident pages (file offsets) of PID's mappings of BINPATH, via /proc/PID/pagemap.
import sys, struct
pid, binpath, out = sys.argv[1], sys.argv[2], sys.argv[3]
res = []
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
            if e >> 63:  # present
                res.append((lo + i * 4096, off + i * 4096, parts[1]))
with open(out, "w") as o:
    for va, fo, perm in res:
        o.write(f"{va:x} {fo:x} {perm}\n")
print(len(res), "pages", len(res) * 4 / 1024, "MiB")
