"""The first-run demo: a tiny model, an embedding, and images generated with it, all offline.

Until the trainer lands, the embedding is made by hand: the token vectors of "red cat" saved as a 2-vector
embedding. Encoding "a photo of embedding:demo-red-cat" must then give exactly the conditioning of
"a photo of red cat", which the demo measures and reports, and both prompts generate the same image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

DEMO_WORDS = "red cat"
DEMO_NAME = "demo-red-cat"


def run_demo(out: Path, log: Callable[[str], None] = print) -> dict:
    from .embeddings import Embedding, load_embedding, save_embedding
    from .make_model import make_model
    from .models import load_model
    from .prompt import encode_pair
    from .sample import sample, to_pil

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "tiny-sd1"
    if not model_dir.exists():
        log(f"building a tiny SD1 model (random weights) in {model_dir}")
        make_model("tiny-sd1", model_dir, seed=0)
    model = load_model(model_dir)

    emb_path = out / "embeddings" / f"{DEMO_NAME}.safetensors"
    if not emb_path.exists():
        tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
        ids = tokenizer.backend_tokenizer.encode(DEMO_WORDS, add_special_tokens=False).ids
        rows = encoder.get_input_embeddings().weight[ids].detach().clone()
        save_embedding(Embedding(DEMO_NAME, {"emb_params": rows}, {"init_text": DEMO_WORDS}), emb_path)
    embedding = load_embedding(emb_path)
    log(f"embedding {embedding.name}: {embedding.num_vectors} vectors from the words {DEMO_WORDS!r} -> {emb_path}")

    prompts = {"embedding": f"a photo of embedding:{DEMO_NAME}", "words": f"a photo of {DEMO_WORDS}"}
    conds = {k: encode_pair(model, p, "blurry", [embedding]) for k, p in prompts.items()}
    diff = float((conds["embedding"][0].embeds - conds["words"][0].embeds).abs().max())
    log(f"max |conditioning difference| between the two prompts: {diff:.3g} (0 means the splice is exact)")

    files, images = {}, {}
    for key, (pos, neg) in conds.items():
        images[key] = sample(model, pos, neg, sampler="euler", steps=20, cfg=7.0, seed=0, batch=2)
        files[key] = []
        for i, image in enumerate(to_pil(images[key])):
            path = out / f"{key}_{i}.png"
            image.save(path)
            files[key].append(str(path))
    same = torch.equal(images["embedding"], images["words"])
    log(f"images from both prompts identical: {same}; wrote {sum(len(v) for v in files.values())} PNGs to {out}")
    return {
        "model": str(model_dir),
        "embedding": str(emb_path),
        "prompts": prompts,
        "max_conditioning_difference": diff,
        "images_identical": same,
        "files": files,
        "seconds": round(time.perf_counter() - started, 2),
    }
