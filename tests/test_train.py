"""Pretext training on the CPU: it learns, it resumes exactly, it refuses bad checkpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from ssad.checkpoint import load_checkpoint
from ssad.config import load_config
from ssad.data import load_category
from ssad.model import DOWNLOAD_TIMEOUT, create_model
from ssad.synth import DefectSynthesizer
from ssad.train import augment_normals, checkpoint_path, pretext_accuracy, train

SIZE = 64  # the side of the `demo` fixture (tests/conftest.py, DEMO_SIZE)


def _config(steps: int, **train):
    overrides = [f"data.image_size={SIZE}", f"train.steps={steps}", "train.init='scratch'", "train.batch_size=16"]
    for key, value in train.items():
        overrides.append(f'train.{key}="{value}"' if isinstance(value, str) else f"train.{key}={str(value).lower()}")
    return load_config([], overrides)


def test_short_run_lowers_loss_and_beats_chance_on_held_back_batches(demo, tmp_path):
    logs = []
    config = _config(120, log_every=10, batch_size=32, lr=0.01)
    result = train(config, demo, tmp_path, progress=False, on_step=lambda step, log: logs.append(log))
    first, last = logs[0]["loss"], sum(log["loss"] for log in logs[-3:]) / 3
    assert last < first, [round(log["loss"], 3) for log in logs]
    held_back = demo.test[demo.test_labels == 0]  # normal images the model never saw
    accuracy = pretext_accuracy(result.model, held_back, demo.object_masks, DefectSynthesizer(config.synth),
                                torch.Generator().manual_seed(123), batches=4, batch_size=64)
    assert accuracy > 0.5  # chance is 1/3
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 12


def _trained_with_an_interruption(config, data, run_dir: Path, at_step: int = 3) -> dict[str, torch.Tensor]:
    """Weights of a run stopped by Ctrl-C after ``at_step`` steps, then resumed to the end."""

    def interrupt(step, log):
        if step == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, data, run_dir, progress=False, on_step=interrupt)
    assert load_checkpoint(checkpoint_path(run_dir), config, data.train.device)["step"] == at_step
    return train(config, data, run_dir, resume=True, progress=False).model.state_dict()


def test_resume_after_interruption_equals_an_uninterrupted_run(demo, tmp_path):
    config = _config(6, checkpoint_every=2, log_every=1)
    straight = train(config, demo, tmp_path / "straight", progress=False).model.state_dict()
    resumed = _trained_with_an_interruption(config, demo, tmp_path / "resumed")
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_training_equals_eager_and_resumes_exactly(demo_root, tmp_path, monkeypatch):
    # Deterministic cuDNN, so that equal batches give equal weights.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    data = load_category(demo_root, "demo_object", image_size=SIZE, cache_dir=demo_root / "cache", device="cuda")
    eager = train(_config(6, checkpoint_every=2, log_every=1), data, tmp_path / "eager", progress=False)
    config = _config(6, checkpoint_every=2, log_every=1, cuda_graph=True)
    straight = train(config, data, tmp_path / "straight", progress=False).model.state_dict()
    resumed = _trained_with_an_interruption(config, data, tmp_path / "resumed")
    for key, value in eager.model.state_dict().items():
        assert torch.equal(value, straight[key]) and torch.equal(value, resumed[key]), key


def test_cpu_amp_trains_in_bf16_where_the_cpu_has_it_and_resumes_exactly(demo, tmp_path, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    asked = _config(4, cpu_amp=True, checkpoint_every=2, log_every=1)
    monkeypatch.setattr("ssad.config.native_bf16", lambda: False)  # emulated bf16 runs slower: not used
    assert not asked.train.uses_amp(cpu)
    monkeypatch.setattr("ssad.config.native_bf16", lambda: True)  # forced below even where emulated
    assert asked.train.uses_amp(cpu) and not _config(4).train.uses_amp(cpu)
    assert _config(4).train.uses_amp(cuda) and not _config(4, amp=False, cpu_amp=True).train.uses_amp(cuda)

    fp32 = train(_config(4, checkpoint_every=2, log_every=1), demo, tmp_path / "fp32", progress=False)
    bf16 = train(asked, demo, tmp_path / "bf16", progress=False).model.state_dict()
    assert any(not torch.equal(value, bf16[key]) for key, value in fp32.model.state_dict().items())
    resumed = _trained_with_an_interruption(asked, demo, tmp_path / "resumed", at_step=2)
    for key, value in bf16.items():
        assert torch.equal(value, resumed[key]), key


def test_cuda_graph_is_ignored_off_cuda(demo, tmp_path):
    eager = train(_config(2), demo, tmp_path / "eager", progress=False).model.state_dict()
    asked = train(_config(2, cuda_graph=True), demo, tmp_path / "asked", progress=False).model.state_dict()
    assert all(torch.equal(value, asked[key]) for key, value in eager.items())


def test_corrupt_or_foreign_checkpoint_is_refused(demo, tmp_path):
    config = _config(2)
    train(config, demo, tmp_path, progress=False)
    path = checkpoint_path(tmp_path)
    with pytest.raises(ValueError, match="other settings: train.lr"):
        train(_config(2, lr=0.5), demo, tmp_path, resume=True, progress=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        train(config, demo, tmp_path, resume=True, progress=False)


def test_two_stage_training_freezes_the_backbone_first(demo, tmp_path):
    config = _config(4, freeze_backbone_steps=2, log_every=1)

    def stop_after_stage_one(step, log):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, demo, tmp_path, progress=False, on_step=stop_after_stage_one)
    after_stage_one = load_checkpoint(checkpoint_path(tmp_path), config)["model"]
    torch.manual_seed(config.train.seed)
    initial = create_model("scratch")[0].state_dict()
    assert torch.equal(after_stage_one["backbone.conv1.weight"], initial["backbone.conv1.weight"])
    assert not torch.equal(after_stage_one["head.0.weight"], initial["head.0.weight"])

    result = train(config, demo, tmp_path, resume=True, progress=False)
    assert not torch.equal(result.model.state_dict()["backbone.conv1.weight"], initial["backbone.conv1.weight"])


def test_auto_init_falls_back_to_scratch_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache; no network here or in CI

    def unreachable(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", unreachable)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, used = create_model("auto")
    assert used == "scratch"
    assert any("from scratch" in str(w.message) for w in caught)
    with pytest.raises(RuntimeError, match="ImageNet weights"):
        create_model("imagenet")


def test_a_stalled_weights_download_times_out_and_the_timeout_is_restored(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    seen = []

    def silent_network(*args, **kwargs):  # what a socket does when packets are dropped
        seen.append(socket.getdefaulttimeout())
        raise TimeoutError("timed out")

    # torchvision's weights enum fetches through its own import of the hub function: patch that one.
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", silent_network)
    before = socket.getdefaulttimeout()
    with pytest.warns(UserWarning, match="from scratch"):
        assert create_model("auto")[1] == "scratch"
    assert seen == [DOWNLOAD_TIMEOUT] and socket.getdefaulttimeout() == before


def test_two_gloo_processes_keep_equal_weights(demo, tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSAD_CACHE_DIR": str(tmp_path / "cache")}
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(script), str(tmp_path)],
        check=True, env=env, timeout=180, capture_output=True,
    )
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert load_checkpoint(checkpoint_path(tmp_path / "run"), _config(3, batch_size=8))["step"] == 3


@pytest.mark.parametrize("flip", [False, True])
def test_rotation_turns_each_image_and_its_object_mask_together(flip):
    images = torch.full((8, 3, 64, 64), 20, dtype=torch.uint8)
    images[:, :, 12:28, 20:52] = 230  # an off-centre bright bar: its mask
    masks = images[:1, :1] > 128
    g = torch.Generator().manual_seed(0)
    out, moved = augment_normals(images, 0.03, flip, g, rotate=True, object_masks=masks)
    assert out.shape == (8, 3, 64, 64) and out.dtype == torch.float32 and moved.shape == (8, 1, 64, 64)
    assert moved.dtype == torch.bool
    agree = (moved == (out[:, :1] > 0.5)).float().mean(dim=(1, 2, 3))
    assert agree.min() > 0.98  # the mask still covers the bar (edges differ by interpolation)
    centres = [torch.nonzero(m[0]).float().mean(dim=0) for m in moved]
    spread = torch.stack(centres).std(dim=0)
    assert spread.min() > 4  # the bar went to different places: turned by different angles


def test_rotate_auto_turns_objects_that_move_only():
    assert load_config([], overrides=[]).train.rotate == "none"  # the default, by measurement
    cfg = load_config([], overrides=['train.rotate="auto"']).train
    assert cfg.rotates(True) and not cfg.rotates(False)
    assert load_config([], overrides=['train.rotate="any"']).train.rotates(False)
    assert not load_config([], overrides=['train.rotate="none"']).train.rotates(True)
    with pytest.raises(ValueError, match="train.rotate='sometimes'"):
        load_config([], overrides=['train.rotate="sometimes"'])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out, masks = augment_normals(images, 0.0, False, g)
    assert masks is None and torch.equal(out, images.float() / 255)
