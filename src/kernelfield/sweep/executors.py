"""Executors of a sweep's points: a local process pool, the workers of a Dask cluster, or this
process. Each yields ``(job, record)`` as points finish (records of :func:`.computations.compute_point`)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _futures_completed
from pathlib import Path

import jax

from .computations import compute_point, now

__all__ = ["default_workers", "run_dask", "run_here", "run_local"]


def _init_worker(parent: int, cache_dir: str) -> None:
    """Local worker set-up: share compiled XLA programs through ``cache_dir`` (JAX's persistent
    compilation cache, unless ``JAX_COMPILATION_CACHE_DIR`` is set), ignore Ctrl-C (the parent
    stops us) and exit when the parent is gone."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", cache_dir)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # the sweep process is gone (e.g. killed): its results can no longer be stored

    threading.Thread(target=watch, daemon=True).start()


def _result(future, job) -> dict:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001  e.g. a worker process died (out of memory) or was lost
        return {"key": job["key"], "status": "failed", "error": f"{type(e).__name__}: {e} (worker failure)",
                "traceback": traceback.format_exc(), "started": now(), "finished": now(), "seconds": 0.0,
                "timings": {}, "warnings": [], "host": "", "pid": 0}


def run_local(jobs: list[dict], workers: int, cache_dir: Path):
    """Compute ``jobs`` in a local pool of ``workers`` spawned processes sharing compiled programs in ``cache_dir``."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), str(cache_dir)))
    finished = False
    try:
        futures = {pool.submit(compute_point, job): job for job in jobs}
        for future in _futures_completed(futures):
            yield futures[future], _result(future, futures[future])
        finished = True
    finally:
        if not finished:  # interrupted: stop the running points now (their results would be lost anyway)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def run_dask(jobs: list[dict], address: str, run_id: str):
    """Compute ``jobs`` on the workers of the Dask distributed scheduler at ``address``."""
    from distributed import Client, as_completed  # optional dependency, needed only with a scheduler

    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ValueError(f"scheduler: cannot connect to the Dask scheduler at {address!r}: {e}") from None
    futures, finished = {}, False
    try:
        for job in jobs:
            futures[client.submit(compute_point, job, key=f"kernelfield-{job['key']}-{run_id}", pure=False)] = job
        for future in as_completed(list(futures), loop=client.loop):
            yield futures[future], _result(future, futures[future])
        finished = True
    finally:
        if not finished:
            client.cancel(list(futures))
        client.close()


def run_here(jobs: list[dict]):
    """Compute ``jobs`` one after another in this process."""
    for job in jobs:
        yield job, compute_point(job)



def default_workers() -> int:
    """CPUs available to this process (the default size of the local pool)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

