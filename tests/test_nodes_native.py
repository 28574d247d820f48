"""ComfyUI's own graph: training through the graph's MODEL/CLIP/VAE and handing the word to ComfyUI's encoder.

The stand-ins below behave like ComfyUI's objects where the pack touches them: `ModelPatcher.model
.state_dict_for_saving(clip_sd, vae_sd)` returns the single-file layout, `load_models_gpu(...,
force_patch_weights=True)` writes patches (a LoRA) into the weights as new tensors, weights are inference
tensors, the CLIP keeps fp16 weights on the CPU, and `CLIP.clone()` shares its tokenizer.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from test_nodes_train import settings

from conftest import pack_module

UNET, VAE = "model.diffusion_model.", "first_stage_model."


class FakeModelPatcher:
    def __init__(self, weights: dict, patches: dict | None = None):
        self.weights, self.patches = weights, dict(patches or {})
        owner = self

        class BaseModel:
            @staticmethod
            def state_dict_for_saving(clip_state_dict=None, vae_state_dict=None):
                out = {UNET + k: v for k, v in owner.weights.items()}
                out.update(clip_state_dict or {})
                out.update({VAE + k: v for k, v in (vae_state_dict or {}).items()})
                return out

        self.model = BaseModel()

    def clone(self):
        return FakeModelPatcher(self.weights, self.patches)

    def patch_weights(self):  # ComfyUI's patch_model: the patched weight replaces the parameter
        with torch.inference_mode():
            for key, delta in self.patches.items():
                self.weights = {**self.weights, key: self.weights[key] + delta}
            self.patches = {}


class FakeTokenizer:
    """ComfyUI's SDTokenizer where the pack touches it: `_try_get_embedding` reads the embeddings folder."""

    def __init__(self, size, key, folder_words):
        self.embedding_size, self.embedding_key, self.embedding_directory = size, key, ["models/embeddings"]
        self.folder_words = folder_words

    def _try_get_embedding(self, embedding_name):
        words = embedding_name.split()
        return self.folder_words.get(words[0]), " ".join(words[1:])


class FakeCLIP:
    def __init__(self, sd, tokenizer, patcher=None):
        self.sd, self.tokenizer = sd, tokenizer
        self.patcher = patcher or FakeModelPatcher({})

    def clone(self):  # like comfy.sd.CLIP.clone: a new patcher, the same tokenizer object
        return FakeCLIP(self.sd, self.tokenizer, self.patcher.clone())

    def load_model(self):
        return self.patcher

    def get_sd(self):
        return dict(self.sd)


class FakeVAE:
    def __init__(self, sd):
        self.sd = sd

    def get_sd(self):
        return dict(self.sd)


def checkpoint_objects(path, patches=None, folder_words=None):
    """(MODEL, CLIP, VAE) as Load Checkpoint gives them for the single file `path` (ComfyUI on a CPU)."""
    from safetensors.torch import load_file

    with torch.inference_mode():
        sd = load_file(str(path))
        unet = {k[len(UNET):]: v.float() for k, v in sd.items() if k.startswith(UNET)}
        vae = {k[len(VAE):]: v.float() for k, v in sd.items() if k.startswith(VAE)}
        clip = {k: v.half() for k, v in sd.items() if not k.startswith((UNET, VAE)) and v.is_floating_point()}
    tokenizer = types.SimpleNamespace(clip_l=FakeTokenizer(32, "clip_l", folder_words or {}))
    return FakeModelPatcher(unet, patches), FakeCLIP(clip, tokenizer), FakeVAE(vae)


@pytest.fixture
def comfy_loads(fake, monkeypatch):
    """ComfyUI's load_models_gpu over the stand-ins: records calls, writes patches into the weights."""
    calls = []

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        calls.append((len(models), force_patch_weights, force_full_load))
        for m in models:
            if force_patch_weights:
                m.patch_weights()

    monkeypatch.setattr(sys.modules["comfy.model_management"], "load_models_gpu", load_models_gpu, raising=False)
    return calls


def make_checkpoint(fake, arch="tiny-sd1"):
    """A tiny single file in fp16 (as real checkpoints are shipped), in models/checkpoints."""
    from ti_core.make_model import make_model

    return make_model(arch, fake.base / "models" / "checkpoints" / "tiny.safetensors", single_file=True, seed=0,
                      dtype="fp16")


@pytest.fixture
def fp16_checkpoint(fake):
    return make_checkpoint(fake)


def train_native(nodes, objects, images, **changes):
    model, clip, vae = objects
    with torch.inference_mode():  # as ComfyUI runs every node
        return nodes["TITrainEmbeddingNative"]().train(model, clip, vae, images=images, unique_id="3",
                                                       **settings(**changes))


def demo_images(nodes):
    return nodes["TILoadImages"]().load("ti-demo-images", 64)["result"][0]


@pytest.mark.parametrize("arch", ["tiny-sd1", pytest.param("tiny-sd2", marks=pytest.mark.slow),
                                  pytest.param("tiny-sdxl", marks=pytest.mark.slow)])
def test_graph_model_trains_bit_identical_vectors_to_tiloadmodel_on_the_same_file(arch, nodes, fake, comfy_loads):
    fp16_checkpoint = make_checkpoint(fake, arch)
    images = demo_images(nodes)
    loaded = nodes["TILoadModel"]().load("tiny.safetensors", "fp32")[0]
    with torch.inference_mode():
        reference = nodes["TITrainEmbedding"]().train(loaded, images=images, unique_id="1",
                                                      **settings(name="ref", steps=3))["result"][0]
    out = train_native(nodes, checkpoint_objects(fp16_checkpoint), images, name="native", steps=3)
    embedding, chart, clip = out["result"]
    assert comfy_loads == [(2, True, True)]  # MODEL and CLIP loaded with their patches written in, as Save Checkpoint
    assert embedding.vectors.keys() == reference.vectors.keys()
    for key, vectors in reference.vectors.items():
        assert torch.equal(embedding.vectors[key], vectors), key
    init = nodes["TITrainEmbedding"]().train(loaded, images=images, **settings(name="init", steps=1,
                                                                               learning_rate="1e-30"))
    assert not torch.equal(init["result"][0].vectors[key], vectors)  # training moved them: the match means something
    if arch != "tiny-sd1":
        return
    assert (fake.base / "models" / "embeddings" / "native.safetensors").is_file()
    assert chart.shape[-1] == 3
    # the CLIP output already knows the word
    vectors, rest = clip.tokenizer.clip_l._try_get_embedding("native, a star")
    assert torch.equal(vectors, embedding.vectors["emb_params"]) and rest.strip() == ", a star"


def test_a_lora_patched_model_changes_the_trained_vectors(nodes, fake, comfy_loads, fp16_checkpoint):
    images = demo_images(nodes)
    plain = train_native(nodes, checkpoint_objects(fp16_checkpoint), images, name="plain", steps=2)
    g = torch.Generator().manual_seed(1)
    lora = {"out.2.weight": 0.05 * torch.randn(4, 32, 3, 3, generator=g)}  # the UNet's last conv
    patched = train_native(nodes, checkpoint_objects(fp16_checkpoint, patches=lora), images, name="lora", steps=2)
    a, b = plain["result"][0].vectors["emb_params"], patched["result"][0].vectors["emb_params"]
    assert not torch.equal(a, b)


def test_the_trainer_shares_the_graphs_weights(fake, comfy_loads, fp16_checkpoint):
    native = pack_module("nodes.native_nodes")
    model, clip, vae = checkpoint_objects(fp16_checkpoint)
    with torch.inference_mode():
        sd_model = native.graph_model(model, clip, vae)
    assert sd_model.unet.conv_in.weight.data_ptr() == model.weights["input_blocks.0.0.weight"].data_ptr()
    assert sd_model.vae.encoder.conv_in.weight.data_ptr() == vae.sd["encoder.conv_in.weight"].data_ptr()
    assert sd_model.dtype == torch.float32  # the UNet's; the fp16 CLIP is cast (the only copy)


def test_a_ti_model_or_other_object_is_refused_with_a_hint(nodes, fake, comfy_loads):
    native = pack_module("nodes.native_nodes")
    with pytest.raises(ValueError, match="connect the MODEL output of Load Checkpoint"):
        native.graph_model(object(), None, None)


# ------------------------------------------------------------------------------------- TIApplyEmbedding


def test_apply_embedding_resolves_words_in_a_clone_and_leaves_the_input_clip_alone(nodes, fake):
    from ti_core.embeddings import Embedding

    folder_vector = torch.ones(1, 32)
    tokenizer = types.SimpleNamespace(clip_l=FakeTokenizer(32, "clip_l", {"old": folder_vector}))
    clip = FakeCLIP({}, tokenizer)
    star = Embedding("star", {"emb_params": torch.randn(2, 32)})
    disc = Embedding("disc", {"emb_params": torch.randn(3, 32)})
    out = nodes["TIApplyEmbedding"]().apply(clip, star, embedding_2=disc)[0]
    lookup = out.tokenizer.clip_l._try_get_embedding
    assert torch.equal(lookup("star")[0], star.vectors["emb_params"])
    assert torch.equal(lookup("disc.safetensors rest")[0], disc.vectors["emb_params"])
    assert lookup("disc.safetensors rest")[1] == "rest"
    assert torch.equal(lookup("old")[0], folder_vector)  # other names: ComfyUI's own folder lookup
    assert lookup("missing")[0] is None
    assert clip.tokenizer.clip_l._try_get_embedding("star")[0] is None  # the input CLIP is unchanged
    # clones made downstream (CLIPSetLastLayer, LoRA loaders) keep the words
    assert torch.equal(out.clone().tokenizer.clip_l._try_get_embedding("star")[0], star.vectors["emb_params"])


def test_apply_embedding_picks_each_encoders_vectors_by_key_and_width(nodes, fake):
    from ti_core.embeddings import Embedding

    tokenizer = types.SimpleNamespace(clip_l=FakeTokenizer(32, "clip_l", {}), clip_g=FakeTokenizer(64, "clip_g", {}),
                                      name="sdxl")
    xl = Embedding("xl", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 64)})
    out = nodes["TIApplyEmbedding"]().apply(FakeCLIP({}, tokenizer), xl)[0]
    assert torch.equal(out.tokenizer.clip_l._try_get_embedding("xl")[0], xl.vectors["clip_l"])
    assert torch.equal(out.tokenizer.clip_g._try_get_embedding("xl")[0], xl.vectors["clip_g"])
    sd1_only = Embedding("small", {"emb_params": torch.randn(1, 32)})
    out = nodes["TIApplyEmbedding"]().apply(out, sd1_only)[0]  # stacked: both words known
    assert out.tokenizer.clip_g._try_get_embedding("small")[0] is None  # no 64-wide vectors: left out on G
    assert torch.equal(out.tokenizer.clip_l._try_get_embedding("small")[0], sd1_only.vectors["emb_params"])
    assert torch.equal(out.tokenizer.clip_g._try_get_embedding("xl")[0], xl.vectors["clip_g"])


def test_apply_embedding_needs_a_clip_with_a_text_tokenizer(nodes, fake):
    from ti_core.embeddings import Embedding

    clip = FakeCLIP({}, types.SimpleNamespace(t5=object()))
    with pytest.raises(ValueError, match="no CLIP-style text tokenizer"):
        nodes["TIApplyEmbedding"]().apply(clip, Embedding("x", {"emb_params": torch.zeros(1, 32)}))
