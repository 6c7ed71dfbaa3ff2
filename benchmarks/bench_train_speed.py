"""Training speed: DiT tokens/s and MFU, and whether the data loader keeps up with the trainer.

    .venv/bin/python benchmarks/bench_train_speed.py                 # GPU: DiT-B in bf16; CPU: a small DiT
    .venv/bin/python benchmarks/bench_train_speed.py --model DiT-S --latent 5x16x16 --batch 8 --steps 10

1. Model: forward + backward + AdamW steps of a DiT on random latents and text states, timed after
   warm-up; tokens/s, and MFU = achieved FLOPs / peak FLOPs (peak from --peak-tflops, or a table of
   known GPUs in bf16; on a CPU only when --peak-tflops is given).
2. Data: pixel and latent batches per second through `make_loader` (0 and 1 worker processes) over
   shards written from generated clips, against the samples per second the trainer consumes (the
   DiT step above and an autoencoder step) — a ratio above 1 means the loader keeps up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def peak_tflops(device, given: float | None) -> float | None:
    if given:
        return given
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def time_steps(step, steps: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def bench_dit(args, device):
    import torch

    from training.dit import flops_per_token
    from training.flow import flow_loss
    from training.train import build_model

    c, (t, h, w) = 4, (int(v) for v in args.latent.split("x"))
    model = build_model("dit", args.model, {"in_channels": c, "text_dim": 384, "grad_checkpoint": args.checkpointing}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x0 = torch.randn(args.batch, c, t, h, w, device=device)
    text, mask = torch.randn(args.batch, args.text_len, 384, device=device), torch.ones(args.batch, args.text_len, dtype=torch.bool, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    fn = torch.compile(model) if args.compile else model

    def step():
        with autocast:
            loss = flow_loss(fn, x0, torch.rand(args.batch, device=device), torch.randn_like(x0), text=text, mask=mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = time_steps(step, args.steps, args.warmup, sync)
    pt, ph, pw = model.cfg.patch_size
    tokens = (t // pt) * (h // ph) * (w // pw)
    tokens_per_s = args.batch * tokens / seconds
    achieved = tokens_per_s * flops_per_token(model.cfg, tokens, args.text_len)
    peak = peak_tflops(device, args.peak_tflops)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"model": args.model, "params_M": round(params, 1), "device": str(device), "batch": args.batch,
            "tokens_per_sample": tokens, "step_s": round(seconds, 4), "samples_per_s": round(args.batch / seconds, 2),
            "tokens_per_s": round(tokens_per_s), "achieved_tflops": round(achieved / 1e12, 3),
            "mfu": round(achieved / (peak * 1e12), 3) if peak else None}


def bench_vae_step(args, device) -> float:
    """Samples/s of autoencoder training steps on 17x64x64 clips (batch 4), the pixel loader's consumer."""
    import torch

    from training.train import build_model
    from training.vae import vae_loss

    vae = build_model("vae", "VAE-tiny", {}).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(4, 3, 17, 64, 64, device=device) * 2 - 1

    def step():
        recon, mean, logvar = vae(x)
        vae_loss(recon, x, mean, logvar)[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return 4 / time_steps(step, max(2, args.steps // 2), 1, sync)


def bench_data(args, dit_samples_per_s: float, vae_samples_per_s: float):

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "training"))
    from training_testkit import make_run

    from training.data import LatentBatches, PixelBatches, make_loader
    from training.encode import encode_shards
    from training.train import TrainConfig, train
    from workflows.shard import ShardSettings, write_shards

    root = Path(tempfile.mkdtemp(prefix="rushes-speed-"))
    clips = [("circle", "red", "left", "blue", 20, 64, 64), ("square", "green", "up", "gray", 20, 64, 96)] * 16
    run = make_run(root / "out", clips=clips)
    write_shards(run.root, ShardSettings(buckets=["17x64x64", "17x64x96"], max_frame_stride=1))
    vae_cfg = TrainConfig.from_dict({"kind": "vae", "model": "VAE-tiny", "batch_size": 4, "max_steps": 1,
                                     "warmup_steps": 1, "log_every": 100, "ckpt_every": 1})
    train(vae_cfg, run.shards, root / "vae", quiet=True)  # any autoencoder will do for encoding
    encode_shards(run.shards, root / "vae", batch_size=8, device="cpu")

    results = {"trainer_vae_samples_per_s": round(vae_samples_per_s, 2),
               "trainer_dit_samples_per_s": round(dit_samples_per_s, 2)}
    for name, dataset in (("pixel", PixelBatches(run.shards, 4, 0)), ("latent", LatentBatches(run.shards, 4, 0))):
        for workers in (0, 1):
            loader = make_loader(dataset, 0, args.data_batches, workers=workers)
            started = time.perf_counter()
            samples = sum(len(b["clip_id"] if "clip_id" in b else b["caption"]) for b in loader)
            rate = samples / (time.perf_counter() - started)
            results[f"{name}_loader_w{workers}_samples_per_s"] = round(rate, 1)
    results["pixel_loader_vs_vae_trainer"] = round(results["pixel_loader_w0_samples_per_s"] / vae_samples_per_s, 1)
    results["latent_loader_vs_dit_trainer"] = round(results["latent_loader_w0_samples_per_s"] / dit_samples_per_s, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="DiT size [default: DiT-B on GPU, DiT-S on CPU]")
    parser.add_argument("--latent", default=None, help="latent TxHxW per sample [default: 5x32x32 GPU, 3x8x8 CPU]")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--text-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (bf16 GPU table otherwise)")
    parser.add_argument("--data-batches", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-data", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    args.model = args.model or ("DiT-B" if gpu else "DiT-S")
    args.latent = args.latent or ("5x32x32" if gpu else "3x8x8")
    args.batch = args.batch or (32 if gpu else 4)
    args.steps = args.steps or (20 if gpu else 5)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    model = bench_dit(args, device)
    print(json.dumps(model, indent=1))
    if not args.skip_data:
        data = bench_data(args, model["samples_per_s"], bench_vae_step(args, device))
        print(json.dumps(data, indent=1))
        print(f"loader vs trainer (CPU, one process): pixel shards {data['pixel_loader_vs_vae_trainer']}x the autoencoder's "
              f"consumption, latent shards {data['latent_loader_vs_dit_trainer']}x the DiT's")
    mfu = f"{model['mfu']:.1%}" if model["mfu"] is not None else "n/a (pass --peak-tflops)"
    print(f"{model['model']} on {model['device']}: {model['tokens_per_s']} tokens/s, MFU {mfu}")


if __name__ == "__main__":
    main()
