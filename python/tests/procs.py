"""Python worker processes for the tests."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def start_worker(script, worker_id, data_dir, *args, env=None):
    """Start python3 script worker_id data_dir args... (with env added to
    this process's environment) and wait for it to print its port, which it
    does once registered with the pool."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join([os.path.join(HERE, ".."), HERE]))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, script), worker_id, str(data_dir), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = p.stdout.readline()
    if not line.strip().isdigit():
        p.kill()
        raise RuntimeError(f"worker {worker_id} did not start: {line}{p.stderr.read()}")
    return p, int(line)


def stop(*procs):
    for p in procs:
        p.kill()
        p.wait()
        for f in (p.stdout, p.stderr):
            if f:
                f.close()
