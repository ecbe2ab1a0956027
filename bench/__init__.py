"""relay's benchmark suite: every measurement beside a reference measured in the same run."""
