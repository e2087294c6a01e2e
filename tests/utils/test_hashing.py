"""``json_digest`` must give, character for character, the digest the call sites wrote inline before it existed:
episode recipes, feature-cache keys and checkpoint hashes are stored under these strings."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from rla_pipeline.utils.hashing import json_digest


@dataclasses.dataclass
class _Cfg:
    lr: float = 3e-4
    path: Path = Path("/tmp/x")


INPUTS = {
    "nested dict": {"b": {"z": 1, "a": [1, 2, {"y": None, "x": 0.5}]}, "a": "text", "c": True},
    "floats": {"small": 1e-8, "third": 1 / 3, "neg": -0.0, "big": 1.5e300, "int_like": 2.0},
    "list": [3, "two", 1.0, None, [], {}],
    "none": None,
    "tuple": ("a", 1, (2.5, None)),
    "non-ascii": {"tâche": "café ☕", "emoji": "🤖"},
    "int keys": {2: "b", 1: "a"},
    "recipe-like": {"version": 3, "mani_skill": "3.0.0b20", "task": "PickCube-v1", "kind": "demo", "seed": 7,
                    "image_size": 224, "control_mode": "pd_ee_delta_pose", "with_mask": False,
                    "max_steps": None, "extra_steps_after_success": 10, "noise": 0.05},
    "fingerprint-like": [[["ep-1", "abc"], ["ep-0", "def"]], 224, True, 2],
}


def _old(obj, length=None, default=None):
    """The inline expression as the call sites wrote it."""
    if default is None:
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:length]


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("length", [None, 16])
def test_json_digest_matches_inline_expression(name, length):
    obj = INPUTS[name]
    assert json_digest(obj, length) == _old(obj, length)
    assert json_digest(obj, length, default=str) == _old(obj, length, default=str)


def test_json_digest_full_and_truncated():
    obj = INPUTS["nested dict"]
    full = json_digest(obj)
    assert len(full) == 64 and full == hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
    assert json_digest(obj, 16) == full[:16]


def test_json_digest_default_str_for_objects_json_cannot_write():
    obj = [["ep", "key"], dataclasses.asdict(_Cfg())]  # a Path inside, as the sample datasets' config holds
    with pytest.raises(TypeError):
        json_digest(obj)
    assert json_digest(obj, 16, default=str) == hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_json_digest_ignores_dict_order():
    assert json_digest({"a": 1, "b": {"c": 2, "d": 3}}) == json_digest({"b": {"d": 3, "c": 2}, "a": 1})


def test_json_digest_pinned_values():
    """Literal digests: a change of separators, ensure_ascii, hash or encoding anywhere would show here."""
    # json.dumps writes '{"a": [1.5, null, "x"], "b": 1}' (", " and ": " separators)
    assert json_digest({"b": 1, "a": [1.5, None, "x"]}) == (
        "01ad9360d0bf1f051bb220b0d20eb2cbf17c5c2a4d967fef37987eede6ea94fd")
    # ensure_ascii: written as '{"t\\u00e2che": "caf\\u00e9 \\u2615"}', not as utf-8 bytes
    assert json_digest({"tâche": "café ☕"}, 16) == "080769898243ddae"
