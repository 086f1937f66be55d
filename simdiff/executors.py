"""Run N independent jobs (specialists, decentralized experts) sequentially, on a local process pool, or on Ray.

One call, three backends, the same results::

    results = run_jobs(train_expert, [{"cluster": k, "seed": k} for k in range(8)], backend="local", workers=4)
    raise_on_failure(results)
    values = [r.value for r in results]          # in job order

* ``fn`` is a module-level callable (it is sent to workers by reference, so lambdas and closures are refused)
  and is called as ``fn(**job)``. Jobs and return values must be picklable (plain data, numpy arrays, small
  tensors; write large artifacts to disk and return their paths).
* Every job runs with ``torch.set_num_threads(threads_per_job)`` in every backend, so a deterministic job
  returns bit-identical results whether it ran in this process, in a pool worker or on Ray.
* The local pool uses the ``spawn`` start method (forking a process that has initialised torch is unsafe).
* A failing job is retried ``retries`` times, then reported as ``status="failed"`` with its traceback text and
  attempt count -- never dropped. :func:`raise_on_failure` turns failures into one exception.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from simdiff.utils.progress import progress

Backend = Literal["sequential", "local", "ray"]
_BACKENDS = ("sequential", "local", "ray")


@dataclass(frozen=True)
class JobResult:
    index: int                        #: position of the job in the input list
    job: dict                         #: the keyword arguments it was called with
    status: Literal["ok", "failed"]
    value: Any = None                 #: fn's return value when ok
    error: str | None = None          #: traceback text of the last failed attempt
    attempts: int = 0                 #: attempts made (1 + retries used)
    wall_time: float = 0.0            #: seconds of the last attempt

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class JobsFailedError(RuntimeError):
    """Some jobs failed after their retries; ``.results`` holds every result."""

    def __init__(self, message: str, results: list[JobResult]) -> None:
        super().__init__(message)
        self.results = results


def raise_on_failure(results: list[JobResult]) -> list[JobResult]:
    """Return ``results`` if all succeeded, else raise :class:`JobsFailedError` listing the failed jobs."""
    failed = [r for r in results if not r.ok]
    if failed:
        lines = [f"job {r.index} {r.job!r} failed after {r.attempts} attempt(s): "
                 f"{(r.error or '').strip().splitlines()[-1:] or ['?']}" for r in failed]
        raise JobsFailedError(f"{len(failed)} of {len(results)} jobs failed:\n  " + "\n  ".join(lines), results)
    return results


def call_job(fn: Callable[..., Any], job: dict, threads: int) -> tuple[str, Any, float]:
    """Run one attempt: ``("ok", value, seconds)`` or ``("failed", traceback_text, seconds)``. Never raises
    (so a worker never has to pickle an arbitrary exception)."""
    import torch

    prev = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        torch.set_num_threads(threads)
        return "ok", fn(**job), time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - every failure is reported in the JobResult
        return "failed", traceback.format_exc(), time.perf_counter() - t0
    finally:
        torch.set_num_threads(prev)


def _validate(fn: Callable, jobs: list[dict], backend: str, workers: int, threads: int, retries: int) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {_BACKENDS}, received {backend!r}")
    for name, v, lo in (("workers", workers, 1), ("threads_per_job", threads, 1), ("retries", retries, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, received {v!r}")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, received {fn!r}")
    bad = [i for i, j in enumerate(jobs) if not isinstance(j, dict)]
    if bad:
        raise TypeError(f"jobs: expected a list of dicts (keyword arguments), entries {bad[:5]} are not")
    if backend != "sequential":
        try:
            pickle.dumps(fn)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(f"fn: expected a module-level function (sent to workers by reference), "
                            f"received {fn!r} ({exc})") from exc


def run_jobs(fn: Callable[..., Any], jobs: list[dict], *, backend: Backend = "local", workers: int = 2,
             threads_per_job: int = 1, retries: int = 1, ray_address: str | None = None,
             desc: str = "jobs") -> list[JobResult]:
    """Run ``fn(**job)`` for every job; return one :class:`JobResult` per job, in input order.

    ``workers`` jobs run at once (``local``: pool processes; ``ray``: a local Ray instance gets
    ``workers * threads_per_job`` CPUs and each task reserves ``threads_per_job``; with ``ray_address`` an
    existing cluster is used). A failed attempt is resubmitted at once, up to ``retries`` times.
    """
    jobs = list(jobs)
    _validate(fn, jobs, backend, workers, threads_per_job, retries)
    results: dict[int, JobResult] = {}
    attempts = dict.fromkeys(range(len(jobs)), 0)
    runner_cls = {"sequential": _SequentialRunner, "local": _LocalRunner, "ray": _RayRunner}[backend]
    bar = progress(total=len(jobs), desc=desc)
    runner = runner_cls(fn, jobs, workers=workers, threads=threads_per_job, address=ray_address) if jobs else None
    try:
        for i in range(len(jobs)):
            runner.submit(i)
        while len(results) < len(jobs):
            i, (status, payload, secs) = runner.next_done()
            attempts[i] += 1
            if status == "failed" and attempts[i] <= retries:
                runner.submit(i)
                continue
            results[i] = JobResult(i, jobs[i], status, payload if status == "ok" else None,
                                   payload if status == "failed" else None, attempts[i], secs)
            bar.update(1)
    finally:
        bar.close()
        if runner is not None:
            runner.close()
    return [results[i] for i in range(len(jobs))]


# --------------------------------------------------------------------------------------------- backends
# A runner accepts job indices (submit) and hands back (index, call_job outcome) as attempts finish.
class _SequentialRunner:
    def __init__(self, fn, jobs, *, workers, threads, address) -> None:
        self.fn, self.jobs, self.threads = fn, jobs, threads
        self.queue: list[int] = []

    def submit(self, i: int) -> None:
        self.queue.append(i)

    def next_done(self) -> tuple[int, tuple]:
        i = self.queue.pop(0)
        return i, call_job(self.fn, self.jobs[i], self.threads)

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    # Runs in a fresh spawned worker, usually before numpy/torch are imported there: cap the native thread
    # pools so `workers` processes do not oversubscribe the cores (call_job also sets torch's count).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _exit_with_parent(os.getppid())


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Stop this worker once the process that started it is gone (killed by SIGTERM or SIGKILL, which skip the
    pool's shutdown). An orphaned worker would go on training into the same output directory as the job the
    resumed run starts there."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _LocalRunner:
    def __init__(self, fn, jobs, *, workers, threads, address) -> None:
        self.fn, self.jobs, self.threads = fn, jobs, threads
        self.workers = min(workers, len(jobs))
        self.futures: dict = {}
        self.pool = None

    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))

    def submit(self, i: int) -> None:
        from concurrent.futures.process import BrokenProcessPool

        if self.pool is None:
            self.pool = self._new_pool()
        try:
            fut = self.pool.submit(call_job, self.fn, self.jobs[i], self.threads)
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            fut = self.pool.submit(call_job, self.fn, self.jobs[i], self.threads)
        self.futures[fut] = i

    def next_done(self) -> tuple[int, tuple]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        i = self.futures.pop(fut)
        try:
            return i, fut.result()
        except BrokenProcessPool as exc:
            # A worker died (segfault, OOM kill, os._exit): every job in flight counts a failed attempt.
            return i, ("failed", f"worker process died: {exc!r}", 0.0)
        except Exception:  # noqa: BLE001 - e.g. an unpicklable return value
            return i, ("failed", traceback.format_exc(), 0.0)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the 'ray' backend needs Ray: pip install 'simdiff[ray]'") from exc
    return ray


class _RayRunner:
    """Ray tasks with ``max_retries=0``: retries go through the same loop as the other backends."""

    def __init__(self, fn, jobs, *, workers, threads, address) -> None:
        self.ray = ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                      "log_to_driver": False}
            if address is None:
                # A local instance: its workers get this process's import path, so any fn the local pool can
                # run (e.g. one defined in a script or test module) is importable there too.
                kwargs["num_cpus"] = workers * threads
                kwargs["runtime_env"] = {"env_vars": {
                    "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": str(threads)}}
            ray.init(address=address, **kwargs)
        self.fn, self.jobs, self.threads = fn, jobs, threads
        self.remote = ray.remote(num_cpus=threads, max_retries=0)(call_job)
        self.refs: dict = {}

    def submit(self, i: int) -> None:
        self.refs[self.remote.remote(self.fn, self.jobs[i], self.threads)] = i

    def next_done(self) -> tuple[int, tuple]:
        (ref,), _ = self.ray.wait(list(self.refs), num_returns=1)
        i = self.refs.pop(ref)
        try:
            return i, self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - worker crash, unpicklable value, cancelled task
            return i, ("failed", f"ray task error: {exc!r}", 0.0)

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)


__all__ = ["JobResult", "JobsFailedError", "run_jobs", "raise_on_failure", "call_job"]
