import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

import taskworker
from taskworker import taskworker_pb2, taskworker_pb2_grpc

HERE = os.path.dirname(__file__)


def start_worker(worker_id, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "pyworker.py"), worker_id, str(tmp_path / worker_id)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = p.stdout.readline()
    if not line.strip().isdigit():
        p.kill()
        raise RuntimeError(f"worker {worker_id} did not start: {line}{p.stderr.read()}")
    return p, int(line)


# Two Python workers serve an idempotent function; one is killed with
# SIGKILL while calls run: no call fails.
def test_a_killed_python_worker_loses_no_call(network, tmp_path):
    a, _ = start_worker("py_a", tmp_path)
    b, _ = start_worker("py_b", tmp_path)
    try:
        with taskworker.Client() as c:
            def calls(n):
                for i in range(n):
                    assert c.call("echo_slow", i, timeout=30) == i
                return n

            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                futs = [ex.submit(calls, 60) for _ in range(4)]
                time.sleep(0.5)
                a.send_signal(signal.SIGKILL)
                assert sum(f.result() for f in futs) == 240
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


# That only the pool may call a Python worker is tested from Go
# (internal/e2e, TestPythonWorkerAdmitsOnlyThePool): a client checking the
# worker's certificate by its URI, as the pool does, is not something grpcio
# can be.
