"""The worker supervisor: restarts on the safe-exit code only, forwards SIGTERM, no orphans."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.devkafka import is_alive
from pipeline import supervisor


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_restarts_on_safe_exit_and_returns_the_final_code(tmp_path: Path) -> None:
    """A child exiting 70 twice is restarted; its third run's exit code is returned."""
    counter = tmp_path / "runs"
    argv = _script(tmp_path, f"""
import sys
from pathlib import Path
p = Path({str(counter)!r})
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
sys.exit(70 if n < 2 else 3)
""")
    code = supervisor.supervise(argv, frozenset({70}), sleep=lambda _s: None)
    assert code == 3
    assert counter.read_text() == "3"


def test_other_exit_codes_end_supervision(tmp_path: Path) -> None:
    """A child failing with any other code is not restarted."""
    argv = _script(tmp_path, "import sys; sys.exit(1)")
    assert supervisor.supervise(argv, frozenset({70}), sleep=lambda _s: None) == 1


def test_sigterm_is_forwarded_and_kill9_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGTERM reaches the child (exit 0); a SIGKILLed supervisor takes its child with it."""
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, signal, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "child.py").write_text(child)
    runner = (
        "import sys\n"
        "from pipeline import supervisor\n"
        f"sys.exit(supervisor.supervise([sys.executable, {str(tmp_path / 'child.py')!r}], "
        "frozenset({70})))\n"
    )
    for sig, expect_code in ((signal.SIGTERM, 0), (signal.SIGKILL, -9)):
        pid_file.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", runner])
        try:
            deadline = time.monotonic() + 20
            while not pid_file.exists() or not pid_file.read_text():
                assert time.monotonic() < deadline, "child never started"
                time.sleep(0.05)
            child_pid = int(pid_file.read_text())
            proc.send_signal(sig)
            assert proc.wait(10) == expect_code
            deadline = time.monotonic() + 10
            while is_alive(child_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not is_alive(child_pid)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
