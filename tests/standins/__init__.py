"""Stand-ins for what the tests cannot reach (NVIDIA GPUs and NVML); named as stand-ins."""
