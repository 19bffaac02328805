"""The disk as judged (stages/retrieve/stamps.py): each present file's size, on one thread or two,
and each directory's names once its change time may share a clock tick with a later change."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from mastpipe.stages.retrieve.stamps import (RACY_NS, by_directory, directories_hold, directory_stamps, sizes_hold,
                                             sizes_match)


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for d in range(5):
        for f in range(7):
            path = tmp_path / f"d{d}" / f"f{f}.fits"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x" * (d + f + 1))
            paths.append(path)
    return paths


@pytest.mark.parametrize("threads_from", [0, 10**9])
def test_every_file_cut_grown_or_gone_is_seen(tmp_path, threads_from):
    paths = _files(tmp_path)
    directories, at, names = by_directory([os.fspath(path).rpartition("/") for path in paths])
    sizes = np.array([path.stat().st_size for path in paths])
    assert len(directories) == 5 and sizes_hold(directories, at, names, sizes, threads_from=threads_from)
    for change in (lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"y" * 99), Path.unlink):
        for path in (paths[0], paths[10], paths[24], paths[-1]):  # runs (directories) 0, 1, 3, 4: both halves
            body = path.read_bytes()
            change(path)
            assert not sizes_hold(directories, at, names, sizes, threads_from=threads_from)
            path.write_bytes(body)
            assert sizes_hold(directories, at, names, sizes, threads_from=threads_from)


@pytest.mark.parametrize("threads_from", [0, 10**9])
def test_each_file_is_answered_for(tmp_path, threads_from):
    paths = _files(tmp_path)
    sizes = [path.stat().st_size for path in paths]
    paths[3].unlink()
    paths[4].write_bytes(b"")
    sizes[5] += 1
    found = sizes_match([str(path) for path in paths] + [str(tmp_path / "nowhere")], sizes + [0],
                        threads_from=threads_from)
    assert found == [i not in (3, 4, 5) for i in range(len(paths))] + [False]


def test_a_directory_changed_just_before_is_known_by_its_names_until_it_settles(tmp_path):
    _files(tmp_path)
    directory = os.fspath(tmp_path / "d0")
    seen = {name.lower() for name in os.listdir(directory)}
    stamps = directory_stamps([directory], {directory: seen}, time.time_ns() - RACY_NS)
    assert stamps is not None and len(stamps[directory]) == 3  # changed just now: its names kept
    assert directories_hold(stamps) is False  # as it was, not settled yet
    before = os.stat(directory)
    (tmp_path / "d0" / "new.fits").write_bytes(b"")  # in the same tick: its change time put back
    os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert directories_hold(stamps) is None
    assert directory_stamps([directory], {directory: seen}, time.time_ns() - RACY_NS) is None  # not as judged
    (tmp_path / "d0" / "new.fits").unlink()
    os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))
    past = time.time_ns() - 10 * RACY_NS
    os.utime(directory, ns=(past, past))
    settled = directory_stamps([directory], {directory: seen}, time.time_ns() - RACY_NS)
    assert settled is not None and len(settled[directory]) == 2  # its change time alone tells
    assert directories_hold(settled) is False  # nothing kept with names: nothing to settle


def test_on_linux_without_threads_the_other_half_is_statted_in_a_forked_process(tmp_path):
    """In a process with no other thread (the CLI's), the second half of the files is statted in
    a forked child: it shares no GIL with this one. What the child finds counts: a file cut in
    its half (every other directory) is seen, by both functions."""
    import subprocess
    import sys
    import textwrap

    if not sys.platform.startswith("linux"):
        pytest.skip("forking is used on Linux only")
    paths = _files(tmp_path)
    script = textwrap.dedent("""
        import json, os, sys, threading
        import numpy as np
        from mastpipe.stages.retrieve.stamps import by_directory, sizes_hold, sizes_match
        forks = []
        os.register_at_fork(after_in_parent=lambda: forks.append(1))
        paths = json.loads(sys.argv[1])
        directories, at, names = by_directory([p.rpartition("/") for p in paths])
        sizes = np.array([os.stat(p).st_size for p in paths])
        assert threading.active_count() == 1
        answers = [sizes_hold(directories, at, names, sizes, threads_from=0)]
        os.truncate(paths[10], 0)  # directory 1: the child's half
        answers.append(sizes_hold(directories, at, names, sizes, threads_from=0))
        answers.append(sizes_match(paths, sizes.tolist(), threads_from=0))
        print(json.dumps({"answers": answers, "forks": len(forks)}))
    """)
    result = subprocess.run([sys.executable, "-c", script, json.dumps([str(p) for p in paths])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["answers"] == [True, False, [i != 10 for i in range(len(paths))]]
    assert found["forks"] == 3
