"""The lock tests again, in a Python where ``fcntl`` cannot be imported (as on Windows).

A ``sitecustomize`` on ``PYTHONPATH`` blocks the module for the test process and every
process it starts: that removes a module, it does not mock the lock. ``import mastpipe.state``
must still work there, and the locks must still exclude a second holder and be taken over
from a killed one (:class:`mastpipe.locking.PidLock`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = '''
import sys

class _NoFcntl:
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ImportError("fcntl is blocked for this test (as on Windows)")
        return None

sys.meta_path.insert(0, _NoFcntl())
sys.modules.pop("fcntl", None)
'''


def test_lock_tests_pass_without_fcntl(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "MASTPIPE_TEST_NO_FCNTL": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(ROOT / "tests/unit/test_locks.py"),
         str(ROOT / "tests/unit/test_state.py") + "::test_lock_excludes_a_second_holder_and_is_released",
         str(ROOT / "tests/unit/test_state.py") + "::test_lock_held_by_another_process_fails_fast",
         "-k", "lock or Lock"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
