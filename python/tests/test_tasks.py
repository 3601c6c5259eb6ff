"""Tasks from the Python client, sync and async, against a real network:
submitted, read, waited for, failed and cancelled, on Go workers and on a
Python worker, which hands a task's id and attempt to its function."""

import asyncio
import time

import grpc
import pytest

import taskworker
from taskworker import task_pb2

from procs import start_worker, stop


@pytest.fixture(scope="module")
def py_tasks(network, tmp_path_factory):
    p, _ = start_worker("pyworker.py", "py_tasks", tmp_path_factory.mktemp("tasks"), "tasks")
    try:
        with taskworker.Client() as c:
            deadline = time.time() + 60
            while True:
                try:
                    c.call("py_cancelled")
                    break
                except taskworker.TaskWorkerError as e:
                    if e.code != grpc.StatusCode.NOT_FOUND or time.time() > deadline:
                        raise
                    time.sleep(0.2)
        yield p
    finally:
        stop(p)


def wait_state(get, task_id, state):
    deadline = time.time() + 60
    while (t := get(task_id)).state != state:
        assert time.time() < deadline, f"task {task_id} is {task_pb2.TaskState.Name(t.state)}, want {task_pb2.TaskState.Name(state)}"
        time.sleep(0.05)
    return t


def test_submit_wait_and_read_a_task(network):
    with taskworker.Client() as c:
        tid = c.submit("add", 1, 2)
        assert c.wait(tid, timeout=60) == 3
        t = c.task(tid)
        assert t.state == task_pb2.TASK_STATE_SUCCEEDED and t.function_name == "add" and t.result == b"3"
        assert len(t.attempts) == 1 and t.attempts[0].worker_id.startswith("go_")
        # The same idempotency key gives the same task.
        first = c.submit("echo", "once", idempotency_key="py-key-1")
        assert c.submit("echo", "twice", idempotency_key="py-key-1") == first
        assert c.wait(first, timeout=60) == "once"


def test_a_python_worker_runs_tasks_and_sees_their_id(py_tasks):
    with taskworker.Client() as c:
        tid = c.submit("py_task_info")
        assert c.wait(tid, timeout=60) == {"id": tid, "attempt": 1}
        assert c.task(tid).attempts[0].worker_id == "py_tasks"
        # A plain call is not a task.
        assert c.call("py_task_info") is None


def test_a_failed_task_raises_its_code_and_error(py_tasks):
    with taskworker.Client() as c:
        tid = c.submit("py_fail", "out of cheese", max_attempts=2, retry_errors=True)
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.wait(tid, timeout=120)
        assert e.value.code == grpc.StatusCode.UNKNOWN
        assert "out of cheese" in e.value.details
        t = c.task(tid)
        assert t.state == task_pb2.TASK_STATE_FAILED and len(t.attempts) == 2
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.task("no-such-task")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.task("0" * 24)
        assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_cancel_a_running_task_reaches_the_python_worker(py_tasks):
    with taskworker.Client() as c:
        before = c.call("py_cancelled")
        tid = c.submit("py_sleep", 120)
        wait_state(c.task, tid, task_pb2.TASK_STATE_RUNNING)
        c.cancel(tid)
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.wait(tid, timeout=60)
        assert e.value.code == grpc.StatusCode.CANCELLED
        assert c.task(tid).state == task_pb2.TASK_STATE_CANCELLED
        # The function itself was cancelled, not left running.
        deadline = time.time() + 30
        while c.call("py_cancelled") == before:
            assert time.time() < deadline, "the worker's function was not cancelled"
            time.sleep(0.1)


def test_async_client_tasks(py_tasks):
    async def main():
        async with taskworker.AsyncClient() as c:
            tid = await c.submit("add", 20, 22)
            assert await c.wait(tid, timeout=60) == 42
            assert (await c.task(tid)).state == task_pb2.TASK_STATE_SUCCEEDED
            slow = await c.submit("py_sleep", 120, task_timeout=300)
            assert (await c.task(slow)).timeout_ms == 300_000
            await c.cancel(slow)
            with pytest.raises(taskworker.TaskWorkerError) as e:
                await c.wait(slow, timeout=60)
            assert e.value.code == grpc.StatusCode.CANCELLED

    asyncio.run(main())
