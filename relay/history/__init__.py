"""Call history: the record of every ended call, its writer and its store (docs/HISTORY.md)."""
