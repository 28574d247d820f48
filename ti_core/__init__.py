"""ti_core: textual inversion for Stable Diffusion (SD1.x, SD2.x, SDXL), offline, without ComfyUI.

Modules: `models` (load checkpoints), `prompt` (encode prompts with embeddings), `sample` (generate),
`embeddings` (read/write embedding files), `cli` (`python -m ti_core`). Heavy imports happen inside the
modules, so `import ti_core` is cheap.
"""

__version__ = "0.1.0"
