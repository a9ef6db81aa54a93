"""A safetensors file read into NumPy arrays, bfloat16 included.

The format is an 8-byte little-endian header length n, n bytes of JSON naming each tensor's
dtype, shape and byte range, then the raw little-endian bytes. ``safetensors.numpy`` cannot
return bfloat16 (NumPy has no such dtype), the usual dtype of adapters on the Hub; here a
bfloat16 value, the top 16 bits of a float32, becomes that float32 exactly. Every offset and
size is checked against the file, so a truncated or crafted file is refused, never read past.
"""
from __future__ import annotations

import json

import numpy as np  # host-side I/O

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


class SafetensorsError(ValueError):
    """The bytes are not a well-formed safetensors file."""


def read_safetensors(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """(tensors, each tensor's stored dtype name, the file's ``__metadata__``) of ``blob``."""
    if len(blob) < 8:
        raise SafetensorsError(f"{len(blob)} bytes: shorter than the 8-byte header length")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise SafetensorsError(f"header of {n} bytes, but only {len(blob) - 8} follow (truncated?)")
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SafetensorsError(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"header is a {type(header).__name__}, not a JSON object")
    data = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors, stored = {}, {}
    for key, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise SafetensorsError(f"{key}: header entry {entry!r} lacks dtype, shape or "
                                   f"data_offsets") from None
        if dtype not in DTYPES:
            raise SafetensorsError(f"{key}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{key}: shape {shape!r} is not a list of sizes")
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(data)
                and end - start == int(np.prod(shape)) * itemsize):
            raise SafetensorsError(f"{key}: bytes [{start}, {end}) do not hold a {dtype} tensor of "
                                   f"shape {shape} within the {len(data)} data bytes (truncated?)")
        array = np.frombuffer(data[start:end], dtype=DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":  # bfloat16 = the top half of a float32's bits
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[key] = array.astype(array.dtype.newbyteorder("="))  # a native, writable copy
        stored[key] = dtype
    return tensors, stored, metadata
