"""Play with an exported DreamerV2 policy using only tensorflow, gymnasium and ale-py.

  python scripts/export.py --logdir LOGDIR --out policy
  python examples/play_savedmodel.py policy --episodes 3            # the task it was trained on
  python examples/play_savedmodel.py policy --env CartPole-v1       # a gymnasium id

For Atari the observation is prepared as in training (the paper's protocol): sticky actions 0.25,
4 frames per action with the max over the last two, up to 30 no-ops at reset, 64x64 grayscale.
Vector observations are passed as float32 under the key the model was trained with.
"""
import argparse
import json
import pathlib

import gymnasium as gym
import numpy as np
import tensorflow as tf


class AtariPaper:
  """Minimal Atari preprocessing matching dreamerv2_tf's training wrapper."""

  def __init__(self, game, repeat=4, size=(64, 64), gray=True, noops=30, seed=None):
    import ale_py
    gym.register_envs(ale_py)
    name = ''.join(part.capitalize() for part in game.split('_'))
    self.env = gym.make(f'ALE/{name}-v5', frameskip=1, repeat_action_probability=0.25,
                        obs_type='grayscale' if gray else 'rgb', full_action_space=False)
    self.repeat, self.size, self.noops = repeat, size, noops
    self.rng = np.random.default_rng(seed)
    self.seed = seed

  def _image(self, frames):
    frame = np.maximum(*frames[-2:]) if len(frames) > 1 else frames[-1]
    frame = frame[..., None] if frame.ndim == 2 else frame
    image = tf.image.resize(frame[None].astype(np.float32), self.size, method='area')[0]
    return np.round(image.numpy()).astype(np.uint8)

  def reset(self):
    frame, _ = self.env.reset(seed=self.seed)
    self.seed = None
    for _ in range(int(self.rng.integers(0, self.noops + 1))):
      frame, _, term, trunc, _ = self.env.step(0)
      if term or trunc:
        frame, _ = self.env.reset()
    return self._image([frame])

  def step(self, action):
    total, frames, done = 0.0, [], False
    for _ in range(self.repeat):
      frame, reward, term, trunc, _ = self.env.step(action)
      total += reward
      frames.append(frame)
      if term or trunc:
        done = True
        break
    return self._image(frames), total, done


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('model')
  parser.add_argument('--env', default=None, help='gymnasium id; default: the trained task')
  parser.add_argument('--episodes', type=int, default=1)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--sample', action='store_true', help='use step_sample instead of step')
  args = parser.parse_args()

  model = tf.saved_model.load(args.model)
  info = json.loads((pathlib.Path(args.model) / 'assets.extra' / 'spaces.json').read_text())
  keys = list(info['observation'])
  task = args.env or info['task']
  atari = task.startswith('atari_')
  if atari:
    env = AtariPaper(task[len('atari_'):], repeat=info['action_repeat'], seed=args.seed)
  else:
    env = gym.make(task.removeprefix('gym_').removeprefix('gym:'))
  step = model.signatures['step_sample' if args.sample else 'step']
  discrete = info['action']['type'] == 'discrete'

  for episode in range(args.episodes):
    if atari:
      frame = env.reset()
    else:
      frame, _ = env.reset(seed=args.seed + episode)
    state = model.signatures['initial_state'](batch_size=tf.constant(1, tf.int32))
    first, total, length, done = True, 0.0, 0, False
    while not done:
      obs = {keys[0]: np.asarray(frame)[None]}
      if obs[keys[0]].dtype != np.uint8:
        obs[keys[0]] = obs[keys[0]].astype(np.float32)
      out = step(**{k: tf.constant(v) for k, v in obs.items()}, is_first=tf.constant([first]),
                 **state)
      state = {k: v for k, v in out.items() if k.startswith('state_')}
      action = out['action'].numpy()[0]
      if discrete:
        action = int(action.argmax())
      else:
        low, high = env.action_space.low, env.action_space.high
        action = low + (action + 1) / 2 * (high - low)
      if atari:
        frame, reward, done = env.step(action)
      else:
        frame, reward, term, trunc, _ = env.step(action)
        done = term or trunc
      total, length, first = total + reward, length + 1, False
    print(f'episode {episode + 1}: return {total:g}, length {length}')


if __name__ == '__main__':
  main()
