"""Lightning training: masked multi-task losses, optimisers, schedules, callbacks."""
