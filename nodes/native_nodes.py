"""ComfyUI's own graph: train on the graph's MODEL/CLIP/VAE, and hand words to ComfyUI's CLIPTextEncode."""

from __future__ import annotations

from . import comfy_adapter as comfy
from .train_nodes import TITrainEmbedding

CATEGORY = "textual_inversion"


def graph_model(model, clip, vae):
    """The SDModel over the weights the graph samples with (patches applied): no second copy of them."""
    import torch

    from ..ti_core.models import model_from_state_dict

    with torch.inference_mode(False):
        return model_from_state_dict(comfy.graph_state_dict(model, clip, vae), source="the graph's MODEL/CLIP/VAE")


def apply_embeddings(clip, embeddings):
    from ..ti_core.prompt import as_embedding_dict

    known = as_embedding_dict([e for e in embeddings if e is not None])
    return comfy.clip_with_embeddings(clip, {name: e.vectors for name, e in known.items()})


class TITrainEmbeddingNative(TITrainEmbedding):
    DESCRIPTION = ("Teach a new word to the model of your graph: connect MODEL, CLIP and VAE from Load Checkpoint "
                   "(or after LoRA loaders or a merge; SD1.x, SD2.x, SDXL). It trains through the very weights "
                   "KSampler uses, patches included, with no second copy in memory. Saves "
                   "models/embeddings/<name>.safetensors, and its CLIP output already knows the word: wire it into "
                   "CLIPTextEncode and write `embedding:<name>`; that encode then runs after the training.")
    RETURN_TYPES = ("TI_EMBEDDING", "IMAGE", "CLIP")
    RETURN_NAMES = ("embedding", "loss_chart", "clip")
    OUTPUT_TOOLTIPS = (*TITrainEmbedding.OUTPUT_TOOLTIPS,
                       "The input CLIP with the trained word applied, for CLIPTextEncode (`embedding:<name>`).")

    @classmethod
    def INPUT_TYPES(cls):
        types = TITrainEmbedding.INPUT_TYPES()
        graph = {"model": ("MODEL", {"tooltip": "The MODEL of Load Checkpoint (or of a LoRA loader or merge)."}),
                 "clip": ("CLIP", {"tooltip": "The CLIP of the same checkpoint (a LoRA on it is trained through)."}),
                 "vae": ("VAE", {"tooltip": "The VAE of the same checkpoint (encodes the training pictures)."})}
        types["required"] = {**graph, **{k: v for k, v in types["required"].items() if k != "model"}}
        return types

    def train(self, model, clip, vae, name, resume, images=None, image_batch=None, unique_id=None, **inputs):
        out = self.run(graph_model(model, clip, vae), name, resume, images, image_batch, unique_id, inputs)
        embedding, chart = out["result"]
        return {**out, "result": (embedding, chart, apply_embeddings(clip, [embedding]))}


class TIApplyEmbedding:
    DESCRIPTION = ("Give ComfyUI's CLIP the words of embeddings (trained or loaded, saved or not): CLIPTextEncode "
                   "with this CLIP turns `embedding:<name>` into their vectors. The link also orders the graph: "
                   "the text is encoded after the training, and again whenever the word is retrained. Works "
                   "before or after CLIPSetLastLayer and LoRA loaders.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The CLIP with the words added (the input CLIP is unchanged), for CLIPTextEncode.",)

    @classmethod
    def INPUT_TYPES(cls):
        emb = ("TI_EMBEDDING", {"tooltip": "An embedding (TITrainEmbedding, TILoadEmbedding); its word is its name."})
        return {"required": {"clip": ("CLIP", {"tooltip": "ComfyUI's CLIP (Load Checkpoint, CLIPSetLastLayer, a "
                                                          "LoRA loader...)."}),
                             "embedding": emb},
                "optional": {"embedding_2": emb, "embedding_3": emb}}

    def apply(self, clip, embedding, embedding_2=None, embedding_3=None):
        return (apply_embeddings(clip, [embedding, embedding_2, embedding_3]),)
