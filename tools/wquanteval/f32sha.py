"""Print the SHA-256 of an all-F32 GGUF file's weights, independently of turbomem.

    PYTHONPATH=llama.cpp/gguf-py /usr/bin/python3 tools/wquanteval/f32sha.py FILE.gguf

For each tensor (every one must be F32): the hex SHA-256 of its data as
little-endian float32; then the SHA-256 of the lines "NAME HEX\\n" sorted by
name. wquant's TestQuantizedPerplexityMatchesLlamaCpp computes the same from
its own dequantization of a quantized file; run this on llama-quantize's F32
dequantization of that file (llama-quantize --allow-requantize Q.gguf F.gguf
F32) to check that both tools read the file as the same weights.
"""
import hashlib
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType


def main(path):
    lines = []
    for t in GGUFReader(path).tensors:
        if t.tensor_type != GGMLQuantizationType.F32:
            sys.exit(f"{t.name}: type {t.tensor_type.name}, want F32")
        data = np.ascontiguousarray(t.data, dtype="<f4").tobytes()
        lines.append(f"{t.name} {hashlib.sha256(data).hexdigest()}\n")
    print(hashlib.sha256("".join(sorted(lines)).encode()).hexdigest())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
