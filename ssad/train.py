"""Pretext training: batches drawn from the device cache, defects synthesized inside the step.

One step, in order: draw indices -> gather normal images on the device -> light geometric
augmentation -> `DefectSynthesizer` (colour jitter for all, defects for labels 1 and 2) ->
ImageNet normalisation -> ResNet-18 -> cross-entropy (plus, with ``train.segmentation``, the
segmentation head's focal + Dice loss against the defects' masks) -> SGD. Nothing runs on the CPU
between steps, and the loop reads a value back only when it logs. With ``train.cuda_graph`` on CUDA the
data side is replayed from a CUDA graph (`ssad.graphs.CudaGraphed`): the same batches, one launch.

Runs on one device, or under ``torchrun --nproc_per_node N`` with DistributedDataParallel (nccl
on GPUs, gloo on CPUs): each rank synthesizes its own share of the batch with its own stream.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from tqdm import tqdm

from ssad.checkpoint import load_checkpoint, save_checkpoint
from ssad.config import RunConfig, TrainConfig
from ssad.data import BatchSampler, CategoryData
from ssad.distributed import gather_from_ranks, rank_and_world
from ssad.graphs import CudaGraphed
from ssad.model import PretextModel, create_model, normalise
from ssad.synth import DefectSynthesizer, SynthOutput
from ssad.synth.object_mask import masks_at

__all__ = [
    "TrainResult", "train", "pretext_batch", "optimisation_step", "augment_normals", "pretext_accuracy",
    "checkpoint_path", "init_distributed", "segmentation_loss", "FOCAL_GAMMA",
]

#: Focal loss exponent (Lin et al.'s 2): pixels the head already gets right, nearly all the
#: normal ones, weigh little, so the few defect pixels are not drowned.
FOCAL_GAMMA = 2.0


#: Rank r of a run seeded s draws from the stream seeded ``s * _SEEDS_PER_RUN + r``: every rank of
#: every run gets a stream of its own while runs have fewer ranks than this.
_SEEDS_PER_RUN = 1000


@dataclass
class TrainResult:
    """What `train` returns: the trained model, the initialisation used ("imagenet", "scratch",
    "file:<path>"), the steps done and the last log line (empty when no step was logged)."""

    model: PretextModel
    init_used: str
    steps: int
    last_log: dict[str, float]


def checkpoint_path(run_dir: Path) -> Path:
    """Where `train` keeps a run folder's checkpoint."""
    return Path(run_dir) / "checkpoint.pt"


def augment_normals(
    images: Tensor,
    max_shift: float,
    flip: bool,
    generator: torch.Generator,
    rotate: bool = False,
    object_masks: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Light geometric augmentation of (B, C, S, S) uint8 normal images -> float in [0, 1]: each
    image shifted by up to ``max_shift`` of its side (reflected at the border), with ``flip``
    mirrored at random, with ``rotate`` turned by a uniform random angle about its centre (for
    objects that lie at any angle). ``object_masks`` (B or 1, 1, S, S) bool move with their images
    (nearest neighbour) and come back (B, 1, S, S); unchanged when nothing moves, None if None."""
    x = images.float() / 255
    if max_shift == 0 and not flip and not rotate:
        return x, object_masks
    batch, device = x.shape[0], x.device
    rand = torch.rand(batch, 4, generator=generator, device=device)
    sign = torch.where(rand[:, 2:] < 0.5, -1.0, 1.0) if flip else torch.ones(batch, 2, device=device)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = sign[:, 0], sign[:, 1]
    if rotate:  # drawn only when asked, so runs without rotation keep their random stream
        angle = torch.rand(batch, generator=generator, device=device) * (2 * math.pi)
        cos, sin = angle.cos(), angle.sin()
        rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
        theta[:, :, :2] = rotation @ theta[:, :, :2]
    theta[:, :, 2] = (rand[:, :2] * 2 - 1) * 2 * max_shift  # the grid spans [-1, 1]: a side is 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if object_masks is not None:
        masks = object_masks.float().expand(batch, -1, -1, -1)
        masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="reflection", align_corners=False)
        object_masks = masks > 0.5
    return x, object_masks


def train(
    config: RunConfig,
    data: CategoryData,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the pretext classifier on ``data.train`` (on ``data``'s device) and checkpoint it.

    Writes ``run_dir/checkpoint.pt`` (atomically, every ``train.checkpoint_every`` steps, on
    interruption and at the end) and ``run_dir/train_log.jsonl``. With ``resume`` it continues
    from the checkpoint to the same result as an uninterrupted run. ``on_step(step, log)`` is
    called after each logged step.
    """
    cfg = config.train
    device = data.train.device
    rank, world = rank_and_world()
    if cfg.batch_size % world:
        raise ValueError(f"train.batch_size={cfg.batch_size} must divide evenly among {world} processes.")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _initial_state(config, data, rank, world, resume)
    make_batch = _batch_maker(config, data, state.generator)
    if resume:
        _restore(state, checkpoint_path(run_dir), config, device, rank)
    net = _network(state.model, cfg, device, world)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.uses_amp(device))
    memory_format = _memory_format(cfg)

    log: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=state.step, desc="pretext", disable=not progress or rank != 0,
               dynamic_ncols=True)
    rate = _Rate()
    try:
        net.train()
        state.model.backbone.requires_grad_(state.step >= cfg.freeze_backbone_steps)  # stage one: the head alone
        while state.step < cfg.steps:
            if state.step == cfg.freeze_backbone_steps > 0:
                state.model.backbone.requires_grad_(True)  # stage two: the whole network
            idx = next(state.sampler)
            batch = make_batch(data.train[idx], data.object_masks_at(idx), data.source_images)
            masks = batch.masks if cfg.segmentation else None
            loss, logits = optimisation_step(net, state.optimizer, batch.images, batch.labels, autocast, memory_format,
                                             masks, cfg.segmentation_weight)
            state.schedule.step()
            state.step += 1
            rate.add(len(idx) * world)
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                log = _log_step(state, loss, logits, batch.labels, rate, bar, run_dir if rank == 0 else None)
                if on_step is not None:
                    on_step(state.step, log)
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                _save(state, checkpoint_path(run_dir), config, rank, world)
        _save(state, checkpoint_path(run_dir), config, rank, world)
    except KeyboardInterrupt:  # saved, so that --resume continues from the last finished step
        _save(state, checkpoint_path(run_dir), config, rank, world)
        raise
    finally:
        bar.close()
    return TrainResult(model=state.model, init_used=state.init_used, steps=state.step, last_log=log)


@dataclass
class _TrainState:
    """What training carries from step to step, and what a checkpoint holds: the model (on the
    device), its optimizer and learning-rate schedule, this rank's generator and batch sampler,
    the steps done and the initialisation used."""

    model: PretextModel
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    sampler: BatchSampler
    step: int
    init_used: str


def _initial_state(config: RunConfig, data: CategoryData, rank: int, world: int, resume: bool) -> _TrainState:
    """The seeded initial model (``scratch`` when resuming: the checkpoint's weights replace it),
    SGD with a cosine schedule over ``train.steps``, and this rank's stream and sampler."""
    cfg, device = config.train, data.train.device
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model, init_used = create_model("scratch" if resume else cfg.init, num_classes=config.synth.num_classes,
                                        segmentation=cfg.segmentation)
    model = model.to(device, memory_format=_memory_format(cfg))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.steps))
    # Each rank draws its own batches and defects: one stream per rank.
    generator = torch.Generator(device).manual_seed(cfg.seed * _SEEDS_PER_RUN + rank)
    sampler = BatchSampler(len(data.train), cfg.batch_size // world, generator)
    return _TrainState(model, optimizer, schedule, generator, sampler, 0, init_used)


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _batch_maker(
    config: RunConfig, data: CategoryData, generator: torch.Generator
) -> Callable[[Tensor, Tensor, Tensor | None], SynthOutput]:
    """`pretext_batch` with this run's synthesizer, settings and ``generator``: (normal images,
    their object masks, texture sources) -> pretext batch; replayed from a CUDA graph with
    ``train.cuda_graph`` on CUDA (a batch is used up by its step: no copies)."""
    cfg = config.train
    # Augmented images are floats in [0, 1] by construction: skip the range check and its read-back.
    synth = DefectSynthesizer(replace(config.synth, check_values=False))
    make_batch = partial(pretext_batch, synth=synth, cfg=cfg, generator=generator, rotate=cfg.rotates(data.moves))
    if cfg.cuda_graph and data.train.device.type == "cuda":
        return CudaGraphed(make_batch, generator=generator, clone=False)
    return make_batch


def _network(model: PretextModel, cfg: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """What the step calls: ``model``, under DistributedDataParallel with several processes,
    compiled with ``train.compile``."""
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=cfg.freeze_backbone_steps > 0,  # a frozen backbone gets no gradient
        )
    if cfg.compile:
        net = torch.compile(net)
    return net


class _Rate:
    """Images per second since the last reading."""

    def __init__(self) -> None:
        self.images, self.clock = 0, time.perf_counter()

    def add(self, images: int) -> None:
        self.images += images

    def read(self) -> float:
        """The rate since the last reading, which starts a new count."""
        seconds = time.perf_counter() - self.clock
        rate = self.images / max(seconds, _MIN_SECONDS)
        self.images, self.clock = 0, time.perf_counter()
        return rate


#: A floor on the seconds a rate divides by: a reading right after the last one must not divide by 0.
_MIN_SECONDS = 1e-9


def _log_step(state: _TrainState, loss: Tensor, logits: Tensor, labels: Tensor, rate: _Rate, bar: tqdm,
              run_dir: Path | None) -> dict[str, float]:
    """The step's log line (the one read-back of a step): loss, batch accuracy, learning rate and
    images/s; shown on ``bar`` and appended to ``run_dir/train_log.jsonl`` (not where None)."""
    log = {
        "step": state.step,
        "loss": loss.item(),
        "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "lr": state.schedule.get_last_lr()[0],
        "images_per_s": rate.read(),
    }
    bar.set_postfix(loss=f"{log['loss']:.3f}", acc=f"{log['accuracy']:.2f}", ips=f"{log['images_per_s']:.0f}")
    if run_dir is not None:
        with open(run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
    return log


def _save(state: _TrainState, path: Path, config: RunConfig, rank: int, world: int) -> None:
    """Checkpoint ``state`` to ``path`` (rank 0 writes; every rank sends its stream and sampler)."""
    streams = gather_from_ranks({"generator": state.generator.get_state(), "sampler": state.sampler.state_dict()})
    if rank == 0:
        save_checkpoint(
            path,
            config,
            model=state.model.state_dict(),
            optimizer=state.optimizer.state_dict(),
            schedule=state.schedule.state_dict(),
            generators=[s["generator"] for s in streams],
            samplers=[s["sampler"] for s in streams],
            step=state.step,
            init_used=state.init_used,
        )


def _restore(state: _TrainState, path: Path, config: RunConfig, device: torch.device, rank: int) -> None:
    """Load the checkpoint at ``path`` into ``state``: this rank's stream and sampler included."""
    saved = load_checkpoint(path, config, device)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.schedule.load_state_dict(saved["schedule"])
    state.generator.set_state(saved["generators"][rank])
    state.sampler.load_state_dict(saved["samplers"][rank])
    state.step, state.init_used = saved["step"], saved["init_used"]


def pretext_batch(
    images: Tensor,
    object_masks: Tensor,
    sources: Tensor | None,
    synth: DefectSynthesizer,
    cfg: TrainConfig,
    generator: torch.Generator,
    rotate: bool = False,
) -> SynthOutput:
    """The data side of a step, all on the device: (B, 3, S, S) uint8 normal images and their
    (B or 1, 1, S, S) bool object masks -> light geometric augmentation (any angle with
    ``rotate``), the masks moved along -> synthetic defects. ``sources`` (K, 3, S, S) uint8 feed
    texture cut-paste (None for objects)."""
    augmented, object_masks = augment_normals(images, cfg.max_shift, cfg.flip, generator, rotate, object_masks)
    picked = _pick_sources(sources, len(images), generator, as_float=True)
    return synth(augmented, object_masks=object_masks, source_images=picked, generator=generator)


def optimisation_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    autocast: torch.autocast,
    memory_format: torch.memory_format,
    masks: Tensor | None = None,
    mask_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The model side of a step: normalise (B, 3, S, S) float images, forward, cross-entropy,
    backward, SGD update. With ``masks`` (B, 1, S, S) bool (the synthetic defects), the network's
    segmentation head is trained in the same pass: ``mask_weight`` x `segmentation_loss` is added.
    Returns the loss and the logits (B, 3), still on the device."""
    x = normalise(images).contiguous(memory_format=memory_format)
    with autocast:
        if masks is None:
            logits = net(x)
            loss = F.cross_entropy(logits.float(), labels)
        else:
            logits, mask_logits = net(x, segment=True)
            loss = F.cross_entropy(logits.float(), labels) + mask_weight * segmentation_loss(mask_logits, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def segmentation_loss(mask_logits: Tensor, masks: Tensor, gamma: float = FOCAL_GAMMA) -> Tensor:
    """Focal + Dice loss of (B, 1, h, w) defect logits against (B, 1, H, W) bool masks.

    The logits are upsampled (bilinear) to the masks' side: a scar a pixel or two wide would
    vanish from a mask pooled to the head's grid. Focal (per pixel, mean) teaches each pixel;
    Dice (one soft overlap over the whole batch, which is defined even when an image has no
    defect) teaches the defect's extent whatever its area, so a small scar counts as much as a
    big patch. Both in float32 under autocast.
    """
    logits = F.interpolate(mask_logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    target = masks.float()
    focal = torchvision.ops.sigmoid_focal_loss(logits, target, alpha=-1, gamma=gamma, reduction="mean")
    probability = logits.sigmoid()
    overlap = (probability * target).sum()
    dice = 1 - (2 * overlap + _DICE_SMOOTHING) / (probability.sum() + target.sum() + _DICE_SMOOTHING)
    return focal + dice


#: Added to the Dice overlap and total: a batch without any defect pixel gives a finite loss
#: (and a small one when the head predicts nothing there).
_DICE_SMOOTHING = 1.0


@torch.no_grad()
def pretext_accuracy(
    model: PretextModel,
    images: Tensor,
    object_masks: Tensor,
    synth: DefectSynthesizer,
    generator: torch.Generator,
    sources: Tensor | None = None,
    batches: int = 4,
    batch_size: int = 64,
) -> float:
    """Accuracy of the pretext classifier, in eval mode, on fresh synthetic batches made from
    ``images`` (N, 3, S, S) uint8 (e.g. held-back normal images) with their ``object_masks``
    (N or 1, 1, S, S) bool and texture ``sources`` (K, 3, S, S) uint8 or None."""
    model.eval()
    correct = 0
    for _ in range(batches):
        idx = torch.randint(len(images), (batch_size,), generator=generator, device=images.device)
        masks = masks_at(object_masks, idx)
        out = synth(images[idx], masks, _pick_sources(sources, batch_size, generator), generator)
        correct += int((model(normalise(out.images)).argmax(1) == out.labels).sum())
    return correct / (batches * batch_size)


def _pick_sources(
    sources: Tensor | None, batch: int, generator: torch.Generator, as_float: bool = False
) -> Tensor | None:
    """(B, 3, S, S) images from another category for texture cut-paste, drawn at random: uint8
    like ``sources``, or float in [0, 1] with ``as_float``."""
    if sources is None:
        return None
    picked = sources[torch.randint(len(sources), (batch,), generator=generator, device=sources.device)]
    return picked.float() / 255 if as_float else picked


def init_distributed() -> torch.device:
    """Join the torchrun process group when launched by torchrun; return this rank's device."""
    if "RANK" not in os.environ or dist.is_initialized():
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cpu")

