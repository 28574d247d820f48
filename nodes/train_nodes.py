"""Train an embedding in-process, with ComfyUI's progress bar, live loss and preview events, and Cancel."""

from __future__ import annotations

from dataclasses import MISSING

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


PREVIEW_SIDE = 256  # pixels: previews are sent at most this size, the panel shows them in a fixed box


def preview_data_url(image) -> str:
    """A PIL image as a PNG data URL, shrunk to at most PREVIEW_SIDE (small ones are scaled up by the browser)."""
    import base64
    import io

    image = image.copy()
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class StepReporter:
    """on_step for ti_core.train: progress bar, browser events (losses, previews), status table.

    Previews go to the node's own panel (js/training_monitor.js draws them in a fixed box), not to ComfyUI's
    progress-bar preview: the front end shows that picture under the node's widgets, which made the node grow over
    the one below (Nodes 2.0) and showed a 32 px picture as a thin strip."""

    def __init__(self, node_id, name: str, progress):
        self.node_id, self.name, self.progress = node_id, name, progress
        self.smoothed: list = []
        self.val_losses: list = []  # (step, validation loss)
        self.last_preview = None  # the last preview's data URL

    def __call__(self, info) -> None:
        from ..ti_core.sample import to_pil
        from . import status

        self.smoothed.append(info.smoothed_loss)
        if info.val_loss is not None:
            self.val_losses.append((info.step, info.val_loss))
        self.progress.update(info.step)
        if info.preview is not None:
            self.last_preview = preview_data_url(to_pil(info.preview)[0])
            comfy.send_event("preview", {"node": self.node_id, "step": info.step, "image": self.last_preview})
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

    # The inputs in the order saved workflows hold their widget values: never reorder. Each is a TrainConfig
    # option (its widget, range and tooltip come from ti_core/train_config.py), except model and resume;
    # options marked node=True and not listed here follow, so a new option is appended, never inserted.
    WIDGETS = ("name", "init_text", "vectors", "steps", "learning_rate", "batch_size", "grad_accum", "template",
               "crop", "resolution", "save_every", "preview_every", "train_seed", "resume", "precision",
               "validate_every", "early_stop")
    # input name -> TrainConfig field, where they differ. Not "seed": ComfyUI's front end gives every `seed`
    # a randomize-after-run control, and a new seed per run would train again (and refuse to replace the file)
    FIELDS = {"train_seed": "seed"}
    # the node's defaults are the example workflows' run: the built-in toy model learning the demo concept
    DEFAULTS = {"name": "purple-star", "init_text": "star", "steps": 300}

    @classmethod
    def option_inputs(cls) -> list:
        """(input name, TrainConfig field) of every option the node shows, in widget order."""
        from ..ti_core.train_config import options

        listed = [(w, cls.FIELDS.get(w, w)) for w in cls.WIDGETS if w != "resume"]
        shown = {f for _, f in listed}
        return listed + [(name, name) for name, option, _, _ in options() if option.node and name not in shown]

    @classmethod
    def INPUT_TYPES(cls):
        from ..ti_core.train_config import node_input

        fields = dict(cls.option_inputs())
        required = {"model": ("TI_MODEL", {"tooltip": "The model to learn the word for (TILoadModel)."})}
        widgets = list(cls.WIDGETS) + [w for w in fields if w not in cls.WIDGETS]
        for widget in widgets:
            if widget == "resume":
                required[widget] = ("BOOLEAN", {"default": False, "tooltip": "Continue from the saved resume state "
                                    "(models/textual_inversion/states/<name>.state.safetensors) if the embedding "
                                    "exists (off: an existing file is an error, never overwritten)."})
            else:
                required[widget] = node_input(fields[widget], cls.DEFAULTS.get(widget, MISSING))
        return {"required": required, "optional": {
            "images": ("TI_IMAGES", {"tooltip": "The pictures of the concept at full size (TILoadImages); 3-5 is "
                                     "typical."}),
            "image_batch": ("IMAGE", {"tooltip": "More pictures as an IMAGE batch (e.g. TISquareCrop, LoadImage), "
                                      "added to `images`."}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "Optional (Load CLIP Vision): at each validation a few "
                                            "pictures of the word are drawn and compared with yours; the word whose "
                                            "pictures look most like them is the one saved, and early stop waits "
                                            "until they stop getting closer. Each check costs a short sampling run."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def train(self, model, name, resume, images=None, image_batch=None, unique_id=None, **inputs):
        comfy.make_room(model.device)  # ComfyUI's models may have come back onto the GPU since TILoadModel ran
        return self.run(model, name, resume, images, image_batch, unique_id, inputs)

    def run(self, model, name, resume, images, image_batch, unique_id, inputs: dict) -> dict:
        """Train `model` (an SDModel) with the node's inputs; the node's ui and (embedding, loss chart)."""
        from ..ti_core.embeddings import check_name
        from ..ti_core.train import TrainConfig, train
        from . import status
        from .convert import pil_to_image
        from .loss_chart import draw_loss_chart

        check_name(name.strip())  # says what is wrong with the name, before it becomes a path
        output, state = embedding_output(name), state_output(name)
        vision = inputs.pop("clip_vision", None)
        encoder = comfy.clip_vision_encoder(vision) if vision is not None else None
        options = {field: inputs[widget] for widget, field in self.option_inputs() if widget in inputs}
        options["template"] = template_spec(options.get("template", TrainConfig.template))
        config = TrainConfig(**{**options, "name": name.strip()}, output=str(output),
                             resume=resume_state(output, resume, state), state_path=str(state))
        progress = comfy.Progress(config.steps)
        reporter = StepReporter(unique_id, config.name, progress)
        result = train(model, training_images(images, image_batch), config, on_step=reporter,
                       should_stop=progress.should_stop, image_encoder=encoder)
        report = result.report()
        status.report(unique_id, state=result.outcome, **{k: report[k] for k in ("name", "step", "steps")},
                      saved=result.path)
        comfy.send_event("done", {"node": unique_id, **report})
        progress.finish()  # a Cancel is reported as an interrupt, after the file was saved whole
        chart = draw_loss_chart(result.losses, reporter.smoothed, result.val_losses)
        # The chart travels as data, which js/training_monitor.js draws in its own panel (live during the run,
        # and again after a reload); not as a ui image, which the front end would add under the panel (the node
        # then grows over the one below, and keeps the last run's picture during the next run).
        series = {"loss": [_json(v) for v in result.losses], "smoothed": [_json(v) for v in reporter.smoothed],
                  "validation": [[step, _json(v)] for step, v in result.val_losses]}
        ui = {"text": [result.summary()], "outcome": [report], "losses": [series]}
        if reporter.last_preview is not None:
            ui["preview"] = [reporter.last_preview]
        return {"ui": ui, "result": (result.embedding, pil_to_image([chart]))}
