"""The GitHub Action and bot: ``reefguard action`` checks the models a workflow event touches and reports.

Modules, in the order a run uses them:

- ``inputs``: the ``INPUT_*`` and ``GITHUB_*`` variables as frozen dataclasses.
- ``events``: the event payload (push, pull_request, schedule, workflow_dispatch).
- ``git`` and ``models``: which models changed, their sizes, Git LFS pointers.
- ``action``: the entry point, ``run(environ) -> exit code``.
- ``runner``: annotations, step outputs and the job summary (the only writer of those).
- ``client``: ``make_client(token, base_url)`` with retries, and the error funnel to ``RemoteError``.
- ``issues``, ``comments``, ``cards``: the bot's posts, each found again by its hidden marker (``bot.report``).
"""
