"""Typed errors. Each message says what was seen (file, value) and how to fix it.

The CLI prints `str(error)` as one line and exits non-zero; the ComfyUI nodes let it surface as the node's
error. Everything here subclasses `TIError`, so callers can catch the library's user errors in one place
and let real bugs through.
"""


class TIError(Exception):
    """A user-facing error of ti_core: bad input, unsupported file, impossible setting."""


class ModelLoadError(TIError, ValueError):
    """A checkpoint or model folder is missing, corrupt or of an architecture we cannot read."""


class UnsafeFileError(TIError):
    """A pickle asked for code that is not on the allow-list; nothing in it was run."""


class EmbeddingError(TIError, ValueError):
    """An embedding file is unreadable or does not fit the model."""


class UnknownEmbeddingError(EmbeddingError):
    """A prompt names an embedding that was not given."""


class EmbeddingWidthError(EmbeddingError):
    """An embedding's vector width differs from the text encoder's."""


class PromptError(TIError, ValueError):
    """A prompt cannot be encoded as written."""


class SettingError(TIError, ValueError):
    """A parameter is out of range (size, steps, sampler name, ...)."""


class ImageSetError(TIError, ValueError):
    """A training image or image folder cannot be used: missing, unreadable, too large, or no images in it."""


class SaveError(TIError, OSError):
    """A file could not be written (disk full, no permission); the previous file under that name is intact."""
