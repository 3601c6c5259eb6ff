"""A real network for the tests: `taskworker up` from a binary built from
this repository, in a directory of its own, its env file read as a user's
shell would."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def binary(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bin") / "taskworker")
    subprocess.run(["go", "build", "-o", out, "./cmd/taskworker"], cwd=ROOT, check=True)
    return out


@pytest.fixture(scope="session")
def network(binary):
    home = tempfile.mkdtemp(prefix="taskworker-py-")
    log = open(os.path.join(home, "up.log"), "w")
    p = subprocess.Popen([binary, "up", "--dir", home, "--listen", "127.0.0.1:0", "--workers", "3", "--worker-prefix", "go_"], stdout=log, stderr=subprocess.STDOUT)
    env = os.path.join(home, "env")
    deadline = time.time() + 120
    while not (os.path.exists(env) and "TASKWORKER_JOIN_TOKEN_FILE" in open(env).read()):
        if p.poll() is not None or time.time() > deadline:
            log.close()
            raise RuntimeError("taskworker up did not start:\n" + open(os.path.join(home, "up.log")).read())
        time.sleep(0.2)
    old = {k: os.environ.get(k) for k in ("TASKWORKER_HOME", "TASKWORKER_POOL", "TASKWORKER_TOKEN", "TASKWORKER_CA")}
    os.environ["TASKWORKER_HOME"] = home
    for k in ("TASKWORKER_POOL", "TASKWORKER_TOKEN", "TASKWORKER_CA"):
        os.environ.pop(k, None)
    yield {"home": home, "binary": binary}
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    log.close()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(home, ignore_errors=True)
