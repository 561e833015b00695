"""Process launching for the CLI and the server, above :mod:`dit_engine.session`.

Modules: :mod:`.local` (the launcher that starts and watches local ranks), :mod:`.rank` (how
every rank begins: dies with its launcher, heartbeat, clean stop, failure record), :mod:`.handoff`
(the session prepared once by the launching process, applied as it is on every rank), :mod:`.run`
(a CLI run on local ranks). A server's ranks (:mod:`dit_engine.serve.ranks`) are launched with
:func:`.local.launch_session` too. The parallel technique itself (mesh, attention, sharding) is
:mod:`dit_engine.parallel`. See docs/parallel.md.
"""
