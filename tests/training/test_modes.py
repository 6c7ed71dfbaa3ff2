"""Generation modes: images, SDEdit editing, blending, in/outpainting, backward extension, in-betweening."""

import numpy as np
import pytest
import torch
from training_testkit import TINY_DIT

from training.checkpoint import load_trained
from training.flow import sample
from training.modes import Given, Start, given_ends, given_inpaint, given_outpaint, latent_known
from training.sample import edit_region, encode_video, generate
from training.train import TrainConfig, train


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def test_latent_cells_are_known_only_when_all_their_pixels_are():
    known = np.zeros((9, 16, 24), dtype=bool)
    known[:5] = True  # frames 0-4: latent 0 (frame 0) and latent 1 (frames 1-4)
    known[5:, :8, :8] = True  # afterwards, only the top-left 8x8 pixels
    cells = latent_known(known, temporal_factor=4, spatial_factor=8, latent_shape=(3, 2, 3))
    assert cells[0].all() and cells[1].all()
    assert cells[2, 0, 0] and cells[2].sum() == 1
    half = known.copy()
    half[5:, :8, :4] = False  # a cell missing some of its pixels is generated
    assert not latent_known(half, 4, 8, (3, 2, 3))[2].any()


def test_the_sampler_starts_where_told_and_keeps_the_known_cells():
    def model(x, t, **_):  # a velocity field pulling everything to +1
        return x - 1.0

    noise = torch.randn(1, 2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    x0 = torch.full_like(noise, 0.25)
    assert torch.equal(sample(model, noise, {}, steps=4, start_t=0.0, x_start=x0), x0)  # strength 0: the input
    assert torch.equal(sample(model, noise, {}, steps=4, start_t=1.0, x_start=x0), sample(model, noise, {}, steps=4))
    known = torch.full_like(noise, -3.0)
    mask = torch.zeros(1, 1, 3, 2, 2, dtype=torch.bool)
    mask[:, :, 0] = True
    out = sample(model, noise, {}, steps=4, known=known, known_mask=mask)
    assert torch.allclose(out[:, :, 0], known[:, :, 0]) and not torch.allclose(out[:, :, 1:], known[:, :, 1:])
    with pytest.raises(ValueError, match="within"):
        sample(model, noise, {}, start_t=1.5, x_start=x0)


def test_canvases_for_each_mode():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    notes = []
    ends = given_ends(9, 16, 24, first=clip[:1], last=clip, notes=notes)
    assert ends.known[0].all() and not ends.known[1:4].any() and ends.known[4:].all()
    assert np.array_equal(ends.video[4:], clip)
    back = given_ends(9, 16, 24, last=np.repeat(clip, 3, axis=0), notes=notes)  # cut to leave a frame to make
    assert not back.known[0].any() and back.known[1:].all() and "cut 15 -> 8 frames" in notes[-1]
    both = given_ends(9, 16, 24, first=clip, last=clip, notes=notes)  # two clips: half the video each
    assert both.known[:4].all() and not both.known[4].any() and both.known[5:].all()
    assert "cut 5 -> 4 frames" in notes[-1]
    image_last = given_ends(9, 16, 24, last=clip[:1], notes=notes, temporal_factor=4)
    assert not image_last.known[:5].any() and image_last.known[5:].all()  # held over a whole latent frame
    assert np.array_equal(image_last.video[5:], np.repeat(clip[:1], 4, axis=0)) and "held over 3" in notes[-1]
    chunk_last = given_ends(9, 16, 24, first=clip[:1], last=clip, notes=notes, temporal_factor=4)
    assert chunk_last.known[5:].all() and not chunk_last.known[1:5].any()  # the 5-frame chunk starts at 5
    assert np.array_equal(chunk_last.video[5:], clip[1:]) and "first 1 left out" in notes[-1]
    with pytest.raises(ValueError, match="at least 2 frames"):
        given_ends(1, 16, 24, first=clip[:1])
    mask = np.zeros((16, 24), dtype=bool)
    mask[:8, :8] = True
    inpaint = given_inpaint(clip, mask, 5, 16, 24)
    assert not inpaint.known[:, :8, :8].any() and inpaint.known[:, 8:].all()
    with pytest.raises(ValueError, match="nothing to regenerate"):
        given_inpaint(clip, np.zeros((16, 24), dtype=bool), 5, 16, 24)
    wide, height, width = given_outpaint(clip, (8, 0, 8, 0), 5)
    assert (height, width) == (16, 40) and wide.known[:, :, 8:32].all() and not wide.known[:, :, :8].any()
    with pytest.raises(ValueError, match="left,top,right,bottom"):
        given_outpaint(clip, (0, 0, 0, 0), 5)


@pytest.fixture(scope="module")
def tiny_dit(tiny_latents, tmp_path_factory):
    shards, vae_run, _ = tiny_latents
    run = tmp_path_factory.mktemp("dit")
    train(TrainConfig.from_dict({**TINY_DIT, "max_steps": 2}), shards, run, vae_run, quiet=True)
    dit, meta = load_trained(run)
    vae, _ = load_trained(vae_run)
    return run, dit, meta, vae


def reconstruction(vae, video: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = vae.decode(encode_video(vae, video, vae.cfg.temporal_factor, "cpu")).clamp(-1, 1)
    frames = out[0, :, : len(video), : video.shape[1], : video.shape[2]].permute(1, 2, 3, 0).numpy()
    return ((frames + 1) * 127.5).round().astype(np.uint8)


PROMPT = ["a red circle moving left on a blue background"]


def test_editing_and_blending_run_from_reconstruction_to_fresh_sample(tiny_dit):
    _, dit, meta, vae = tiny_dit
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8) for _ in range(2))
    run = dict(frames=9, height=32, width=48, steps=4, cfg_scale=2.0, seed=3)
    kept = generate(dit, meta, PROMPT, **run, start=Start([a], [1.0], 0.0))[0]
    assert psnr(kept, reconstruction(vae, a)) > 40  # strength 0: the autoencoder's reconstruction
    fresh = generate(dit, meta, PROMPT, **run)[0]
    assert np.array_equal(generate(dit, meta, PROMPT, **run, start=Start([a], [1.0], 1.0))[0], fresh)
    edited = generate(dit, meta, PROMPT, **run, start=Start([a], [1.0], 0.5))[0]
    assert psnr(edited, reconstruction(vae, a)) < psnr(kept, reconstruction(vae, a))  # changed, partly
    first = generate(dit, meta, PROMPT, **run, start=Start([a, b], [1.0, 0.0], 0.0))[0]
    second = generate(dit, meta, PROMPT, **run, start=Start([a, b], [0.0, 1.0], 0.0))[0]
    assert np.array_equal(first, kept) and psnr(second, reconstruction(vae, b)) > 40


def test_the_edit_region_is_where_the_two_prompts_velocities_differ():
    where = torch.zeros(1, 1, 3, 6, 6)
    where[..., 0, 1:4, 1:4] = 1.0  # latent frame 0, a ring of 8 cells: only there does the prompt matter
    where[..., 0, 2, 2] = 0.0
    where[..., 1, 2:4, 2:4] = 1.0  # frame 1, a 2 x 2 block
    where[..., 2, 0, 5] = 1.0  # frame 2, one cell in the corner

    def dit(x, t, text, mask):
        return x * 0.5 + where * text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    x0 = torch.randn(1, 4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    prompt = {"text": torch.full((2, 3, 8), 2.0), "mask": torch.ones(2, 3, dtype=torch.bool)}
    source = {"text": torch.full((2, 3, 8), -1.0), "mask": torch.ones(2, 3, dtype=torch.bool)}
    tight = edit_region(dit, x0, prompt, source, objects=None)  # no growth (the default), no objects taken in
    assert tight.shape == (2, 3, 6, 6) and torch.equal(tight[0], tight[1])
    closed = where[0, 0] > 0
    closed[0, 2, 2] = True  # the ring's hole is filled: a region has no holes
    assert torch.equal(tight[0], closed)
    grown = edit_region(dit, x0, prompt, source, grow=1, objects=None)
    assert grown[0, 0, 0:5, 0:5].all() and grown[0, 0].sum() == 25
    assert grown[0, 1, 1:5, 1:5].all() and grown[0, 1].sum() == 16
    assert grown[0, 2, 0:2, 4:6].all() and grown[0, 2].sum() == 4  # cut at the grid's edge
    with pytest.raises(ValueError, match="nothing to edit"):
        edit_region(dit, x0, prompt, prompt)


def test_the_edit_region_takes_in_the_whole_of_every_object_it_touches():
    x0 = torch.zeros(1, 4, 1, 8, 8)
    x0[..., 1:5, 1:4] = 3.0  # an object of 4 x 3 cells standing out from a flat background
    x0[..., 6:8, 6:8] = 3.0  # another, apart from it
    where = torch.zeros(1, 1, 1, 8, 8)
    where[..., 3:6, 2:5] = 1.0  # the prompts disagree over the first object's lower part and beyond it

    def dit(x, t, text, mask):
        return x * 0.5 + where * text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    prompt = {"text": torch.full((1, 3, 8), 2.0), "mask": torch.ones(1, 3, dtype=torch.bool)}
    source = {"text": torch.full((1, 3, 8), -1.0), "mask": torch.ones(1, 3, dtype=torch.bool)}
    region = edit_region(dit, x0, prompt, source)[0, 0]
    expected = where[0, 0, 0] > 0
    expected[1:5, 1:4] = True  # all of the touched object joins, the other object does not
    assert torch.equal(region, expected)
    assert torch.equal(edit_region(dit, x0, prompt, source, objects=None)[0, 0], where[0, 0, 0] > 0)


def test_a_region_edit_keeps_the_latents_outside_its_region(tiny_dit, monkeypatch):
    import training.sample as sampling

    _, dit, meta, _ = tiny_dit
    vae = sampling._autoencoder(meta.vae, "cpu")  # the one generate decodes with
    clip = np.random.default_rng(4).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    run = dict(frames=9, height=32, width=48, steps=4, cfg_scale=2.0, seed=3)
    decoded = []
    monkeypatch.setattr(vae, "decode_chunked", lambda z, _decode=vae.decode_chunked: decoded.append(z) or _decode(z))
    edited = generate(dit, meta, PROMPT, **run, start=Start([clip], [1.0], 1.0, "a green square moving up"))[0]
    assert edited.shape == (9, 32, 48, 3)
    mean = torch.tensor(meta.latent_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(meta.latent_std).view(1, -1, 1, 1, 1)
    source = encode_video(vae, clip, meta.temporal_factor, "cpu")[:, :, :decoded[0].shape[2]]
    text, mask = sampling._text_encoder(meta.text_encoder, "cpu")(PROMPT + ["a green square moving up"])
    region = edit_region(dit, (source - mean) / std, {"text": text[:1], "mask": mask[:1]},
                         {"text": text[1:], "mask": mask[1:]}, seed=3)[0]
    assert 0 < region.float().mean() < 1  # some cells are regenerated, the others kept
    changed = ((decoded[0] - source).abs().amax(dim=1)[0] > 1e-4)  # (t, h, w)
    assert torch.equal(changed, region)


def test_inpainting_keeps_the_unmasked_region_and_ends_keep_their_frames(tiny_dit):
    _, dit, meta, vae = tiny_dit
    rng = np.random.default_rng(2)
    clip = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    regenerate = np.zeros((32, 48), dtype=bool)
    regenerate[:, 24:] = True  # the right half
    given = given_inpaint(clip, regenerate, 9, 32, 48)
    out = generate(dit, meta, PROMPT, 9, 32, 48, steps=4, seed=0, given=given)[0]
    recon = reconstruction(vae, clip)
    assert psnr(out[:, :, :16], recon[:, :, :16]) >= 30  # away from the seam: the reconstruction
    assert psnr(out[:, :, 32:], recon[:, :, 32:]) < 20  # the masked half is generated anew
    ends = given_ends(9, 32, 48, first=clip[:1], last=clip[4:5], temporal_factor=meta.temporal_factor)
    out = generate(dit, meta, PROMPT, 9, 32, 48, steps=4, seed=0, given=ends)[0]
    canvas = reconstruction(vae, ends.video)
    assert psnr(out[0], canvas[0]) >= 30 and psnr(out[-1], canvas[-1]) >= 30  # in-betweening: both images kept
    assert psnr(out[2], canvas[2]) < 30  # and between them, frames are made
    with pytest.raises(ValueError, match="wholly known"):
        tiny = Given(clip, np.zeros((9, 32, 48), dtype=bool))
        tiny.known[0, :2, :2] = True
        generate(dit, meta, PROMPT, 9, 32, 48, steps=1, given=tiny)


def test_sample_command_writes_images_and_runs_every_mode(tiny_dit, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from curation.core.video import write_video
    from workflows.cli import app
    from workflows.commands.train import read_first_frames

    run = tiny_dit[0]
    rng = np.random.default_rng(3)
    write_video(tmp_path / "a.mp4", rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8), fps=8)
    write_video(tmp_path / "b.mp4", rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), fps=8)
    mask = np.zeros((32, 48), np.uint8)
    mask[:, 24:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = ["sample", "--run", str(run), "--prompt", PROMPT[0], "--height", "32", "--width", "48", "--steps", "2"]

    def rushes(*args):
        return CliRunner().invoke(app, base + list(args))

    result = rushes("--frames", "1", "--out", str(tmp_path / "image.png"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "image.png").size == (48, 32)
    result = rushes("--frames", "9", "--out", str(tmp_path / "image.png"))
    assert result.exit_code == 2 and "--frames 1" in result.output
    cases = {
        "edit": ["--edit", str(tmp_path / "a.mp4"), "--strength", "0.5"],
        "region_edit": ["--edit", str(tmp_path / "a.mp4"), "--source-prompt", "a green square moving up"],
        "blend": ["--blend", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--blend-weight", "0.3"],
        "inpaint": ["--video", str(tmp_path / "a.mp4"), "--mask", str(tmp_path / "mask.png")],
        "back": ["--last-frames", str(tmp_path / "a.mp4")],
        "between": ["--first-frame", str(tmp_path / "image.png"), "--last-frames", str(tmp_path / "b.mp4")],
    }
    for name, args in cases.items():
        result = rushes("--frames", "9", *args, "--out", str(tmp_path / f"{name}.mp4"))
        assert result.exit_code == 0, (name, result.output)
        assert read_first_frames(tmp_path / f"{name}.mp4", 20).shape == (9, 32, 48, 3), name
    result = rushes("--frames", "9", "--blend", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"),
                    "--out", str(tmp_path / "x.mp4"))
    assert "b.mp4: resized 16x16 -> 48x32, padded 5 -> 9 frames" in result.output  # fitted, and said so
    result = rushes("--frames", "9", "--video", str(tmp_path / "a.mp4"), "--pad", "16,0,16,0",
                    "--out", str(tmp_path / "wide.mp4"))
    assert result.exit_code == 0, result.output
    assert read_first_frames(tmp_path / "wide.mp4", 20).shape == (9, 32, 80, 3)
    for bad, message in ((["--edit", str(tmp_path / "a.mp4"), "--video", str(tmp_path / "a.mp4")], "cannot be combined"),
                         (["--mask", str(tmp_path / "mask.png")], "need --video"),
                         (["--video", str(tmp_path / "a.mp4"), "--pad", "1,2"], "four whole pixel counts"),
                         (["--edit", str(tmp_path / "missing.mp4")], "no such file"),
                         (["--source-prompt", "a red square"], "pass --edit VIDEO with it"),
                         (["--edit", str(tmp_path / "a.mp4"), "--source-prompt", PROMPT[0]], "nothing to edit"),
                         (["--last-frames", str(tmp_path / "a.mp4"), "--frames", "1"], "at least 2 frames")):
        result = rushes("--frames", "9", *bad, "--out", str(tmp_path / "x.mp4"))
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
