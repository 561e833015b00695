"""The prepared session a local launch hands its ranks: composed, validated and planned once, by
the launching process, and applied as it is on every rank (no rank composes or plans again).

The work folder is the launcher's own (``mkdtemp``: readable by this user only) and lives as long
as the launch, so the file is trusted as the launcher's memory is; what ranks send each other at
run time (:mod:`dit_engine.serve.control`) is never unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from omegaconf import OmegaConf

from dit_engine.session import Session

SESSION_FILE = "session.pickle"


def write_session(session: Session, work: Path) -> None:
    """Write ``session``'s config, overrides, adapter, workload and plan into the folder ``work``.

    The plan pickles by reference to its classes (adapter, transforms, step configs). The config is
    written resolved, as plain containers: interpolations that only Hydra's running app can
    resolve (``${hydra:...}``) and the schema classes composed at run time do not cross processes.
    """
    prepared = {
        "cfg": OmegaConf.to_container(session.cfg, resolve=True),
        "overrides": session.overrides,
        "adapter": session.adapter,
        "workload": session.workload,
        "plan": session.plan,
    }
    Path(work, SESSION_FILE).write_bytes(pickle.dumps(prepared))


def read_session(work: str | Path) -> Session:
    """The session :func:`write_session` wrote, ready to load and run."""
    prepared = pickle.loads(Path(work, SESSION_FILE).read_bytes())
    session = Session(OmegaConf.create(prepared["cfg"]), prepared["overrides"])
    session.adapter, session.workload, session.plan = prepared["adapter"], prepared["workload"], prepared["plan"]
    return session
