"""Whether this CPU has bfloat16 instructions: without them bf16 matmuls are emulated in software.

Measured on a 2-core AMD EPYC without AVX-512 (flags: avx2 only): three SmolLM2-135M GRPO steps under
``--autocast-bf16`` had not finished after 19 minutes, against 42 s a step in float32; on a CPU with
``avx512_bf16`` the same flag sped sampling up (docs/models.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86; other architectures report None (unknown)


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def has_bf16_instructions(flags: frozenset[str] | None = None) -> bool | None:
    """True or False on x86 Linux; None when the flags are unknown (then nothing is assumed)."""
    flags = cpu_flags() if flags is None else flags
    if not flags or "avx2" not in flags and "sse2" not in flags:  # not x86, or not readable
        return None
    return any(flag in flags for flag in BF16_FLAGS)
