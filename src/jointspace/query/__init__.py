"""Search (query embedding + store search) and evaluation (tasks, baselines, report)."""
