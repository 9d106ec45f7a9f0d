"""Packaging for dreamerv2_tf: a TensorFlow 2 / Keras 3 port of DreamerV2."""
import os

import setuptools
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """Copy the top-level configs.yaml into the built package, where an installed
    dreamerv2_tf.config looks for it (editable installs read the top-level file directly)."""

    def run(self):
        super().run()
        if not getattr(self, 'editable_mode', False):
            target = os.path.join(self.build_lib, 'dreamerv2_tf', 'configs.yaml')
            self.mkpath(os.path.dirname(target))
            self.copy_file('configs.yaml', target)

    def get_source_files(self):
        return super().get_source_files() + ['configs.yaml']  # so an sdist ships it too


setuptools.setup(
    name='dreamerv2_tf',
    version='0.1.0',
    description='DreamerV2 (Mastering Atari with Discrete World Models) in TensorFlow 2 / Keras 3',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['dreamerv2_tf', 'dreamerv2_tf.*']),
    package_data={'dreamerv2_tf': ['configs.yaml']},
    cmdclass={'build_py': BuildPyWithConfigs},
    python_requires='>=3.10',
    install_requires=[
        'tensorflow>=2.21,<2.22',
        'tensorflow-probability>=0.25,<0.26',
        'tf-keras>=2.21,<2.22',
        'gymnasium>=1.0,<2',
        'ale-py>=0.12,<0.13',
        'dm-control>=1.0.50',
        'mujoco>=3.2,<4',
        'absl-py',
        'ruamel.yaml',
        'numpy',
        'tensorboard',  # tf.summary needs it; TensorFlow 2.21 no longer depends on it
        'Pillow',  # GIF videos in TensorBoard
        'opencv-python-headless>=4.5',  # image resizing (area interpolation) in dreamerv2_tf.envs
        'crafter>=1.8,<2',
        'matplotlib>=3.5',  # scripts/plot.py
        'imageio>=2.20',  # eval videos (.gif, .mp4)
        'imageio-ffmpeg',  # ships the ffmpeg binary that .mp4 needs
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-timeout', 'pytest-xdist', 'pandas', 'scipy'],  # scipy: statistical tests
    },
    license='MIT',
)
