"""Drive a real ComfyUI for the TI pack checks: start a server, post API prompts, wait, read peak RSS.

$COMFY_ROOT holds ComfyUI/ (a checkout), venv/ (its Python) and base/ (its --base-directory: models/checkpoints/
sd15-random.safetensors, models/loras/random-lora.safetensors, custom_nodes/ with this pack and ti_probe/ linked in).
See README.md beside this file.
"""
import json
import os
import subprocess
import time

import requests

ROOT = os.environ.get("COMFY_ROOT", "/tmp/comfy")
BASE = f"{ROOT}/base"
PORT = 8191
URL = f"http://127.0.0.1:{PORT}"
CKPT = "sd15-random.safetensors"
T = {"init_text": "star", "vectors": 1, "steps": 3, "learning_rate": "5e-3", "batch_size": 1, "grad_accum": 1,
     "template": "captions", "crop": "center", "resolution": 64, "save_every": 0, "preview_every": 0,
     "train_seed": 0, "resume": False, "precision": "model", "validate_every": 0, "early_stop": 0}


class Server:
    def __init__(self, tag, extra=()):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_OUT": ROOT}
        self.log = open(f"{ROOT}/server_{tag}.log", "w")
        self.proc = subprocess.Popen(
            [f"{ROOT}/venv/bin/python", "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(PORT),
             "--base-directory", BASE, "--database-url", "sqlite:///:memory:", "--disable-api-nodes",
             "--dont-print-server", *extra],
            cwd=f"{ROOT}/ComfyUI", env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                requests.get(URL + "/system_stats", timeout=2)
                return
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server died, see server_{tag}.log")
                time.sleep(1)
        raise RuntimeError("server did not start")

    def rss_peak_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    def rss_now_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    def run(self, prompt, timeout=3000):
        r = requests.post(URL + "/prompt", json={"prompt": prompt, "client_id": "drive"})
        if r.status_code != 200:
            raise RuntimeError(r.text)
        pid = r.json()["prompt_id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = requests.get(f"{URL}/history/{pid}").json()
            if pid in h:
                st = h[pid]["status"]
                if st.get("completed") or st.get("status_str") in ("success", "error"):
                    h[pid]["seconds"] = time.time() - t0
                    return h[pid]
            time.sleep(1)
        raise RuntimeError("timeout")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def ok(hist):
    st = hist["status"]
    if st.get("status_str") != "success":
        msgs = [m for m in st.get("messages", []) if m[0] == "execution_error"]
        raise RuntimeError(json.dumps(msgs)[:3000])
    return hist


def native_graph(name, steps=3, resume=False, lora=None):
    g = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
         "2": {"class_type": "TILoadImages", "inputs": {"folder": "ti-demo-images", "preview_size": 64}},
         "3": {"class_type": "TITrainEmbeddingNative",
               "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0],
                          **T, "name": name, "steps": steps, "resume": resume}},
         "4": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a photo of embedding:{name} on a table",
                                                          "clip": ["3", 2]}},
         "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["3", 2]}},
         "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 0, "steps": 2, "cfg": 7.0,
                                                    "sampler_name": "euler", "scheduler": "normal",
                                                    "positive": ["4", 0], "negative": ["5", 0],
                                                    "latent_image": ["6", 0], "denoise": 1.0}},
         "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
         "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": f"native_{name}"}},
         "10": {"class_type": "TIProbeConditioningSave", "inputs": {"conditioning": ["4", 0],
                                                                    "label": f"{name}_{steps}"}}}
    if lora:
        g["11"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                         "strength_model": 1.0, "strength_clip": 1.0}}
        g["3"]["inputs"].update(model=["11", 0], clip=["11", 1])
        g["7"]["inputs"]["model"] = ["11", 0]
    return g


def reference_graph(name):
    return {"1": {"class_type": "TILoadModel", "inputs": {"model_name": CKPT, "dtype": "fp32"}},
            "2": {"class_type": "TILoadImages", "inputs": {"folder": "ti-demo-images", "preview_size": 64}},
            "3": {"class_type": "TITrainEmbedding", "inputs": {"model": ["1", 0], "images": ["2", 0],
                                                               **T, "name": name}}}


def old_way_graph(name):
    """TILoadModel training next to a Load Checkpoint that generates with the word by file name."""
    g = native_graph(name)
    g["3"] = reference_graph(name)["3"]
    g["12"] = {"class_type": "TILoadModel", "inputs": {"model_name": CKPT, "dtype": "fp32"}}
    g["3"]["inputs"]["model"] = ["12", 0]
    g["4"]["inputs"]["clip"] = ["1", 1]
    g["5"]["inputs"]["clip"] = ["1", 1]
    del g["10"]
    # make the encode wait for the training, as a user could only do by queueing twice: here it just runs after
    return g


def compare_graph(name, text, lora=None, last_layer=None):
    g = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
         "2": {"class_type": "TILoadEmbedding", "inputs": {"embedding_name": f"{name}.safetensors"}},
         "5": {"class_type": "TILoadModel", "inputs": {"model_name": CKPT, "dtype": "fp32"}},
         "6": {"class_type": "TIEncodePrompt", "inputs": {"model": ["5", 0], "text": text, "embedding": ["2", 0]}}}
    clip = ["1", 1]
    if last_layer is not None:
        g["8"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": clip, "stop_at_clip_layer": last_layer}}
        clip = ["8", 0]
    g["3"] = {"class_type": "TIApplyEmbedding", "inputs": {"clip": clip, "embedding": ["2", 0]}}
    g["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["3", 0]}}
    g["7"] = {"class_type": "TIProbeCompare", "inputs": {"conditioning": ["4", 0], "ti_conditioning": ["6", 0],
                                                         "label": f"{name}_ll{last_layer}"}}
    if lora:
        g["9"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                        "strength_model": 1.0, "strength_clip": 1.0}}
        g["10"] = {"class_type": "TIApplyEmbedding", "inputs": {"clip": ["9", 1], "embedding": ["2", 0]}}
        g["11"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["10", 0]}}
        g["12"] = {"class_type": "TIProbeConditioningSave", "inputs": {"conditioning": ["11", 0],
                                                                       "label": "lora_applied"}}
        g["13"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["9", 1]}}
        g["14"] = {"class_type": "TIProbeConditioningSave", "inputs": {"conditioning": ["13", 0],
                                                                       "label": "lora_file"}}
        g["15"] = {"class_type": "TIProbeConditioningSave", "inputs": {"conditioning": ["4", 0],
                                                                       "label": "plain_applied"}}
    return g


if __name__ == "__main__":
    print("use from a script")


def last_layer_graph(name, text, layer=-2):
    """The word applied before and after CLIPSetLastLayer, and ComfyUI's own file lookup at that layer."""
    def save(src, label):
        return {"class_type": "TIProbeConditioningSave", "inputs": {"conditioning": src, "label": label}}

    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "2": {"class_type": "TILoadEmbedding", "inputs": {"embedding_name": f"{name}.safetensors"}},
            "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": layer}},
            "4": {"class_type": "TIApplyEmbedding", "inputs": {"clip": ["3", 0], "embedding": ["2", 0]}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 0]}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["3", 0]}},
            "7": {"class_type": "TIApplyEmbedding", "inputs": {"clip": ["1", 1], "embedding": ["2", 0]}},
            "8": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["7", 0], "stop_at_clip_layer": layer}},
            "9": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["8", 0]}},
            "11": save(["5", 0], "layer_applied_after"), "12": save(["6", 0], "layer_file"),
            "13": save(["9", 0], "layer_applied_before")}
