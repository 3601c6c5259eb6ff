# The design document's add, served by a Python worker as py_add, so that it
# can be measured beside a Go worker's add through the same pool
# (docs/BENCHMARKS.md, "A Python worker's calls"):
#
#   taskworker up --workers 1 &
#   PYTHONPATH=python python3 examples/python/add_worker.py &
#   taskworker bench call --function add --concurrency 1 --no-direct
#   taskworker bench call --function py_add --concurrency 1 --no-direct
import asyncio
from taskworker import TaskWorker

worker = TaskWorker("py_add_worker")


@worker.function("py_add")
def add_numbers(a, b):
    return a + b


async def main():
    await worker.start_server(port=0)
    await asyncio.Event().wait()  # serve until interrupted

if __name__ == "__main__":
    asyncio.run(main())
