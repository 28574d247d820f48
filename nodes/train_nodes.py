"""Train an embedding in-process, with ComfyUI's progress bar, live loss/preview events and Cancel."""

from __future__ import annotations

from . import comfy_adapter as comfy

CATEGORY = "textual_inversion"


def embedding_output(name: str):
    """models/embeddings/<name>.safetensors, so `embedding:<name>` works at once in ComfyUI's CLIPTextEncode."""
    from .safe_paths import resolve_inside

    return resolve_inside(comfy.folder_paths_for("embeddings")[0], name.strip() + ".safetensors")


def state_output(name: str):
    """models/textual_inversion/states/<name>.state.safetensors: out of models/embeddings, whose every
    .safetensors ComfyUI lists (and would try to use) as an embedding."""
    from .safe_paths import resolve_inside

    return resolve_inside(comfy.models_root() / "textual_inversion" / "states", name.strip() + ".state.safetensors")


def template_spec(template: str) -> str:
    """A built-in template list by name, or a template file inside ComfyUI's input folder (never elsewhere)."""
    from ..ti_core.templates import BUILTIN

    from .safe_paths import relative_inside, resolve_inside

    if template.strip().lower() in BUILTIN:
        return template
    root = comfy.input_directory()
    return str(resolve_inside(root, relative_inside(root, template.strip())))


def resume_state(output, resume: bool, state=None):
    """The resume state to continue from, or None for a fresh run. Never replaces a file silently."""
    from ..ti_core.errors import SettingError
    from ..ti_core.train import state_path_for

    state = state or state_path_for(output)
    if not output.exists():
        return str(state) if resume and state.exists() else None
    if not resume:
        raise SettingError(f"{output} already exists; choose another name, delete the file, or switch resume on.")
    if not state.exists():
        raise SettingError(f"cannot resume {output.name}: its resume state {state.name} is missing.")
    return str(state)


def _json(value: float):
    """NaN and inf are not JSON: the browser gets null for them."""
    import math

    return value if math.isfinite(value) else None


class StepReporter:
    """on_step for ti_core.train: progress bar (with previews), browser events, status table."""

    def __init__(self, node_id, name: str, progress):
        self.node_id, self.name, self.progress = node_id, name, progress
        self.smoothed: list = []
        self.val_losses: list = []  # (step, validation loss)

    def __call__(self, info) -> None:
        from ..ti_core.sample import to_pil

        from . import status

        self.smoothed.append(info.smoothed_loss)
        if info.val_loss is not None:
            self.val_losses.append((info.step, info.val_loss))
        preview = to_pil(info.preview)[0] if info.preview is not None else None
        self.progress.update(info.step, preview)
        fields = dict(name=self.name, state="training", step=info.step, steps=info.steps, loss=_json(info.loss),
                      smoothed_loss=_json(info.smoothed_loss), lr=_json(info.lr), eta=_json(info.eta),
                      saved=info.saved, val_loss=_json(info.val_loss) if info.val_loss is not None else None)
        status.report(self.node_id, **fields)
        comfy.send_event("progress", {"node": self.node_id, **fields})


def training_images(images, image_batch) -> list:
    """TI_IMAGES (full size, with captions) plus the pictures of an IMAGE batch (copied out of its tensor)."""
    from ..ti_core.data import SourceImage
    from ..ti_core.errors import ImageSetError

    from .convert import image_to_pil

    pictures = list(images or [])
    if image_batch is not None:
        pictures += [SourceImage(path=None, rgb=img, alpha=None) for img in image_to_pil(image_batch)]
    if not pictures:
        raise ImageSetError("no training pictures: connect `images` (TILoadImages) or `image_batch` (an IMAGE).")
    return pictures


def save_temp_png(img, prefix: str) -> dict:
    """Write a PNG into ComfyUI's temp folder; the dict is what a node's ui "images" entry shows."""
    import uuid

    folder = comfy.temp_directory()
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
    img.save(folder / filename)
    return {"filename": filename, "subfolder": "", "type": "temp"}


class TITrainEmbedding:
    DESCRIPTION = ("Teach the model a new word from a few pictures (textual inversion): only the word's vectors "
                   "are trained; the model stays unchanged. Saves models/embeddings/<name>.safetensors (usable as "
                   "`embedding:<name>` in any prompt) every `save_every` steps and at the end. Cancel stops and "
                   "keeps the vectors learned so far; resume continues from the saved state.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = ("TI_EMBEDDING", "IMAGE")
    RETURN_NAMES = ("embedding", "loss_chart")
    OUTPUT_TOOLTIPS = ("The trained embedding (also saved to models/embeddings).", "The loss curve as an image.")

    @classmethod
    def INPUT_TYPES(cls):
        from ..ti_core.train import TrainConfig as C

        def integer(default, low, high, tip, step=1):
            return ("INT", {"default": default, "min": low, "max": high, "step": step, "tooltip": tip})

        return {"required": {
            "model": ("TI_MODEL", {"tooltip": "The model to learn the word for (TILoadModel)."}),
            "name": ("STRING", {"default": "purple-star", "tooltip": "The new word (`embedding:name`) and file "
                                                                   "name."}),
            "init_text": ("STRING", {"default": "star", "tooltip": "Words to start from, close to the concept "
                                     "(e.g. 'cat toy'); empty = small random vectors."}),
            "vectors": integer(C.vectors, 1, 75, "Vectors (tokens) of the word: 1 for an object, 2-8 for styles."),
            "steps": integer(300, 1, 100000, "Optimizer steps in total (counting steps done before a resume)."),
            "learning_rate": ("STRING", {"default": C.learning_rate, "tooltip": "A number, or a schedule as in "
                                         "A1111: '5e-3:100, 1e-3:1000, 1e-5' (rate:until step, ...)."}),
            "batch_size": integer(C.batch_size, 1, 64, "Pictures per forward pass (memory grows with it)."),
            "grad_accum": integer(C.grad_accum, 1, 256, "Forward passes per optimizer step (effective batch = "
                                                        "batch_size x grad_accum)."),
            "template": ("STRING", {"default": C.template, "tooltip": "Training prompts: object, style, "
                                    "captions (a short sentence + each picture's .txt caption), or the name of an "
                                    "A1111 template file ([name], [filewords]) in ComfyUI's input folder."}),
            "crop": (["random", "center", "pad"], {"default": C.crop, "tooltip": "How pictures become squares: "
                     "a new random crop each step, the centre, or the whole picture padded. Never stretched."}),
            "resolution": integer(0, 0, 4096, "Training size in pixels (multiple of 8); 0 = the model's own.", 8),
            "save_every": integer(C.save_every, 0, 100000, "Save the embedding and resume state every N steps "
                                                           "(0 = end only)."),
            "preview_every": integer(0, 0, 100000, "Draw a preview ('a photo of [name]', fixed seed) every N "
                                                   "steps (0 = none; each costs a sampling run)."),
            # not called "seed": ComfyUI's front end gives every `seed` a randomize-after-run control, and a
            # new seed per run would train again (and refuse to replace the file) on every queue
            "train_seed": integer(C.seed, 0, 0xFFFFFFFFFFFFFFFF, "Seed of everything random in training (crops, "
                                                                 "noise, timesteps, templates)."),
            "resume": ("BOOLEAN", {"default": False, "tooltip": "Continue from the saved resume state "
                                   "(models/textual_inversion/states/<name>.state.safetensors) if the embedding "
                                   "exists (off: an existing file is an error, never overwritten)."}),
            "precision": (["model", "fp32", "bf16", "fp16"], {"default": C.precision, "tooltip": "What the frozen "
                          "model computes in: 'model' = the dtype chosen on TILoadModel (fastest, lightest); bf16/"
                          "fp16 on an fp32 model use autocast. The learned vectors are always fp32."}),
            "validate_every": integer(25, 0, 100000, "Measure a validation loss (same pictures, noise and timesteps "
                                                     "every time, so it is comparable across steps) every N steps and "
                                                     "plot it in red (0 = off; 16 forward passes each)."),
            "early_stop": integer(C.early_stop, 0, 1000, "Stop when N validations in a row did not lower the "
                                                         "validation loss by 0.2% (0 = run all steps). 3 is a good "
                                                         "start; needs validate_every."),
        }, "optional": {
            "images": ("TI_IMAGES", {"tooltip": "The pictures of the concept at full size (TILoadImages); 3-5 is "
                                     "typical."}),
            "image_batch": ("IMAGE", {"tooltip": "More pictures as an IMAGE batch (e.g. TISquareCrop, LoadImage), "
                                      "added to `images`."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def train(self, model, name, init_text, vectors, steps, learning_rate, batch_size, grad_accum,
              template, crop, resolution, save_every, preview_every, train_seed, resume, precision="model",
              validate_every=0, early_stop=0, images=None, image_batch=None, unique_id=None):
        from ..ti_core.embeddings import check_name
        from ..ti_core.train import TrainConfig, train

        from . import status
        from .convert import pil_to_image
        from .loss_chart import draw_loss_chart

        check_name(name.strip())  # says what is wrong with the name, before it becomes a path
        output, state = embedding_output(name), state_output(name)
        config = TrainConfig(name=name.strip(), init_text=init_text, vectors=vectors, steps=steps,
                             learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                             template=template_spec(template), crop=crop, resolution=resolution or None, save_every=save_every,
                             preview_every=preview_every, seed=train_seed, output=str(output),
                             resume=resume_state(output, resume, state), state_path=str(state),
                             precision=precision, validate_every=validate_every, early_stop=early_stop)
        progress = comfy.Progress(steps)
        reporter = StepReporter(unique_id, config.name, progress)
        comfy.make_room(model.device)  # ComfyUI's models may have come back onto the GPU since TILoadModel ran
        result = train(model, training_images(images, image_batch), config, on_step=reporter, should_stop=progress.should_stop)
        state = "stopped" if result.stopped else ("early stop" if result.early_stopped else "done")
        status.report(unique_id, name=config.name, state=state,
                      step=result.steps_done, steps=steps, saved=result.path)
        comfy.send_event("done", {"node": unique_id, "name": config.name, "stopped": result.stopped,
                                  "path": result.path, "step": result.steps_done, "early_stopped": result.early_stopped})
        progress.finish()  # a Cancel is reported as an interrupt, after the file was saved whole
        chart = draw_loss_chart(result.losses, reporter.smoothed, result.val_losses)
        ran = len(reporter.smoothed)  # steps run by this call (a resume starts where the state left off)
        summary = f"{config.name}: {ran} steps in {result.seconds:.1f} s, saved {result.path}"
        if ran != result.steps_done:
            summary += f" (now at step {result.steps_done} of {steps})"
        if result.val_losses:
            summary += f"; lowest validation loss at step {result.best_step}"
        if result.early_stopped:
            summary += " (early stop: the validation loss stopped improving)"
        return {"ui": {"text": [summary], "images": [save_temp_png(chart, "ti_loss")]},
                "result": (result.embedding, pil_to_image([chart]))}
