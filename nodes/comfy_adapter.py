"""Every optional ComfyUI API the pack uses, each with a fallback so the nodes also run without ComfyUI.

ComfyUI modules (`folder_paths`, `comfy.utils`, `comfy.model_management`, `server`) are imported at call time,
never at import time: the pack imports fast, and tests can inject fake modules through `sys.modules`.
Without ComfyUI, model folders live under $TI_MODELS_DIR (default: `models/` in the repository), inputs under
$TI_INPUT_DIR (default: `input/`), temporary files under $TI_TEMP_DIR (default: the system's temp folder).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
EVENT_PREFIX = "textual_inversion."
log = logging.getLogger("textual_inversion")


def _optional(module_name: str):
    """The module if ComfyUI provides it here, else None."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


# ------------------------------------------------------------------------------------------------ folders


def models_root() -> Path:
    if os.environ.get("TI_MODELS_DIR"):
        return Path(os.environ["TI_MODELS_DIR"])
    fp = _optional("folder_paths")
    if fp is not None and getattr(fp, "models_dir", None):
        return Path(fp.models_dir)
    return PACK_ROOT / "models"


def folder_paths_for(kind: str) -> list[Path]:
    """The folders of one model kind ("checkpoints", "embeddings", "diffusers", ...); the first is where we write."""
    fp = _optional("folder_paths")
    if fp is not None and not os.environ.get("TI_MODELS_DIR"):
        try:
            return [Path(p) for p in fp.get_folder_paths(kind)]
        except (KeyError, AttributeError):
            pass
    return [models_root() / kind]


def list_files(kind: str, extensions: tuple[str, ...]) -> list[str]:
    """Relative names (with '/' separators) of files of `kind` ending in one of `extensions`, sorted."""
    fp = _optional("folder_paths")
    if fp is not None and not os.environ.get("TI_MODELS_DIR"):
        try:
            return sorted(n for n in fp.get_filename_list(kind) if n.lower().endswith(extensions))
        except (KeyError, AttributeError):
            pass
    names = set()
    for root in folder_paths_for(kind):
        if root.is_dir():
            names.update(p.relative_to(root).as_posix() for p in root.rglob("*")
                         if p.is_file() and p.name.lower().endswith(extensions))
    return sorted(names)


def list_subfolders(kind: str) -> list[str]:
    """Names of the folders directly inside the folders of `kind` (e.g. diffusers models)."""
    names = set()
    for root in folder_paths_for(kind):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def find_file(kind: str, name: str) -> Path | None:
    """The file or folder `name` (relative) inside one of the folders of `kind`, checked not to escape them."""
    from .safe_paths import resolve_inside

    for root in folder_paths_for(kind):
        path = resolve_inside(root, name)
        if path.exists():
            return path
    return None


def _directory(getter: str, env: str, fallback: Path) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    fp = _optional("folder_paths")
    if fp is not None and hasattr(fp, getter):
        return Path(getattr(fp, getter)())
    return fallback


def input_directory() -> Path:
    return _directory("get_input_directory", "TI_INPUT_DIR", PACK_ROOT / "input")


def temp_directory() -> Path:
    return _directory("get_temp_directory", "TI_TEMP_DIR", Path(tempfile.gettempdir()) / "textual_inversion")


def torch_device():
    """ComfyUI's device (honours --cpu and its GPU choice), else the best available (CUDA, MPS, then the CPU)."""
    import torch

    from ..ti_core.models import best_device

    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "get_torch_device"):
        return mm.get_torch_device()
    return torch.device(best_device())


def make_room(device) -> bool:
    """Ask ComfyUI to move its own models off `device` before we load or train there, as ComfyUI's own training
    node does: our model is invisible to its memory manager, so its models would otherwise keep the VRAM that
    training needs. True when asked; a no-op on the CPU and outside ComfyUI."""
    mm = _optional("comfy.model_management")
    if mm is None or not hasattr(mm, "free_memory") or getattr(device, "type", str(device)) == "cpu":
        return False
    mm.free_memory(1e30, device)  # ComfyUI's unload_all_models(), for this device
    return True


# ------------------------------------------------------------------------------- progress and interrupts


def _is_interrupt(exc: BaseException) -> bool:
    return type(exc).__name__ == "InterruptProcessingException"


def processing_interrupted() -> bool:
    """True when the user pressed Cancel in ComfyUI (reads the flag, does not clear it). Always False outside."""
    mm = _optional("comfy.model_management")
    return bool(mm is not None and mm.processing_interrupted())


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception (and clear the flag) when the user cancelled; no-op outside ComfyUI."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar for one node, or nothing outside ComfyUI.

    ComfyUI's progress hook raises its interrupt exception itself; we keep that exception instead of letting it
    escape from a training callback, so the trainer can stop cleanly, save, and then `finish()` re-raises it.
    """

    def __init__(self, total: int, preview_size: int = 512):
        utils = _optional("comfy.utils")
        self.total, self.preview_size, self.interruption = total, preview_size, None
        self._bar = utils.ProgressBar(total) if utils is not None else None

    def update(self, value: int, preview=None) -> None:
        """`preview`: a PIL image shown on the node, or None."""
        if self._bar is None:
            return
        try:
            shown = ("JPEG", preview, self.preview_size) if preview is not None else None
            self._bar.update_absolute(value, self.total, shown)
        except Exception as exc:
            if not _is_interrupt(exc):
                raise
            self.interruption = exc

    def should_stop(self) -> bool:
        return self.interruption is not None or processing_interrupted()

    def finish(self) -> None:
        """Re-raise a cancel seen during the run, so ComfyUI reports the run as interrupted."""
        if self.interruption is not None:
            raise self.interruption
        throw_if_interrupted()


# ------------------------------------------------------------------------------------------ server


def prompt_server():
    """ComfyUI's running PromptServer instance, or None."""
    server = _optional("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def send_event(event: str, data: dict) -> None:
    """Broadcast `textual_inversion.<event>` to the browser; no-op outside ComfyUI. Never fails the node."""
    instance = prompt_server()
    if instance is None:
        return
    try:
        instance.send_sync(EVENT_PREFIX + event, data)
    except Exception:  # a closed socket must not stop a training run
        log.warning("textual_inversion: could not send %s", event, exc_info=True)


# ------------------------------------------------------------------------- the graph's MODEL, CLIP and VAE


def graph_state_dict(model, clip, vae) -> dict:
    """The single-file state dict of ComfyUI's MODEL, CLIP and VAE objects, got as ComfyUI's Save Checkpoint
    gets it (comfy/sd.py:save_checkpoint): both models loaded with their patches (LoRAs, merges) written into the
    weights, then `state_dict_for_saving`. The tensors are the graph's own weights, not copies."""
    from ..ti_core.errors import SettingError

    for what, value, needed in (("model", model, "model"), ("clip", clip, "get_sd"), ("vae", vae, "get_sd")):
        if not hasattr(value, needed):
            raise SettingError(f"`{what}` is a {type(value).__name__}, not ComfyUI's {what.upper()}: connect the "
                               f"{what.upper()} output of Load Checkpoint (or of a LoRA loader or merge).")
    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "load_models_gpu"):
        # full load, weights patched for real: training reads every weight, and no lowvram on-the-fly patches
        mm.load_models_gpu([model, clip.load_model()], force_patch_weights=True, force_full_load=True)
    return model.model.state_dict_for_saving(clip.get_sd(), vae.get_sd())


def clip_vision_encoder(clip_vision):
    """The picture checks' image encoder (ti_core.picture_check) from ComfyUI's CLIP_VISION (Load CLIP Vision):
    pictures [N, 3, H, W] in 0..1 -> its image embeddings. ComfyUI resizes, centre-crops and normalises them."""
    from ..ti_core.errors import SettingError

    if not hasattr(clip_vision, "encode_image"):
        raise SettingError(f"`clip_vision` is a {type(clip_vision).__name__}, not ComfyUI's CLIP_VISION: connect "
                           "the output of Load CLIP Vision, or leave the input empty.")

    def encode(pictures):
        return clip_vision.encode_image(pictures.permute(0, 2, 3, 1))["image_embeds"]

    return encode


EMBEDDING_FILE_EXTENSIONS = (".safetensors", ".pt", ".bin")


def clip_with_embeddings(clip, table: dict):
    """A clone of ComfyUI's CLIP whose tokenizer resolves `embedding:<name>` to `table[name]` (a dict of
    embedding-file keys to [n, width] vectors) before it looks in models/embeddings; the given CLIP is unchanged.
    ComfyUI's CLIP.clone() shares the tokenizer, so the tokenizer (and each text encoder's tokenizer in it) is
    copied; clones made later (CLIPSetLastLayer, LoRA loaders) keep the words."""
    import copy

    from ..ti_core.errors import SettingError

    out = clip.clone()
    tokenizer = copy.copy(out.tokenizer)
    patched = [attr for attr, sub in vars(tokenizer).items() if callable(getattr(sub, "_try_get_embedding", None))]
    if not patched:
        raise SettingError(f"this CLIP's tokenizer ({type(tokenizer).__name__}) has no CLIP-style text tokenizer "
                           "that reads `embedding:` names; use the CLIP of an SD1.x, SD2.x or SDXL checkpoint.")
    for attr in patched:
        setattr(tokenizer, attr, _tokenizer_with_vectors(getattr(tokenizer, attr), table))
    out.tokenizer = tokenizer
    return out


def _tokenizer_with_vectors(sub, table: dict):
    import copy

    sub = copy.copy(sub)
    size, key, fallback = sub.embedding_size, sub.embedding_key, sub._try_get_embedding
    if sub.embedding_directory is None:  # ComfyUI only looks `embedding:` names up when it has a folder list
        sub.embedding_directory = []

    def vectors_of(name: str):
        for candidate in (name, *(name[: -len(x)] for x in EMBEDDING_FILE_EXTENSIONS if name.endswith(x))):
            if candidate in table:
                vectors = table[candidate]
                fits = {k: v for k, v in vectors.items() if v.shape[-1] == size}
                if not fits:
                    widths = ", ".join(f"{k}: {v.shape[-1]}" for k, v in vectors.items())
                    log.warning(f"textual_inversion: embedding:{name} has widths {widths}; this text encoder "
                                f"({key}) takes {size}, so it is left out here.")
                    return None
                return (fits.get(key) if key in fits else next(iter(fits.values()))).detach().clone()
        return None

    def try_get_embedding(embedding_name: str):
        words = embedding_name.split()
        if words:
            leftover = " ".join(words[1:])
            found = vectors_of(words[0])
            if found is not None:
                return found, leftover
            stripped = words[0].strip(",")
            if stripped != words[0]:
                found = vectors_of(stripped)
                if found is not None:  # ComfyUI's own form: the commas go back into the text
                    return found, f"{words[0][len(stripped):]} {leftover}"
        return fallback(embedding_name)

    sub._try_get_embedding = try_get_embedding
    return sub
