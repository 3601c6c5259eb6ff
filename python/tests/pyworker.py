"""A Python worker process for the tests: python3 pyworker.py ID DATA_DIR.
It serves echo_slow (idempotent) and prints its port once registered."""

import asyncio
import sys
import time

from taskworker import TaskWorker


async def main():
    w = TaskWorker(sys.argv[1], data_dir=sys.argv[2])

    @w.function("echo_slow", idempotent=True)
    def echo_slow(x):
        time.sleep(0.02)
        return x

    await w.start_server(port=0)
    print(w.port, flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
