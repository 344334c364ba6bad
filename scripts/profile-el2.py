#!/usr/bin/env python3
"""Instructions per function for each kind of trap into the hypervisor, from a QEMU log.

QEMU has no instruction-count plugin in Debian's package, but its own logging can stand in:
run with `-d exec,nochain,in_asm -dfilter <load>+<size> -D exec.log` (in_asm gives each
translation block's instructions, exec each execution of one), e.g.

    cargo xtask run --icount --cpus 2 --mem 1G --config target/bench/irq.dtsi -- \
        -d exec,nochain,in_asm -dfilter 0x40200000+0x80000 -D /tmp/exec.log

stop QEMU once the guest has done what you want to look at, then

    llvm-nm -C --defined-only -n target/hyp.elf | grep -iE ' [tT] ' > /tmp/syms.txt
    scripts/profile-el2.py /tmp/exec.log /tmp/syms.txt 0x40200000

The log is cut into traps at the lower-EL synchronous and IRQ vectors (el2_vectors + 0x400
and + 0x480);
traps that pass through the same functions are grouped, and for the most common groups
the average instructions per trap and per function are printed. (The pinned toolchain's
llvm-nm is under ~/.rustup/toolchains/*/lib/rustlib/*/bin/.)
"""
import bisect
import collections
import re
import sys


def main():
    log, syms_file = sys.argv[1], sys.argv[2]
    load = int(sys.argv[3], 16) if len(sys.argv) > 3 else 0x40200000
    groups = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    syms = []
    for line in open(syms_file):
        parts = line.split(' ', 2)
        syms.append((int(parts[0], 16) + load, parts[2].strip()))
    addrs = [a for a, _ in syms]

    def name(pc):
        i = bisect.bisect_right(addrs, pc) - 1
        return syms[i][1] if i >= 0 else '?'

    size, trace, start, count = {}, [], None, 0
    with open(log) as f:
        for line in f:
            if line.startswith('IN:'):
                start, count = None, 0
                continue
            m = re.match(r'0x([0-9a-f]+):\s', line)
            if m:
                start = int(m.group(1), 16) if start is None else start
                count += 1
                size[start] = count
            elif line.startswith('Trace'):
                start = None
                trace.append(int(line.split('/')[1], 16))
    vectors = [a for a, s in syms if s == 'el2_vectors']
    if not vectors:
        sys.exit('no el2_vectors symbol')
    entries = {vectors[0] + 0x400, vectors[0] + 0x480}
    cuts = [i for i, pc in enumerate(trace) if pc in entries]
    kinds, per_kind = collections.Counter(), collections.defaultdict(collections.Counter)
    for a, b in zip(cuts, cuts[1:]):
        funcs = collections.Counter()
        for pc in trace[a:b]:
            funcs[name(pc)] += size.get(pc, 1)
        key = tuple(sorted(funcs))
        kinds[key] += 1
        per_kind[key].update(funcs)
    for key, n in kinds.most_common(groups):
        total = per_kind[key]
        print(f'{n} traps, {sum(total.values()) / n:.0f} instructions each')
        for func, v in total.most_common(20):
            print(f'  {v / n:7.0f}  {func[:100]}')


if __name__ == '__main__':
    main()
