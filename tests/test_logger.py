"""The terminal line of a log period: its ETA."""
import io
import re

from dreamerv2_tf.logger import Logger


def etas(fps_values, total_frames=100_000, step=10_000):
  stream = io.StringIO()
  logger = Logger(None, total_frames=total_frames, stream=stream)
  for fps in fps_values:
    logger.scalar('fps', fps)
    logger.write(step)
  return re.findall(r'ETA (\S+ \S+)', stream.getvalue())


def test_eta_follows_the_rate_and_shrugs_off_one_slow_period():
  # 90,000 frames left at 1.25 frames/s: 20 hours.
  assert etas([1.25]) == ['20h 00m']
  # A period that includes hours of a paused process (SIGSTOP) or a suspended machine showed
  # 0.022 frames/s and an ETA of 47 days; the median of the last three periods ignores it.
  assert etas([1.25, 1.25, 0.022]) == ['20h 00m'] * 3
  # A lasting slowdown shows once it is the median.
  assert etas([1.25, 0.5, 0.5])[-1] == '2d 2h'
