"""Run a ccstream command under ``tracemalloc`` and dump the top allocation sites on demand.

``python bench/_traced.py OUT_FILE -- dedup --config FILE``: while the command runs, creating
``OUT_FILE.trigger`` writes the 25 largest allocation sites (by line, 8 frames deep) still alive
to ``OUT_FILE`` and removes the trigger. A thread polls for the trigger (signals are taken by
faust/mode). Used by ``bench_memory.py --trace`` to find what a worker holds per key.
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _watch(out: Path) -> None:
    trigger = out.with_suffix(".trigger")
    while True:
        time.sleep(0.5)
        if not trigger.exists():
            continue
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snapshot.statistics("traceback")[:25]
        lines = []
        for stat in stats:
            lines.append(f"{stat.size / 1024 / 1024:8.1f} MiB {stat.count:9d} blocks")
            lines.extend(f"    {line}" for line in stat.traceback.format()[-16:])
        out.write_text("\n".join(lines) + "\n")
        trigger.unlink()


def main() -> int:
    out = Path(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1:]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    tracemalloc.start(8)
    threading.Thread(target=_watch, args=(out,), daemon=True).start()
    from ccstream.cli import main as cli_main

    return int(cli_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
