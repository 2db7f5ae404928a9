"""The campaign of ``hpc_campaign.py``, on Dask: one line differs.

``hpc_campaign.backends()`` runs the tasks on threads and ``simulate`` on a process pool:

    return {"default": ThreadBackend(4), "process": ProcessBackend(2)}

``backends()`` below puts both names on one Dask backend instead; the campaign itself
(its tasks, blocks, resource slots and workflow scope) is imported from
``hpc_campaign.py`` unchanged. Here Dask is a ``LocalCluster`` in this process (one
worker of two threads), so the example runs anywhere; the comments in ``dask()`` show
how to point it at a real cluster.

Run it with ``python examples/hpc_campaign_dask.py`` (needs the extra ``dask``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stepgraph.backends import Backend, DaskBackend

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/ (a script has it already)
import hpc_campaign


def backends() -> dict[str, Backend]:
    """``hpc_campaign.backends()``, with Dask in place of the threads and the process pool."""
    return dict.fromkeys(["default", "process"], dask())  # <- the one line that differs
    # (one backend under both names: started for each name, it starts one cluster)


def dask() -> DaskBackend:
    """A Dask backend on a LocalCluster it starts in this process, one worker of 2 threads."""
    return DaskBackend(
        address=None,
        processes=False,
        n_workers=1,
        threads_per_worker=2,
    )
    # On a real cluster, connect to its scheduler instead of starting a LocalCluster:
    #
    #     return DaskBackend(address="tcp://scheduler:8786")
    #
    # e.g. on Slurm with dask-jobqueue, whose workers are Slurm jobs:
    #
    #     from dask_jobqueue import SLURMCluster
    #     cluster = SLURMCluster(cores=8, memory="16GB", walltime="01:00:00")
    #     cluster.scale(jobs=4)
    #     return DaskBackend(address=cluster.scheduler_address)
    #
    # There the executables and `simulate` run on the compute nodes: give main() a
    # work_dir on a filesystem they share with this machine, not a local temporary one.


def main() -> dict[str, Any]:
    return hpc_campaign.main(backends)


if __name__ == "__main__":
    main()
