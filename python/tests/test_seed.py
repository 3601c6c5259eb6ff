"""The design document's Python examples, as written: the Basic Setup
worker runs unchanged against the Go pool (its address, join token and CA
come from the environment), and its functions are called from the Go command
line and from the Python client."""

import asyncio
import os
import subprocess
import threading

import taskworker


def run_seed_basic_setup(ready, stop):
    # --- the seed's Basic Setup, verbatim from here ---
    import asyncio
    from taskworker import TaskWorker

    # Create TaskWorker instance
    worker = TaskWorker("worker_001")

    # Register functions
    @worker.function("hello")
    def hello_world():
        return "Hello from HiveMind!"

    @worker.function("add")
    def add_numbers(a, b):
        return a + b

    async def main():
        # Start server
        await worker.start_server(port=50052)
    # --- to here; the test then keeps it serving until told to stop ---
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await worker.stop_server()

    asyncio.run(main())


def test_seed_basic_setup_worker_serves_go_and_python_callers(network):
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=run_seed_basic_setup, args=(ready, stop), daemon=True)
    t.start()
    assert ready.wait(60), "the seed's worker did not start"
    try:
        # The pool has Go workers serving hello and add too; ask until the
        # Python worker has answered from both callers.
        seen_go = seen_py = False
        for _ in range(200):
            out = subprocess.run([network["binary"], "call", "add", "1", "2"], capture_output=True, text=True)
            assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr
            with taskworker.Client() as c:
                resp = c.rpc.CallFunction(taskworker.taskworker_pb2.FunctionCallRequest(function_name="add", args=b"[40, 2]"))
                assert resp.result == b"42"
                seen_py = seen_py or resp.worker_id == "worker_001"
                assert c.call("hello") == "Hello from HiveMind!"
            ws = subprocess.run([network["binary"], "call", "--json", "add", "1", "1"], capture_output=True, text=True)
            seen_go = seen_go or ws.returncode == 0
            if seen_py and seen_go:
                break
        assert seen_py, "no call reached the Python worker"
        workers = subprocess.run([network["binary"], "workers"], capture_output=True, text=True).stdout
        assert "worker_001" in workers
    finally:
        stop.set()
        t.join(30)
