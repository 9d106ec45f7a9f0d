"""Image resizing shared by the wrappers (OpenCV, area interpolation as in the paper)."""
from __future__ import annotations

import cv2
import numpy as np


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resize a uint8 `[H, W]` or `[H, W, C]` image to `size` = (height, width), keeping `[.., C]`.

  Shrinking uses area interpolation (each output pixel averages the input pixels it covers, so
  thin Atari sprites do not vanish); enlarging, where area interpolation degrades to nearest
  neighbour, uses bilinear interpolation.
  """
  height, width = size
  if image.shape[:2] == (height, width):
    return image if image.ndim == 3 else image[..., None]
  shrink = image.shape[0] >= height and image.shape[1] >= width
  method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  image = image if image.ndim == 3 else image[..., None]
  # OpenCV resizes at most 4 channels at once (and drops a single channel axis).
  parts = [cv2.resize(np.ascontiguousarray(image[..., i:i + 4]), (width, height),
                      interpolation=method) for i in range(0, image.shape[-1], 4)]
  parts = [part if part.ndim == 3 else part[..., None] for part in parts]
  return parts[0] if len(parts) == 1 else np.concatenate(parts, -1)
