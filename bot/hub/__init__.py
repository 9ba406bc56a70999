"""The Hugging Face Hub integration: scheduled scans, annotations and a webhook receiver.

Modules, in the order a scan uses them:

- ``client``: the run's ``Budget`` (429/5xx backoff, byte and time caps) and the funnel from Hub errors to
  ``RemoteError``; the ``HfApi`` itself comes from ``bot._http.make_api``, the one client factory.
- ``scan``: candidates from ``list_models``, shards, header checks, fingerprint + compare, lineage findings.
- ``triage``: stage 1, a weight verdict from the anchor rows read by HTTP Range.
- ``results``: results, findings, the state file, scan reports and their merge.
- ``annotate``: one discussion per (repo, source) or a model-card pull request (through ``bot.cards``), found
  again by hidden markers.
- ``webhook``: ``reefguard hub serve``, a persisted bounded queue and its scan worker.
- ``commands``: the ``reefguard hub`` subcommands (light at import).

The science (``bot.reef``) never imports this package; this package reaches it through ``bot.reef``'s public
names, ``bot.engine``, ``bot.sources``, ``bot.registry`` and ``bot.report``.
"""
