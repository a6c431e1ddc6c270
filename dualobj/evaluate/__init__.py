"""Zero-shot evaluation: benchmark tasks, built-in probes, likelihood scoring and orchestration."""
