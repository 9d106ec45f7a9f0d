"""Evaluates a trained run: loads a checkpoint read-only and plays episodes with the eval policy.

Nothing is written into the run's logdir: no checkpoint, no replay, no metrics.
"""
from __future__ import annotations

import codecs
import os
import pathlib
import re
import tempfile

import numpy as np

from dreamerv2_tf.config import Config, ConfigError


def checkpoint_paths(folder: pathlib.Path) -> tuple[str | None, list[str]]:
  """(latest, all) checkpoint prefixes named by `folder/checkpoint`, as absolute paths.

  Reads the text file `tf.train.CheckpointManager` writes (`model_checkpoint_path: "ckpt-N"`,
  one `all_model_checkpoint_paths` line per kept checkpoint) without importing TensorFlow.
  """
  try:
    text = (folder / 'checkpoint').read_text()
  except FileNotFoundError:
    return None, []
  fields = {'model_checkpoint_path': [], 'all_model_checkpoint_paths': []}
  for key, value in re.findall(r'^(\w+): "((?:[^"\\]|\\.)*)"$', text, re.MULTILINE):
    if key in fields:
      # Text format: C escapes (\" \\ and \ooo for bytes) around UTF-8 text.
      path = codecs.escape_decode(value.encode('utf-8'))[0].decode('utf-8')
      fields[key].append(os.path.join(folder, path))  # A no-op for an absolute path.
  latest = fields['model_checkpoint_path']
  return (latest[0] if latest else None), fields['all_model_checkpoint_paths']


def find_checkpoint(logdir: pathlib.Path, checkpoint: str | None = None) -> str:
  """The checkpoint prefix to load: the latest, or one named by number or path."""
  folder = logdir / 'checkpoints'
  latest, available = checkpoint_paths(folder)
  if not available:
    raise ConfigError(f'logdir {str(logdir)!r} has no checkpoints (expected {str(folder)}/ckpt-*)')
  if checkpoint is None:
    return latest
  wanted = {str(checkpoint), f'ckpt-{checkpoint}'}  # '250000', 'ckpt-250000' or a full path.
  for path in available:
    if path == str(checkpoint) or os.path.basename(path) in wanted:
      return path
  names = ', '.join(os.path.basename(p) for p in available)
  raise ConfigError(f'checkpoint {checkpoint!r} is not in {str(folder)}; available: {names}')


def check_logdir(logdir) -> pathlib.Path:
  """Checks that a logdir holds a run with checkpoints, before TensorFlow is loaded."""
  logdir = pathlib.Path(logdir)
  if not logdir.is_dir():
    raise ConfigError(f'logdir {str(logdir)!r} does not exist')
  if not (logdir / 'config.yaml').exists():
    raise ConfigError(f'logdir {str(logdir)!r} has no config.yaml: not a dreamerv2_tf run')
  if not list((logdir / 'checkpoints').glob('ckpt-*.index')):
    raise ConfigError(f'logdir {str(logdir)!r} has no checkpoints (expected '
                      f'{str(logdir / "checkpoints")}/ckpt-*)')
  return logdir


def saved_config(path) -> Config:
  """A run's saved config on today's defaults: keys added since the run get their defaults."""
  from dreamerv2_tf.config import load_config
  defaults = load_config()
  saved = Config.load(path).flat
  return defaults.update({k: v for k, v in saved.items() if k in defaults.flat})


def load_run(logdir, checkpoint: str | None = None, overrides=(), env=None):
  """(config, agent, checkpoint path, frames) of a run, restored read-only.

  env: an eval batch env of the run's task to take the spaces from; by default one is made and
  closed again.
  """
  logdir = check_logdir(logdir)
  import tensorflow as tf
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.envs import make_envs
  config = saved_config(logdir / 'config.yaml')
  if overrides:
    config = config.update(dict(overrides))
  path = find_checkpoint(logdir, checkpoint)
  spaces_env = env if env is not None else make_envs(None, config, 'eval', 1)
  try:
    agent = Agent(config, spaces_env.obs_space, spaces_env.act_space)
  finally:
    if env is None:
      spaces_env.close()
  status = tf.train.Checkpoint(agent=agent, step=agent.step).restore(path)
  status.expect_partial()  # The loop's own state (`evaluated`) is not needed here: no warning.
  status.assert_existing_objects_matched()
  return config, agent, path, int(agent.step) * config.action_repeat


def evaluate(logdir, episodes: int = 10, seed: int | None = None, checkpoint: str | None = None,
             video: str | None = None, stream=None) -> dict:
  """Plays `episodes` episodes with the eval policy; returns returns and summary statistics."""
  import sys
  from dreamerv2_tf.driver import Driver
  from dreamerv2_tf.envs import make_envs
  from dreamerv2_tf.loop import seed_everything
  from dreamerv2_tf.reference_scores import gamer_normalized
  stream = stream or sys.stdout
  if episodes < 1:
    raise ConfigError(f'--episodes must be at least 1, got {episodes}')
  if video and not video.endswith(('.mp4', '.gif')):
    raise ConfigError(f'--video {video!r}: the file must end in .mp4 or .gif')
  logdir = check_logdir(logdir)
  find_checkpoint(logdir, checkpoint)  # A wrong --checkpoint is answered before TF's import.
  config = saved_config(logdir / 'config.yaml')
  seed = config.seed + 12345 if seed is None else seed
  # One env serves both for the agent's spaces and for playing.
  env = make_envs(None, config.update({'seed': seed}), 'eval', 1)
  if video and 'image' not in env.obs_space.spaces:
    env.close()
    raise ConfigError(
        f'--video {video!r}: {config.task} has no image observation to record (its keys: '
        f'{", ".join(sorted(env.obs_space.spaces))}); leave --video out for this task')
  try:
    config, agent, path, frames = load_run(logdir, checkpoint, {'seed': seed}, env=env)
  except BaseException:
    env.close()
    raise
  seed_everything(seed)
  print(f'Loaded {path} ({frames:,} frames); playing {episodes} episodes of {config.task}',
        file=stream, flush=True)
  driver = Driver(env, env.act_space['action'])
  returns, lengths, frames_out = [], [], []

  def on_episode(ep, worker):
    returns.append(float(np.sum(ep['reward'])))
    lengths.append(len(ep['reward']) - 1)
    print(f'episode {len(returns)}: return {returns[-1]:g}, length {lengths[-1]}', file=stream,
          flush=True)
    if video and len(returns) == 1 and 'image' in ep:
      frames_out.extend(ep['image'])

  driver.on_episode(on_episode)
  policy = lambda obs, state: _act(agent, obs, state)
  try:
    driver(policy, episodes=episodes)
  finally:
    env.close()
  result = {'task': config.task, 'checkpoint': path, 'frames': frames, 'returns': returns,
            'lengths': lengths, 'mean': float(np.mean(returns)), 'std': float(np.std(returns))}
  score = gamer_normalized(config.task, result['mean'])
  line = f'return {result["mean"]:.2f} ± {result["std"]:.2f} over {episodes} episodes'
  if score is not None:
    result['gamer_normalized'] = score
    line += f'; human-gamer-normalized {score:.3f}'
  print(line, file=stream, flush=True)
  if video and frames_out:
    write_video(video, np.stack(frames_out))
    print(f'Wrote the first episode to {video}', file=stream, flush=True)
  return result


def _act(agent, obs, state):
  outputs, state = agent.policy(obs, state, 'eval')
  return outputs['action'], state


def write_video(path: str, frames: np.ndarray, fps: int = 30) -> None:
  """Writes `[T, H, W, C]` uint8 frames as .gif or .mp4, atomically."""
  import imageio.v2 as imageio
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, -1)
  if frames.shape[1] < 128:  # Upscale small frames so players show them sharply.
    scale = 128 // frames.shape[1]
    frames = frames.repeat(scale, 1).repeat(scale, 2)
  folder = os.path.dirname(os.path.abspath(path))
  suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix)
  os.close(fd)
  try:
    if suffix == '.gif':
      imageio.mimwrite(tmp, list(frames), format='GIF', duration=1000 / fps, loop=0)
    else:
      imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
