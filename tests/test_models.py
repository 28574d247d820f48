"""Model loading: folders and single files of every family, detection, overrides and errors."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from conftest import TINY
from ti_core import archs
from ti_core.errors import ModelLoadError, SettingError, UnsafeFileError
from ti_core.models import load_model, load_tokenizer


def _state(model) -> dict:
    out = {}
    for name, module in [("unet", model.unet), ("vae", model.vae)] + [
        (f"te{i}", te) for i, te in enumerate(model.text_encoders)
    ]:
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    return out


def test_tokenizer_ids_of_a_photo_of_a_cat():
    assert load_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert load_tokenizer(pad_token="!").pad_token_id == 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", TINY)
def test_single_file_and_folder_give_identical_weights(arch, loaded, single_file):
    folder = loaded(arch)
    single = load_model(single_file(arch))
    assert (single.family, single.prediction_type) == (folder.family, folder.prediction_type)
    assert (single.family, single.prediction_type) == (archs.ARCHS[arch].family, archs.ARCHS[arch].prediction_type)
    a, b = _state(folder), _state(single)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert [t.pad_token_id for t in single.tokenizers] == [t.pad_token_id for t in folder.tokenizers]
    assert single.resolution == folder.resolution == 64


@pytest.mark.slow
def test_ckpt_pickle_of_plain_tensors_loads_like_safetensors(tmp_path, single_file):
    from safetensors.torch import load_file

    from ti_core.models import arch_to_metadata

    sd = load_file(single_file("tiny-sd1"))
    ckpt = tmp_path / "model.ckpt"
    # a tiny model has no published config, so it travels with the file, as in our .safetensors header
    torch.save({"state_dict": sd, "global_step": 1234, **arch_to_metadata(archs.TINY_SD1)}, ckpt)
    a, b = _state(load_model(ckpt)), _state(load_model(single_file("tiny-sd1")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.save({"state_dict": sd}, ckpt)  # without it the weights are read as published SD1.5 and do not fit
    with pytest.raises(ModelLoadError, match="conv_in.weight: file \\(32, 4, 3, 3\\) vs model \\(320, 4, 3, 3\\)"):
        load_model(ckpt)


def test_family_and_prediction_come_from_content_not_file_name(tmp_path, single_file):
    misleading = tmp_path / "sdxl_v1-5_768-v.safetensors"
    shutil.copy(single_file("tiny-sd1"), misleading)
    model = load_model(misleading)
    assert (model.family, model.prediction_type) == ("sd1", "epsilon")


@pytest.mark.slow
def test_prediction_type_and_dtype_overrides(single_file):
    model = load_model(single_file("tiny-sd2"), prediction_type="epsilon", dtype="bf16")
    assert model.prediction_type == "epsilon" and model.scheduler_config["prediction_type"] == "epsilon"
    assert {p.dtype for p in model.unet.parameters()} == {torch.bfloat16}
    assert model.dtype == torch.bfloat16
    assert all(not p.requires_grad for p in model.unet.parameters())
    with pytest.raises(SettingError, match="'fp8'"):
        load_model(single_file("tiny-sd2"), dtype="fp8")
    with pytest.raises(SettingError, match="'sd3'"):
        load_model(single_file("tiny-sd2"), family="sd3")


def test_published_architectures_have_the_published_sizes():
    from ti_core.build import build_components

    def count(m):
        return sum(p.numel() for p in m.parameters())

    expected = {  # UNet, text encoders
        "sd15": (859_520_964, [123_060_480]),
        "sd21": (865_910_724, [340_387_840]),
        "sdxl": (2_567_463_684, [123_060_480, 694_659_840]),
    }
    for name, (unet, encoders) in expected.items():
        parts = build_components(archs.ARCHS[name], empty=True)
        assert count(parts["unet"]) == unet
        assert [count(t) for t in parts["text_encoders"]] == encoders
        assert count(parts["vae"]) == 83_653_863


# ----------------------------------------------------------------------------------------------------------
# errors: each names the file and says what was found


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "nope.safetensors")


def test_random_bytes(tmp_path):
    bad = tmp_path / "random.safetensors"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="random.safetensors"):
        load_model(bad)


def test_truncated_safetensors(tmp_path, single_file):
    data = single_file("tiny-sd1").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(cut)


def test_file_without_unet_is_not_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.ones(1)}, str(path))
    with pytest.raises(ModelLoadError, match="no UNet weights.*lora_unet_down"):
        load_model(path)


def test_inpainting_unet_is_refused(tmp_path, single_file):
    from safetensors.torch import load_file, save_file

    sd = load_file(single_file("tiny-sd1"))
    w = sd["model.diffusion_model.input_blocks.0.0.weight"]
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(w.shape[0], 9, *w.shape[2:])
    path = tmp_path / "inpaint.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelLoadError, match="9 input channels"):
        load_model(path)


def test_unknown_architecture_names_the_mismatch(tmp_path, single_file):
    """A tiny SD1 file stripped of its config metadata is read as published SD1.5, which it is not."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "odd.safetensors"
    save_file(load_file(single_file("tiny-sd1")), str(path))  # no metadata
    with pytest.raises(ModelLoadError, match="odd.safetensors.*do not match a sd1 model.*another shape"):
        load_model(path)


def test_ckpt_whose_pickle_needs_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(UnsafeFileError, match=r"evil.ckpt.*'(posix|os|nt)\.system'"):
        load_model(path)
    assert not marker.exists()


def test_diffusers_folder_missing_a_component(tmp_path, model_dir):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir("tiny-sdxl"), broken)
    shutil.rmtree(broken / "text_encoder_2" )
    shutil.rmtree(broken / "vae")
    # without text_encoder_2 it is read as SD1/SD2, so the missing vae is what must be named
    with pytest.raises(ModelLoadError, match="lacks vae/"):
        load_model(broken)


def test_prediction_type_detection_from_the_state_dict():
    from ti_core.models import detect_prediction_type

    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    g = torch.Generator().manual_seed(0)
    assert detect_prediction_type({"v_pred": torch.tensor([])}, "sdxl") == "v_prediction"  # the marker wins
    assert detect_prediction_type({key: torch.randn(320, generator=g) * 0.2}, "sd2") == "v_prediction"  # 768-v
    assert detect_prediction_type({key: torch.randn(320, generator=g) * 0.02}, "sd2") == "epsilon"  # 512-base
    assert detect_prediction_type({key: torch.randn(320, generator=g) * 0.2}, "sd1") == "epsilon"  # SD1 is eps


@pytest.mark.slow
def test_sd2_single_file_without_marker_is_read_as_eps_and_can_be_overridden(tmp_path, single_file):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(single_file("tiny-sd2")), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys() if k != "v_pred"}
        metadata = f.metadata()
    path = tmp_path / "unmarked.safetensors"
    save_file(sd, str(path), metadata=metadata)
    assert load_model(path).prediction_type == "epsilon"
    assert load_model(path, prediction_type="v_prediction").scheduler_config["prediction_type"] == "v_prediction"


def test_single_file_models_are_readable_by_others(single_file):
    import stat

    mode = stat.S_IMODE(single_file("tiny-sd1").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_the_model_prints_as_one_short_line(loaded):
    """ComfyUI copies a node's inputs into its error reports: the model must not print every layer."""
    text = repr(loaded("tiny-sd1"))
    assert "\n" not in text and len(text) < 300 and text.startswith("SDModel(sd1, epsilon, ")


# ---------------------------------------------------------------------------------------- in-memory state dicts


def _file_state_dict(path, inference: bool = False) -> dict:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    if inference:  # as an app running under torch.inference_mode holds its weights (ComfyUI does)
        with torch.inference_mode():
            sd = {k: v.clone() for k, v in sd.items()}
    return sd


@pytest.mark.parametrize("arch", TINY)
def test_model_from_state_dict_equals_the_file_loaded_and_shares_its_tensors(arch, single_file):
    from ti_core.models import UNET_IN_KEY, model_from_state_dict

    sd = _file_state_dict(single_file(arch))
    model = model_from_state_dict(sd)
    from_file = load_model(single_file(arch))
    assert (model.family, model.prediction_type, model.dtype) == (from_file.family, from_file.prediction_type,
                                                                   torch.float32)
    a, b = _state(from_file), _state(model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # no second copy: the model's weights are the state dict's tensors
    assert model.unet.conv_in.weight.data_ptr() == sd[UNET_IN_KEY].data_ptr()
    prefix = {"tiny-sd1": "cond_stage_model.transformer.text_model.",
              "tiny-sd2": "cond_stage_model.model.", "tiny-sdxl": "conditioner.embedders.1.model."}[arch]
    token = "embeddings.token_embedding.weight" if arch == "tiny-sd1" else "token_embedding.weight"
    assert model.text_encoders[-1].get_input_embeddings().weight.data_ptr() == sd[prefix + token].data_ptr()
    if arch != "tiny-sd1":  # OpenCLIP's fused q/k/v: split into views, not copies
        fused = sd[prefix + "transformer.resblocks.0.attn.in_proj_weight"]
        q = next(v for k, v in model.text_encoders[-1].state_dict().items()
                 if k.endswith("encoder.layers.0.self_attn.q_proj.weight"))
        assert q.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    shared = {t.untyped_storage().data_ptr() for t in sd.values()}
    params = [p for m in (model.unet, model.vae, *model.text_encoders) for p in m.parameters()]
    copied = [p for p in params if p.untyped_storage().data_ptr() not in shared]
    assert sum(p.numel() for p in copied) <= 64 * 64  # at most the transposed text projection


def test_model_from_state_dict_casts_only_to_another_dtype(single_file):
    from ti_core.models import UNET_IN_KEY, model_from_state_dict

    sd = _file_state_dict(single_file("tiny-sd1"))
    model = model_from_state_dict(sd, dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.unet.conv_in.weight.dtype == torch.bfloat16
    assert model.unet.conv_in.weight.data_ptr() != sd[UNET_IN_KEY].data_ptr()
    assert torch.equal(model.unet.conv_in.weight, sd[UNET_IN_KEY].to(torch.bfloat16))


def test_model_from_inference_tensors_can_be_trained_through(single_file):
    """Weights made under inference mode cannot be saved for backward; the builder re-wraps them (no copy)."""
    from ti_core.models import UNET_IN_KEY, model_from_state_dict

    sd = _file_state_dict(single_file("tiny-sd1"), inference=True)
    with torch.inference_mode():  # as a ComfyUI node runs
        model = model_from_state_dict(sd)
    assert model.unet.conv_in.weight.data_ptr() == sd[UNET_IN_KEY].data_ptr()
    assert not model.unet.conv_in.weight.is_inference()
    with torch.inference_mode(False):
        vector = torch.zeros(1, 1, 32, requires_grad=True)
        te = model.text_encoders[0]
        te.get_input_embeddings().register_forward_hook(lambda module, args, out: out + vector)
        hidden = te(torch.tensor([[49406, 320, 1125, 49407]])).last_hidden_state
        latents = torch.zeros(1, 4, 8, 8)
        model.unet(latents, 10, encoder_hidden_states=hidden).sample.square().sum().backward()
    assert vector.grad is not None and vector.grad.abs().sum() > 0


def test_model_from_state_dict_errors_say_what_was_seen(single_file):
    from ti_core.models import model_from_state_dict

    with pytest.raises(ModelLoadError, match="non-empty mapping"):
        model_from_state_dict({})
    with pytest.raises(ModelLoadError, match="no UNet weights"):
        model_from_state_dict({"cond_stage_model.x": torch.zeros(1)})
    sd = _file_state_dict(single_file("tiny-sd1"))
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(ModelLoadError, match="tensors missing"):
        model_from_state_dict(sd)
