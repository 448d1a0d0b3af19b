"""gguf_vocab reads the tokenizer.* metadata of a GGUF file with nothing but
the standard library (struct), so that make_fixtures.py needs no gguf package.

Usage as a script: python3 gguf_vocab.py FILE.gguf  (prints the scalar keys).
"""

import struct
import sys

# GGUF value types, as in ggml's gguf.h.
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
    6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, data):
        self.data = data
        self.off = 0

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.off)[0]
        self.off += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.unpack("<Q")
        s = self.data[self.off:self.off + n]
        self.off += n
        # Tokens are UTF-8 in every file we know; keep invalid bytes visible.
        return s.decode("utf-8", errors="surrogateescape")

    def value(self, typ):
        if typ in _SCALARS:
            return self.unpack(_SCALARS[typ])
        if typ == _STRING:
            return self.string()
        if typ == _ARRAY:
            et = self.unpack("<I")
            n = self.unpack("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"gguf: unknown value type {typ} at offset {self.off}")


def read_metadata(path):
    """read_metadata returns the GGUF file's metadata as a dict."""
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data)
    if r.unpack("<I") != 0x46554747:  # "GGUF" little-endian
        raise ValueError(f"{path}: not a GGUF file")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} not supported")
    r.unpack("<Q")  # tensor count
    n_kv = r.unpack("<Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        typ = r.unpack("<I")
        kv[key] = r.value(typ)
    return kv


if __name__ == "__main__":
    md = read_metadata(sys.argv[1])
    for k, v in md.items():
        if isinstance(v, list):
            print(k, f"[{len(v)}]", v[:8])
        else:
            print(k, repr(v))
