"""Processing provider: one algorithm per action, thin front ends over the same core calls as the tasks."""
