"""Rectified flow on a toy 2-D distribution: the loss trains a velocity field whose samples land on the data."""

import torch

from training.flow import flow_loss, sample, sample_timesteps, sampling_schedule, shift_for_size, shift_time

MODES = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])


def toy_data(n, gen):
    which = torch.randint(0, 2, (n,), generator=gen)
    return MODES[which] + 0.15 * torch.randn(n, 2, generator=gen)


class Velocity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                       torch.nn.SiLU(), torch.nn.Linear(128, 2))

    def forward(self, x, t, label=None):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def test_flow_matching_learns_a_two_mode_distribution():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Velocity()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(1200):
        x0 = toy_data(256, gen)
        loss = flow_loss(model, x0, sample_timesteps(256, gen), torch.randn(256, 2, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.6 * first
    noise = torch.randn(2000, 2, generator=gen)
    for method in ("euler", "heun"):
        x = sample(model, noise, cond={}, steps=24, method=method)
        nearest = torch.cdist(x, MODES).argmin(dim=1)
        distance = (x - MODES[nearest]).norm(dim=1)
        assert distance.median() < 0.35, method  # samples land on the modes, not between them
        share = nearest.float().mean().item()
        assert 0.35 < share < 0.65, (method, share)  # both modes, in about equal measure


def test_guidance_extrapolates_from_unconditional_to_conditional():
    calls = []

    def model(x, t, label):
        calls.append(x.shape[0])
        return label.float().expand_as(x)

    x = torch.zeros(3, 2)
    out = sample(model, x, cond={"label": torch.ones(3, 1)}, uncond={"label": torch.zeros(3, 1)}, steps=1, cfg_scale=3.0)
    torch.testing.assert_close(out, torch.full((3, 2), -3.0))  # x + (0 - 1) * (0 + 3 * (1 - 0))
    assert calls == [6]  # conditional and unconditional in one batched call


def test_timestep_sampling_and_shift():
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(10000, gen)
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.02
    shifted = sample_timesteps(10000, torch.Generator().manual_seed(0), shift=3.0)
    assert shifted.mean() > t.mean() + 0.1  # more tokens -> noisier timesteps
    assert shift_for_size(64, 256) == 1.0 and shift_for_size(1024, 256) == 2.0
    assert torch.equal(shift_time(torch.tensor([0.0, 1.0]), 3.0), torch.tensor([0.0, 1.0]))
    schedule = sampling_schedule(10, 2.0)
    assert schedule[0] == 1 and schedule[-1] == 0 and (schedule.diff() < 0).all()
