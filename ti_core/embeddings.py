"""The `Embedding` type; reading every embedding file format people share, and writing ours.

An embedding is a name, vectors per text encoder and metadata. Vector keys are those the community's files
use: `emb_params` [n, D] for single-encoder models (SD1: D=768, SD2: D=1024), `clip_l` [n, 768] and
`clip_g` [n, 1280] for SDXL. These are the layouts ComfyUI's `embedding:name`, A1111 and kohya read.

Reading (`load_embedding`) detects the format from the file's content, never its extension: `.safetensors`
(A1111/kohya `emb_params`, OneTrainer `emp_params`, SDXL `clip_l`/`clip_g`, diffusers `{token: ...}`),
torch pickles (the original textual_inversion `embeddings.pt`, A1111 `.pt`, diffusers `learned_embeds.bin`,
the XL-Inversion `{emb, emb2}` bf16 file; saved on a GPU or not) and A1111 PNG/WebP image embeddings.
Pickles are read only through `torch.load(weights_only=True)`; one that asks for anything but tensor data
(and the original format's ParameterDict) raises `UnsafeFileError` and nothing in it runs. See
`embedding_layouts` for the layouts and the format ids that `Embedding.source_format` reports.

Writing (`save_embedding`) is atomic and never replaces a file unless asked: `.safetensors` by default,
or A1111 `.pt` and diffusers files (`embedding_write`).

Metadata is a str -> str dict, stored in the `.safetensors` header. Keys, filled where known (a trainer
fills them when it saves; keys read from other tools' files are mapped onto them):

- `step`: optimisation steps done, an integer as text (A1111 `step`).
- `base_family`: the model family trained on: "sd1", "sd2" or "sdxl".
- `base_hash`: hash of the base checkpoint (A1111 `sd_checkpoint`, its short hash).
- `base_name`: name of the base checkpoint (A1111 `sd_checkpoint_name`).
- `init_text`: the words the vectors were initialised from.
- `training`: the training settings, a JSON object as text.
- `software`: what wrote the file, e.g. "ti_core 0.1.0".
- `token`: the word the file's own tool used (A1111 `name`, the diffusers token); the prompt word is still
  `Embedding.name`, the file name, as in ComfyUI and A1111.
- `name`: the embedding's name, written by `save_embedding`.
Other keys in a file's header (e.g. kohya's `modelspec.*`) are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import EmbeddingError, EmbeddingWidthError

EXTENSIONS = (".safetensors", ".pt", ".bin", ".png", ".webp")
MAX_VECTORS = 75  # one CLIP chunk holds 75 tokens; an embedding never straddles two
METADATA_KEYS = ("step", "base_family", "base_hash", "base_name", "init_text", "training", "software", "token")


@dataclass
class Embedding:
    name: str
    vectors: dict  # key -> float tensor [n, D]
    metadata: dict = field(default_factory=dict)  # str -> str (safetensors header metadata; keys above)
    source_format: str = field(default="", compare=False)  # format id of the file it was read from

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def vectors_for(self, keys: tuple, width: int, encoder: str = "the text encoder") -> torch.Tensor:
        """The [n, width] vectors for one text encoder, taken from the first of `keys` present."""
        for key in keys:
            if key in self.vectors:
                vectors = self.vectors[key]
                if vectors.shape[-1] != width:
                    raise EmbeddingWidthError(
                        f"embedding {self.name!r} has {vectors.shape[-1]}-wide vectors ({key}), but {encoder} of "
                        f"this model takes {width}-wide ones: it was made for another model family "
                        "(SD1: 768, SD2: 1024, SDXL: 768 + 1280). Use an embedding trained for this model."
                    )
                return vectors
        found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.vectors.items())
        halves = [k for k in ("clip_l", "clip_g") if k in self.vectors]
        if not ("clip_g" in keys or "clip_l" in keys):
            advice = "Use an embedding trained for this model family."
        elif len(halves) == 1:
            missing = "clip_g" if halves == ["clip_l"] else "clip_l"
            advice = f"An SDXL embedding has both clip_l and clip_g vectors; this file lacks {missing}."
        else:
            advice = "An SDXL model needs both clip_l and clip_g vectors; this looks like an SD1/SD2 embedding."
        raise EmbeddingError(
            f"embedding {self.name!r} has no vectors for {encoder} (looked for {' or '.join(keys)}; the file "
            f"has {found}). {advice}"
        )


def check_vectors(name: str, vectors: dict) -> None:
    if not vectors:
        raise EmbeddingError(f"embedding {name!r} holds no vectors.")
    counts = set()
    for key, v in vectors.items():
        if v.ndim != 2 or v.shape[0] == 0 or not v.is_floating_point():
            raise EmbeddingError(f"embedding {name!r}: {key} has shape {tuple(v.shape)}; expected [n, width], n >= 1.")
        if not torch.isfinite(v).all():
            raise EmbeddingError(f"embedding {name!r}: {key} contains NaN or infinite values; it cannot be used.")
        counts.add(v.shape[0])
    if len(counts) > 1:
        raise EmbeddingError(f"embedding {name!r}: its encoders have different vector counts {sorted(counts)}.")
    if counts.pop() > MAX_VECTORS:
        raise EmbeddingError(f"embedding {name!r} has more than {MAX_VECTORS} vectors; a prompt chunk holds 75.")


_RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def check_name(name: str) -> str:
    """`name` if it is safe as a file name in every OS and usable as `embedding:name`; else an error saying why."""
    problems = []
    if not name or not name.strip():
        problems.append("it is empty")
    if any(c in name for c in '/\\:*?"<>|') or ".." in name:
        problems.append("it contains a path separator, '..' or one of : * ? \" < > |")
    if any(c.isspace() for c in name):
        problems.append("it contains whitespace (embedding:NAME ends at the first space)")
    if any(ord(c) < 32 for c in name):
        problems.append("it contains control characters")
    if name.split(".")[0].lower() in _RESERVED_NAMES:
        problems.append("it is a reserved device name on Windows")
    if name.startswith(".") or name.endswith("."):
        problems.append("it starts or ends with a dot")
    if len(name.encode()) > 200:
        problems.append("it is longer than 200 bytes")
    if problems:
        raise EmbeddingError(
            f"embedding name {name!r} cannot be used: {'; '.join(problems)}. "
            "Use letters, digits, '-' and '_' (e.g. my-cat_v2)."
        )
    return name


def name_from_path(path) -> str:
    path = Path(path)
    return path.name[: -len(path.suffix)] if path.suffix.lower() in EXTENSIONS else path.name


def load_embedding(path, name: str | None = None) -> Embedding:
    """Read an embedding file of any supported format (detected from its content); its name defaults to the
    file name without extension (as ComfyUI and A1111 do)."""
    from .embedding_read import read_embedding_data

    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"{path}: no such embedding file.")
    data, metadata, container = read_embedding_data(path)
    return embedding_from_data(data, name or name_from_path(path), path, metadata, container)


def embedding_from_data(data, name: str, path, metadata: dict, container: str) -> Embedding:
    """The `Embedding` in `data` as read from `path` (a dict or tensor; see `embedding_layouts`)."""
    from .embedding_layouts import format_id, interpret

    layout, vectors, found = interpret(data, path)
    vectors = {k: _as_rows(path, k, v) for k, v in vectors.items()}
    check_vectors(str(path), vectors)  # its messages then name the file
    metadata = {**{str(k): str(v) for k, v in metadata.items()}, **found}
    return Embedding(name=name, vectors=vectors, metadata=metadata, source_format=format_id(layout, container))


def _as_rows(path, key: str, value) -> torch.Tensor:
    """[n, D] float32 on the CPU from a [D] or [n, D] floating-point tensor."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        what = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        raise EmbeddingError(f"{path}: {key} is {what}, not floating-point vectors.")
    value = value.detach().to("cpu", torch.float32)
    return value[None] if value.ndim == 1 else value


def save_embedding(embedding: Embedding, path, *, overwrite: bool = False, format: str = "safetensors") -> Path:
    """Write `embedding` to `path` atomically (temporary file, fsync, rename); refuses to replace a file unless
    `overwrite`. `format`: "safetensors" (default; SD1/SD2 `emb_params`, SDXL `clip_l` + `clip_g`, metadata
    in the header), "a1111-pt" or "diffusers" (see `embedding_write`)."""
    from .embedding_write import write_embedding

    check_vectors(embedding.name, embedding.vectors)
    return write_embedding(embedding, Path(path), format, overwrite)
