"""What LumiNet costs and what it buys, side by side with KD, DKD and the other methods
(`make bench`).

One module per section, each with a ``run(...)`` that returns a result object rendering its
own Markdown (``markdown()``) and, for accuracy sections, its chart panel (``chart()``):

* :mod:`.loss_cost` — the losses alone, forward + backward;
* :mod:`.step_cost` — one DistillRCNN training step per method, the teacher's share, memory;
* :mod:`.det_paired` — box (and mask) AP on the built-in detection set, paired seeds, per
  detector group (Faster / Mask / Cascade R-CNN, RetinaNet, a LazyConfig teacher);
* :mod:`.stats_modes` — LumiNet's STATS modes in 2 processes, and batch-statistics noise;
* :mod:`.classification` — top-1 / ECE on the built-in classification set;
* :mod:`.cls_paired` — paired seeds on the hard set (resnet8, a ViT student) and an unseen
  folder set;
* :mod:`.probe` — transfer by linear probing;
* :mod:`.sweeps` — batch-size and temperature sweeps.

:mod:`.common` holds the detection runs and the paired statistics, :mod:`.cls_runs` the
classification runs, :mod:`.report` and :mod:`.results_io` the results file and chart;
``benchmarks/run.py`` is the command line. Stand-alone measurements (precision_cpu,
dense_rows, luminet_scale, confidence, gpu) write their own results files.
"""
