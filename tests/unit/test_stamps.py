"""The disk as judged (stages/retrieve/stamps.py): each present file's size, on one thread or two,
by the compiled mastpipe._sizes and in Python, and each directory's names once its change time
may share a clock tick with a later change."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mastpipe.stages.retrieve.stamps import (COMPILED, RACY_NS, by_directory, directories_hold, directory_stamps,
                                             sizes_hold, sizes_match)

#: sizes_hold by the compiled module and in Python (what a machine without a C compiler runs)
BOTH = [pytest.param(True, id="compiled"), pytest.param(False, id="python")]


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for d in range(5):
        for f in range(7):
            path = tmp_path / f"d{d}" / f"f{f}.fits"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x" * (d + f + 1))
            paths.append(path)
    return paths


def _needs(compiled: bool) -> None:
    if compiled and not COMPILED:
        pytest.skip("mastpipe._sizes was not built here (no C compiler at install)")


def test_the_compiled_check_is_built_where_a_c_compiler_is():
    """Where ``pip install`` could compile it, it did: an install that quietly fell back to the
    Python check would make every ``status`` at a million files ~0.4 s slower."""
    if os.name != "posix" or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: mastpipe installs without mastpipe._sizes")
    assert COMPILED, "mastpipe._sizes is missing: reinstall (pip install -e .) and read the compiler's errors"


@pytest.mark.parametrize("compiled", BOTH)
@pytest.mark.parametrize("threads_from", [0, 10**9])
def test_every_file_cut_grown_or_gone_is_seen(tmp_path, threads_from, compiled):
    _needs(compiled)
    paths = _files(tmp_path)
    directories, at, names = by_directory([os.fspath(path).rpartition("/") for path in paths])
    sizes = np.array([path.stat().st_size for path in paths])

    def holds() -> bool:
        return sizes_hold(directories, at, names, sizes, threads_from=threads_from, compiled=compiled)

    assert len(directories) == 5 and holds()
    for change in (lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"y" * 99), Path.unlink):
        for path in (paths[0], paths[10], paths[24], paths[-1]):  # runs (directories) 0, 1, 3, 4: both halves
            body = path.read_bytes()
            change(path)
            assert not holds()
            path.write_bytes(body)
            assert holds()
    shutil.rmtree(tmp_path / "d2")
    assert not holds()


@pytest.mark.parametrize("compiled", BOTH)
def test_names_of_every_width_and_script_and_links_followed(tmp_path, compiled):
    """Names as long as a filesystem allows, short ones beside them (numpy pads those), names in
    other scripts, a link to a file of the recorded size (followed, as ``os.stat`` does), and
    enough files that every thread has some: each one checked, not only the first of a thread."""
    _needs(compiled)
    root = tmp_path / "données"
    root.mkdir()
    paths = [root / ("n" * 255), root / "a", root / "カタログ_σ.fits"]
    paths += [tmp_path / f"{i:04d}.fits" for i in range(3000)]
    for i, path in enumerate(paths):
        path.write_bytes(b"z" * (i % 7))
    target = tmp_path / "elsewhere.fits"
    target.write_bytes(b"z" * 4)
    (root / "link.fits").symlink_to(target)
    paths.append(root / "link.fits")
    directories, at, names = by_directory([os.fspath(path).rpartition("/") for path in paths])
    sizes = np.array([path.stat().st_size for path in paths])
    assert names.dtype.itemsize == 255 and sizes_hold(directories, at, names, sizes, threads_from=0, compiled=compiled)
    for i in (1, 2, 1500, 2999, len(paths) - 1):  # the short, the foreign, each half's middle and end, the link
        wrong = sizes.copy()
        wrong[i] += 1
        assert not sizes_hold(directories, at, names, wrong, threads_from=0, compiled=compiled), paths[i]
    target.unlink()  # a dangling link: no file there
    assert not sizes_hold(directories, at, names, sizes, threads_from=0, compiled=compiled)


@pytest.mark.parametrize("compiled", BOTH)
def test_more_directories_than_a_process_may_open_at_once(tmp_path, compiled):
    """10M files are in ~2,000 directories; a process may have 1,024 descriptors. Here 400
    directories under a limit of 300: the compiled check holds 256 open at a time (the Python
    one, one), so the files are still checked, not judged changed for want of a descriptor."""
    import subprocess
    import textwrap

    _needs(compiled)
    if sys.platform == "win32":
        pytest.skip("no descriptor limit to set on Windows")
    script = textwrap.dedent("""
        import os, resource, sys
        import numpy as np
        from mastpipe.stages.retrieve.stamps import by_directory, sizes_hold
        root, compiled = sys.argv[1], sys.argv[2] == "1"
        paths = []
        for d in range(400):
            os.mkdir(f"{root}/d{d}")
            for f in range(2):
                paths.append(f"{root}/d{d}/f{f}")
                with open(paths[-1], "wb") as handle:
                    handle.write(b"x" * f)
        order = [i for f in range(2) for i in range(f, len(paths), 2)]  # each directory's files apart
        directories, at, names = by_directory([paths[i].rpartition("/") for i in order])
        sizes = np.array([os.stat(paths[i]).st_size for i in order])
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        answers = [sizes_hold(directories, at, names, sizes, threads_from=0, compiled=compiled)]
        os.truncate(paths[-1], 0)  # the last directory, in the last span
        answers.append(sizes_hold(directories, at, names, sizes, threads_from=0, compiled=compiled))
        print(answers)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path), "1" if compiled else "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, False]"


@pytest.mark.parametrize("open_at_once", [1, 2, 3, 256])
def test_a_few_directories_open_at_a_time_still_check_every_file(tmp_path, open_at_once):
    """Files in an order that returns to each directory (runs of one), checked a few
    directories at a time: a change in any span is seen."""
    _needs(True)
    paths = _files(tmp_path)
    order = [i for f in range(7) for i in range(f, len(paths), 7)]  # d0/f0, d1/f0, ... d4/f6
    directories, at, names = by_directory([os.fspath(paths[i]).rpartition("/") for i in order])
    sizes = np.array([paths[i].stat().st_size for i in order])
    assert sizes_hold(directories, at, names, sizes, threads_from=0, open_at_once=open_at_once)
    for i in order:
        body = paths[i].read_bytes()
        paths[i].write_bytes(body + b"!")
        assert not sizes_hold(directories, at, names, sizes, threads_from=0, open_at_once=open_at_once), paths[i]
        paths[i].write_bytes(body)


def test_the_compiled_check_refuses_arrays_that_disagree():
    _needs(True)
    from mastpipe import _sizes
    fds, names, sizes = np.zeros(2, np.int32), np.array([b"a", b"b"]), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="different numbers of files"):
        _sizes.sizes_hold(fds, names, names.dtype.itemsize, sizes, 2)
    assert _sizes.sizes_hold(fds[:0], names[:0], 1, sizes[:0], 2) is True


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
    """In Python (no compiled check), in a process with no other thread (the CLI's), the second
    half of the files is statted in a forked child: it shares no GIL with this one. What the child finds counts: a file cut in
    its half (every other directory) is seen, by both functions."""
    import subprocess
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
        answers = [sizes_hold(directories, at, names, sizes, threads_from=0, compiled=False)]
        os.truncate(paths[10], 0)  # directory 1: the child's half
        answers.append(sizes_hold(directories, at, names, sizes, threads_from=0, compiled=False))
        answers.append(sizes_match(paths, sizes.tolist(), threads_from=0))
        print(json.dumps({"answers": answers, "forks": len(forks)}))
    """)
    result = subprocess.run([sys.executable, "-c", script, json.dumps([str(p) for p in paths])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["answers"] == [True, False, [i != 10 for i in range(len(paths))]]
    assert found["forks"] == 3
