"""Fixtures of the training tests: a tiny run directory, its shards, and latent shards (see training_testkit)."""

from __future__ import annotations

import pytest
import torch
from training_testkit import TINY_BUCKETS, TINY_VAE, make_run


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and a shared 2-core machine stays responsive."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def tiny_shards(tiny_run):
    from workflows.shard import ShardSettings, write_shards

    counts = write_shards(tiny_run.root, ShardSettings(buckets=TINY_BUCKETS, max_frame_stride=1))
    return tiny_run.shards, counts


@pytest.fixture(scope="session")
def tiny_latents(tiny_shards, tmp_path_factory):
    """A 2-step autoencoder run and the latent shards it (and the real MiniLM text encoder) made."""
    from training.encode import encode_shards
    from training.train import TrainConfig, train

    shards, _ = tiny_shards
    vae_run = tmp_path_factory.mktemp("vae")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train(TrainConfig.from_dict({**TINY_VAE, "max_steps": 2}), shards, vae_run, quiet=True)
    result = encode_shards(shards, vae_run, batch_size=4, device="cpu")
    torch.set_num_threads(before)
    return shards, vae_run, result
