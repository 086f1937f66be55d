"""A tiny training problem shared by the resume tests; run as a script it trains in a child process.

``python train_resume_worker.py OUT_DIR [SLEEP_SECONDS]`` trains into OUT_DIR, printing ``step N`` after each
logged step, sleeping a little per step so the parent can kill it mid-run.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from simdiff.processes import gaussian as G
from simdiff.training import TrainConfig, train

SCHED = G.make_schedule("cosine", 50)
CFG = TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=5, log_every=5, ckpt_every=10, seed=7)


class Net(nn.Module):
    """A denoiser with dropout, so module randomness must be reproducible too."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Dropout(0.2), nn.Linear(32, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].float() / SCHED.num_steps], dim=1))


def build(sleep: float = 0.0):
    torch.manual_seed(0)
    model = Net()

    def batch_fn(step: int, g: torch.Generator):
        if sleep:
            time.sleep(sleep)
        return torch.randn(CFG.batch_size, 2, generator=g) * 0.3 + torch.tensor([1.0, -1.0])

    def loss_fn(net, x0, g):
        t = torch.randint(0, SCHED.num_steps, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        return G.loss(net(G.corrupt(x0, t, noise, SCHED), t), x0, noise, t, SCHED, "epsilon")

    return model, loss_fn, batch_fn


def run(out_dir, sleep: float = 0.0, **kw):
    model, loss_fn, batch_fn = build(sleep)
    return model, train(model, loss_fn, batch_fn, CFG, out_dir, **kw)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0,
        on_log=lambda rec: print(f"step {rec['step']}", flush=True))
