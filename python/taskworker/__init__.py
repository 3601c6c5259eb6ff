"""TaskWorker for Python: a client of a TaskWorker network and a worker
that joins one, over the same gRPC API as the Go ones.

    from taskworker import Client, taskworker_pb2
    c = Client()                 # the pool, token and CA from the environment
    c.call("add", 1, 2)          # 3
    c.storage.Push(taskworker_pb2.PushRequest(file_data=b"...", filename="a.txt"))
"""

from . import binding
from .binding import Raw
from .client import AsyncClient, Client
from .errors import TaskWorkerError
from .worker import TaskInfo, TaskWorker, current_task
from .v1 import control_pb2, deploy_pb2, task_pb2, taskworker_pb2, taskworker_pb2_grpc

__all__ = ["AsyncClient", "Client", "Raw", "TaskInfo", "TaskWorker", "TaskWorkerError", "binding", "current_task", "control_pb2", "deploy_pb2", "task_pb2", "taskworker_pb2", "taskworker_pb2_grpc"]
