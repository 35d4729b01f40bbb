"""Two processes through detectron2's `launch` on CPU (gloo): DistillRCNN trains under
DistributedDataParallel, losses stay finite, the student's parameters stay identical across
ranks and the teacher stays frozen (and in eval mode) on every rank."""

import json
import os

import torch
from tiny import batch, distill_cfg, save_teacher


def _worker(teacher_config, teacher_weights, out_dir):
    import torch.distributed as dist
    from detectron2.modeling import build_model
    from detectron2.utils import comm
    from detectron2.utils.events import EventStorage
    from torch.nn.parallel import DistributedDataParallel

    import luminet_det  # noqa: F401  (registers DistillRCNN in this process)

    rank = comm.get_rank()
    cfg = distill_cfg(teacher_config, teacher_weights, losses=["luminet", "reviewkd"], norm="BN")
    torch.manual_seed(0)
    model = build_model(cfg)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    def student_params():
        return torch.cat(
            [
                p.detach().flatten().clone()
                for n, p in model.named_parameters()
                if not n.startswith("teacher.")
            ]
        )

    student_before = student_params()  # this run's own initial weights
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ddp.train()
    finite = True
    with EventStorage(0) as storage:
        for it in range(3):
            storage.iter = it
            losses = ddp(batch(2, seed=100 * rank + it))  # each rank sees its own images
            finite &= all(bool(torch.isfinite(v)) for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    student = student_params()
    gathered = [torch.zeros_like(student) for _ in range(comm.get_world_size())]
    dist.all_gather(gathered, student)
    teacher_same = all(
        torch.equal(teacher_before[k], v) for k, v in model.teacher.state_dict().items()
    )
    result = {
        "rank": rank,
        "finite": finite,
        "keys": sorted(losses),
        "max_rank_diff": max(float((g - gathered[0]).abs().max()) for g in gathered),
        "teacher_unchanged": teacher_same,
        "teacher_eval": not any(m.training for m in model.teacher.modules()),
        "teacher_no_grad": all(
            p.grad is None and not p.requires_grad for p in model.teacher.parameters()
        ),
        # training moved the student from where this run started (a fresh build_model would
        # differ by its own random initialisation even if training did nothing)
        "student_moved": float((student - student_before).abs().max()),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def test_two_process_distill_training_with_launch(tmp_path):
    from detectron2.engine import launch

    config, weights = save_teacher(tmp_path)
    launch(_worker, 2, dist_url="auto", args=(config, weights, str(tmp_path)))
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    for r in results:
        assert r["finite"], r
        assert "loss_luminet" in r["keys"] and "loss_reviewkd" in r["keys"]
        assert r["max_rank_diff"] == 0.0, r  # DDP keeps the replicas identical
        assert r["teacher_unchanged"] and r["teacher_eval"] and r["teacher_no_grad"], r
        assert r["student_moved"] > 0, r
