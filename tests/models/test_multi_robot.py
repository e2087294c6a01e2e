"""One world model for several robots: an action MLP per robot (its own width) before the shared GRU."""
from __future__ import annotations

import pytest
import torch


def _model(kind, robots):
    from rla_pipeline.models.world_model import WORLD_MODELS, WorldModelConfig

    cfg = WorldModelConfig(num_tokens=4, token_dim=8, action_dim=7, max_actions=3, width=16, heads=2, cond_depth=1,
                           flow_depth=1, depth=1, action_embed_dim=8, sample_steps=2, robots=robots,
                           rla={"num_tokens": 4, "token_dim": 8, "width": 16, "heads": 2, "enc_depth": 1,
                                "dec_depth": 1, "latent_tokens": 2, "latent_dim": 4})
    torch.manual_seed(0)
    return WORLD_MODELS[kind](cfg)


@pytest.mark.parametrize("kind", ["rla_wm", "deterministic", "absolute_flow"])
def test_each_robot_has_its_own_action_mlp_and_unknown_robots_fail_clearly(kind):
    from rla_pipeline.models.world_model import world_model_loss

    m = _model(kind, {"arm7": 7, "arm4": 4})
    assert m.robots == ["arm4", "arm7"] and len(m.action_encoder.mlps) == 2
    s = torch.randn(4, 4, 8)
    a = torch.randn(4, 3, 7)
    a[:2, :, 4:] = 0  # the two arm4 rows carry 4-d actions, zero-padded like the training data
    mask = torch.ones(4, 3, dtype=torch.bool)
    robot = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():  # the zero-initialised output layers would block every gradient at step 0
        for p in m.parameters():
            if p.requires_grad and p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.1)
    loss, _ = world_model_loss(m, {"s_t": s, "actions": a, "action_mask": mask, "s_th": s + 1, "robot": robot})
    loss.backward()
    # each robot's MLP learns only from its own rows; the GRU is shared
    g4, g7 = (m.action_encoder.mlps[i][0].weight.grad for i in (0, 1))
    assert g4.shape == (8, 4) and g7.shape == (8, 7) and g4.abs().sum() > 0 and g7.abs().sum() > 0
    # the same actions mean different things for different robots
    tok_a = m.action_token(a[:2, :, :4], mask[:2], "arm4")
    tok_b = m.action_token(a[:2, :, :4], mask[:2], "arm7")
    assert not torch.allclose(tok_a, tok_b)
    with pytest.raises(ValueError, match=r"no action encoder for robot\(s\) \['so100'\].*trained on robots "
                                         r"\['arm4', 'arm7'\]"):
        m.predict_next(s, a, mask, robot="so100")
    with pytest.raises(ValueError, match="several robots"):
        m.predict_next(s, a, mask)
    with m.for_robot("arm4"):
        assert m.rollout(s, [a[..., :4]], [mask])[0].shape == s.shape  # a robot's own width is accepted
    with pytest.raises(ValueError, match="no action encoder"):
        m.for_robot("so100").__enter__()


def test_one_robot_models_keep_the_old_layout_and_need_no_robot():
    from rla_pipeline.models.world_model import ActionEncoder

    plain = _model("deterministic", {})
    assert not plain.robots and any(k.startswith("action_encoder.mlp.") for k in plain.state_dict())
    one = _model("deterministic", {"so100": 7})
    s, a, mask = torch.randn(2, 4, 8), torch.randn(2, 3, 7), torch.ones(2, 3, dtype=torch.bool)
    assert one.predict_next(s, a, mask).shape == s.shape  # the only robot is the default
    enc = ActionEncoder(7, 8, 16, {"a": 7, "b": 2})
    with pytest.raises(ValueError, match="pass the robot index"):
        enc(a, mask)


def test_each_robot_is_normalised_by_its_own_action_statistics():
    """Per-robot statistics: one robot's chunk is normalised by its own mean/std (over its own columns, padding
    columns left at 0 / 1), so the same raw numbers normalise differently for two robots; one-robot models keep the
    shared statistics; the conditioning is recorded in the config."""
    m = _model("deterministic", {"arm7": 7, "arm4": 4})
    m.set_robot_action_stats({"arm4": {"mean": [1.0, 2.0, 3.0, 4.0], "std": [2.0, 2.0, 2.0, 0.0]},
                              "arm7": {"mean": [0.0] * 7, "std": [1.0] * 7}})
    i4 = m.robots.index("arm4")
    assert torch.equal(m.robot_action_mean[i4], torch.tensor([1.0, 2, 3, 4, 0, 0, 0]))
    assert m.robot_action_std[i4, 3] > 0 and torch.equal(m.robot_action_std[i4, 4:], torch.ones(3))  # floored
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 3, 4)  # exactly arm4's mean: normalises to zero for arm4
    mask = torch.ones(1, 3, dtype=torch.bool)
    zero = m.action_encoder(torch.zeros(1, 3, 7), mask, torch.tensor([i4]))
    assert torch.allclose(m.action_token(a, mask, "arm4"), zero, atol=1e-6)
    assert not torch.allclose(m.action_token(a, mask, "arm7"), m.action_encoder(torch.zeros(1, 3, 7), mask,
                                                                              torch.tensor([1 - i4])), atol=1e-4)
    with pytest.raises(ValueError, match=r"no statistics for robot\(s\) \['arm7'\]"):
        m.set_robot_action_stats({"arm4": {"mean": [0.0] * 4, "std": [1.0] * 4}})
    with pytest.raises(ValueError, match="no per-robot action encoders"):
        _model("deterministic", {}).set_robot_action_stats({})
    from rla_pipeline.models.world_model import WorldModelConfig

    assert m.config.conditioning == "actions"
    with pytest.raises(ValueError, match="conditioning must be one of"):
        WorldModelConfig(conditioning="qpos")


def test_imagined_env_steps_each_env_with_its_start_states_robot():
    """A multi-robot world model in the imagined env (the default's PushT Panda-stick + Panda tasks): without the
    robot of each start state it refuses; with it, each env is stepped by its own robot's action encoder."""
    from rla_pipeline.rl.imagined_env import ImaginedEnvConfig, ImaginedVectorEnv, build_start_states

    m = _model("deterministic", {"arm7": 7, "arm4": 4}).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.1)  # zero-initialised output layers would hide the action path
    seqs = [torch.randn(12, 4, 8) for _ in range(2)]
    starts = build_start_states(seqs, chunk=3, max_chunks=2, task_index=[0, 1])
    env = ImaginedVectorEnv(m, starts, cfg=ImaginedEnvConfig(num_envs=2, max_chunks=2, success_threshold=1e-9))
    env.reset_to(torch.tensor([0, 1]))
    a = torch.randn(2, 3, 7)
    with pytest.raises(ValueError, match="several robots"):
        env.step(a)
    out = {}
    for names in (("arm4", "arm7"), ("arm7", "arm7")):
        env.robot_of_start = m.robot_ids(list(names))
        env.reset_to(torch.tensor([0, 1]))
        obs, *_ = env.step(a)
        out[names] = obs["tokens"].clone()
    # env 1 is arm7 both times: identical; env 0 changes robot: its action encoder, hence its next state, differs
    torch.testing.assert_close(out[("arm4", "arm7")][1], out[("arm7", "arm7")][1])
    assert not torch.allclose(out[("arm4", "arm7")][0], out[("arm7", "arm7")][0])


def test_per_robot_action_encoder_runs_under_bfloat16_autocast():
    """One step MLP per robot under autocast (the paper's GPU setting, amp bf16): the per-robot outputs are
    written into one tensor of their own dtype (index_put failed on float32 zeros vs bfloat16 outputs)."""
    from rla_pipeline.models.world_model import ActionEncoder

    torch.manual_seed(0)
    enc = ActionEncoder(action_dim=4, embed=8, width=16, robots={"panda": 4, "panda_stick": 3})
    actions, mask = torch.randn(5, 3, 4), torch.ones(5, 3, dtype=torch.bool)
    robot = torch.tensor([0, 1, 0, 1, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tok = enc(actions, mask, robot)
    ref = enc(actions, mask, robot)
    assert tok.shape == ref.shape == (5, 16) and torch.isfinite(tok.float()).all()
    assert torch.allclose(tok.float(), ref, atol=0.1)
