"""The image BC-ResNet acting inside the world model on decoded RGB: observations are what the simulator gives it,
and PPO through the decoder really improves the imagined return (a real tiny pixel decoder, BC-ResNet and an exact
token world model where the right action chunk depends on what the image shows)."""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig, decode_tokens
from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy
from rla_pipeline.rl.actor_critic import ImageActorCritic, ImageActorCriticConfig
from rla_pipeline.rl.decoded_env import DecodedImageEnv, decode_to_images
from rla_pipeline.rl.imagined_env import ImaginedEnvConfig, ImaginedVectorEnv, evaluate_start_states
from rla_pipeline.rl.ppo import PPOConfig, evaluate_imagined, train_ppo

N, D, A, H = 4, 6, 2, 2


class ShiftWorldModel(torch.nn.Module):
    """Exact tiny dynamics: s' = s + mean over the chunk of (actions @ W), the same shift for every token."""

    def __init__(self):
        super().__init__()
        self.W = torch.eye(A, D)

    def predict_next(self, s_t, actions, action_mask, generator=None):
        return s_t + ((actions * action_mask[..., None]).mean(1) @ self.W)[:, None, :]


def _decoder(image_size=16, seed=0) -> PixelDecoder:
    """A real decoder whose output depends on the tokens (the RGB layer starts at zero when untrained: give it
    random weights so different states decode to different images)."""
    torch.manual_seed(seed)
    dec = PixelDecoder(PixelDecoderConfig(num_tokens=N, token_dim=D, image_size=image_size, channels=[8, 8],
                                          groups=4))
    torch.nn.init.normal_(dec.to_rgb.weight, std=0.3)
    return dec.eval()


def _env(num_envs=32, image_size=32, **cfg):
    # two start states the policy can only tell apart by their image; each needs the opposite action chunk
    starts = torch.stack([torch.full((N, D), 1.0), torch.full((N, D), -1.0)])
    target = torch.tensor([[0.6, -0.4], [-0.6, 0.4]])
    goals = starts + (target @ torch.eye(A, D))[:, None, :]
    tokens = ImaginedVectorEnv(ShiftWorldModel(), starts, goals=goals, cfg=ImaginedEnvConfig(
        num_envs=num_envs, max_chunks=1, success_threshold=0.02, terminate_on_success=False, reward_scale=10.0,
        **cfg))
    return DecodedImageEnv(tokens, _decoder(), image_size)


def _policy(image_size=32) -> BCResNetPolicy:
    torch.manual_seed(1)
    return BCResNetPolicy(BCResNetConfig(image_size=image_size, action_dim=A, chunk=H, hidden=32))


def test_observation_is_the_decoded_state_as_the_simulator_frame_type():
    env = _env(num_envs=4, image_size=48)
    obs = env.reset_to(torch.tensor([0, 1, 0, 1]), seed=0)
    img = obs["image"]
    assert img.dtype == torch.uint8 and img.shape == (4, 48, 48, 3)  # (B, H, W, 3) like Frame.rgb, camera size
    assert set(obs) == {"tokens", "task", "image"}
    # the image is the decoder's RGB of the state (decode_tokens, resized to the camera size)
    same_size = DecodedImageEnv(env.env, env.decoder, 16)
    assert torch.equal(same_size.decode(obs["tokens"]), decode_tokens(env.decoder, obs["tokens"]))
    # different states -> different images, the same state -> the same image
    assert not torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
    assert int(img.min()) >= 0 and int(img.max()) <= 255 and int(img.max()) > int(img.min())
    a = torch.zeros(4, H, A)
    a[:, :, 0] = 0.5
    nxt, _, term, trunc, info = env.step(a)
    assert bool(trunc.all())  # one chunk per episode: every env ended and reset
    assert torch.equal(info["final_image"], env.decode(info["final_obs"]))
    assert torch.equal(nxt["image"], env.decode(nxt["tokens"]))
    # the BC-ResNet takes it exactly as it takes a simulator frame
    assert _policy().act(nxt["image"]).shape == (4, H, A)


def test_decode_to_images_is_the_envs_decoding():
    """One function decodes for the env and for BC's decoded copies (stages.bc): the same frames, in any batches."""
    env = _env(num_envs=4, image_size=48)
    obs = env.reset_to(torch.tensor([0, 1, 0, 1]), seed=0)
    assert torch.equal(decode_to_images(env.decoder, obs["tokens"], 48), obs["image"])
    assert torch.equal(decode_to_images(env.decoder, obs["tokens"], 48, batch=3), obs["image"])
    assert decode_to_images(env.decoder, obs["tokens"][:0], 48).shape == (0, 48, 48, 3)


def test_decoder_must_read_the_world_models_tokens():
    env = _env(num_envs=2)
    wrong = PixelDecoder(PixelDecoderConfig(num_tokens=9, token_dim=D, image_size=16, channels=[8, 8], groups=4))
    with pytest.raises(ValueError, match="pixel decoder reads tokens"):
        DecodedImageEnv(env.env, wrong, 32)


@pytest.mark.slow
def test_ppo_on_decoded_images_increases_imagined_return():
    """The small default's mode (head): BC's backbone and its BatchNorm statistics stay untouched."""
    env = _env(num_envs=16, image_size=16)
    ac = ImageActorCritic(_policy(16), ImageActorCriticConfig(trainable="head", init_log_std=-1.0, value_hidden=32))
    actor_before = {k: v.clone() for k, v in ac.actor.state_dict().items()}
    before = evaluate_imagined(ac, env, n_episodes=32, seed=1)
    result = train_ppo(ac, env, PPOConfig(total_env_steps=16 * 2 * 12, num_steps=2, learning_rate=1e-2,
                                          num_minibatches=2, critic_warmup_updates=1, device="cpu", target_kl=0.0))
    assert isinstance(result.policy, BCResNetPolicy)  # what is saved and run in the simulator
    after = evaluate_imagined(result.actor_critic, env, n_episodes=32, seed=1)
    assert after["mean_return"] > before["mean_return"] + 0.5, (before, after)
    assert after["final_distance"] < 0.6 * before["final_distance"], (before, after)
    # the saved actor alone (its own mean action, no PPO extras) scores the same improvement per start state
    per_start = evaluate_start_states(result.policy, env, seed=1)
    assert per_start["mean_return"] > evaluate_start_states(_policy(16), env, seed=1)["mean_return"] + 0.5
    state = result.policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in actor_before.items() if k.startswith("backbone."))


def test_trainable_all_fine_tunes_the_backbone_but_not_its_batchnorm_statistics():
    env = _env(num_envs=8, image_size=16)
    ac = ImageActorCritic(_policy(16), ImageActorCriticConfig(trainable="all", value_hidden=16))
    before = {k: v.clone() for k, v in ac.actor.state_dict().items()}
    result = train_ppo(ac, env, PPOConfig(total_env_steps=8 * 2 * 2, num_steps=2, num_minibatches=1,
                                          critic_warmup_updates=1, device="cpu", target_kl=0.0))
    after = result.policy.state_dict()
    conv = [k for k in before if k.startswith("backbone.") and k.endswith("weight") and before[k].dim() == 4]
    assert any(not torch.equal(before[k], after[k]) for k in conv)  # the ResNet itself learned
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)  # decoded images never entered BN stats


@pytest.mark.sim
def test_decoded_observation_matches_a_rendered_maniskill_frame():
    """Same dtype, shape (camera size) and value range as the frame rl.sim_eval hands the BC-ResNet."""
    import numpy as np

    from rla_pipeline.sim.envs import SimEnvConfig, make_env

    sim = make_env(SimEnvConfig(task="PushCube-v1", image_size=64, with_mask=False))
    try:
        rendered = sim.reset(seed=10_000).rgb
    finally:
        sim.close()
    env = _env(num_envs=2, image_size=64)
    decoded = env.reset(seed=0)[0]["image"]
    assert rendered.dtype == np.uint8 and decoded.dtype == torch.uint8
    assert decoded.shape[1:] == rendered.shape == (64, 64, 3)
    policy = _policy().eval()  # as rl.sim_eval runs it
    a_rendered = policy.act(torch.from_numpy(np.ascontiguousarray(rendered))[None])  # as sim_eval calls it
    assert policy.act(decoded[:1]).shape == a_rendered.shape == (1, H, A)
