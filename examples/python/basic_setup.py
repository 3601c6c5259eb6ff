# The design document's Basic Setup, as written: a Python worker serving
# hello and add. Run it beside `taskworker up` (it finds the pool, the join
# token and the CA in the env file `up` writes), then from another shell:
#
#   PYTHONPATH=python python3 examples/python/basic_setup.py
#   taskworker call add 1 2
#
# These are the operator's own functions, run natively. For untrusted code,
# the same add as a Starlark script (examples/starlark/orders.star) is
# deployed instead: taskworker deploy add examples/starlark/orders.star
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
    await asyncio.Event().wait()  # serve until interrupted

if __name__ == "__main__":
    asyncio.run(main())
