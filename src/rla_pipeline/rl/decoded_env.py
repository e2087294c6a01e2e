"""The imagined env seen through the DINO-to-RGB decoder: an image policy acts on decoded world-model states.

:class:`DecodedImageEnv` wraps an :class:`~rla_pipeline.rl.imagined_env.ImaginedVectorEnv` (same dynamics, reward,
resets, success: all still on DINO tokens) and adds ``obs["image"]``: the pixel decoder's RGB of the current state,
resized to the simulator's camera size and rounded to uint8 (B, H, W, 3), the very type, shape and range the
BC-ResNet receives from ManiSkill in ``rl.sim_eval`` (it then resizes to its own ``image_size`` itself, in both
places). ``info["final_image"]`` is the decoded last state of episodes that ended this step (PPO bootstraps
truncated episodes from it).

:func:`decode_to_images` is that decoding on its own (tokens -> camera-size uint8 frames); behaviour cloning
(``stages.bc``, ``actionless_bc.decoded_copies``) calls it to train the BC-ResNet on the very frames it will see here.

Domain gap: decoded frames are blurrier than rendered ones (the decoder's PSNR/SSIM is in
``pixel_decoder_metrics``); docs/rl.md says how WMRL handles it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def decode_to_images(decoder, tokens: torch.Tensor, image_size: int, batch: int = 256) -> torch.Tensor:
    """Raw DINO tokens (B, N, D) -> uint8 (B, image_size, image_size, 3) on the decoder's device: the decoder's RGB
    clamped to [0, 1], resized to ``image_size`` (antialiased bilinear, as ``frames_to_images``) when its output
    size differs, rounded to uint8. ``decoder``: a PixelDecoder in eval mode; ``tokens`` on any device, any float
    dtype (decoded in float32, ``batch`` frames at a time)."""
    image_size = int(image_size)
    device = next(decoder.parameters()).device
    out = []
    for i in range(0, tokens.shape[0], batch):
        rgb = decoder(tokens[i:i + batch].to(device).float()).clamp(0.0, 1.0)  # (b, 3, S, S)
        if rgb.shape[-1] != image_size or rgb.shape[-2] != image_size:
            rgb = F.interpolate(rgb, size=(image_size, image_size), mode="bilinear", antialias=True,
                                align_corners=False).clamp(0.0, 1.0)
        out.append((rgb * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1))
    if not out:
        return torch.empty(0, image_size, image_size, 3, dtype=torch.uint8, device=device)
    return torch.cat(out).contiguous()


class DecodedImageEnv:
    """``env`` (token imagined env) + ``decoder`` (PixelDecoder, raw DINO tokens -> (B,3,S,S) in [0,1]) ->
    observations ``{"tokens", "task", "image": uint8 (B, image_size, image_size, 3)}``.

    image_size: the simulator camera's side in pixels (the size of the training episodes' frames).
    """

    def __init__(self, env, decoder, image_size: int, decode_batch: int = 256):
        dc = decoder.config
        if (dc.num_tokens, dc.token_dim) != (env.num_tokens, env.token_dim):
            raise ValueError(f"pixel decoder reads tokens ({dc.num_tokens}, {dc.token_dim}) but the world model's "
                             f"states are ({env.num_tokens}, {env.token_dim}): train the decoder on this cache")
        if image_size < 1:
            raise ValueError("DecodedImageEnv.image_size must be >= 1")
        self.env, self.image_size, self.decode_batch = env, int(image_size), int(decode_batch)
        self.decoder = decoder.to(env.device).eval()
        for p in self.decoder.parameters():
            p.requires_grad_(False)

    # the token env's attributes (num_envs, device, cfg, starts, num_tokens, token_dim, ...) pass through
    def __getattr__(self, name):
        return getattr(self.__dict__["env"], name)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw DINO tokens (B, N, D) -> uint8 (B, image_size, image_size, 3) on the env's device
        (:func:`decode_to_images`)."""
        return decode_to_images(self.decoder, tokens, self.image_size, self.decode_batch)

    def _with_image(self, obs: dict) -> dict:
        return {**obs, "image": self.decode(obs["tokens"])}

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        return self._with_image(obs), info

    def reset_to(self, start_index: torch.Tensor, seed: int | None = None) -> dict:
        return self._with_image(self.env.reset_to(start_index, seed=seed))

    @torch.no_grad()
    def step(self, action_chunks: torch.Tensor):
        obs, reward, term, trunc, info = self.env.step(action_chunks)
        obs = self._with_image(obs)
        done = term | trunc
        final = obs["image"].clone()  # not done: the final state IS the next observation (no reset happened)
        if bool(done.any()):
            final[done] = self.decode(info["final_obs"][done])
        info["final_image"] = final
        return obs, reward, term, trunc, info
