#!/usr/bin/env python3
"""Send a photo to a TF Serving model exported by rae_keras; write the reconstruction.

    python tools/serve_client.py face.jpg \\
        --url http://localhost:8501/v1/models/NAME:predict --output out.png

The request goes to the `reconstruct_image_bytes` signature, which decodes, crops and
resizes the photo inside the model exactly as training did, and returns a PNG. Only the
standard library and numpy are needed (no TensorFlow). `build_request` and
`parse_response` are pure functions; tests/test_serving.py checks them against the
SavedModel signature.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Dict, List

SIGNATURE = "reconstruct_image_bytes"
INPUT = "image_bytes"
OUTPUT = "reconstruction_bytes"


class ServingError(RuntimeError):
    """The server answered with an error or with something that is not a reconstruction."""


def build_request(image_bytes: bytes, signature_name: str = SIGNATURE) -> Dict[str, Any]:
    """The TF Serving REST body (row format) for one encoded photo (JPEG or PNG)."""
    if not image_bytes:
        raise ValueError("empty image")
    return {
        "signature_name": signature_name,
        "instances": [{INPUT: {"b64": base64.b64encode(image_bytes).decode("ascii")}}],
    }


def _decode_binary(value: Any) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    raise ServingError(
        f"expected a {{'b64': ...}} value for {OUTPUT!r}, got {type(value).__name__}")


def _refused(valid: Any, error: Any) -> None:
    """The signature answers a photo it cannot use with valid=false and the reason."""
    if valid is False:
        raise ServingError(f"server error: photo refused: {error or 'no reason given'}")


def parse_responses(response: Dict[str, Any]) -> List[bytes]:
    """Every PNG in a TF Serving REST reply, row ("predictions") or columnar ("outputs")."""
    if "error" in response:
        raise ServingError(f"server error: {response['error']}")
    if "predictions" in response:
        rows = response["predictions"]
        if not isinstance(rows, list):
            raise ServingError("'predictions' is not a list")
        for row in rows:
            if isinstance(row, dict):
                _refused(row.get("valid"), row.get("error"))
        # Several outputs: one dict per instance. A single output would be bare values.
        return [_decode_binary(row[OUTPUT] if isinstance(row, dict) and OUTPUT in row else row)
                for row in rows]
    if "outputs" in response:
        outputs = response["outputs"]
        if isinstance(outputs, dict) and isinstance(outputs.get("valid"), list):
            errors = outputs.get("error") or [None] * len(outputs["valid"])
            for valid, error in zip(outputs["valid"], errors):
                _refused(valid, error)
        values = outputs[OUTPUT] if isinstance(outputs, dict) and OUTPUT in outputs else outputs
        if not isinstance(values, list):
            values = [values]
        return [_decode_binary(v) for v in values]
    raise ServingError(f"reply has neither 'predictions' nor 'outputs': keys {sorted(response)}")


def parse_response(response: Dict[str, Any]) -> bytes:
    """The PNG of the first (here: only) instance of a TF Serving REST reply."""
    pngs = parse_responses(response)
    if not pngs:
        raise ServingError("reply holds no reconstruction")
    return pngs[0]


def post_json(url: str, body: Dict[str, Any], timeout: float = 60.0) -> Dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as e:  # TF Serving sends {"error": ...} with a 4xx/5xx
        text = e.read().decode("utf-8", "replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ServingError(f"HTTP {e.code} from {url}: {text[:500]}") from e


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="a JPEG or PNG photo (any size)")
    parser.add_argument("--url", required=True,
                        help="e.g. http://localhost:8501/v1/models/NAME:predict "
                             "(or .../versions/N:predict)")
    parser.add_argument("--output", default="reconstruction.png", help="PNG to write")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    with open(args.image, "rb") as f:
        body = build_request(f.read())
    try:
        png = parse_response(post_json(args.url, body, timeout=args.timeout))
    except (ServingError, urllib.error.URLError, OSError) as e:
        print(f"serve_client: {e}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(png)
    print(f"wrote {args.output} ({len(png)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
