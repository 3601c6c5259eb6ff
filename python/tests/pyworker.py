"""A Python worker process for the tests: python3 pyworker.py ID DATA_DIR
[KIND]. KIND "echo" (the default) serves echo_slow (idempotent); "tasks"
serves the functions the task tests submit; "secrets" reads secrets and
fetches through the pool. It prints its port once
registered."""

import asyncio
import sys
import time

import taskworker
from taskworker import TaskWorker


def echo_functions(w):
    @w.function("echo_slow", idempotent=True)
    def echo_slow(x):
        time.sleep(0.02)
        return x


def task_functions(w):
    cancelled = 0

    @w.function("py_task_info")
    def task_info():
        t = taskworker.current_task()
        return None if t is None else {"id": t.id, "attempt": t.attempt}

    @w.function("py_sleep")
    async def sleep(seconds: float) -> float:
        nonlocal cancelled
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return seconds

    @w.function("py_cancelled")
    def cancelled_calls() -> int:
        return cancelled

    @w.function("py_fail")
    def fail(message: str):
        raise ValueError(message)


def secret_functions(w):
    @w.function("py_secret")
    def secret(name: str) -> str:
        return w.get_secret(name).decode()

    @w.function("py_fetch")
    def fetch(url: str) -> int:
        return w.call_external_api(url, headers={"Authorization": "Bearer {{secret:PY_KEY}}"})["status_code"]


async def main():
    w = TaskWorker(sys.argv[1], data_dir=sys.argv[2])
    {"echo": echo_functions, "tasks": task_functions, "secrets": secret_functions}[sys.argv[3] if len(sys.argv) > 3 else "echo"](w)
    await w.start_server(port=0)
    print(w.port, flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
