import asyncio
import os

import grpc
import pytest

import taskworker
from taskworker import taskworker_pb2


def test_call_native_functions(network):
    with taskworker.Client() as c:
        assert c.call("add", 1, 2) == 3
        assert c.call("hello") == "Hello from HiveMind!"
        assert c.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}


def test_errors_carry_the_grpc_code(network):
    with taskworker.Client() as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("nosuch")
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        assert "nosuch" in e.value.details
    with taskworker.Client(token="tw_" + "x" * 43) as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("add", 1, 2)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_client_that_trusts_another_ca_is_refused(network, tmp_path):
    import subprocess
    subprocess.run([network["binary"], "init", "--dir", str(tmp_path / "other")], check=True, capture_output=True)
    with taskworker.Client(ca=str(tmp_path / "other" / "ca.crt")) as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("add", 1, 2, timeout=10)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_settings_come_from_the_env_file_and_arguments_win(network):
    env = taskworker._env.read_env_file(os.path.join(network["home"], "env"))
    with taskworker.Client(pool_address=env["TASKWORKER_POOL"], token=env["TASKWORKER_TOKEN"], ca=env["TASKWORKER_CA"]) as c:
        assert c.call("add", 2, 2) == 4
    with pytest.raises(ValueError, match="not host:port"):
        taskworker.Client(pool_address="nowhere")


# The seed's File Operation Examples, as written, with a client's storage.
def test_seed_file_operations_round_trip(network, tmp_path):
    os.chdir(tmp_path)
    content = os.urandom(300_000)
    with open("data.txt", "wb") as f:
        f.write(content)

    class Holder:
        storage = None

    worker = Holder()

    # Upload file
    async def upload_file():
        with open("data.txt", "rb") as f:
            content = f.read()

        response = await worker.storage.Push(
            taskworker_pb2.PushRequest(
                file_data=content,
                filename="data.txt",
                user_id="user123"
            )
        )
        return response.file_id

    # Download file
    async def download_file(file_id):
        response = await worker.storage.Get(
            taskworker_pb2.GetRequest(
                file_id=file_id,
                user_id="user123"
            )
        )
        return response.file_data

    async def main():
        async with taskworker.AsyncClient() as c:
            worker.storage = c.storage
            file_id = await upload_file()
            return await download_file(file_id)

    assert asyncio.run(main()) == content


def test_resolve_through_the_pool(network):
    with taskworker.Client() as c:
        assert c.resolve("add.fn.taskworker.internal") == ["127.0.0.1"]


def test_async_resolve_through_the_pool(network):
    async def main():
        async with taskworker.AsyncClient() as c:
            assert await c.resolve("add.fn.taskworker.internal") == ["127.0.0.1"]
            with pytest.raises(taskworker.TaskWorkerError) as e:
                await c.resolve("nosuch.fn.taskworker.internal")
            return e.value.code

    assert asyncio.run(main()) == grpc.StatusCode.NOT_FOUND
