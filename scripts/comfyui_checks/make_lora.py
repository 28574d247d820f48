"""A random kohya-style LoRA (rank 4) for the SD1.5 checkpoint: every UNet cross-attention to_k/to_v and the text
encoder's first-layer q/k/v projections."""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ckpt, out = sys.argv[1], sys.argv[2]
g = torch.Generator().manual_seed(7)
lora = {}
with safe_open(ckpt, "pt") as f:
    for k in f.keys():
        shape = f.get_slice(k).get_shape()
        if k.startswith("model.diffusion_model.") and (".attn2.to_k.weight" in k or ".attn2.to_v.weight" in k):
            name = "lora_unet_" + k[len("model.diffusion_model."):-len(".weight")].replace(".", "_")
        elif k.startswith("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.") and k.endswith(
                "proj.weight") and "out_proj" not in k:
            name = "lora_te_" + k[len("cond_stage_model.transformer."):-len(".weight")].replace(".", "_")
        else:
            continue
        out_dim, in_dim = shape
        lora[name + ".lora_up.weight"] = (0.05 * torch.randn(out_dim, 4, generator=g)).half()
        lora[name + ".lora_down.weight"] = (0.05 * torch.randn(4, in_dim, generator=g)).half()
        lora[name + ".alpha"] = torch.tensor(4.0)
save_file(lora, out)
print(len(lora) // 3, "modules")
