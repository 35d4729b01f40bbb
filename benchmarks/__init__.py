"""What LumiNet costs and what it buys, side by side with KD and DKD (`make bench`).

One module per section, each with a ``run(...)`` that returns a result object rendering its
own Markdown (``markdown()``) and, for accuracy sections, its chart panel (``chart()``):

* :mod:`.loss_cost` — the losses alone, forward + backward;
* :mod:`.step_cost` — one DistillRCNN training step per method, the teacher's share, memory;
* :mod:`.detection` — box AP on the built-in detection set, N seeds per method;
* :mod:`.stats_modes` — LumiNet's STATS modes in 2 processes, and batch-statistics noise;
* :mod:`.classification` — top-1 / ECE on the built-in classification set.

:mod:`.common` holds the one table of methods and the training runs; :mod:`.report` the
results file and chart; ``benchmarks/run.py`` is the command line.
"""
