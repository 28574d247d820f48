"""Pickled embeddings: only tensor data (and the original format's ParameterDict) is read; anything else is
refused before it runs, with the name of what it asked for. Files saved on a GPU load on the CPU."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch

from ti_core.checkpoint_io import pickle_globals
from ti_core.cli import main
from ti_core.embeddings import load_embedding
from ti_core.errors import UnsafeFileError


class _CreatesFile:
    """Unpickling this object runs code that creates a file: what a malicious embedding would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'w').close()",)


def _torch_zip(payload, path):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": payload}, "name": "x", "step": 1}, path)
    return path


def _raw_pickle(payload, path, protocol):
    path.write_bytes(pickle.dumps({"emb_params": payload}, protocol=protocol))
    return path


MALICIOUS = {
    "torch zip": lambda payload, path: _torch_zip(payload, path),
    "raw pickle, protocol 2": lambda payload, path: _raw_pickle(payload, path, 2),
    "raw pickle, default protocol": lambda payload, path: _raw_pickle(payload, path, pickle.DEFAULT_PROTOCOL),
}


def test_the_payload_really_creates_a_file_when_unpickled(tmp_path):
    target = tmp_path / "created"
    pickle.loads(pickle.dumps(_CreatesFile(target)))  # control: proves the refusal test below can fail
    assert target.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the raw pickle's protocol
@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(tmp_path, kind):
    target = tmp_path / "pwned"
    path = MALICIOUS[kind](_CreatesFile(target), tmp_path / "evil.pt")
    refused = r"evil.pt: refused to load: its pickle asks for '(builtins|__builtin__)\.exec'"
    with pytest.raises(UnsafeFileError, match=refused):
        load_embedding(path)
    assert not target.exists()


def test_cli_refuses_a_malicious_file_in_one_line(tmp_path, capsys):
    target = tmp_path / "pwned"
    path = _torch_zip(_CreatesFile(target), tmp_path / "evil.pt")
    assert main(["inspect", str(path)]) == 2
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "exec" in line for line in err)
    assert not target.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_module_other_than_parameterdict_is_refused_by_name(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"string_to_param": torch.nn.ModuleDict({"*": torch.nn.Linear(2, 2)})}, path)
    with pytest.raises(UnsafeFileError, match=r"'torch\.nn\.modules\.container\.ModuleDict'"):
        load_embedding(path)


def test_pickle_globals_reads_global_and_stack_global_without_running_anything(tmp_path):
    target = tmp_path / "never"
    payload = {"a": _CreatesFile(target), "b": _CreatesFile(target), "c": torch.nn.Linear}
    for protocol in (2, 4, 5):
        found = pickle_globals(pickle.dumps(payload, protocol=protocol))
        assert {"builtins.exec", "__builtin__.exec"} & set(found), (protocol, found)
        assert "torch.nn.modules.linear.Linear" in found
    assert pickle_globals(b"not a pickle") == []
    assert not target.exists()


def _move_storages_to_cuda(path, out):
    """Rewrite a torch zip so its storages say they were saved on 'cuda:0', as most shared .pt files do."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # BINUNICODE of the location string
    assert cpu in members[pkl]
    members[pkl] = members[pkl].replace(cpu, cuda)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out


def test_embedding_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    v = torch.randn(2, 768)
    cpu_file = tmp_path / "cpu.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "g", "step": 5}, cpu_file)
    gpu_file = _move_storages_to_cuda(cpu_file, tmp_path / "gpu.pt")
    if not torch.cuda.is_available():  # the rewritten file really asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(gpu_file.read_bytes()), weights_only=True)
    emb = load_embedding(gpu_file)
    assert emb.vectors["emb_params"].device.type == "cpu" and torch.equal(emb.vectors["emb_params"], v)
