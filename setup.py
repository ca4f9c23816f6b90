"""flow3r_jax: Flow3r (pi^3 + factored flow head) in JAX/Flax, with training, data pipelines,
FlowMap-style per-scene optimisation and evaluation.

Every dependency is pinned to a version set that installs together on CPython 3.11 and 3.12
(checked with `pip check` by `tools/check_python_envs.sh`). The base install has neither
TensorFlow nor PyTorch: TFDS is used only through its TensorFlow-free `tfds.data_source` path, and
PyTorch lives in the `[convert]` extra. The base install runs on CPU; `[gpu]` adds JAX's CUDA 12
plugin and `[tpu]` adds libtpu, both matching jax==0.10.2 (Linux x86_64 wheels).
"""

from setuptools import find_packages, setup

VERSION = "0.1.0"

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "tensorflow-datasets==4.9.10",
    "ml-collections==1.1.0",
    "array-record==0.8.6",
    "numpy==2.4.6",
    "opencv-python-headless==5.0.0.93",
    "numba==0.68.1",  # the flow pipeline's covisibility and flow-encoder loops (writers only)
    "llvmlite==0.50.0",
    "jaxtyping==0.3.11",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",  # TensorBoard event files for training metrics, without TensorFlow
    "einops==0.8.2",
    "absl-py==2.5.1",
    "etils==1.15.0",
    "pillow==12.3.0",  # the official inference resize (Lanczos)
    # Held at the versions apache-beam 2.77 accepts, so that `[beam]` installs beside the base.
    "protobuf==6.33.6",
    "pyarrow==25.0.1",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",
        "hypothesis==6.170.15",
        "scipy==1.17.1",
        "pycolmap==4.2.1",  # reads the COLMAP models `reconstruct` writes (round-trip test)
        "evo==1.38.1",  # reference ATE / RPE for the trajectory metrics (tests/eval)
    ],
    # Reading the official `flow3r.bin` needs torch; safetensors files never do.
    # torch==2.13.0 is the CPU build; any other version pulls gigabytes of CUDA wheels.
    "convert": [
        "torch==2.13.0",
        "safetensors==0.8.0",
    ],
    "beam": [
        "apache-beam==2.77.0",
    ],
    "viz": [
        "matplotlib==3.11.2",
    ],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# Accelerators (not in `all`: each machine takes one of them). What `jax[cuda12]` and `jax[tpu]`
# of jax 0.10.2 require, pinned: the plugin pulls the CUDA 12 / cuDNN / NCCL wheels (`with-cuda`)
# within the ranges it declares, so the machine needs only an NVIDIA driver (>= 525.60.13, JAX's
# installation guide).
EXTRAS["gpu"] = [
    "jax-cuda12-plugin[with-cuda]==0.10.2",
    "jax-cuda12-pjrt==0.10.2",
]
EXTRAS["tpu"] = [
    "libtpu==0.0.42.1",  # jax 0.10.2 requires libtpu 0.0.42.*
]

setup(
    name="flow3r_jax",
    version=VERSION,
    description="Flow3r in JAX/Flax: 3D geometry and camera motion from video, at pod scale.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["flow3r_jax", "flow3r_jax.*", "data_pipelines", "data_pipelines.*"]),
    package_data={"flow3r_jax.flowmap": ["assets/*.npz"]},  # the shipped FlowMap initialisation
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["flow3r-jax=flow3r_jax.__main__:main"]},
)
