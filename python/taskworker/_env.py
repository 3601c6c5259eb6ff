"""Where clients and workers find the pool, a token, the CA and the join
token: arguments, else TASKWORKER_POOL / TASKWORKER_TOKEN / TASKWORKER_CA /
TASKWORKER_JOIN_TOKEN_FILE, else the env file that `taskworker up` writes
in its directory (TASKWORKER_HOME, default ~/.taskworker), exactly as the Go
command line finds them."""

import os


def home_dir():
    d = os.environ.get("TASKWORKER_HOME")
    if d:
        return d
    return os.path.join(os.path.expanduser("~"), ".taskworker")


def read_env_file(path):
    vars = {}
    try:
        with open(path) as f:
            for line in f:
                k, sep, v = line.strip().partition("=")
                if sep and not k.startswith("#"):
                    vars[k] = v
    except OSError:
        pass
    return vars


def from_env(value, name):
    """value if given, else the environment variable name, else name in the
    env file of the running `taskworker up`."""
    if value:
        return value
    v = os.environ.get(name)
    if v:
        return v
    return read_env_file(os.path.join(home_dir(), "env")).get(name, "")
