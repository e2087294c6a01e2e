"""scripts/bc_rla_controls.py: each variant changes only what its name says."""
import importlib.util
from pathlib import Path

import yaml


def _script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "bc_rla_controls.py"
    spec = importlib.util.spec_from_file_location("bc_rla_controls", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_variants_change_only_their_setting(project_root):
    mod = _script()
    base = yaml.safe_load((project_root / "conf/base/parameters_actionless_bc.yml").read_text())["actionless_bc"]
    w = base["loss"]["latent_l1_weight"], base["loss"]["latent_mse_weight"]
    assert min(w) > 0
    for name in ("bc", "bc_rla", "bc_rla_shuffled", "bc_rla_untrained"):
        assert mod._variant_params(name, base) == base  # these differ in their z targets, not in settings
    w0 = mod._variant_params("bc_rla_w0", base)
    assert (w0["loss"]["latent_l1_weight"], w0["loss"]["latent_mse_weight"]) == (0.0, 0.0)
    w4 = mod._variant_params("bc_rla_w4", base)
    assert (w4["loss"]["latent_l1_weight"], w4["loss"]["latent_mse_weight"]) == (4 * w[0], 4 * w[1])
    na = mod._variant_params("bc_rla_no_actionless", base)
    assert na["episodes"]["max_actionless_per_task"] == 0 and na["episodes"]["extra_demos_as_actionless"] is False
    for v in (w0, w4, na):  # nothing else moved, and the base was not mutated
        assert v["trainer"] == base["trainer"] and v["policy"] == base["policy"]
    assert base["loss"]["latent_l1_weight"] == w[0]
