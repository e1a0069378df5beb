"""Write a small LoRA adapter GGUF for a base model, to test adapter serving with.

The adapter holds random but seeded weights for the query and value projections of every
layer, laid out as llama.cpp's ``llama-adapter.cpp`` expects: for a base tensor of shape
``ne = [n_in, n_out]``, ``NAME.lora_a`` has ``ne = [n_in, rank]`` and ``NAME.lora_b``
``ne = [rank, n_out]`` (numpy shapes are the reverse), and the file says
``general.type = adapter``, ``adapter.type = lora`` and ``adapter.lora.alpha``. Needs the
``gguf`` package (the ``dev`` extra).
"""

from __future__ import annotations

from pathlib import Path

#: The base tensors the adapter changes, by their name's ending.
TARGETS = ("attn_q.weight", "attn_v.weight")


def write_test_lora(
    base: Path, out: Path, *, rank: int = 8, strength: float = 0.08, seed: int = 0
) -> Path:
    """Write an adapter of ``base`` (a GGUF model) to ``out`` and return ``out``.

    ``strength`` is the standard deviation of the A and B entries (alpha equals ``rank``, so
    the update is ``B @ A`` at scale 1): large enough that greedy output changes.
    """
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(base))
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode()
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(seed)
    for tensor in reader.tensors:
        if not tensor.name.endswith(TARGETS):
            continue
        n_in, n_out = (int(n) for n in tensor.shape[:2])
        lora_a = rng.normal(0.0, strength, (rank, n_in)).astype(np.float32)
        lora_b = rng.normal(0.0, strength, (n_out, rank)).astype(np.float32)
        writer.add_tensor(f"{tensor.name}.lora_a", lora_a)
        writer.add_tensor(f"{tensor.name}.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
