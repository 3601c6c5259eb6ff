"""A Python worker that outlives its first certificate: it renews it at two
thirds of its life, and serves the renewed one to the pool, so a pool that
connects to it afresh after the first one expired still reaches it."""

import os
import re
import subprocess
import time

import taskworker

from procs import start_worker, stop

TTL = 12  # seconds: the pool's shortest is 10


def start_pool(binary, data_dir, listen, log):
    """Start a pool logging to the fresh file log; return it and its address
    once it is ready."""
    p = subprocess.Popen([binary, "pool", "--listen", listen, "--data-dir", data_dir, "--worker-cert-ttl", f"{TTL}s",
                          "--lease-ttl", "3s"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        m = re.search(r'msg="pool ready" address=(\S+)', open(log.name).read())
        if m:
            return p, m.group(1)
        time.sleep(0.2)
    p.kill()
    raise RuntimeError("the pool did not start:\n" + open(log.name).read())


def call_until_it_answers(c, deadline):
    while True:
        try:
            return c.call("echo_slow", 7, timeout=10)
        except taskworker.TaskWorkerError:
            if time.time() > deadline:
                raise
        time.sleep(0.3)


def test_a_renewed_certificate_is_the_one_served(binary, tmp_path, monkeypatch):
    data = str(tmp_path / "pool")
    log = open(tmp_path / "pool.log", "w")
    pool, addr = start_pool(binary, data, "127.0.0.1:0", log)
    worker = None
    try:
        monkeypatch.setenv("TASKWORKER_POOL", addr)
        monkeypatch.setenv("TASKWORKER_CA", os.path.join(data, "ca.crt"))
        monkeypatch.setenv("TASKWORKER_JOIN_TOKEN_FILE", os.path.join(data, "join.token"))
        monkeypatch.setenv("TASKWORKER_TOKEN", open(os.path.join(data, "admin.token")).read().strip())
        started = time.time()
        worker, _ = start_worker("pyworker.py", "py_renew", tmp_path / "worker")
        with taskworker.Client() as c:
            assert call_until_it_answers(c, time.time() + 60) == 7
        # Past the first certificate's life: the worker has renewed it (at
        # two thirds) and the first one has expired.
        time.sleep(max(started + TTL + 2 - time.time(), 0))
        assert os.path.getmtime(tmp_path / "worker" / "identity" / "worker.crt") > started + TTL * 2 / 3 - 1, "not renewed"
        # A new pool process connects to the worker afresh.
        pool.terminate()
        pool.wait(30)
        log.close()
        log = open(tmp_path / "pool2.log", "w")
        pool, _ = start_pool(binary, data, addr, log)
        with taskworker.Client() as c:
            assert call_until_it_answers(c, time.time() + 60) == 7
    finally:
        if worker:
            stop(worker)
        pool.kill()
        pool.wait()
        log.close()
