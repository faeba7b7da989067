"""A platform in a process of its own, for tests that kill it: `python -m tests.integration.platform_process`.

Settings come from the CLASSIFLY_* environment. The process starts a fresh local Ray (its children: the GCS,
the raylet and through it every worker), the Serve app, waits until /v1/health answers, prints one line
`READY <api url> <ray address>` and runs until SIGTERM (a clean stop). Killing the process and all of its
descendants with SIGKILL is a crash of the whole platform and of no one else's Ray.
"""

from __future__ import annotations

import signal
import sys
import threading

from cluster.config import get_settings
from cluster.runtime import in_process_platform


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = get_settings()
    with in_process_platform(settings, num_cpus=2) as url:
        import ray

        sys.stdout.write(f"READY {url} {ray.get_runtime_context().gcs_address}\n")
        sys.stdout.flush()
        stop.wait()


if __name__ == "__main__":
    main()
