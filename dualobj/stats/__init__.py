"""Statistics that the report and the adaptive search share (they import this part; it imports neither):
the runs table's conventions (:mod:`dualobj.stats.frame`) and the Gaussian-process surface over (R, α)
(:mod:`dualobj.stats.gp`)."""
