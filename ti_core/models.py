"""Load Stable Diffusion models (SD1.x, SD2.x eps/v, SDXL base) fully offline into one handle.

Sources: a diffusers folder, or a single `.safetensors` / `.ckpt` in the original (LDM / A1111 / ComfyUI) key
layout. The family and prediction type come from the weights' keys and shapes, never from the file name; the
caller may override both. Single files are paired with the bundled published configs (`archs.py`) and the
bundled CLIP tokenizer, so nothing is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from . import archs
from .archs import Arch
from .build import build_components, fill_empty
from .checkpoint_io import load_tensors
from .errors import ModelLoadError, SettingError
from .memory import release_free_memory

TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
ARCH_METADATA_KEY = "ti_core.arch"  # our own single files carry their config (tiny models have no published one)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Which embedding-file keys feed each text encoder, per family (first match wins). SD1 also accepts the
# clip_l half of an SDXL file, as ComfyUI does.
EMBEDDING_KEYS = {"sd1": (("emb_params", "clip_l"),), "sd2": (("emb_params",),), "sdxl": (("clip_l",), ("clip_g",))}


@dataclass(repr=False)
class SDModel:
    """Everything needed to encode prompts, train and sample. Modules are frozen (requires_grad False)."""

    family: str  # "sd1" | "sd2" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    tokenizers: tuple
    text_encoders: tuple
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    dtype: torch.dtype
    device: torch.device
    source: str
    resolution: int  # the image size the model was trained at

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def embedding_widths(self) -> tuple:
        return tuple(te.config.hidden_size for te in self.text_encoders)

    @property
    def embedding_keys(self) -> tuple:
        """Per text encoder, the embedding-file keys it reads (see EMBEDDING_KEYS)."""
        return EMBEDDING_KEYS[self.family]

    def __repr__(self) -> str:
        # one line: ComfyUI puts a node's inputs into its error reports, and the default repr prints every layer
        dtype = str(self.dtype).replace("torch.", "")
        return (f"SDModel({self.family}, {self.prediction_type}, {self.resolution} px, {dtype}, {self.device}, "
                f"source={self.source!r})")

    def describe(self) -> dict:
        return {
            "source": self.source,
            "family": self.family,
            "prediction_type": self.prediction_type,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "resolution": self.resolution,
            "text_encoder_widths": list(self.embedding_widths),
            "unet_parameters": sum(p.numel() for p in self.unet.parameters()),
        }


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SettingError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def load_tokenizer(folder: Path | None = None, pad_token: str | None = None):
    """A CLIP tokenizer from `folder` (a diffusers tokenizer folder) or the bundled CLIP files.

    transformers 5 silently ignores CLIPTokenizer(vocab_file=..., merges_file=...), so always from_pretrained.
    """
    from transformers import CLIPTokenizer

    kwargs = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer.from_pretrained(str(folder or TOKENIZER_DIR), local_files_only=True, **kwargs)


def tokenizers_for(arch: Arch) -> tuple:
    # SD2 and SDXL's second encoder (OpenCLIP) pad with "!" (id 0); OpenAI CLIP pads with the end token.
    return tuple(load_tokenizer(pad_token="!" if cfg["pad_token_id"] == 0 else None) for cfg in arch.text_encoders)


# ----------------------------------------------------------------------------------------------------------
# detection from a single-file state dict


def detect_family(state_dict: dict, path: Path) -> str:
    keys = state_dict.keys()
    unet_in = state_dict.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is None:
        sample = ", ".join(sorted({k.split(".")[0] for k in keys})[:6]) or "no tensors"
        raise ModelLoadError(
            f"{path}: not a Stable Diffusion checkpoint: no UNet weights (model.diffusion_model.*); top-level "
            f"keys seen: {sample}. Pass a full SD1.x/SD2.x/SDXL checkpoint or a diffusers folder."
        )
    if unet_in.shape[1] != 4:
        raise ModelLoadError(
            f"{path}: the UNet takes {unet_in.shape[1]} input channels (an inpainting or other special model); "
            "only the standard 4-channel SD1.x/SD2.x/SDXL models are supported."
        )
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise ModelLoadError(f"{path}: looks like the SDXL refiner (one OpenCLIP encoder); use an SDXL base model.")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    raise ModelLoadError(
        f"{path}: has UNet weights but no text encoder (cond_stage_model.* / conditioner.*). Use a full checkpoint."
    )


def detect_prediction_type(state_dict: dict, family: str) -> str:
    # ComfyUI and others mark v-prediction models with an empty "v_pred" tensor; we write it too.
    if "v_pred" in state_dict:
        return "v_prediction"
    if family == "sd2":
        # Unmarked SD2 files: the 768-v models' last attention block has much larger norm biases than the
        # 512-base eps models (the same test ComfyUI uses for SD2).
        bias = state_dict.get("model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias")
        if bias is not None and torch.std(bias.float(), unbiased=False) > 0.09:
            return "v_prediction"
    return "epsilon"


def arch_from_metadata(metadata: dict) -> Arch | None:
    raw = metadata.get(ARCH_METADATA_KEY)
    if not raw:
        return None
    data = json.loads(raw)
    data["text_encoders"] = tuple(data["text_encoders"])
    return Arch(**data)


def arch_to_metadata(arch: Arch) -> dict:
    return {ARCH_METADATA_KEY: json.dumps({k: getattr(arch, k) for k in arch.__dataclass_fields__})}


# ----------------------------------------------------------------------------------------------------------
# loading


def _check_choice(value, choices, what):
    if value is not None and value not in choices:
        raise SettingError(f"{what} {value!r} is not one of {', '.join(choices)}.")


def best_device() -> str:
    """The fastest device torch can use here: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def load_model(path, *, dtype="fp32", device="cpu", family=None, prediction_type=None) -> SDModel:
    """Load a diffusers folder or a single-file checkpoint. `family`/`prediction_type` override detection."""
    path = Path(path)
    dtype, device = resolve_dtype(dtype), torch.device(device)
    _check_choice(family, archs.FAMILIES, "family")
    _check_choice(prediction_type, archs.PREDICTION_TYPES, "prediction_type")
    if path.is_dir():
        model = _load_folder(path, dtype, family, prediction_type)
    else:
        model = _load_single_file(path, dtype, family, prediction_type)
    for module in (model.unet, model.vae, *model.text_encoders):
        module.to(device)
    model.device = device
    release_free_memory()  # the per-tensor read buffers
    return model


def _load_single_file(path: Path, dtype, family, prediction_type) -> SDModel:
    from .ldm_keys import ldm_to_diffusers

    state_dict, metadata = load_tensors(path, lazy_dtype=dtype)
    detected = detect_family(state_dict, path)
    family = family or detected
    prediction_type = prediction_type or detect_prediction_type(state_dict, family)
    arch = arch_from_metadata(metadata)
    if arch is None or arch.family != family:
        arch = archs.published_arch(family, prediction_type)
    parts = ldm_to_diffusers(arch, state_dict)
    del state_dict
    hint = f"if the family was guessed wrong, pass family=... (detected: {detected})"
    return _assemble(arch, parts, dtype, prediction_type, path, tokenizers_for(arch), hint)


UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def model_from_state_dict(state_dict, *, dtype=None, family=None, prediction_type=None, arch: Arch | None = None,
                          source: str = "in-memory state dict") -> SDModel:
    """Build the model from a state dict already in memory, in the original single-file layout (what an app that
    has the checkpoint loaded would save: ComfyUI's `state_dict_for_saving`, A1111's `sd_model.state_dict()`).

    No second copy: every tensor whose dtype is `dtype` becomes the model's weight as it is (the model shares
    its storage, and its device); only tensors of another dtype are cast, and transposed projections (OpenCLIP)
    are the one exception. Tensors made under `torch.inference_mode` are re-wrapped over the same storage as
    ordinary tensors, so gradients can flow through them to trained vectors. `dtype` None: the UNet's dtype.
    The architecture is `arch`, else the known one (published or tiny) of the detected family whose keys and
    widths the state dict has. The caller must not change the tensors while the model is in use.
    """
    from .ldm_keys import ldm_to_diffusers

    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ModelLoadError(f"{source}: expected a non-empty mapping of single-file keys to tensors, "
                             f"got {type(state_dict).__name__}{' (empty)' if state_dict == {} else ''}.")
    _check_choice(family, archs.FAMILIES, "family")
    _check_choice(prediction_type, archs.PREDICTION_TYPES, "prediction_type")
    detected = detect_family(state_dict, source)
    family = family or detected
    prediction_type = prediction_type or detect_prediction_type(state_dict, family)
    unet_in = state_dict[UNET_IN_KEY]
    dtype = unet_in.dtype if dtype is None else resolve_dtype(dtype)
    arch = arch or arch_for_state_dict(state_dict, family, prediction_type)
    with torch.inference_mode(False):  # casts made below must be ordinary tensors too
        plain = {k: _ordinary(v) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        parts = ldm_to_diffusers(arch, plain, share=True)
        del plain
        hint = f"the state dict does not fit the {arch.name} architecture (detected family: {detected})"
        model = _assemble(arch, parts, dtype, prediction_type, source, tokenizers_for(arch), hint)
    model.device = unet_in.device
    for module in (model.unet, model.vae, *model.text_encoders):
        module.to(model.device)  # a no-op for the tensors already there
    return model


def _ordinary(t: torch.Tensor) -> torch.Tensor:
    """`t`, or for an inference tensor an ordinary tensor over the same storage (no copy). Call it outside
    inference mode."""
    if not t.is_inference():
        return t
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(),
                                                               t.size(), t.stride())


def arch_for_state_dict(state_dict, family: str, prediction_type: str) -> Arch:
    """The known architecture of `family` whose single-file keys all appear in `state_dict` with the UNet's,
    VAE's and text encoders' widths: the published one first, then the tiny test ones."""
    from .ldm_keys import single_file_keys

    published = archs.published_arch(family, prediction_type)
    candidates = [published, *(a for a in archs.ARCHS.values() if a.family == family and a is not published)]
    for arch in candidates:
        if single_file_keys(arch) <= state_dict.keys() and _widths_fit(arch, state_dict):
            return arch
    # none has every key: the one of the same widths, so that _assemble names the missing tensors
    return next((a for a in candidates if _widths_fit(a, state_dict)), published)


def _widths_fit(arch: Arch, state_dict) -> bool:
    text_keys = {"sd1": ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",),
                 "sd2": ("cond_stage_model.model.token_embedding.weight",),
                 "sdxl": ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                          "conditioner.embedders.1.model.token_embedding.weight")}[arch.family]
    keys = (UNET_IN_KEY, "first_stage_model.encoder.conv_in.weight", *text_keys)
    if not all(k in state_dict for k in keys):
        return False
    widths = [state_dict[k].shape[0] for k in keys[:2]] + [state_dict[k].shape[-1] for k in text_keys]
    expected = [arch.unet["block_out_channels"][0], arch.vae["block_out_channels"][0]]
    expected += [cfg["hidden_size"] for cfg in arch.text_encoders]
    return widths == expected


def _load_folder(path: Path, dtype, family, prediction_type) -> SDModel:
    is_xl = (path / "text_encoder_2").is_dir()
    encoder_dirs = ["text_encoder", "text_encoder_2"] if is_xl else ["text_encoder"]
    needed = ["unet", "vae", *encoder_dirs, "scheduler"]
    missing = [n for n in needed if not (path / n).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{path}: this diffusers folder lacks {', '.join(n + '/' for n in missing)}. A complete folder has "
            "unet/, vae/, text_encoder/ (SDXL: also text_encoder_2/), tokenizer/ and scheduler/."
        )
    unet_cfg, vae_cfg = _read_config(path / "unet"), _read_config(path / "vae")
    text_cfgs = []
    for name in encoder_dirs:
        cfg = _read_config(path / name)
        cfg["_with_projection"] = "CLIPTextModelWithProjection" in cfg.get("architectures", [])
        text_cfgs.append(cfg)
    scheduler_cfg = _read_config(path / "scheduler", "scheduler_config.json")
    detected = _family_from_configs(unet_cfg, text_cfgs[0], is_xl)
    family = family or detected
    prediction_type = prediction_type or scheduler_cfg.get("prediction_type", "epsilon")
    arch = Arch(path.name, family, prediction_type, unet_cfg, vae_cfg, tuple(text_cfgs), scheduler_cfg)
    parts = {
        "unet": _read_weights(path / "unet", dtype),
        "vae": _read_weights(path / "vae", dtype),
        "text_encoders": tuple(_read_weights(path / n, dtype) for n in encoder_dirs),
    }
    tokenizers = []
    for i, name in enumerate(["tokenizer", "tokenizer_2"][: len(encoder_dirs)]):
        pad = "!" if (family == "sd2" or i == 1) else None
        tokenizers.append(load_tokenizer(path / name if (path / name).is_dir() else None, pad_token=pad))
    hint = f"detected family: {detected}"
    return _assemble(arch, parts, dtype, prediction_type, path, tuple(tokenizers), hint)


def _read_config(folder: Path, name: str = "config.json") -> dict:
    try:
        config = json.loads((folder / name).read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder / name}: missing or unreadable config ({e}).") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / name}: a config is a JSON object, "
                             f"but this file holds a {type(config).__name__}.")
    return config


def _read_weights(folder: Path, dtype: torch.dtype) -> dict:
    """The tensors of one diffusers component folder: safetensors (single, sharded or an fp16 variant) or .bin."""
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        try:
            shards = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{index[0]}: unreadable shard index ({type(e).__name__}: {e}); it should be JSON "
                                 'with a "weight_map" object, as diffusers writes it.') from None
        files = [folder / s for s in shards]
    else:
        files = sorted(folder.glob("*.safetensors"), key=lambda f: (f.name.count("."), f.name))[:1]
        files = files or sorted(folder.glob("*.bin"))[:1]
    if not files:
        raise ModelLoadError(f"{folder}: no weights (*.safetensors or *.bin) in this component folder.")
    state_dict = {}
    for f in files:
        state_dict.update(load_tensors(f, lazy_dtype=dtype)[0])  # cast per tensor: no full-precision copy
    return state_dict


def _assemble(arch: Arch, parts: dict, dtype, prediction_type, path: Path, tokenizers, hint: str) -> SDModel:
    """Fill empty (meta-device) modules of `arch` with the converted weights, or say what does not fit."""
    try:
        shells = build_components(arch, empty=True)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:  # a config with odd values
        raise ModelLoadError(f"{path}: cannot build a model from its config ({type(e).__name__}: {e}); the "
                             f"config.json files are damaged or not those of an SD1.x/SD2.x/SDXL model.") from None
    named = [("unet", shells["unet"], parts["unet"]), ("vae", shells["vae"], parts["vae"])]
    named += [
        (f"text encoder {i + 1}", module, sd)
        for i, (module, sd) in enumerate(zip(shells["text_encoders"], parts["text_encoders"]))
    ]
    for name, module, sd in named:
        problems = _fill(module, sd, dtype)
        release_free_memory()  # keep the read buffers' garbage from piling up across components
        if problems:
            raise ModelLoadError(
                f"{path}: the {name} weights do not match a {arch.family} model ({_summarise(problems)}). "
                f"The file is incomplete or not a standard SD1.x/SD2.x/SDXL model; {hint}."
            )
    return SDModel(
        family=arch.family,
        prediction_type=prediction_type,
        tokenizers=tokenizers,
        text_encoders=shells["text_encoders"],
        unet=shells["unet"],
        vae=shells["vae"],
        scheduler_config={**arch.scheduler, "prediction_type": prediction_type},
        dtype=dtype,
        device=torch.device("cpu"),
        source=str(path),
        resolution=arch.resolution,
    )


def _fill(module, state_dict, dtype) -> list:
    expected = module.state_dict()
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return shape_errors or fill_empty(module, state_dict, dtype)


def _summarise(problems: list) -> str:
    shapes = [p for p in problems if ": file " in p]
    extra = [p[1:] for p in problems if p.startswith("+")]
    missing = [p for p in problems if p not in shapes and not p.startswith("+")]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} tensors of another shape, e.g. {shapes[0]}")
    if missing:
        parts.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected tensors, e.g. {extra[0]}")
    return "; ".join(parts)


def _family_from_configs(unet_config: dict, text_config: dict, is_xl: bool) -> str:
    if is_xl or unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    # OpenAI CLIP (SD1) uses quick_gelu; OpenCLIP (SD2) uses gelu. Widths 768/1024 for the published models.
    if text_config.get("hidden_size") == 1024 or text_config.get("hidden_act") == "gelu":
        return "sd2"
    return "sd1"
