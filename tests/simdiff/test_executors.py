from __future__ import annotations

import os
import pickle

import pytest
import torch

from simdiff.executors import JobsFailedError, raise_on_failure, run_jobs


# Jobs are module-level so workers can import them by reference.
def train_tiny(seed: int, steps: int = 10) -> list[float]:
    """A deterministic little training run: its result depends on every floating-point operation."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(64, 8, generator=g)
        loss = (net(x) - x.sum(1, keepdim=True).sin()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().double().sum().item() for p in net.parameters()] + [torch.get_num_threads()]


def maybe_fail(x: int, marker: str | None = None) -> int:
    if x < 0:
        raise RuntimeError(f"bad input {x}")
    if marker is not None and not os.path.exists(marker):  # fails on its first attempt only
        open(marker, "w").close()
        raise OSError("transient failure")
    return x * x


def mixed(kind: str, **kw):
    """One entry point for several kinds of job, so one pool start covers them all."""
    return train_tiny(**kw) if kind == "train" else maybe_fail(**kw)


def die(code: int) -> None:
    os._exit(code)


def _jobs(tmp_path, tag: str) -> list[dict]:
    return ([{"kind": "train", "seed": s} for s in range(4)]
            + [{"kind": "fail", "x": -1}, {"kind": "fail", "x": 3, "marker": str(tmp_path / tag)}])


def test_local_pool_equals_sequential_and_reports_failures(tmp_path):
    seq = run_jobs(mixed, _jobs(tmp_path, "seq"), backend="sequential", retries=2)
    pool = run_jobs(mixed, _jobs(tmp_path, "pool"), backend="local", workers=2, threads_per_job=1, retries=2)
    for res in (seq, pool):
        assert [r.index for r in res] == list(range(6))
        assert [r.status for r in res] == ["ok"] * 4 + ["failed", "ok"]
        assert [r.attempts for r in res] == [1] * 4 + [3, 2]                   # 1 + retries; flaky job: 2
        assert "RuntimeError: bad input -1" in res[4].error and res[4].value is None and res[5].value == 9
    # Deterministic jobs give bit-identical results in a pool worker and in this process.
    assert [r.value for r in pool[:4]] == [r.value for r in seq[:4]]
    assert seq[0].value[-1] == 1                                               # jobs ran with 1 thread
    assert len({tuple(r.value) for r in seq[:4]}) == 4                         # and the seeds matter
    with pytest.raises(JobsFailedError, match=r"1 of 6 jobs failed:\n  job 4 \{'kind': 'fail', 'x': -1\} "
                                              r"failed after 3 attempt\(s\): \['RuntimeError: bad input -1'\]") as info:
        raise_on_failure(pool)
    assert info.value.results == pool
    assert raise_on_failure(pool[:4]) == pool[:4]


def test_a_dying_worker_is_reported():
    (res,) = run_jobs(die, [{"code": 3}], backend="local", retries=0)
    assert res.status == "failed" and res.attempts == 1 and "worker process died" in res.error


def _alive(pid: int) -> bool:
    """Running (an exited worker no one has reaped yet, a zombie, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust the signal


def sleep_and_report(pid_file: str) -> None:
    open(pid_file, "w").write(str(os.getpid()))
    import time

    time.sleep(120)


def test_workers_stop_when_the_run_is_killed(tmp_path):
    """A killed parent (SIGKILL: no pool shutdown) must not leave its workers running jobs."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    script = ("from simdiff.executors import run_jobs; from test_executors import sleep_and_report; "
              f"run_jobs(sleep_and_report, [{{'pid_file': {str(pid_file)!r}}}], backend='local', retries=0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(worker, 0)                                   # the worker is running the job
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent by 10 s")
    finally:
        parent.kill()


def test_bad_arguments_fail_before_running():
    with pytest.raises(TypeError, match="fn: expected a module-level function"):
        run_jobs(lambda x: x, [{"x": 1}], backend="local")
    with pytest.raises(ValueError, match="backend: expected one of .* received 'slurm'"):
        run_jobs(maybe_fail, [{"x": 1}], backend="slurm")
    with pytest.raises(ValueError, match="workers: expected an int >= 1, received 0"):
        run_jobs(maybe_fail, [{"x": 1}], workers=0)
    with pytest.raises(TypeError, match=r"jobs: expected a list of dicts .* entries \[1\]"):
        run_jobs(maybe_fail, [{"x": 1}, 5], backend="sequential")
    assert run_jobs(maybe_fail, [], backend="local") == []
    pickle.dumps(train_tiny)  # sanity: the test jobs themselves are picklable by reference


@pytest.mark.ray
def test_ray_backend_matches_sequential():
    ray = pytest.importorskip("ray")
    jobs = [{"seed": s} for s in range(3)]
    try:
        res = run_jobs(train_tiny, jobs, backend="ray", workers=2, threads_per_job=1)
        bad = run_jobs(maybe_fail, [{"x": 4}, {"x": -2}], backend="ray", retries=1)
    finally:
        ray.shutdown()
    seq = run_jobs(train_tiny, jobs, backend="sequential", threads_per_job=1)
    assert all(r.ok for r in res) and [r.value for r in res] == [r.value for r in seq]
    assert bad[0].value == 16 and bad[1].status == "failed" and bad[1].attempts == 2
    assert "bad input -2" in bad[1].error
