"""Run one command; write its wall time and its own rusage (wait4) as JSON to RESULT.

    python -I benchmarks/rusage_spawn.py RESULT CMD [ARG...]

Why a separate small process: a child's ru_maxrss starts at the peak RSS of the process that
forked it (Linux keeps the old image's high-water mark across fork and exec), so a tool spawned
by the benchmark itself reports at least the benchmark's own peak: curl showed 45 MiB that way,
11 MiB forked from here. This launcher imports nothing beyond the standard library's core.

The tool's pid is written to RESULT.pid as soon as it is forked, so the caller can SIGKILL the
tool itself (S5). The launcher exits with the tool's exit status (128 + N for signal N).
Timing runs from the fork to the reap, so the launcher's own start-up is not counted.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the tool
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    with open(result + ".pid", "w") as f:
        f.write(str(pid))
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    report = {
        "seconds": seconds,
        "maxrss_kib": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "exit": code,
    }
    tmp = result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, result)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
