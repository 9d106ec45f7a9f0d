"""Tests of the configuration system: presets, CLI overrides, typing, errors, save/load."""
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dreamerv2_tf.config import (
    CHOICES, Config, ConfigError, load_config, main_guard, parse_schedule)

REPO = Path(__file__).resolve().parent.parent
PRESETS = ['atari', 'crafter', 'dmc_vision', 'dmc_proprio', 'debug']


def error_of(*args, **kwargs) -> str:
  with pytest.raises(ConfigError) as info:
    load_config(*args, **kwargs)
  message = str(info.value)
  assert '\n' not in message, message
  return message


def write(tmp_path: Path, text: str) -> Path:
  path = tmp_path / 'configs.yaml'
  path.write_text(text)
  return path


# Presets.

def test_atari_has_the_paper_values_and_keeps_untouched_siblings():
  c = load_config('atari')
  assert (c.rssm.deter, c.rssm.hidden, c.rssm.stoch, c.rssm.discrete) == (600, 600, 32, 32)
  assert c.rssm.act == 'elu' and c.rssm.std_act == 'sigmoid2' and c.rssm.min_std == 0.1
  assert c.encoder.cnn_depth == 48 and c.encoder.cnn_kernels == [4, 4, 4, 4]
  assert c.decoder.cnn_kernels == [5, 5, 6, 6]
  assert (c.encoder.mlp_keys, c.encoder.cnn_keys) == ('$^', 'image')
  assert (c.model_opt.lr, c.actor_opt.lr, c.critic_opt.lr) == (2e-4, 4e-5, 1e-4)
  for opt in (c.model_opt, c.actor_opt, c.critic_opt):
    assert (opt.eps, opt.clip, opt.wd, opt.opt) == (1e-5, 100.0, 1e-6, 'adam')
  assert c.loss_scales.kl == 0.1 and c.loss_scales.discount == 5.0
  assert c.loss_scales.reward == 1.0  # a sibling of the dotted overrides
  assert c.kl.balance == 0.8 and c.kl.free == 0.0
  assert (c.discount, c.discount_lambda, c.imag_horizon) == (0.999, 0.95, 15)
  assert c.actor_ent == '1e-3' and parse_schedule(c.actor_ent) == ('const', 1e-3)
  assert c.slow_target_update == 100
  assert (c.dataset.batch, c.dataset.length) == (16, 50)
  assert c.clip_rewards == 'tanh' and c.train_every == 16 and c.prefill == 50000
  assert c.action_repeat == 4 and c.time_limit == 27000 and c.task == 'atari_pong'


def test_types_follow_the_defaults():
  c = load_config()
  assert c.rssm.deter == 1024 and c.actor_ent == '2e-3'
  assert type(c.prefill) is int and type(c.model_opt.clip) is float
  assert type(c.steps) is float  # `1e8` is a float in YAML 1.2
  assert type(c.atari_grayscale) is bool and type(c.render_size) is list


@pytest.mark.parametrize('name', PRESETS)
def test_every_preset_loads_and_passes_the_checks(name):
  c = load_config([name])
  assert c.rssm.deter >= 1 and 0 <= c.kl.balance <= 1
  assert load_config([name]) == c


def test_later_presets_win():
  atari_debug = load_config(['atari', 'debug'])
  assert atari_debug.rssm.deter == 32 and atari_debug.dataset.batch == 4
  assert atari_debug.model_opt.lr == 2e-4  # atari's, debug does not set it
  debug_atari = load_config(['debug', 'atari'])
  assert debug_atari.rssm.deter == 600
  assert debug_atari.rssm.stoch == 4  # debug's, atari does not set it


def test_preset_names_in_all_forms():
  expected = load_config(['atari', 'debug'])
  assert load_config('atari,debug') == expected
  assert load_config('atari debug') == expected
  assert load_config(argv=['--configs', 'atari', 'debug']) == expected
  assert load_config(argv=['--configs', 'atari,debug']) == expected
  assert load_config(argv=['--configs=atari,debug']) == expected
  assert load_config('atari', ['--configs', 'debug']) == expected  # --configs appends


def test_crafter_regex_sets_every_norm_and_nothing_else():
  c = load_config('crafter')
  norms = {k: v for k, v in c.flat.items() if k.endswith('.norm')}
  assert len(norms) == 8 and set(norms.values()) == {'layer'}  # expl_head too, as in the paper
  assert c.rssm.gru_norm is True  # ends in _norm, not .norm
  assert load_config().rssm.norm == 'none'


# Command-line overrides.

def test_cli_dotted_equals_and_regex_overrides():
  c = load_config('atari', ['--rssm.deter', '200', '--kl.balance=0.5', r'--.*\.act', 'relu'])
  assert c.rssm.deter == 200 and c.rssm.hidden == 600 and c.kl.balance == 0.5
  acts = {k: v for k, v in c.flat.items() if k.endswith('.act')}
  assert len(acts) == 8 and set(acts.values()) == {'relu'}
  assert c.rssm.std_act == 'sigmoid2'
  assert load_config('atari', [r'--.*\.norm', 'layer']).actor.norm == 'layer'


def test_cli_overrides_come_after_presets_and_in_order():
  c = load_config('debug', ['--rssm.deter', '7', '--configs', 'atari', '--rssm.deter=9'])
  assert c.rssm.deter == 9 and c.model_opt.lr == 2e-4


def test_cli_value_coercion():
  c = load_config(argv=[
      '--seed', '1e4', '--kl.free', '1', '--actor_ent', '3e-4', '--encoder.mlp_keys', '$^',
      '--task', '123', '--logdir=', '--jit', 'False', '--xla', 'true', '--expl_noise', '-0.5',
      '--precision', '16', '--render_size', '96,96'])
  assert c.seed == 10000 and type(c.seed) is int
  assert c.kl.free == 1.0 and type(c.kl.free) is float
  assert (c.actor_ent, c.encoder.mlp_keys, c.task, c.logdir) == ('3e-4', '$^', '123', '')
  assert c.jit is False and c.xla is True and c.expl_noise == -0.5
  assert c.precision == '16' and c.render_size == [96, 96]


@pytest.mark.parametrize('argv', [
    ['--grad_heads', 'decoder,reward'], ['--grad_heads', '[decoder, reward]'],
    ['--grad_heads', '[decoder,', 'reward]'], ['--grad_heads=["decoder", reward]']])
def test_cli_lists(argv):
  assert load_config(argv=argv).grad_heads == ['decoder', 'reward']


def test_cli_schedules():
  c = load_config(argv=['--actor_ent', 'linear(1e-3, 1e-4, 1e6)', '--actor_grad_mix',
                        'warmup(1000,0.5)'])
  assert parse_schedule(c.actor_ent) == ('linear', 1e-3, 1e-4, 1000000)
  assert parse_schedule(c.actor_grad_mix) == ('warmup', 1000, 0.5)


def test_parse_schedule_forms():
  assert parse_schedule('0.1') == ('const', 0.1)
  assert parse_schedule(' exp( 1 , 0.5 , 2.5e3 ) ') == ('exp', 1.0, 0.5, 2500.0)
  assert parse_schedule(3) == ('const', 3.0)
  for bad in ['', 'abc', 'linear(1,2)', 'linear(1,2,0)', 'warmup(1.5,1)', 'exp(1,2,3', True]:
    with pytest.raises(ConfigError, match='schedule'):
      parse_schedule(bad)


# Errors: one line, naming the key or value, the allowed values or close suggestions.

@pytest.mark.parametrize('argv, parts', [
    (['--rssm.detr', '3'], ['rssm.detr', 'did you mean rssm.deter']),
    (['--deter', '3'], ["'deter'", 'rssm.deter']),
    (['--rssm', '3'], ["'rssm'", 'rssm.hidden']),
    (['--configs', 'atary'], ["'atary'", 'did you mean atari', 'crafter, dmc_vision']),
    (['--seed', '1.5'], ["'seed'", '1.5', 'int']),
    (['--seed', 'true'], ["'seed'", 'true', 'int']),
    (['--kl.free', 'abc'], ["'kl.free'", 'abc', 'float']),
    (['--jit', 'yes'], ["'jit'", 'yes', 'bool']),
    (['--jit', '1'], ["'jit'", "'1'", 'bool']),
    (['--render_size', 'a,b'], ['render_size', "'a'", 'int']),
    (['--precision', '8'], ["'precision'", "'8'", 'auto, 32, 16, bf16']),
    (['--actor.dist', 'gauss'], ["'actor.dist'", 'gauss', 'trunc_normal']),
    (['--rssm.norm', 'batch'], ["'rssm.norm'", 'batch', 'none, layer']),
    (['--critic.dist', 'binary'], ["'critic.dist'", 'mse']),
    (['--actor_ent', 'lin(1,2,3)'], ["'actor_ent'", 'lin(1,2,3)', 'linear(a,b,n)']),
    (['--actor_grad_mix', 'warmup(0,1)'], ["'actor_grad_mix'", 'positive']),
    (['--kl.balance', '1.5'], ["'kl.balance'", '[0, 1]', '1.5']),
    (['--discount', '-0.1'], ["'discount'", '[0, 1]']),
    (['--discount_lambda', '2'], ["'discount_lambda'", '[0, 1]']),
    (['--dataset.batch', '0'], ["'dataset.batch'", '>= 1']),
    (['--imag_horizon', '0'], ["'imag_horizon'", '>= 1']),
    (['--rssm.stoch', '0'], ["'rssm.stoch'", '>= 1']),
    ([r'--.*\.nrm', 'layer'], [r'.*\.nrm', 'matches no config key']),
    (['--(', 'x'], ['(', 'invalid key pattern']),
    (['--rssm.deter'], ['--rssm.deter', 'no value']),
    (['--rssm.deter', '--seed', '1'], ['--rssm.deter', 'no value']),
    (['--seed', '1', '2'], ["'2'", '--key value']),
    (['stray'], ["'stray'", '--key value']),
    (['--configs'], ['--configs', 'preset name']),
])
def test_cli_errors(argv, parts):
  message = error_of(argv=argv)
  for part in parts:
    assert part in message, (part, message)


def test_preset_errors_name_the_preset(tmp_path):
  head = 'defaults: {task: pong, seed: 0, precision: auto, lr: 1.0, sizes: [1, 2]}\n'
  cases = {
      'p: {task: 5}': ["preset 'p'", "'task'", 'str', 'quote'],
      'p: {seed: 1.5}': ["'seed'", '1.5', 'int'],
      'p: {sizes: 3}': ["'sizes'", 'list of int'],
      'p: {sede: 1}': ["'sede'", 'did you mean seed'],
      'p: {"s.*x": 1}': ['s.*x', 'matches no config key'],
      'p: {precision: 8}': ["'precision'", 'bf16'],
      'p: [1, 2]': ["preset 'p'", 'mapping'],
  }
  for preset, parts in cases.items():
    message = error_of('p', path=write(tmp_path, head + preset))
    for part in parts:
      assert part in message, (preset, part, message)
  assert 'defaults' in error_of(path=write(tmp_path, 'atari: {seed: 1}'))
  assert 'seed' in error_of(path=write(tmp_path, 'defaults: {seed: null}'))
  assert 'cannot parse' in error_of(path=write(tmp_path, 'defaults: {seed: [}'))
  assert 'cannot read' in error_of(path=tmp_path / 'missing.yaml')


def test_preset_values_typing_and_nested_regex(tmp_path):
  path = write(tmp_path, '\n'.join([
      'defaults:',
      '  precision: auto',
      '  a: {norm: none, lr: 1.0, steps: 10, names: [x]}',
      '  b: {norm: none}',
      'p:',
      '  precision: 16',       # an int in YAML, stored as the choice '16'
      '  a: {lr: 2, steps: 1e3, names: "y,z"}',
      '  .*\\.norm: layer',
      'q:',
      '  a: {".*": 3}',        # a regex inside a block only reaches that block
  ]))
  c = load_config('p', path=path)
  assert c.precision == '16' and c.a.lr == 2.0 and type(c.a.lr) is float
  assert c.a.steps == 1000 and type(c.a.steps) is int and c.a.names == ['y', 'z']
  assert c.a.norm == c.b.norm == 'layer'
  assert 'a.norm' in error_of('q', path=path)  # '3' is not an allowed norm


def test_unknown_attribute_suggests_and_supports_hasattr():
  c = load_config()
  with pytest.raises(AttributeError, match='did you mean rssm.deter'):
    c.rssm.detr  # noqa: B018
  assert not hasattr(c, 'nope') and getattr(c, 'nope', 3) == 3
  with pytest.raises(KeyError, match='rssm.deter'):
    c['rssm.detr']  # noqa: B018


# The Config object.

def test_access_forms():
  c = load_config('atari')
  assert c['rssm.deter'] == c.rssm.deter == c['rssm']['deter'] == c['rssm'].deter == 600
  assert isinstance(c.rssm, Config) and c.rssm.flat['deter'] == 600
  assert 'rssm.deter' in c and 'rssm' in c and 'rssm.nope' not in c and 1 not in c
  assert list(c)[:3] == ['logdir', 'seed', 'task'] and 'rssm' in list(c)
  assert len(c) == len(set(k.split('.')[0] for k in c.flat)) and len(c.rssm) == 9
  assert c.to_dict()['rssm']['deter'] == 600 and c.to_dict()['render_size'] == [64, 64]
  assert Config(c.to_dict()) == c == Config(c.flat) and c != load_config()
  assert c.get('nope', 5) == 5 and dict(c.kl) == c.kl.to_dict()


def test_str_and_repr_list_every_key():
  c = load_config('atari')
  lines = str(c).splitlines()
  assert len(lines) == len(c.flat)
  assert any(line.split() == ['rssm.deter:', '600'] for line in lines)
  assert any(line.split() == ['encoder.mlp_keys:', "'$^'"] for line in lines)
  assert 'Config' in repr(c) and 'deter:' in repr(c.rssm)


def test_immutable():
  c = load_config()
  with pytest.raises(AttributeError):
    c.seed = 1
  with pytest.raises(AttributeError):
    c.rssm.deter = 1
  with pytest.raises(TypeError):
    c['seed'] = 1
  with pytest.raises(AttributeError):
    del c.seed
  c.flat['seed'] = 5
  c.render_size.append(3)
  c.to_dict()['rssm']['deter'] = 5
  assert c.seed == 0 and c.render_size == [64, 64] and c.rssm.deter == 1024
  assert hash(c) == hash(load_config())


def test_update_returns_a_checked_copy():
  c = load_config()
  d = c.update({'rssm.deter': 200, 'kl': {'free': 1}, r'.*_opt\.lr': 1e-3, 'grad_heads': ['x']})
  assert d.rssm.deter == 200 and d.kl.free == 1.0 and d.kl.balance == 0.8
  assert d.model_opt.lr == d.actor_opt.lr == d.critic_opt.lr == 1e-3 and d.grad_heads == ['x']
  assert c.rssm.deter == 1024 and c == load_config()
  assert c.rssm.update({'deter': 3}).deter == 3
  for bad, part in [({'seed': '1'}, 'seed'), ({'rssm.detr': 1}, 'rssm.deter'),
                    ({'kl.balance': 2.0}, 'kl.balance'), ({'precision': 'fp8'}, 'bf16'),
                    ({'jit': 1}, 'bool'), ({'actor_ent': 1e-3}, 'actor_ent')]:
    with pytest.raises(ConfigError, match=part):
      c.update(bad)
  with pytest.raises(ConfigError, match='rssm.detr'):
    c.rssm.update({'detr': 3})  # a sub-Config reports full key names


def test_save_load_round_trip(tmp_path):
  c = load_config('atari', ['--precision', '16', '--log_keys_sum', '$^'])
  path = tmp_path / 'config.yaml'
  c.save(path)
  loaded = Config.load(path)
  assert loaded == c and loaded.flat == c.flat
  assert loaded.actor_ent == '1e-3' and loaded.precision == '16'
  assert (loaded.log_keys_sum, loaded.log_keys_mean) == ('$^', '^$')
  assert loaded.decoder.cnn_kernels == [5, 5, 6, 6] and type(loaded.steps) is float
  assert os.listdir(tmp_path) == ['config.yaml']
  c.loss_scales.save(tmp_path / 'scales.yaml')  # discount: 5.0 is fine outside the root
  assert Config.load(tmp_path / 'scales.yaml') == c.loss_scales


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
  path = tmp_path / 'config.yaml'
  path.write_text('seed: 7\n')

  def fail(*args):
    raise OSError('disk full')
  monkeypatch.setattr(os, 'replace', fail)
  with pytest.raises(OSError, match='disk full'):
    load_config().save(path)
  assert os.listdir(tmp_path) == ['config.yaml'] and path.read_text() == 'seed: 7\n'
  with pytest.raises(OSError):
    load_config().save(tmp_path / 'no_such_dir' / 'config.yaml')


def test_pickle_keeps_values_and_types():
  c = load_config('atari')
  copy = pickle.loads(pickle.dumps(c))
  assert copy == c and copy.update({'seed': 1e3}).seed == 1000
  assert pickle.loads(pickle.dumps(c.rssm)).update({'deter': 5}).deter == 5


def test_choices_cover_existing_keys():
  keys = list(load_config().flat)
  for pattern in CHOICES:
    assert any(re.fullmatch(pattern, k) for k in keys), pattern


def test_default_path_is_the_top_level_file():
  assert load_config('atari') == load_config('atari', path=REPO / 'configs.yaml')


# CLI helper and import cost.

def test_main_guard(capsys):
  assert main_guard(lambda x: x + 1, 1) == 2

  def main():
    load_config(argv=['--rssm.detr', '3'])
  with pytest.raises(SystemExit) as info:
    main_guard(main)
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'rssm.deter' in err and 'Traceback' not in err
  assert err.count('\n') == 1


def test_cli_exit_status_and_no_tensorflow_import():
  code = ('import sys\n'
          'from dreamerv2_tf.config import load_config, main_guard\n'
          'assert "tensorflow" not in sys.modules, "config imported tensorflow"\n'
          'main_guard(load_config, argv=sys.argv[1:])\n')
  run = subprocess.run([sys.executable, '-c', code, '--configs', 'atary'],
                       capture_output=True, text=True, cwd=REPO)
  assert run.returncode == 2, run.stderr
  assert run.stderr.startswith('error: unknown preset') and 'Traceback' not in run.stderr
