"""The documentation's links: every relative link in README.md, CONTRIBUTING.md and docs/ names a
file that exists, and every `#anchor` a heading of its target (as GitHub makes anchors from
headings)."""
from __future__ import annotations

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', ROOT / 'CONTRIBUTING.md', *sorted((ROOT / 'docs').glob('*.md'))]

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)|<img[^>]*\ssrc="([^"]+)"', re.DOTALL)
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: the text (links and code as their text), lower case,
  without punctuation other than `-` and `_`, spaces as `-`."""
  text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading).replace('`', '')
  text = re.sub(r'[^\w\- ]', '', text.strip().lower())
  return text.replace(' ', '-')


@functools.cache  # A page's headings, read once for all the links into it.
def anchors(page: pathlib.Path) -> frozenset[str]:
  seen: dict[str, int] = {}
  result = set()
  for line in FENCE.sub('', page.read_text()).splitlines():
    match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
    if not match:
      continue
    base = slug(match.group(1))
    count = seen.get(base, 0)
    seen[base] = count + 1
    result.add(base if count == 0 else f'{base}-{count}')  # GitHub numbers repeats.
  return frozenset(result)


def links(page: pathlib.Path) -> list[str]:
  text = FENCE.sub('', page.read_text())
  text = re.sub(r'`[^`\n]*`', '', text)  # Code spans show link syntax, they do not link.
  return [a or b for a, b in LINK.findall(text)]


def test_slug_follows_githubs_rules():
  assert slug('cartpole_balance run 4 (stopped at 41,764 frames: its machine went away)') == (
      'cartpole_balance-run-4-stopped-at-41764-frames-its-machine-went-away')
  assert slug('Reduced precision against `float32`') == 'reduced-precision-against-float32'
  assert slug('The [paper](x.md)\'s agent') == 'the-papers-agent'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_exist(page):
  broken = []
  for target in links(page):
    if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      shown = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
      broken.append(f'{target} (no file {shown})')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      broken.append(f'{target} (no heading of {dest.name} has that anchor)')
  assert not broken, f'{page.relative_to(ROOT)}: ' + '; '.join(broken)
