import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drive import ROOT, URL, Server  # noqa

HERE = os.path.dirname(os.path.abspath(__file__))
out = f"{ROOT}/shots"
subprocess.run(["mkdir", "-p", out])
runs = {"fe127": ([], [("classic", "train")]),
        "fe158": (["--front-end-root", f"{ROOT}/fe158/comfyui_frontend_package/static"],
                  [("classic", "no"), ("vue", "train")])}
for tag in sys.argv[1:] or list(runs):
    extra, modes = runs[tag]
    s = Server(tag, extra)
    try:
        for mode, train in modes:
            r = subprocess.run(["node", f"{HERE}/check_fe.js", URL + "/", f"{tag}_{mode}", out, mode, train],
                               cwd=f"{ROOT}/pw", capture_output=True, text=True, timeout=900,
                               env={**__import__("os").environ, "OPEN_VIA": "templates"})
            print(tag, mode, "rc", r.returncode, r.stderr[-3000:], flush=True)
    finally:
        s.stop()
