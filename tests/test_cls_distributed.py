"""luminet_det.cls under two processes (gloo): every process evaluates its own shard of the
validation set and the counts are all-reduced, so the report equals one process's evaluation
of the same weights over the whole set."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from luminet_det.cls import build_model, load_config
from luminet_det.cls.engine import Trainer, evaluate, evaluate_checkpoint, shard
from luminet_det.metrics import classification_report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cfg(out_dir):
    return load_config(
        "",
        [
            "DATA.NAME=digits",
            "DATA.NUM_WORKERS=0",
            "MODEL.STUDENT=resnet8",
            "METHOD.NAME=ce",
            "SOLVER.BATCH_SIZE=64",
            "SOLVER.EPOCHS=1",
            f"OUTPUT_DIR={out_dir}",
        ],
    )


def _train_worker(rank, world, port, out_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank)
    )
    torch.set_num_threads(1)
    trainer = Trainer(_cfg(out_dir), progress=False)
    result = trainer.train()
    with open(os.path.join(out_dir, f"result{rank}.json"), "w") as f:
        json.dump({"result": result, "val_rows": len(trainer.val_loader.dataset)}, f)
    torch.distributed.destroy_process_group()


def test_two_process_training_evaluates_shards_and_equals_one_process_evaluation(tmp_path):
    mp.spawn(_train_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.load(open(tmp_path / f"result{r}.json")) for r in (0, 1)]
    # the 360 validation images split 180 / 180 (no image padded or counted twice)
    assert sum(r["val_rows"] for r in ranks) == 360
    assert ranks[0]["result"] == ranks[1]["result"]  # every process gets the same report
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert [r["epoch"] for r in rows] == [1]
    single = evaluate_checkpoint(_cfg(tmp_path), str(tmp_path / "best.pth"))
    assert rows[0]["top1"] == single["top1"] and rows[0]["top5"] == single["top5"]
    for key in ("ece", "mce", "fpr95", "confidence"):
        assert rows[0][key] == pytest.approx(single[key], rel=1e-9, abs=1e-9), key


def _report_worker(rank, world, port, logits, labels, out):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    mine = list(range(rank, len(labels), 2)) if rank < 2 else []  # rank 2: no rows at all
    report = classification_report(logits[mine], labels[mine], distributed=True)
    torch.save(report, os.path.join(out, f"report{rank}.pt"))
    dist.destroy_process_group()


def test_distributed_report_with_unequal_and_empty_shards_equals_the_whole_set(tmp_path):
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(41, 7, generator=g) * 3, torch.randint(0, 7, (41,), generator=g)
    mp.spawn(_report_worker, args=(3, _free_port(), logits, labels, str(tmp_path)), nprocs=3)
    whole = classification_report(logits, labels)
    for rank in range(3):
        got = torch.load(tmp_path / f"report{rank}.pt")
        assert got["top1"] == whole["top1"] and got["top5"] == whole["top5"]
        for key in ("ece", "mce", "fpr95", "confidence"):
            assert got[key] == pytest.approx(whole[key], rel=1e-12), key


def test_shard_takes_every_item_once():
    items = list(range(11))
    parts = [list(shard(items, 3, r)) for r in range(3)]
    assert sorted(sum(parts, [])) == items and [len(p) for p in parts] == [4, 4, 3]
    assert shard(items, 1, 0) is items


def test_evaluate_of_an_empty_shard_in_one_process_is_nan():
    model = build_model("resnet8", 10)
    report = evaluate(model, [], torch.device("cpu"))
    assert all(v != v for v in report.values())  # NaN: nothing was evaluated
