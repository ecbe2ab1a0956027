"""Several worker processes behind one ARI application: the master, the dispatcher, the
aggregated view. See docs/WORKERS.md."""
