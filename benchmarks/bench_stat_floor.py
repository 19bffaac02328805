"""The floor under ``status`` with a million files present (issue 15, target 7): what one ``stat``
per file costs on this machine, in C and in Python, beside what mastpipe's own check spends.

``status`` and ``plan`` in download mode stat every file recorded as done (a file cut short in
place changes no directory, so nothing cheaper tells). This measures, over the same files,
each run listed:

- ``c fstatat``: a C loop, each name relative to its directory opened once (the kernel's cost
  with no interpreter at all; needs ``cc``, else skipped and said so);
- ``c io_uring statx``: the same stats submitted 4,096 at a time through io_uring, which hands
  them to kernel worker threads on every core (Linux; skipped where io_uring is refused);
- ``python os.stat``: ``os.stat(name, dir_fd=fd).st_size`` in one Python loop;
- ``sizes_hold, compiled``: :func:`mastpipe.stages.retrieve.stamps.sizes_hold`, what every
  ``status`` call runs: the C module ``mastpipe._sizes``, a thread per core;
- ``sizes_hold, Python``: the same where that module was not built (two processes from 100,000
  files).

Wall and CPU (user + system) of each. Usage, from the repository root::

    python benchmarks/bench_stat_floor.py                     # 1,000,000 empty files made in a temporary directory
    python benchmarks/bench_stat_floor.py --tree DOWNLOADED   # the files under an existing destination
    python benchmarks/bench_stat_floor.py --files 200000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_COMMON = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static long n; static char **dirs, **names; static int *fds;
static void load(const char *list) {
  FILE *f = fopen(list, "r"); char line[4096]; long cap = 1 << 20;
  dirs = malloc(sizeof(char *) * cap); names = malloc(sizeof(char *) * cap);
  while (fgets(line, sizeof line, f)) {
    if (n == cap) { cap *= 2; dirs = realloc(dirs, sizeof(char *) * cap); names = realloc(names, sizeof(char *) * cap); }
    line[strcspn(line, "\n")] = 0; char *s = strrchr(line, '/'); *s = 0;
    dirs[n] = strdup(line); names[n] = strdup(s + 1); n++;
  }
  fds = malloc(sizeof(int) * n); char *cur = NULL; int fd = -1;
  for (long i = 0; i < n; i++) {
    if (!cur || strcmp(cur, dirs[i])) { fd = open(dirs[i], O_RDONLY | O_DIRECTORY); cur = dirs[i]; }
    fds[i] = fd;
  }
}
"""

_FSTATAT = _COMMON + r"""
int main(int argc, char **argv) {
  load(argv[1]); long total = 0; struct stat st;
  for (long i = 0; i < n; i++) if (fstatat(fds[i], names[i], &st, 0) == 0) total += st.st_size;
  printf("%ld\n", total); return 0;
}
"""

_URING = _COMMON + r"""
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
  load(argv[1]);
  struct statx *out = calloc(n, sizeof(struct statx)); struct io_uring_params p; memset(&p, 0, sizeof p);
  int ring = syscall(__NR_io_uring_setup, 4096, &p); if (ring < 0) { perror("io_uring_setup"); return 2; }
  char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
  char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
  struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
  unsigned *tailp = (unsigned *)(sq + p.sq_off.tail), *array = (unsigned *)(sq + p.sq_off.array), mask = *(unsigned *)(sq + p.sq_off.ring_mask);
  unsigned *cqhead = (unsigned *)(cq + p.cq_off.head), *cqtail = (unsigned *)(cq + p.cq_off.tail), cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
  struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  long done = 0, sent = 0, total = 0;
  while (done < n) {
    unsigned batch = 0, tail = *tailp;
    while (sent < n && batch < p.sq_entries && sent - done < p.sq_entries) {
      struct io_uring_sqe *e = &sqes[tail & mask]; memset(e, 0, sizeof *e);
      e->opcode = IORING_OP_STATX; e->fd = fds[sent]; e->addr = (unsigned long)names[sent]; e->len = STATX_SIZE;
      e->off = (unsigned long)&out[sent]; e->statx_flags = AT_STATX_DONT_SYNC; e->user_data = sent;
      array[tail & mask] = tail & mask; tail++; sent++; batch++;
    }
    atomic_store_explicit((_Atomic unsigned *)tailp, tail, memory_order_release);
    if (syscall(__NR_io_uring_enter, ring, batch, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) { perror("io_uring_enter"); return 2; }
    unsigned h = *cqhead, t = atomic_load_explicit((_Atomic unsigned *)cqtail, memory_order_acquire);
    for (; h != t; h++, done++) { struct io_uring_cqe *c = &cqes[h & cmask]; if (c->res == 0) total += out[c->user_data].stx_size; }
    atomic_store_explicit((_Atomic unsigned *)cqhead, h, memory_order_release);
  }
  printf("%ld\n", total); return 0;
}
"""


def make_tree(root: Path, files: int, per_directory: int = 5000) -> None:
    """``files`` empty files, ``per_directory`` to a directory (as a 1M-row sandbox lays them out)."""
    for start in range(0, files, per_directory):
        directory = root / f"obs{start // per_directory:05d}"
        directory.mkdir()
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(start, min(start + per_directory, files)):
                os.close(os.open(f"jw{i:08d}_cal.fits", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        finally:
            os.close(fd)


def listed(tree: Path) -> list[str]:
    """Every file under ``tree``, grouped by directory (the order ``status`` stats them in)."""
    return [os.path.join(top, name) for top, _, names in sorted(os.walk(tree)) for name in sorted(names)]


def compiled(source: str, work: Path, name: str) -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    (work / f"{name}.c").write_text(source)
    done = subprocess.run([compiler, "-O2", "-o", str(work / name), str(work / f"{name}.c")], capture_output=True)
    return work / name if done.returncode == 0 else None


def run_child(program: Path, listing: Path) -> tuple[float, float] | str:
    """Wall and CPU (user + system) of one run of ``program``, or why it failed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([str(program), str(listing)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        return done.stderr.strip() or f"exit {done.returncode}"
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def python_loop(paths: list[str]) -> int:
    total = 0
    by_directory: dict[str, list[bytes]] = {}
    for path in paths:
        head, _, name = path.rpartition("/")
        by_directory.setdefault(head, []).append(os.fsencode(name))
    stat = os.stat
    for directory, names in by_directory.items():
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            total += sum([stat(name, dir_fd=fd).st_size for name in names])
        finally:
            os.close(fd)
    return total


def in_process(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU of ``work()`` here (its forked helper's CPU counted too)."""
    before, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    after, children_after = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.user - before.user) + (after.system - before.system)
    cpu += (children_after.ru_utime - children.ru_utime) + (children_after.ru_stime - children.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="stat the files under this directory (default: make them)")
    parser.add_argument("--files", type=int, default=1_000_000, help="files to make without --tree")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("this benchmark measures Linux system calls")
    from mastpipe.stages.retrieve.stamps import COMPILED, by_directory, sizes_hold

    with tempfile.TemporaryDirectory(prefix="mastpipe-stat-floor-") as scratch:
        work = Path(scratch)
        tree = args.tree
        if tree is None:
            tree = work / "tree"
            tree.mkdir()
            started = time.perf_counter()
            make_tree(tree, args.files)
            print(f"made {args.files:,} empty files in {time.perf_counter() - started:.1f} s")
        paths = listed(tree)
        listing = work / "files.txt"
        listing.write_text("".join(path + "\n" for path in paths))
        directories, at, names = by_directory([path.rpartition("/") for path in paths])
        sizes = np.array([os.stat(path).st_size for path in paths], dtype=np.int64)  # also warms the caches
        print(f"{len(paths):,} files in {len(directories):,} directories, {os.cpu_count()} cores, "
              f"Python {sys.version.split()[0]}, kernel {os.uname().release}")
        programs = {"c fstatat": compiled(_FSTATAT, work, "fstatat"), "c io_uring statx": compiled(_URING, work, "uring")}
        for label, program in programs.items():
            if program is None:
                print(f"{label:22s} skipped: no C compiler, or it failed")
                continue
            runs = [run_child(program, listing) for _ in range(args.rounds)]
            shown = [r if isinstance(r, str) else f"{r[0]:.2f} s wall, {r[1]:.2f} s CPU" for r in runs]
            print(f"{label:22s} " + "; ".join(shown))
        if not sizes_hold(directories, at, names, sizes):
            sys.exit("the files changed while they were measured")
        checks: list[tuple[str, Callable[[], object]]] = [
            ("python os.stat", lambda: python_loop(paths)),
            ("sizes_hold, Python", lambda: sizes_hold(directories, at, names, sizes, compiled=False))]
        if not COMPILED:
            print(f"{'sizes_hold, compiled':22s} skipped: mastpipe._sizes was not built (no C compiler at install)")
        else:
            checks.append(("sizes_hold, compiled", lambda: sizes_hold(directories, at, names, sizes)))
        for label, work_fn in checks:
            timed = [in_process(work_fn) for _ in range(args.rounds)]
            print(f"{label:22s} " + "; ".join(f"{wall:.2f} s wall, {cpu:.2f} s CPU" for wall, cpu in timed))


if __name__ == "__main__":
    main()
