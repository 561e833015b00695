"""``python -m dit_engine.serve serve.replicas=N``: the same FastAPI app as a Ray Serve deployment
of N replicas, each one :class:`~dit_engine.serve.engine.ServingEngine` loaded once.

* **Where:** with ``RAY_ADDRESS`` set, the replicas join that Ray cluster (every node needs this
  dit_engine installed and the model's files at the same path); without it, a local Ray instance
  is started on this machine and stopped with the server.
* **Resources:** on CPU each replica gets ``serve.replica_cpus`` cores (default: this machine's
  cores / N, at least 1) and as many torch threads; on CUDA each replica gets one GPU, and a
  local start refuses more replicas than the machine has GPUs.
* **HTTP:** Ray Serve's proxy listens on ``serve.host:serve.port`` and routes each request to the
  least busy replica; each replica admits into its own queue as one process does (429 with
  ``Retry-After`` when its ``serve.max_queue`` is full). ``/health`` answers for the replica that
  took the request (with its id and the count of replicas); ``/metrics`` sums every replica's
  counters (:mod:`dit_engine.serve.shared`, at most a second old for the others).
* **Shared:** kept images and videos, the LoRAs loaded through ``/v1/loras``, the counters
  (:mod:`dit_engine.serve.shared`): one replica's URL is found through any other.
* **Failures:** a replica that dies is replaced by Ray Serve (its model loaded anew); the
  requests it was running when it died answer 5xx (the client may retry them: nothing was
  answered twice), the others are routed to the live replicas meanwhile.

SIGTERM or Ctrl-C takes the deployment down (and the local Ray instance), one line, exit 143/130.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from typing import Any

from dit_engine.errors import DitEngineError
from dit_engine.serve.shared import STATE_ACTOR, SharedState, SharedView
from dit_engine.session import Session
from dit_engine.threads import usable_cores

#: the Ray Serve application's (and deployment's) name; its Ray namespace
APP_NAME = "dit_engine"
#: requests a replica holds beyond ``serve.max_queue`` + ``serve.max_batch`` before Ray's proxy
#: stops sending it more: the replica's own queue fills first and answers 429, as one process does
ONGOING_MARGIN = 8
#: Ray Serve's own logs: warnings and errors only, no access log (uvicorn's is off in one process too)
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}
#: how long Ray Serve waits for a replica's running requests when it stops one, in seconds
GRACEFUL_SHUTDOWN_S = 5


def replica_problems(session: Session) -> list[str]:
    """What stops ``serve.replicas`` from serving ``session``'s prepared plan, each a one-line fix."""
    serve = session.cfg.serve
    problems = []
    if session.plan.world_size > 1:
        problems.append(f"serve.replicas={serve.replicas} with a parallel plan ({session.plan.world_size} ranks) is not "
                        "supported yet: run one server per parallel group behind a router, or drop parallel=")
    if serve.replica_cpus is not None and not (math.isfinite(serve.replica_cpus) and serve.replica_cpus > 0):
        problems.append(f"serve.replica_cpus={serve.replica_cpus}: use a number of cores above 0, or null for "
                        "this machine's cores / serve.replicas")
    if _on_cuda(session) and not os.environ.get("RAY_ADDRESS"):
        import torch

        gpus = torch.cuda.device_count()
        if serve.replicas > gpus:
            problems.append(f"serve.replicas={serve.replicas} needs one GPU each and this machine has {gpus}: use "
                            f"serve.replicas={gpus} or fewer (or join a larger Ray cluster with RAY_ADDRESS)")
    return problems


def serve_replicas(session: Session) -> None:
    """Deploy ``session`` (prepared: its plan checked) as ``serve.replicas`` Ray Serve replicas and
    serve until stopped (KeyboardInterrupt / Terminated, which end here once the deployment is
    down). DitEngineError when Ray is missing, the plan cannot run on replicas, or the
    deployment fails (a replica could not load the model: its error's last line)."""
    try:
        import ray
        from ray import serve as ray_serve
    except ImportError as err:
        raise DitEngineError(f"serve.replicas needs Ray Serve ({err.name} is missing): pip install -e '.[serve-ray]'") from None
    problems = replica_problems(session)
    if problems:
        raise DitEngineError("; ".join(problems))
    cfg = session.cfg.serve
    address = os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
    cores = usable_cores()
    cpus = cfg.replica_cpus if cfg.replica_cpus is not None else max(1.0, cores / cfg.replicas)
    gpus = 1 if _on_cuda(session) else 0
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not "Started Serve...": this module says what matters
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address=address or None, num_cpus=None if address else max(cores, math.ceil(cpus * cfg.replicas)),
             namespace=APP_NAME, include_dashboard=False, log_to_driver=True, logging_level="WARNING",
             # every worker of this server (replicas and the shared state) drops the same library
             # noise as the CLI does, before it imports anything of dit_engine's
             runtime_env={"worker_process_setup_hook": "dit_engine.console.quiet_known_noise"})
    for sig, handler in handlers.items():  # Ray's driver installs its own (a stack dump, no exit code of ours)
        signal.signal(sig, handler)
    state = None
    try:
        if address and gpus:
            available = int(ray.cluster_resources().get("GPU", 0))
            if cfg.replicas > available:
                raise DitEngineError(f"serve.replicas={cfg.replicas} needs one GPU each and the Ray cluster at "
                                     f"{address} has {available}: use serve.replicas={available} or fewer")
        state = ray.remote(num_cpus=0)(SharedState).options(name=STATE_ACTOR, get_if_exists=True).remote(cfg.keep_images)
        ray_serve.start(http_options={"host": cfg.host, "port": cfg.port, "keep_alive_timeout_s": cfg.keep_alive_s},
                        logging_config=SERVE_LOGGING)
        deployment = ray_serve.deployment(
            _replica_class(), name=APP_NAME, num_replicas=cfg.replicas,
            max_ongoing_requests=cfg.max_queue + cfg.max_batch + ONGOING_MARGIN,
            graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S, logging_config=SERVE_LOGGING,
            ray_actor_options={"num_cpus": cpus, "num_gpus": gpus,
                               "runtime_env": {"env_vars": _replica_environment(cpus)}})
        started = time.monotonic()
        print(f"dit_engine.serve: starting {cfg.replicas} replicas on Ray Serve "
              f"({'cluster ' + address if address else 'a local Ray instance'}; {cpus:g} CPU{'s' if cpus != 1 else ''}"
              f"{' and 1 GPU' if gpus else ''} each)", file=sys.stderr, flush=True)
        try:
            ray_serve.run(deployment.bind(session.cfg, session.overrides, os.getcwd(), cfg.replicas),
                          name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as err:
            raise DitEngineError(f"the replicas did not start: {_last_line(err)}") from None
        print(f"dit_engine.serve: model={session.adapter.name} on http://{cfg.host}:{cfg.port} through "
              f"{cfg.replicas} Ray Serve replicas (ready in {time.monotonic() - started:.0f} s; POST /v1/images/generations; "
              f"plan: {', '.join(s.name for s in session.plan.steps)})", file=sys.stderr, flush=True)
        while True:  # the signal handlers raise KeyboardInterrupt / Terminated here
            time.sleep(1)
    finally:
        _take_down(ray, ray_serve, state, joined=bool(address))


def _take_down(ray: Any, ray_serve: Any, state: Any, joined: bool) -> None:
    """Delete the deployment and the shared state; stop Serve and Ray when this server started them."""
    try:
        if joined:  # other applications may share the cluster's Serve instance
            ray_serve.delete(APP_NAME)
            if state is not None:
                ray.kill(state)
        else:
            ray_serve.shutdown()
    finally:
        ray.shutdown()


def _on_cuda(session: Session) -> bool:
    device = str(session.cfg.model.device)
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def _replica_environment(cpus: float) -> dict[str, str]:
    """The replicas' environment: ``OMP_NUM_THREADS`` for their CPU share; no usage reporting; no
    warning for the shared state's short blocking calls (a local actor, about a millisecond)."""
    return {"OMP_NUM_THREADS": str(max(1, int(cpus))), "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}


def _last_line(err: BaseException) -> str:
    """The last meaningful line of Ray's deployment error (the replica's exception)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _replica_class() -> type:
    """The deployment's class (defined here so that importing this module does not need Ray)."""
    from ray import serve as ray_serve

    @ray_serve.ingress()
    class Replica:
        """One replica: the session's pipeline loaded and planned once, served by the same
        FastAPI app as one process, with the state the replicas share."""

        def __init__(self, cfg: Any, overrides: list[str], cwd: str, replicas: int):
            from dit_engine.console import quiet_known_noise
            from dit_engine.serve.engine import ServingEngine
            from dit_engine.threads import fit_rank_threads

            quiet_known_noise()
            fit_rank_threads()  # OMP_NUM_THREADS, set for this replica's CPU share
            if os.path.isdir(cwd):  # a relative path in the config means the same as for the server
                os.chdir(cwd)
            import ray

            replica = ray_serve.get_replica_context().replica_id.unique_id
            shared = SharedView(ray.get_actor(STATE_ACTOR, namespace=APP_NAME), replica, replicas)
            session = Session(cfg, overrides)
            session.prepare()
            self.engine = ServingEngine(session, shared=shared)

        def __serve_build_asgi_app__(self) -> Any:
            from dit_engine.serve.app import create_app

            return create_app(self.engine)

        def __del__(self) -> None:
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.close()

    return Replica

