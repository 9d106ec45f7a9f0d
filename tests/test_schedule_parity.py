"""The training loop's schedule against the paper's own counters (issue 11).

Our loop trains on CartPole (the `debug` preset) while spies record the agent step of every
update, every policy call (with its mode) and every periodic log line; a wrapper records the
length of every training episode. The paper's side is its own `Counter`, `Every`, `Until` and
`Driver` (dreamerv2 2.2.0; these three files need only numpy and are loaded from the installed
package's folder), driven as the paper's `train.py` drives them, on a scripted env that replays
the episode lengths our run saw. Both must give the same agent steps for:

  prefill end   driver(random, steps=prefill, episodes=1) returns
  updates       Every(train_every) at every agent step after prefill (+ pretrain at prefill end)
  log lines     Every(log_every) at every agent step after prefill
  evaluations   at prefill end, then after each driver call of eval_every agent steps
  explore mode  Until(expl_until) at every policy call (0: always)

Documented differences (docs/parity-loop.md): the paper's first update, which builds its
variables, is an extra pretrain update; after prefill the paper resets the training envs (the
replayed lengths continue the cut episode, which leaves every count unchanged); our last driver
call stops at `steps`.
"""
from __future__ import annotations

import importlib.util
import pathlib
import types

import gymnasium as gym
import numpy as np
import pytest

INSTALL = 'pip install --no-deps dreamerv2==2.2.0'


def reference_common() -> types.SimpleNamespace:
  """The paper's `when`, `counter` and `driver` modules, loaded from their files."""
  spec = importlib.util.find_spec('dreamerv2')
  if spec is None or not spec.submodule_search_locations:
    pytest.fail(f"the paper's code (package dreamerv2) is not installed: {INSTALL}",
                pytrace=False)
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'common'
  modules = {}
  for name in ('when', 'counter', 'driver'):
    path = folder / f'{name}.py'
    if not path.exists():
      pytest.fail(f"the paper's code lacks {path}: {INSTALL}", pytrace=False)
    module_spec = importlib.util.spec_from_file_location(f'paper_common_{name}', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    modules[name] = module
  return types.SimpleNamespace(**modules)


class ScriptedEnv:
  """The paper's env interface, replaying given episode lengths (agent steps per episode).

  A reset before the running episode has ended (the paper resets its envs after prefill)
  continues that episode's remaining steps as a new episode, so the steps between ends stay
  the ones our run saw.
  """

  act_space = {'action': gym.spaces.Box(0, 1, (2,), np.float32)}

  def __init__(self, lengths):
    self._lengths = iter(list(lengths) + [10 ** 9])  # The run's last episode never ends here.
    self._left = 0

  def reset(self):
    if self._left <= 0:
      self._left = next(self._lengths)
    return {'is_first': True, 'is_last': False, 'reward': 0.0}

  def step(self, action):
    self._left -= 1
    return {'is_first': False, 'is_last': self._left == 0, 'reward': 0.0}


def paper_schedule(lengths: list[list[int]], config) -> dict:
  """The agent steps of the paper's train.py events on envs with these episode lengths."""
  ref = reference_common()
  step = ref.counter.Counter(0)
  events = {'updates': [], 'logs': [], 'evals': [], 'modes': []}
  driver = ref.driver.Driver([ScriptedEnv(x) for x in lengths])
  driver.on_step(lambda tran, worker: step.increment())
  zeros = lambda obs, state: ({'action': np.zeros((len(lengths), 2))}, None)

  driver(zeros, steps=config.prefill, episodes=1)  # Prefill with random actions.
  driver.reset()
  events['prefill_end'] = int(step)
  # Its first train call creates the variables (and updates them), then `pretrain` updates.
  events['updates'] += [int(step)] * (1 + config.pretrain)

  should_train = ref.when.Every(config.train_every)
  should_log = ref.when.Every(config.log_every)
  should_expl = ref.when.Until(config.expl_until)

  def on_step(tran, worker):
    if should_train(step):
      events['updates'] += [int(step)] * config.train_steps
    if should_log(step):
      events['logs'].append(int(step))
  driver.on_step(on_step)

  def policy(obs, state):
    events['modes'].append((int(step), 'explore' if should_expl(step) else 'train'))
    return zeros(obs, state)

  while step < config.steps:
    events['evals'].append(int(step))
    driver(policy, steps=config.eval_every)
  return events


class Recorder:
  """Our env contract, passed through; records the agent steps of every episode."""

  def __init__(self, env):
    self._env, self.lengths = env, []
    self.obs_space, self.act_space = env.obs_space, env.act_space

  def reset(self):
    self.lengths.append(0)
    return self._env.reset()

  def step(self, action):
    self.lengths[-1] += 1
    return self._env.step(action)

  def close(self):
    self._env.close()


def run_ours(tmp_path, monkeypatch, args: list[str], num_envs: int = 1):
  """Trains on CartPole; returns the config, the events and the episode lengths per env."""
  import dreamerv2_tf
  from dreamerv2_tf import agent as agent_lib
  from dreamerv2_tf import envs as envs_lib
  from dreamerv2_tf import logger as logger_lib
  config = dreamerv2_tf.load_config(['debug'], [
      '--task', 'gym:CartPole-v1', '--logdir', str(tmp_path), '--precision', '32', *args])
  events = {'updates': [], 'policy': [], 'logs': []}
  train, policy, write = agent_lib.Agent.train, agent_lib.Agent.policy, logger_lib.Logger.write

  def spy_train(self, batch):
    events['updates'].append(int(self.step))
    return train(self, batch)

  def spy_policy(self, obs, state=None, mode='train'):
    events['policy'].append((int(self.step), mode))
    return policy(self, obs, state, mode)

  def spy_write(self, agent_steps, fps=False):
    if fps:  # The periodic log line (the other writes follow prefill and evaluations).
      events['logs'].append(int(agent_steps))
    return write(self, agent_steps, fps)

  monkeypatch.setattr(agent_lib.Agent, 'train', spy_train)
  monkeypatch.setattr(agent_lib.Agent, 'policy', spy_policy)
  monkeypatch.setattr(logger_lib.Logger, 'write', spy_write)
  recorders = [Recorder(envs_lib.from_env(gym.make('CartPole-v1'), config, seed=i))
               for i in range(num_envs)]
  eval_env = envs_lib.from_env(gym.make('CartPole-v1'), config, seed=100)
  dreamerv2_tf.train(envs_lib.BatchEnv(recorders), config, eval_env=eval_env)
  evals = sorted({s for s, mode in events['policy'] if mode == 'eval'})
  modes = [(s, mode) for s, mode in events['policy'] if mode != 'eval']
  # Ours also logs the last, shorter period at the run's end (docs/parity-loop.md); the paper's
  # train.py does not.
  assert events['logs'][-1] >= config.steps > events['logs'][-2]
  ours = {'updates': events['updates'], 'logs': events['logs'][:-1], 'evals': evals,
          'modes': modes,
          'prefill_end': events['updates'][0]}  # Pretrain runs right after prefill.
  return config, ours, [r.lengths for r in recorders]


def counts(steps: list[int], edges: list[int]) -> list[int]:
  """How many of `steps` fall in each interval (edges[i], edges[i+1]]."""
  return [sum(a < s <= b for s in steps) for a, b in zip(edges, edges[1:])]


# train_every 7 and log_every 100 are coprime: log lines must not wait for an update step.
ARGS = ['--steps', '900', '--prefill', '150', '--pretrain', '2', '--train_every', '7',
        '--train_steps', '2', '--log_every', '100', '--eval_every', '250',
        '--expl_until', '320', '--expl_behavior', 'random']


def test_schedule_matches_the_papers_counters_one_env(tmp_path, monkeypatch):
  config, ours, lengths = run_ours(tmp_path, monkeypatch, ARGS)
  paper = paper_schedule(lengths, config)
  until = lambda steps: [s for s in steps if s <= config.steps]  # Our last call stops there.
  print(f"episodes {len(lengths[0])}; evaluations {ours['evals']}, paper {paper['evals']}; "
        f"log lines {ours['logs']}, paper {paper['logs']}")
  assert len(lengths[0]) > 8, lengths  # Episodes end within the periods (limit 100 steps).
  assert ours['prefill_end'] == paper['prefill_end'] >= config.prefill
  assert ours['evals'] == until(paper['evals'])
  assert ours['logs'] == until(paper['logs'])
  # The paper's first update, at prefill end, builds its variables: one more than `pretrain`.
  assert paper['updates'][:config.pretrain + 1] == [paper['prefill_end']] * (config.pretrain + 1)
  edges = [paper['prefill_end'] - 1] + until(paper['logs'])[1:] + [config.steps]
  assert counts(ours['updates'], edges) == counts(until(paper['updates'][1:]), edges)
  assert ours['updates'] == until(paper['updates'][1:])
  # Our driver also asks the policy on an episode's last step (the env resets instead).
  assert sorted(set(ours['modes'])) == [m for m in paper['modes'] if m[0] < config.steps]
  assert {'explore', 'train'} == {mode for _, mode in ours['modes']}


def test_schedule_matches_the_papers_counters_two_envs(tmp_path, monkeypatch):
  """With N envs, a driver call ends up to N-1 agent steps past its target on both sides;
  where depends on when envs reset within an iteration (ours: inside the step call), so
  prefill end and evaluations may differ by that. Updates, log lines and the explore mode are
  decided at every agent step: given our prefill end, the paper's Every/Until decide them."""
  config, ours, lengths = run_ours(tmp_path, monkeypatch, ARGS, num_envs=2)
  paper = paper_schedule(lengths, config)
  until = lambda steps: [s for s in steps if s <= config.steps]
  print(f"episodes {[len(x) for x in lengths]}; prefill end {ours['prefill_end']}, paper "
        f"{paper['prefill_end']}; evaluations {ours['evals']}, paper {paper['evals']}")
  assert min(len(x) for x in lengths) > 4, lengths
  assert 0 <= ours['prefill_end'] - config.prefill <= 1
  assert abs(ours['prefill_end'] - paper['prefill_end']) <= 1
  assert len(ours['evals']) == len(until(paper['evals'])), (ours['evals'], paper['evals'])
  for k, (a, b) in enumerate(zip(ours['evals'], paper['evals'])):  # Overshoots accumulate.
    assert abs(a - b) <= k + 1, (ours['evals'], paper['evals'])
  ref = reference_common()
  should_train = ref.when.Every(config.train_every)
  should_log = ref.when.Every(config.log_every)
  steps = range(ours['prefill_end'] + 1, int(config.steps) + 1)
  want = [s for s in steps if should_train(s) for _ in range(config.train_steps)]
  assert until(ours['updates']) == [ours['prefill_end']] * config.pretrain + want
  assert until(ours['logs']) == [s for s in steps if should_log(s)]
  should_expl = ref.when.Until(config.expl_until)
  assert all((mode == 'explore') == should_expl(s) for s, mode in ours['modes'])
  assert {'explore', 'train'} == {mode for _, mode in ours['modes']}
