"""Load a model, encode prompts (with embeddings), and sample: the generation half of the pack."""

from __future__ import annotations

from . import comfy_adapter as comfy

CATEGORY = "textual_inversion"
# Random weights (it draws noise): the fastest model for checking that a graph runs; saved workflows name it.
DEMO_MODEL = "demo: tiny-sd1 (random weights)"
DIFFUSERS_PREFIX = "[diffusers] "
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")


def model_choices() -> list[str]:
    """The built-in toy-world model first (the default), then the random demo model, checkpoints, folders."""
    from ..ti_core.toyworld.model import BUILTIN_NAME

    checkpoints = comfy.list_files("checkpoints", CHECKPOINT_EXTENSIONS)
    folders = [DIFFUSERS_PREFIX + name for name in comfy.list_subfolders("diffusers")]
    return [BUILTIN_NAME, DEMO_MODEL, *checkpoints, *folders]


def demo_model_path():
    """The built-in tiny SD1 model (random weights), written on first use to models/textual_inversion/."""
    from ..ti_core.make_model import make_model

    path = comfy.models_root() / "textual_inversion" / "tiny-sd1"
    if not (path / "model_index.json").exists():
        make_model("tiny-sd1", path, seed=0)
    return path


def model_path(name: str):
    from ..ti_core.errors import SettingError
    from ..ti_core.toyworld.model import BUILTIN_NAME, builtin_model_path

    if name == BUILTIN_NAME:
        return builtin_model_path()  # shipped in the pack; a clear error if a checkout lacks it
    if name == DEMO_MODEL:
        return demo_model_path()
    if name.startswith(DIFFUSERS_PREFIX):
        kind, rel = "diffusers", name[len(DIFFUSERS_PREFIX):]
    else:
        kind, rel = "checkpoints", name
    path = comfy.find_file(kind, rel)
    if path is None:
        raise SettingError(f"model {name!r} is not in models/{kind}; pick one from the list (press R to refresh it).")
    return path


class TILoadModel:
    DESCRIPTION = ("Load an SD1.x, SD2.x or SDXL model for textual inversion: the built-in toy-world model "
                   "(the default: a small SD1 model that draws 32 x 32 pictures of shapes, colours and patterns, "
                   "so a word trains in minutes on a CPU), a single .safetensors/.ckpt from models/checkpoints, "
                   "a diffusers folder from models/diffusers, or the tiny demo model (random weights: it draws "
                   "noise, but every step runs).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("TI_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model (UNet, VAE, text encoders, tokenizers) for the other TI nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..ti_core.models import DTYPES

        return {"required": {
            "model_name": (model_choices(), {"tooltip": "The built-in toy-world model (32 px shapes; ships with "
                                                        "the pack), the random-weight demo model (draws noise), a "
                                                        "checkpoint file or a diffusers folder. Family and "
                                                        "prediction type are read from the weights."}),
            "dtype": (list(DTYPES), {"default": "fp32", "tooltip": "The dtype the weights are loaded in. "
                                                                    "fp16/bf16 halve memory; trained vectors always "
                                                                    "stay fp32."}),
        }}

    def load(self, model_name, dtype):
        import torch

        from ..ti_core.models import load_model

        device = comfy.torch_device()
        comfy.make_room(device)
        # ComfyUI runs nodes under inference_mode; weights made there could never be trained through.
        with torch.inference_mode(False):
            return (load_model(model_path(model_name), dtype=dtype, device=device),)


class PromptConditioning:
    """TI_CONDITIONING: a ti_core Conditioning plus what made it, so it can be re-encoded to a longer length
    (positive and negative must have the same number of 75-token chunks for guidance)."""

    def __init__(self, model, text: str, embeddings: dict, resolver, conditioning):
        self.model, self.text, self.embeddings, self.resolver = model, text, embeddings, resolver
        self.conditioning = conditioning

    def with_chunks(self, chunks: int):
        from ..ti_core.prompt import encode_prompt

        if self.conditioning.chunks >= chunks:
            return self.conditioning
        return encode_prompt(self.model, self.text, self.embeddings, resolver=self.resolver, min_chunks=chunks)


def embeddings_folder_resolver(name: str):
    """Find `embedding:name` in ComfyUI's models/embeddings (any format ti_core reads), else None."""
    from ..ti_core.embeddings import EXTENSIONS, load_embedding, name_from_path

    for candidate in (name, *(name + ext for ext in EXTENSIONS)):
        path = comfy.find_file("embeddings", candidate)
        if path is not None and path.is_file():
            return load_embedding(path, name=name_from_path(name))
    return None


class TIEncodePrompt:
    DESCRIPTION = ("Encode a prompt for TISample. Embeddings: `embedding:name`, `<name>`, or `*` for the single "
                   "connected embedding; names not connected are looked up in models/embeddings. Weights "
                   "`(word:1.2)` and `BREAK` work as in ComfyUI.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("TI_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, for TISample's positive or negative input.",)

    @classmethod
    def INPUT_TYPES(cls):
        emb = ("TI_EMBEDDING", {"tooltip": "An embedding to use in the prompt by its name (e.g. from "
                                           "TITrainEmbedding or TILoadEmbedding)."})
        return {"required": {
            "model": ("TI_MODEL", {"tooltip": "The model from TILoadModel."}),
            "text": ("STRING", {"multiline": True, "default": "a photo of embedding:purple-star",
                                "tooltip": "The prompt. `embedding:name` inserts an embedding's vectors."}),
        }, "optional": {"embedding": emb, "embedding_2": emb, "embedding_3": emb}}

    def encode(self, model, text, embedding=None, embedding_2=None, embedding_3=None):
        from ..ti_core.prompt import as_embedding_dict, encode_prompt

        known = as_embedding_dict([e for e in (embedding, embedding_2, embedding_3) if e is not None])
        resolver = embeddings_folder_resolver
        conditioning = encode_prompt(model, text, known, resolver=resolver)
        return (PromptConditioning(model, text, known, resolver, conditioning),)


class TISample:
    DESCRIPTION = ("Generate images from a positive and a negative TI conditioning. The same seed gives the same "
                   "images on CPU. Output is an IMAGE batch for PreviewImage or SaveImage.")
    CATEGORY = CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Images [batch, height, width, 3] in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..ti_core.sample import SAMPLERS

        return {"required": {
            "model": ("TI_MODEL", {"tooltip": "The model from TILoadModel."}),
            "positive": ("TI_CONDITIONING", {"tooltip": "What to draw (TIEncodePrompt)."}),
            "negative": ("TI_CONDITIONING", {"tooltip": "What to avoid (TIEncodePrompt; may be an empty prompt)."}),
            "sampler": (list(SAMPLERS), {"default": "euler", "tooltip": "Sampling method (ComfyUI's names)."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Denoising steps."}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale: how strongly to follow the prompt."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Random seed of the initial noise."}),
            # 0 = the model's own size, so a graph keeps working when another model is picked on TILoadModel
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Image width in pixels "
                              "(a multiple of 8); 0 = the model's own (32 for the built-in model, 512 for SD1.5, "
                              "1024 for SDXL)."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Image height in pixels "
                               "(a multiple of 8); 0 = the model's own."}),
            "batch": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images per run."}),
        }}

    def generate(self, model, positive, negative, sampler, steps, cfg, seed, width, height, batch):
        from ..ti_core.sample import sample

        chunks = max(positive.conditioning.chunks, negative.conditioning.chunks)
        progress = comfy.Progress(steps)
        images = sample(model, positive.with_chunks(chunks), negative.with_chunks(chunks), sampler=sampler,
                        steps=steps, cfg=cfg, seed=seed, width=width or None, height=height or None, batch=batch,
                        on_step=lambda step, total: progress.update(step), should_stop=progress.should_stop)
        progress.finish()
        return (images,)
