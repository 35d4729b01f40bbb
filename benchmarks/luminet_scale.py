#!/usr/bin/env python
"""How the size of LumiNet's term, and of its gradient, depends on the class count C, the
temperature T and the batch size N (no training: synthetic logits).

Teacher logits are standard normal; the student's are ``rho * teacher + sqrt(1 - rho^2) *
noise`` (columns correlated ``rho``: 0 is an untrained student, 0.9 a good one). For each
(C, T, N, rho): the LumiNet term (batch statistics, the paper's KL, no weight) and the root mean
square of its gradient per student logit, averaged over 20 draws; beside it, the same for the
cross-entropy with the hard labels (drawn uniformly) on the same student logits. A weight chosen
where C is 100 multiplies LumiNet's term and gradient; what moves the student is the gradient
per logit, against the cross-entropy's.

    python benchmarks/luminet_scale.py [--name 2026-12-01-luminet-scale]

Writes benchmarks/results/<name>.md and <name>.runs.json.
"""

import argparse
import datetime
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.results_io import commit as results_commit  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from luminet_det.losses import luminet_loss  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(c: int, t: float, n: int, rho: float, draws: int = 20) -> dict:
    g = torch.Generator().manual_seed(1000 * c + n)
    terms, grads, ce_grads = [], [], []
    for _ in range(draws):
        teacher = torch.randn(n, c, generator=g)
        noise = torch.randn(n, c, generator=g)
        labels = torch.randint(0, c, (n,), generator=g)
        student = (rho * teacher + (1 - rho**2) ** 0.5 * noise).requires_grad_(True)
        value = luminet_loss(student, teacher, temperature=t)
        value.backward()
        terms.append(value.item())
        grads.append(student.grad.pow(2).mean().sqrt().item())
        (ce_grad,) = torch.autograd.grad(F.cross_entropy(student, labels), student)
        ce_grads.append(ce_grad.pow(2).mean().sqrt().item())
    return {
        "C": c,
        "T": t,
        "N": n,
        "rho": rho,
        "term": sum(terms) / draws,
        "grad_rms": sum(grads) / draws,
        "ce_grad_rms": sum(ce_grads) / draws,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-luminet-scale")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    rows = []
    for c in (8, 10, 100, 1000):
        for t in (1.0, 4.0, 8.0):
            for n in (8, 64, 256):
                for rho in (0.0, 0.9):
                    rows.append(measure(c, t, n, rho))
    by = {(r["C"], r["T"], r["N"], r["rho"]): r for r in rows}
    commit = results_commit()
    command = f"python benchmarks/luminet_scale.py --name {args.name}"
    lines = [
        f"# Benchmark: {args.name}",
        "",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- torch {torch.__version__}, commit {commit}",
        f"- command: `{command}`",
        "",
        "## LumiNet's term and its gradient against C, T and N (synthetic logits)",
        "",
        "Teacher logits N(0, 1); student columns correlated rho with the teacher's (0: an "
        "untrained student, 0.9: a good one); batch statistics, no weight; means of 20 draws. "
        "Term: the loss; gradient: the root mean square of its gradient per student logit; "
        "CE: the same for the cross-entropy with hard labels on the same logits; ratio: "
        "LumiNet's gradient over CE's (the push of weight 1 against the cross-entropy).",
        "",
        "| C | T | term, N 64, rho 0 | term, N 64, rho 0.9 | gradient per logit, N 64, rho 0 "
        "| gradient × C, N 64, rho 0 | CE gradient per logit | ratio | ratio × √C |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in (8, 10, 100, 1000):
        for t in (1.0, 4.0, 8.0):
            a, b = by[(c, t, 64, 0.0)], by[(c, t, 64, 0.9)]
            ratio = a["grad_rms"] / a["ce_grad_rms"]
            lines.append(
                f"| {c} | {t:g} | {a['term']:.4f} | {b['term']:.4f} | {a['grad_rms']:.2e} | "
                f"{a['grad_rms'] * c:.2e} | {a['ce_grad_rms']:.2e} | {ratio:.2e} | "
                f"{ratio * c**0.5:.2e} |"
            )
    lines += [
        "",
        "Batch size (C 100, T 4, rho 0): term "
        + ", ".join(f"N {n}: {by[(100, 4.0, n, 0.0)]['term']:.4f}" for n in (8, 64, 256))
        + "; gradient per logit "
        + ", ".join(f"N {n}: {by[(100, 4.0, n, 0.0)]['grad_rms']:.2e}" for n in (8, 64, 256))
        + ".",
    ]
    record = {"command": command, "commit": commit}
    write_results(args.results, args.name, lines, record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
