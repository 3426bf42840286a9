"""The same entry point under ``accelerate launch`` with two CPU processes (gloo DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_config

from p2p_local.hypernet.checkpoint import load_checkpoint


def test_two_cpu_processes_end_in_sync(tmp_path, tiny_data_dir, tiny_base_dir) -> None:
    out = tmp_path / "ddp"
    cfg = tiny_config(out, tiny_data_dir, tiny_base_dir, max_steps=4, batch_size=2,
                      eval_every=2, checkpoint_every=2, log_every=1)
    config_file = tmp_path / "ddp.toml"
    config_file.write_text(cfg.to_toml())
    accelerate = Path(sys.executable).with_name("accelerate")
    # `--cpu` alone starts one process unless mpirun is set up; `--multi_gpu` starts two
    # through torch's launcher and `[run] cpu = true` makes them a gloo (CPU) group.
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           "29533", "-m", "p2p_local.train", "--config", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    meta = json.loads((out / "training.json").read_text())
    assert meta["processes"] == 2 and meta["global_batch"] == 4 and meta["steps"] == 4
    assert len(meta["replica_weight_digests"]) == 2
    assert meta["replicas_in_sync"] is True
    # the saved weights are the ones both processes hold, and training moved them
    saved = load_checkpoint(out / "hypernet").hypernet
    import hashlib

    h = hashlib.sha256()
    for _name, value in sorted(saved.state_dict().items()):
        h.update(value.float().contiguous().numpy().tobytes())
    assert h.hexdigest()[:15] == meta["replica_weight_digests"][0]
    head = next(v for k, v in saved.state_dict().items() if k.endswith("weight") and "heads" in k)
    assert torch.count_nonzero(head) > 0
    # each process saved its own random state in the checkpoints
    assert (out / "checkpoints" / "step-00000004" / "rng-1.pt").is_file()
