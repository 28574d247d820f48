"""The first-run demo, offline: a tiny model learns a new word from 4 pictures, then draws with it.

1. Builds a tiny SD1 model (random weights: it draws noise, but every code path is the real one).
2. Checks the splice: `embedding:demo-red-cat` holding the token vectors of "red cat" must give exactly the
   conditioning of the words "red cat".
3. Draws 4 non-square example pictures, trains the word `demo-disc` on them, and samples
   "a photo of embedding:demo-disc" with the result. Writes PNGs, the embedding and a report.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

DEMO_WORDS = "red cat"
DEMO_NAME = "demo-red-cat"
TRAIN_NAME = "demo-disc"
TRAIN_STEPS = 40


def draw_examples(folder: Path, count: int = 4, seed: int = 0) -> Path:
    """Non-square pictures of a red disc on a blue background, with captions."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        w, h = rng.choice([(96, 64), (64, 96), (88, 72), (72, 88)])
        image = Image.new("RGB", (w, h), (30, 40, 190))
        x, y, r = rng.randint(24, w - 24), rng.randint(24, h - 24), rng.randint(10, 20)
        ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=(215, 45, 35))
        image.save(folder / f"disc_{i}.png")
        (folder / f"disc_{i}.txt").write_text("on a blue background")
    return folder


def _splice_check(model, out: Path, log) -> float:
    from .embeddings import Embedding, load_embedding, save_embedding
    from .prompt import encode_prompt, token_ids

    path = out / "embeddings" / f"{DEMO_NAME}.safetensors"
    if not path.exists():
        tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
        ids = token_ids(tokenizer, DEMO_WORDS)
        rows = encoder.get_input_embeddings().weight[ids].detach().clone()
        save_embedding(Embedding(DEMO_NAME, {"emb_params": rows}, {"init_text": DEMO_WORDS}), path)
    embedding = load_embedding(path)
    spliced = encode_prompt(model, f"a photo of embedding:{DEMO_NAME}", [embedding]).embeds
    words = encode_prompt(model, f"a photo of {DEMO_WORDS}").embeds
    diff = float((spliced - words).abs().max())
    log(f"splice check: max |conditioning('embedding:{DEMO_NAME}') - conditioning('{DEMO_WORDS}')| = {diff:.3g}")
    return diff


def run_demo(out: Path, log: Callable[[str], None] = print) -> dict:
    from .atomic import free_path
    from .embeddings import load_embedding
    from .make_model import make_model
    from .models import load_model
    from .prompt import encode_pair
    from .sample import sample, to_pil
    from .train import TrainConfig, train

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "tiny-sd1"
    if not model_dir.exists():
        log(f"building a tiny SD1 model (random weights) in {model_dir}")
        make_model("tiny-sd1", model_dir, seed=0)
    model = load_model(model_dir)
    diff = _splice_check(model, out, log)

    images = draw_examples(out / "images")
    target = free_path(out / "embeddings" / f"{TRAIN_NAME}.safetensors")
    log(f"training {TRAIN_NAME!r} on 4 pictures in {images} for {TRAIN_STEPS} steps")
    config = TrainConfig(name=TRAIN_NAME, init_text="red ball", vectors=2, steps=TRAIN_STEPS, learning_rate="1e-2",
                         template="object", save_every=0, output=str(target))
    result = train(model, images, config)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    log(f"loss {first:.4f} -> {last:.4f} (means of the first and last 5 steps); saved {result.path}")

    embedding = load_embedding(target, name=TRAIN_NAME)
    positive, negative = encode_pair(model, f"a photo of embedding:{TRAIN_NAME}", "blurry", [embedding])
    samples = sample(model, positive, negative, sampler="euler", steps=20, cfg=7.0, seed=0, batch=2)
    files = []
    for i, image in enumerate(to_pil(samples)):
        path = free_path(out / f"{TRAIN_NAME}_{i}.png")
        image.save(path)
        files.append(str(path))
    log(f"wrote {len(files)} samples of 'a photo of embedding:{TRAIN_NAME}' to {out} "
        "(noise: the tiny model's weights are random)")
    return {
        "model": str(model_dir),
        "splice_max_difference": diff,
        "training": {"name": TRAIN_NAME, "steps": result.steps_done, "loss_first5": first, "loss_last5": last,
                     "embedding": result.path, "seconds": round(result.seconds, 2)},
        "samples": files,
        "seconds": round(time.perf_counter() - started, 2),
    }
