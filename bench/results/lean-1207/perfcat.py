# perfcat.py WEFT.data LEAN.data WEFT_US LEAN_US: perf samples of two proxies by where they fell,
# scaled to each one's CPU per request (perf record -e cpu-clock -g -p PID -o X.data).
import re,collections,sys,subprocess
def cats(path):
    out=subprocess.run(['perf','report','-i',path,'--no-children','--sort','sym','-g','none'],capture_output=True,text=True).stdout
    tot=collections.Counter()
    for l in out.splitlines():
        m=re.match(r'\s*([\d.]+)%\s+\[(.)\]\s+(.*)',l)
        if not m: continue
        p=float(m.group(1)); kind=m.group(2); s=m.group(3).strip()
        if kind=='k':
            key='kernel'
        elif s.startswith('weft.dev/weft/internal/proxy/sockio') or s.startswith('internal/runtime/syscall') or s.startswith('syscall.') or s.startswith('internal/poll') : key='user: syscall wrappers (sockio, poll)'
        elif s.startswith('weft.dev/weft/'): key='user: weft code'
        elif s.startswith('runtime.') or s.startswith('internal/runtime') or s.startswith('gogo') or s.startswith('aeshash') or s.startswith('memeq') or s.startswith('indexbyte'):
            n=s
            if 'maps' in n or 'map' in n or 'aeshash' in n or 'typehash' in n: key='runtime: maps'
            elif any(x in n for x in ['gcDrain','mark','scan','sweep','Sweep','greyobject','findObject','wbBuf','bulkBarrier','typePointers','spanOf','tryDefer','gcWork','spanSet','gcBg','heapBitsSmall','writeHeapBits','markBits']): key='runtime: gc'
            elif any(x in n for x in ['malloc','newobject','nextFree','allocSpan','mcache','mcentral','makeslice','growslice','memclr','refill','newarray','mheap','memmove']): key='runtime: alloc+memmove'
            elif any(x in n for x in ['schedule','findRunnable','park','ready','netpoll','runq','steal','wakep','startm','stopm','notesleep','futex','mPark','goexit','gogo','mcall','execute','casgstatus','resetspinning','Timers','timer','nanotime','usleep','lock2','unlock2','osyield','sysmon','retake','exitsyscall','entersyscall','sema','chan','select','gopark','goready','procyield','pidle','rand','gfget','gfput','newproc','systemstack','morestack','runtime.lock','runtime.unlock']): key='runtime: scheduler, timers, locks'
            else: key='runtime: other'
        elif s.startswith('0x') : key='unknown'
        else: key='user: std (net/http, bufio, bytes, strings, time, context...)'
        tot[key]+=p
    return tot
a=cats(sys.argv[1]); b=cats(sys.argv[2]); ca=float(sys.argv[3]); cb=float(sys.argv[4])
keys=sorted(set(a)|set(b), key=lambda k:-(a[k]*ca))
print(f"| where | Weft µs/request | lean goroutine proxy µs/request |")
print("|---|---|---|")
for k in keys: print(f"| {k} | {a[k]*ca/100:.1f} | {b[k]*cb/100:.1f} |")
print(f"| total | {ca:.1f} | {cb:.1f} |")
