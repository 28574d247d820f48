"""Train the built-in toy-world model from scratch: a VAE, then the UNet and text encoder jointly.

    python -m ti_core.toyworld.train_base --out ti_core/toyworld/weights/toyworld-sd1.safetensors

About an hour on 2 CPU cores (bf16 autocast), deterministic for a seed on the CPU. The recipe follows the
feasibility study in shared/docs/toyworld.md: SD's scaled-linear noise schedule, Min-SNR-5 loss weights, EMA
weights, captions drawn fresh each step with words dropped, 10% empty captions for classifier-free guidance.
Shape/colour pairs in `render.HELD_OUT` are never shown, so textual inversion can be tested on them.
Two changes from the study: captions leave the background out only when it is the default one (white), and the
VAE's learning rate decays, which sharpens the stripes and dots that the judge reads.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import render
from .model import TOY_ARCH


@dataclass(frozen=True)
class BaseConfig:
    seed: int = 0
    images: int = 32768  # pre-rendered and pre-encoded pictures; the study found 32k as good as 65k
    default_share: float = 0.15  # extra scenes on the default background, whose captions may omit it
    vae_steps: int = 900  # batch 64, fresh renders each step; ~0.5 s/step on 2 cores
    vae_batch: int = 64
    vae_lr: float = 1e-3  # cosine-decayed to a tenth: the late low-lr steps sharpen the patterns
    steps: int = 4800  # UNet + text encoder; ~0.5 s/step: the study reached 98% held-in at 4,386
    batch: int = 32
    lr: float = 8e-4  # with a 200-step warm-up, then constant (EMA does the averaging)
    warmup: int = 200
    min_snr: float = 5.0  # Min-SNR-gamma weights: the noisiest steps fix the layout and must not be drowned
    ema: float = 0.999
    empty_caption: float = 0.1  # for classifier-free guidance
    bf16: bool = True  # harmless here and 0-15% faster; the fp32 and bf16 predictions agree within 1%
    log_every: int = 100


def make_scenes(count: int, rng: random.Random, default_share: float) -> list:
    scenes = []
    for _ in range(count):
        scene = render.random_scene(rng)
        if rng.random() < default_share:
            scene = replace(scene, background=render.default_background(scene.colour))
        scenes.append(scene)
    return scenes


def render_batch(scenes: list, generator: torch.Generator) -> torch.Tensor:
    """[N, 3, 32, 32] in -1..1, as the VAE sees images."""
    return render.render(scenes, generator=generator) * 2 - 1


def _lr_cosine(step: int, steps: int, peak: float, floor: float) -> float:
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))


def train_vae(config: BaseConfig, device: torch.device, log=print):
    from diffusers import AutoencoderKL

    rng, gen = random.Random(config.seed + 1), torch.Generator().manual_seed(config.seed + 1)
    torch.manual_seed(config.seed + 1)
    vae = AutoencoderKL.from_config(TOY_ARCH.vae).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    start = time.time()
    for step in range(config.vae_steps):
        for group in opt.param_groups:
            group["lr"] = _lr_cosine(step, config.vae_steps, config.vae_lr, config.vae_lr / 10)
        images = render_batch([render.random_scene(rng) for _ in range(config.vae_batch)], gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            posterior = vae.encode(images).latent_dist
            recon = vae.decode(posterior.sample()).sample.float()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = F.mse_loss(recon, images) + 0.5 * F.l1_loss(recon, images) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % config.log_every == 0 or step == config.vae_steps - 1:
            psnr = -10 * math.log10(F.mse_loss(recon.clamp(-1, 1), images).item() / 4)
            log(f"vae {step:5d}  loss {loss.item():.4f}  psnr {psnr:.1f} dB  {time.time() - start:.0f} s")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_scenes(vae, scenes: list, device: torch.device, seed: int, chunk: int = 512) -> tuple:
    """Posterior mean and std of every scene's picture, kept on `device` (32k x 4 x 16 x 16 x 2 floats: 256 MB)."""
    gen = torch.Generator().manual_seed(seed + 2)
    means, stds = [], []
    for i in range(0, len(scenes), chunk):
        dist = vae.encode(render_batch(scenes[i:i + chunk], gen).to(device)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def _tokenize(tokenizer, captions: list, device) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return ids.to(device)


def _ema_update(ema_params: list, params: list, decay: float) -> None:
    torch._foreach_mul_(ema_params, decay)
    torch._foreach_add_(ema_params, params, alpha=1 - decay)


def train_denoiser(config: BaseConfig, scenes: list, means, stds, scaling: float, device, log=print, snapshot=None):
    """UNet and text encoder trained jointly; returns their EMA copies. `snapshot(step, unet, encoder)` is
    called with the EMA weights every 1000 steps (for evaluation during a long run)."""
    import copy

    from diffusers import DDPMScheduler, UNet2DConditionModel

    from ..build import build_text_encoder
    from ..models import tokenizers_for

    torch.manual_seed(config.seed + 3)
    rng, gen = random.Random(config.seed + 3), torch.Generator(device="cpu").manual_seed(config.seed + 3)
    unet = UNet2DConditionModel.from_config(TOY_ARCH.unet).to(device).train()
    encoder = build_text_encoder(TOY_ARCH.text_encoders[0]).to(device).train()
    tokenizer = tokenizers_for(TOY_ARCH)[0]
    params = [p for m in (unet, encoder) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    ema_unet, ema_encoder = copy.deepcopy(unet).eval(), copy.deepcopy(encoder).eval()
    ema_params = [p for m in (ema_unet, ema_encoder) for p in m.parameters()]
    for p in ema_params:
        p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    schedule = DDPMScheduler.from_config(TOY_ARCH.scheduler)
    alphas = schedule.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=config.min_snr) / snr  # Min-SNR-gamma for epsilon prediction
    start, running = time.time(), None
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup)
        index = torch.randint(len(scenes), (config.batch,), generator=gen)
        eps_latent = torch.randn(config.batch, *means.shape[1:], generator=gen).to(device)
        x0 = (means[index.to(device)] + stds[index.to(device)] * eps_latent) * scaling
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, len(alphas), (config.batch,), generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        captions = ["" if rng.random() < config.empty_caption else render.caption(scenes[i], rng)
                    for i in index.tolist()]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            context = encoder(_tokenize(tokenizer, captions, device))[0]
            pred = unet(noisy, t, encoder_hidden_states=context).sample.float()
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per_sample * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _ema_update(ema_params, params, min(config.ema, (1 + step) / (10 + step)))
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % config.log_every == 0 or step == config.steps - 1:
            elapsed = time.time() - start
            log(f"unet {step:5d}  loss {running:.4f}  {elapsed:.0f} s  ({elapsed / (step + 1):.2f} s/step)")
        if snapshot and (step + 1) % 1000 == 0 and step + 1 < config.steps:
            snapshot(step + 1, ema_unet, ema_encoder)
    return ema_unet, ema_encoder


def assemble(vae, unet, encoder, scaling: float):
    """The trained parts as the `Arch` and parts dict that the single-file writer takes (on the CPU)."""
    arch = TOY_ARCH.copy_with(vae={**TOY_ARCH.vae, "scaling_factor": round(scaling, 5)})
    return arch, {"unet": unet, "vae": vae, "text_encoders": (encoder,)}


def save(arch, parts, out: Path, metadata: dict, dtype=torch.float16) -> None:
    import copy

    from ..make_model import write_single_file

    def halve(module):
        return copy.deepcopy(module).to("cpu", dtype)

    halved = {"unet": halve(parts["unet"]), "vae": halve(parts["vae"]),
              "text_encoders": tuple(map(halve, parts["text_encoders"]))}
    write_single_file(arch, halved, out, metadata={k: str(v) for k, v in metadata.items()})


def train_base(config: BaseConfig, out: Path, device="cpu", log=print) -> Path:
    device = torch.device(device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    vae = train_vae(config, device, log)
    scenes = make_scenes(config.images, random.Random(config.seed), config.default_share)
    means, stds = encode_scenes(vae, scenes, device, config.seed)
    scaling = 1.0 / float((means + stds * torch.randn_like(means)).std())
    log(f"encoded {len(scenes)} pictures; latent scaling factor {scaling:.4f}; {time.time() - started:.0f} s so far")

    def snapshot(step, unet, encoder):
        path = out.with_name(f"{out.stem}.step{step}{out.suffix}")
        save(*assemble(vae, unet, encoder, scaling), path, {"step": step})
        log(f"snapshot {path}")

    unet, encoder = train_denoiser(config, scenes, means, stds, scaling, device, log, snapshot)
    arch, parts = assemble(vae, unet, encoder, scaling)
    meta = {"toyworld_config": json.dumps(asdict(config)), "toyworld_seconds": round(time.time() - started),
            "toyworld_device": device.type}
    save(arch, parts, out, meta)
    log(f"wrote {out} after {time.time() - started:.0f} s")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ti_core.toyworld.train_base",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the model (.safetensors)")
    parser.add_argument("--seed", type=int, default=BaseConfig.seed)
    parser.add_argument("--steps", type=int, default=BaseConfig.steps, help="UNet + text encoder steps")
    parser.add_argument("--vae-steps", type=int, default=BaseConfig.vae_steps)
    parser.add_argument("--images", type=int, default=BaseConfig.images)
    parser.add_argument("--device", default="cpu", help="cpu (deterministic, the shipped weights) or cuda")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = BaseConfig(seed=args.seed, steps=args.steps, vae_steps=args.vae_steps, images=args.images)
    train_base(config, args.out, device=args.device, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
