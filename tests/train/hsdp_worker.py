"""Run under torchrun (CPU, gloo, 2 ranks): HSDP on 2-D meshes (replicate, shard) vs one
process on the global batch. Writes ``{"cases": [...]}`` (fsdp_worker's fields + mesh)."""

from __future__ import annotations

import json
import os
import sys

from fsdp_worker import case

from metaclip.train.distributed import init_distributed, shutdown


def main() -> None:
    info = init_distributed("cpu", timeout_s=120)
    cases = []
    for shape in ([2, 1], [1, 2]):
        hsdp = init_distributed("cpu", timeout_s=120, mesh_shape=shape)
        assert hsdp.mesh.mesh_dim_names == ("replicate", "shard"), hsdp.mesh
        assert tuple(hsdp.mesh.shape) == tuple(shape), hsdp.mesh
        for args in (("contrastive", False), ("sigmoid", True)):
            cases.append({**case(hsdp, *args), "mesh": shape})
        cases.append({**case(hsdp, "contrastive", False, accum=2), "mesh": shape})
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": info.world, "cases": cases}, f)
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as fsdp_worker.py


if __name__ == "__main__":
    main()
