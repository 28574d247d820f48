"""HTTP routes under /textual_inversion/ (also served under /api/...), added only inside a running ComfyUI.

GET /textual_inversion/embeddings              every file in models/embeddings with its inspect info
GET /textual_inversion/embeddings/info?name=N  one file's inspect info (N checked to stay in the folder)
GET /textual_inversion/status                  what each TITrainEmbedding node is doing
"""

from __future__ import annotations

from . import comfy_adapter as comfy


def list_embeddings() -> list:
    from .embedding_nodes import embedding_choices

    return [embedding_info_for(name)[1] for name in embedding_choices()]


def embedding_info_for(name: str) -> tuple[int, dict]:
    """(HTTP status, body) for one embedding name; the name may not leave models/embeddings."""
    from .embedding_nodes import embedding_info
    from .safe_paths import PathEscapeError

    try:
        path = comfy.find_file("embeddings", name)
    except PathEscapeError as exc:
        return 403, {"file": name, "error": str(exc)}
    if path is None or not path.is_file():
        return 404, {"file": name, "error": "no such embedding"}
    try:
        return 200, {**embedding_info(path), "file": name}
    except Exception as exc:  # a broken file is reported in the list, not a server error
        return 422, {"file": name, "error": str(exc)}


def register(server) -> None:
    from aiohttp import web

    from . import status

    routes = server.routes

    @routes.get("/textual_inversion/embeddings")
    async def embeddings(request):
        return web.json_response({"embeddings": list_embeddings()})

    @routes.get("/textual_inversion/embeddings/info")
    async def info(request):
        code, body = embedding_info_for(request.query.get("name", ""))
        return web.json_response(body, status=code)

    @routes.get("/textual_inversion/status")
    async def training_status(request):
        return web.json_response({"runs": status.snapshot()})
