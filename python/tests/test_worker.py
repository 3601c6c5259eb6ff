import concurrent.futures
import signal
import threading
import time

import taskworker
from taskworker import taskworker_pb2

from procs import start_worker, stop


# Two Python workers serve an idempotent function; one is killed with
# SIGKILL while calls run on it: no call fails, and every call answers with
# its own argument.
def test_a_killed_python_worker_loses_no_call(network, tmp_path):
    a, _ = start_worker("pyworker.py", "py_a", tmp_path / "py_a")
    b, _ = start_worker("pyworker.py", "py_b", tmp_path / "py_b")
    killed = threading.Event()
    served = {"before": set(), "after": set()}
    try:
        with taskworker.Client() as c:
            def calls(k, n):
                for i in range(n):
                    x = k * 1000 + i
                    resp = c.rpc.CallFunction(taskworker_pb2.FunctionCallRequest(function_name="echo_slow", args=f"[{x}]".encode()),
                                              timeout=60)
                    assert resp.result == str(x).encode()
                    served["after" if killed.is_set() else "before"].add(resp.worker_id)
                return n

            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                futs = [ex.submit(calls, k, 80) for k in range(4)]
                # Kill py_a once both workers have answered calls: with
                # four callers and two workers, calls are running on it then.
                deadline = time.time() + 60
                while served["before"] != {"py_a", "py_b"} and time.time() < deadline:
                    time.sleep(0.01)
                a.send_signal(signal.SIGKILL)
                a.wait()
                killed.set()
                assert sum(f.result() for f in futs) == 320
        assert served["before"] == {"py_a", "py_b"}, served
        # The first calls to finish after the kill may have been answered by
        # py_a just before it; the rest can only be py_b's.
        assert "py_b" in served["after"], served
    finally:
        stop(a, b)


# That only the pool may call a Python worker is tested from Go
# (internal/e2e, TestPythonWorkerAdmitsOnlyThePool): a client checking the
# worker's certificate by its URI, as the pool does, is not something grpcio
# can be.
