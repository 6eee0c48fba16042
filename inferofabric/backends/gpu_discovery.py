"""GPU discovery on this host through NVML (nvidia-ml-py), for the `local` pool."""

from __future__ import annotations

import re
from dataclasses import dataclass

KNOWN_TYPES = ("GH200", "H200", "H100", "A100", "A10G", "A10", "L40S", "L40", "L4", "V100", "T4", "P100",
               "RTX 6000", "A6000")


@dataclass(frozen=True)
class HostGpu:
    index: int
    name: str
    gpu_type: str
    memory_mib: int
    uuid: str


def gpu_type_of(name: str) -> str:
    """Map an NVML product name ("NVIDIA H100 80GB HBM3") to a fabric GPU type ("H100")."""
    upper = name.upper()
    for known in KNOWN_TYPES:
        if re.search(rf"(^|[\s-]){re.escape(known)}($|[\s-])", upper):
            return known.replace(" ", "")
    return re.sub(r"^NVIDIA\s+", "", name).split()[0] if name else "GPU"


def discover() -> list[HostGpu]:
    """The GPUs NVML sees; an empty list when there is no driver (a CPU-only host)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            gpus.append(HostGpu(index=index, name=name, gpu_type=gpu_type_of(name), memory_mib=int(memory),
                                uuid=uuid))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def inventory(gpus: list[HostGpu]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.gpu_type] = counts.get(gpu.gpu_type, 0) + 1
    return counts
