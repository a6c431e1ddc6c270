"""Statistics that the report and the adaptive search share (they import this part; it imports neither):
the runs table's conventions (:mod:`dualobj.stats.frame`), seed noise and paired comparisons over the
(R, α) grid (:mod:`dualobj.stats.seeds`) and the Gaussian-process surface over (R, α) (:mod:`dualobj.stats.gp`)."""
