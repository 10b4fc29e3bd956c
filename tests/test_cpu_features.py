"""bf16 instruction detection from /proc/cpuinfo flags, and the policy's warning when autocast would be emulated."""

from __future__ import annotations

import logging

import pytest

from covgym.models.cpu_features import cpu_flags, has_bf16_instructions


@pytest.mark.parametrize("flags, expected", [
    ({"sse2", "avx2"}, False),
    ({"sse2", "avx2", "avx512f", "avx512_bf16"}, True),
    ({"sse2", "avx2", "amx_bf16"}, True),
    ({"fp", "asimd", "bf16"}, None),  # aarch64 names: unknown, nothing assumed
    (set(), None),
])
def test_bf16_instructions_read_off_the_flags(flags, expected):
    assert has_bf16_instructions(frozenset(flags)) is expected


def test_flags_come_from_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\nprocessor\t: 1\nflags\t\t: other\n")
    assert cpu_flags.__wrapped__(str(info)) == frozenset({"fpu", "sse2", "avx2"})
    assert cpu_flags.__wrapped__(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("has_bf16, warns", [(False, True), (True, False), (None, False)])
def test_policy_warns_when_bf16_autocast_would_be_emulated(random_policy, monkeypatch, caplog, has_bf16, warns):
    from covgym.models.policy import Policy

    monkeypatch.setattr("covgym.models.policy.has_bf16_instructions", lambda: has_bf16)
    with caplog.at_level(logging.WARNING, logger="covgym.models.policy"):
        Policy(random_policy.model, random_policy.tokenizer, autocast_bf16=True)
        Policy(random_policy.model, random_policy.tokenizer, autocast_bf16=False)  # never warns
    assert caplog.text.count("emulated") == (1 if warns else 0)
