"""The judge: a small CNN that names the shape, colour, pattern and background of a toy-world picture.

Why: to measure whether a textual-inversion run learned a concept, we generate pictures from the learned word and
ask what is in them. A person could look, but a test cannot; the renderer knows the truth for its own pictures, so
a classifier trained on them is an exact, cheap and repeatable judge. It is trained on every combination, the
held-out shape/colour pairs included (the judge must recognise exactly what the diffusion model was never shown),
and with blur, noise, brightness/contrast jitter and renders at other sizes, so that pictures which went through a
VAE or a diffusion model are judged by what they show rather than by how crisp they are.

The weights ship with the package (`weights/judge.safetensors`, a few hundred thousand parameters); rebuild them
with `python -m ti_core.toyworld.judge train` (a few minutes on two CPU cores, deterministic for a seed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write
from ..errors import TIError
from .render import COLOUR_NAMES, PATTERNS, SHAPES, random_scene, render

SIZE = 32
ATTRIBUTES = {"shape": SHAPES, "colour": COLOUR_NAMES, "pattern": PATTERNS, "background": COLOUR_NAMES}
WEIGHTS = Path(__file__).resolve().parent / "weights" / "judge.safetensors"
REBUILD = "python -m ti_core.toyworld.judge train"
FORMAT = "ti_core.toyworld.judge/1"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Judge(nn.Module):
    """Four heads over a shared CNN. Input [N, 3, H, W] in 0..1, resized to 32x32 inside (trained on renders of
    24 to 64 px: beyond 64 px the 4-px stripes and dots shrink below what 32 px can show); output a dict of logits,
    one [N, classes] tensor per attribute of `ATTRIBUTES`."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, 1), _block(w, w, 1),  # full resolution: stripes and dots have a 4-px period
            _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(8 * w, len(names)) for name, names in ATTRIBUTES.items()})

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 256]: what the heads read (the feature layers, mean- and max-pooled), for pictures in 0..1."""
        x = self.features(_to_size(images) * 2 - 1)
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.pooled(images)
        return {name: head(pooled) for name, head in self.heads.items()}

    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        """`pooled` in eval mode without gradients, for pictures [N, 3, H, W] in 0..1 (any float dtype)."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.pooled(images.float())
        finally:
            self.train(was_training)

    def encoder(self):
        """The image encoder of the toy world's picture checks (train(..., image_encoder=)): the feature layers, as
        a CLIP vision model's image tower is elsewhere."""
        return self.features_of

    def classify(self, images, batch_size: int = 256) -> list[dict[str, str]]:
        """Name each attribute of each picture: a [N, 3, H, W] (or [3, H, W]) tensor in 0..1, or a list of PIL
        images. Returns one dict per picture with the keys shape, colour, pattern, background."""
        batch = _as_tensor(images)
        was_training = self.training
        self.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(batch), batch_size):
                    logits = self(batch[start:start + batch_size].float())
                    index = {name: logits[name].argmax(1).tolist() for name in ATTRIBUTES}
                    out += [{name: ATTRIBUTES[name][index[name][i]] for name in ATTRIBUTES}
                            for i in range(len(index["shape"]))]
        finally:
            self.train(was_training)
        return out


def _to_size(images: torch.Tensor) -> torch.Tensor:
    if images.shape[-2:] == (SIZE, SIZE):
        return images
    return F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)


def _as_tensor(images) -> torch.Tensor:
    """A [N, 3, 32, 32] float tensor from a tensor or a list of PIL images (of any sizes)."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise TIError(f"the judge takes [N, 3, H, W] RGB images in 0..1, not a tensor of shape "
                          f"{tuple(images.shape)}.")
        return images
    tensors = [_to_size(_pil_to_tensor(image).unsqueeze(0))[0] for image in images]
    return torch.stack(tensors) if tensors else torch.zeros(0, 3, SIZE, SIZE)


def _pil_to_tensor(image) -> torch.Tensor:
    rgb = image.convert("RGB")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255


# ----------------------------------------------------------------------------------------------------------- data

def _labels(scenes) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([names.index(getattr(s, name)) for s in scenes]) for name, names in ATTRIBUTES.items()}


def _draw(n: int, rng: random.Random, gen: torch.Generator, size: int = SIZE, jitter: float = 0.04):
    """`n` fresh pictures of every combination (held-out pairs included), rendered at `size` and resized to 32 px,
    and their labels. Large renders skip supersampling: the resize averages their pixels anyway."""
    scenes = [random_scene(rng, held_out="include") for _ in range(n)]
    images = render(scenes, size=size, supersample=1 if size >= 2 * SIZE else 2, generator=gen, jitter=jitter)
    return _to_size(images), _labels(scenes)


def _pool(n: int, rng: random.Random, gen: torch.Generator, chunk: int = 256):
    """`n` training pictures (float16, 32 px), their labels, and the most blur each may get (in 32-px pixels).
    Half the chunks are rendered at 32 px, the others larger or smaller and resized, as pictures decoded at another
    size would be. The patterns' period is 4 px at any size, so a 64-px render resized shows them at 2 px, which a
    blur of 1 px at 64 px (0.5 px at 32) still leaves but one of 1 px at 32 would erase: the allowed blur shrinks
    with the render's size."""
    images, labels, blur = [], [], []
    for start in range(0, n, chunk):
        size = SIZE if rng.random() < 0.5 else rng.choice((24, 28, 40, 48, 56, 64, 64))
        x, y = _draw(min(chunk, n - start), rng, gen, size, jitter=0.06)  # colours vary more than in use
        images.append(x.half())
        labels.append(y)
        blur.append(torch.full((len(x),), min(1.0, SIZE / size)))
    labels = {name: torch.cat([y[name] for y in labels]) for name in ATTRIBUTES}
    return torch.cat(images), labels, torch.cat(blur)


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur; `sigma` [N] in pixels (0 leaves the image as it is)."""
    n, c, h, w = images.shape
    taps = torch.arange(-3, 4, dtype=images.dtype)
    kernel = torch.exp(-taps**2 / (2 * sigma.clamp(min=1e-3).view(n, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [N*C, 7]
    x = F.pad(images.reshape(1, n * c, h, w), (3, 3, 3, 3), mode="replicate")
    x = F.conv2d(x, kernel.view(n * c, 1, 1, 7), groups=n * c)
    x = F.conv2d(x, kernel.view(n * c, 1, 7, 1), groups=n * c)
    return x.view(n, c, h, w)


def degrade(images: torch.Tensor, gen: torch.Generator, max_blur: torch.Tensor | float = 1.0) -> torch.Tensor:
    """What a VAE or a diffusion model does to a picture, roughly: blur (sigma 0-`max_blur` px, a number or one per
    image), Gaussian noise (std 0-0.05), and a small brightness/contrast shift."""
    n = len(images)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=gen).view(n, 1, 1, 1)

    x = _blur(images, uniform(0.0, 1.0).view(n) * max_blur)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(0.9, 1.1) + mean + uniform(-0.05, 0.05)
    x = x + torch.randn(x.shape, generator=gen) * uniform(0.0, 0.05)
    return x.clamp(0, 1)


# ------------------------------------------------------------------------------------------------------- training

def train_judge(seed: int = 0, steps: int = 750, batch_size: int = 128, pool: int = 32768, lr: float = 4e-3,
                threads: int | None = None, log=None) -> Judge:
    """A judge trained from scratch: `steps` batches drawn, epoch by epoch, from `pool` fresh renders, each batch
    freshly degraded. The same seed gives the same weights (on the same machine and thread count; `threads` sets
    torch's, which the shipped weights used 2 of); `log(step, loss)` is called every 100 steps when given."""
    if threads:
        torch.set_num_threads(threads)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)
    images, labels, max_blur = _pool(min(pool, steps * batch_size), rng, gen)
    judge.train()
    order = torch.zeros(0, dtype=torch.long)
    for step in range(steps):
        if len(order) < batch_size:  # a new epoch over the pool, in a new order
            order = torch.randperm(len(images), generator=gen)
        index, order = order[:batch_size], order[batch_size:]
        x = images[index].float()
        keep = torch.rand(len(x), generator=gen).view(-1, 1, 1, 1) < 0.2  # a fifth of them left clean
        x = torch.where(keep, x, degrade(x, gen, max_blur[index]))
        logits = judge(x)
        loss = sum(F.cross_entropy(logits[name], labels[name][index]) for name in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(step, loss.item())
    return judge.eval()


def evaluate(judge: Judge, n: int = 4096, seed: int = 1234, augment: bool = False,
             batch_size: int = 512) -> dict[str, float]:
    """Per-attribute accuracy (0..1) on `n` fresh 32-px renders of every combination; with `augment`, blurred,
    noisy and jittered as in training. Use a seed other than training's."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    correct = dict.fromkeys(ATTRIBUTES, 0)
    judge.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            images, labels = _draw(min(batch_size, n - start), rng, gen)
            if augment:
                images = degrade(images, gen)
            logits = judge(images)
            for name in ATTRIBUTES:
                correct[name] += int((logits[name].argmax(1) == labels[name]).sum())
    return {name: correct[name] / n for name in ATTRIBUTES}


# -------------------------------------------------------------------------------------------------- load and save

def save_judge(judge: Judge, path=WEIGHTS, metadata: dict | None = None) -> Path:
    """Write the weights as safetensors (atomically, replacing any old file), with string metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in judge.state_dict().items()}
    meta = {"format": FORMAT, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}}
    data = save(tensors, metadata=meta)
    return atomic_write(path, lambda f: f.write(data), overwrite=True)


def load_judge(path=None) -> Judge:
    """The shipped judge (or the one at `path`), on CPU, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise TIError(f"the toy-world judge's weights are missing: {path} does not exist. "
                      f"Rebuild them with `{REBUILD} --out {path}`.")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise TIError(f"cannot read the judge's weights {path}: {e}. Rebuild them with `{REBUILD} --out {path}`.")
    judge = Judge()
    try:
        judge.load_state_dict(tensors)
    except RuntimeError as e:
        raise TIError(f"{path} does not hold this judge's weights ({str(e).splitlines()[0]}). "
                      f"Rebuild them with `{REBUILD} --out {path}`.") from None
    return judge.float().eval()


def read_metadata(path=None) -> dict[str, str]:
    """The metadata stored with the weights (seed, steps, accuracies as JSON strings)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) if path is not None else WEIGHTS), framework="pt") as f:
        return dict(f.metadata() or {})


# ----------------------------------------------------------------------------------------------------------- CLI

def _percent(acc: dict[str, float]) -> str:
    return "  ".join(f"{name} {100 * value:.2f}%" for name, value in acc.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ti_core.toyworld.judge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the judge from scratch and write its weights")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=750)
    train.add_argument("--out", type=Path, default=WEIGHTS)
    ev = sub.add_parser("eval", help="print the accuracies of the shipped (or given) weights")
    ev.add_argument("--path", type=Path, default=None)
    ev.add_argument("-n", type=int, default=4096)
    ev.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            start = time.perf_counter()
            judge = train_judge(args.seed, steps=args.steps, threads=2,
                                log=lambda step, loss: print(f"step {step}: loss {loss:.4f}", flush=True))
            seconds = time.perf_counter() - start
            clean, noisy = evaluate(judge), evaluate(judge, augment=True)
            print(f"trained in {seconds:.0f} s\nclean:     {_percent(clean)}\naugmented: {_percent(noisy)}")
            meta = {"seed": args.seed, "steps": args.steps, "eval_seed": 1234, "eval_n": 4096,
                    "accuracy_clean": clean, "accuracy_augmented": noisy}
            print(f"wrote {save_judge(judge, args.out, meta)}")
        else:
            judge = load_judge(args.path)
            clean = evaluate(judge, args.n, args.seed)
            noisy = evaluate(judge, args.n, args.seed, augment=True)
            print(f"clean:     {_percent(clean)}\naugmented: {_percent(noisy)}")
    except TIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
