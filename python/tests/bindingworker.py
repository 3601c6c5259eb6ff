"""A Python worker serving the binding table's functions, each as PREFIX +
its name: python3 bindingworker.py ID DATA_DIR PREFIX. Prints its port once
registered."""

import asyncio
import sys

from taskworker import TaskWorker

from bindingfuncs import FUNCTIONS


async def main():
    w = TaskWorker(sys.argv[1], data_dir=sys.argv[2])
    for name, fn in FUNCTIONS.items():
        w.register_function(sys.argv[3] + name, fn)
    await w.start_server(port=0)
    print(w.port, flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
