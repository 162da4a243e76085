"""Python floor: a minimal handler with Seldon's semantics on the ceiling's stack (uvloop + httptools).

Where ceiling_http.py echoes bytes, this one does the least a Seldon-compatible server must do
with a request, in plain Python: httptools parses it, orjson loads the body, ``np.asarray``
makes the tensor, the model is the identity, and the reply carries Seldon's default names
(``t:0`` …) and ``meta``, written by orjson straight from the array (OPT_SERIALIZE_NUMPY).
Seldon REST (``data.ndarray`` and ``data.tensor``) and V2 REST JSON (``inputs[0].data``, reply
``outputs[0]`` named ``output-0``) are answered; anything else gets 404. No limits, no hooks,
no metrics: the per-request cost above this floor is the server's own.

    python -m benchmarks.floor_http --port 8000 [--workers N]
"""
from __future__ import annotations

import numpy as np
import orjson

from benchmarks.ceiling_http import ParsingProtocol, serve_http

_OPTS = orjson.OPT_SERIALIZE_NUMPY
_V2_DTYPES = {"FP32": np.float32, "FP64": np.float64}
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _names(arr: np.ndarray) -> list[str]:
    return [f"t:{i}" for i in range(arr.shape[-1])] if arr.ndim else []


def seldon(body: bytes) -> bytes:
    data = orjson.loads(body)["data"]
    if "ndarray" in data:
        arr = np.asarray(data["ndarray"])
        return orjson.dumps({"data": {"names": _names(arr), "ndarray": arr}, "meta": {}}, option=_OPTS)
    tensor = data["tensor"]
    arr = np.asarray(tensor["values"], dtype=np.float64).reshape(tensor["shape"])
    reply = {"data": {"names": _names(arr), "tensor": {"shape": list(arr.shape), "values": arr.ravel()}}, "meta": {}}
    return orjson.dumps(reply, option=_OPTS)


def v2(body: bytes, model: str) -> bytes:
    doc = orjson.loads(body)
    first = doc["inputs"][0]
    arr = np.asarray(first["data"], dtype=_V2_DTYPES[first["datatype"]]).reshape(first["shape"])
    output = {"name": "output-0", "datatype": first["datatype"], "shape": list(arr.shape), "data": arr.ravel()}
    reply = {"model_name": model, "outputs": [output]}
    if "id" in doc:
        reply["id"] = doc["id"]
    return orjson.dumps(reply, option=_OPTS)


class _FloorProtocol(ParsingProtocol):
    def __init__(self) -> None:
        super().__init__()
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, body = self._url, b"".join(self._body)
        self._url, self._body = b"", []
        path = url.split(b"?", 1)[0]
        try:
            if path in (b"/api/v1.0/predictions", b"/predict"):
                reply = seldon(body)
            elif path.startswith(b"/v2/models/") and path.endswith(b"/infer"):
                reply = v2(body, path[11:-6].decode())
            else:
                self._transport.write(_NOT_FOUND)
                return
        except (ValueError, KeyError, IndexError, TypeError):
            msg = b'{"status":{"code":-1,"status":"FAILURE"}}'
            self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n%s" % (len(msg), msg))
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(reply)
        self._transport.write(head + reply)
        if not self._parser.should_keep_alive():
            self._transport.close()


def main(argv: list[str] | None = None) -> int:
    return serve_http(argv, _FloorProtocol, __doc__.splitlines()[0])


if __name__ == "__main__":
    raise SystemExit(main())
