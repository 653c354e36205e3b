"""What a run ran on, for its report. The same config and seed give the same numbers only on the same
hardware and library builds (kernels choose their reduction order by CPU and version), so a result
names the machine and the builds that produced it."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from .. import __version__

PACKAGES = ("torchvision", "deepspeed", "ray", "mlflow", "webdataset")


def cpu_model() -> str:
    """The CPU's model name where Linux lists it, else the platform's processor or architecture."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def installed_version(package: str) -> str | None:
    """The package's installed version; None where it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(device: torch.device) -> dict:
    """The report's `machine` entry, from the process that writes the report (rank 0)."""
    machine = {"cpu": cpu_model(), "cpus": os.cpu_count(),
               # the vector instructions torch's CPU kernels were dispatched to (AVX2, AVX512, ...)
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
               "platform": platform.platform(), "python": platform.python_version(),
               # torch's own string carries its build (+cpu, +cu130), the installed metadata does not; ours is
               # the running code's, also where a Ray job's working directory ships it as plain files
               "packages": {"allnc_dist": __version__, "torch": torch.__version__}
               | {package: installed_version(package) for package in PACKAGES}}
    if device.type == "cuda":
        machine |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    return machine
