"""Real speech sources (stub)."""
def plan_real(seed, max_per_source=None):
    return []
