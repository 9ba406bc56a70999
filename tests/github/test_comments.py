"""The sticky pull request comment, driven directly against the GitHub double."""

from __future__ import annotations

from bot.github.client import Pacing, make_client
from bot.github.comments import pr_comment_body, upsert_pr_comment
from tests.doubles.github_server import GitHubServer

REPO = "octo/models"


def test_one_comment_found_among_many_and_edited() -> None:
    with GitHubServer(page_size=2) as server:
        server.add_repo(REPO)
        number = server.add_pull(REPO, files=[])
        repo = make_client("t", server.url, pacing=Pacing().scaled(0.001)).get_repo(REPO)
        for n in range(3):  # people talk first: the bot's comment is on the second page
            repo.get_issue(number).create_comment(f"person {n}")

        actions = [upsert_pr_comment(repo, number, pr_comment_body(text)).action for text in ("one", "one", "two")]

        assert actions == ["created", "unchanged", "updated"]
        comments = server.comments(REPO, number)
        assert [c["body"].split("\n")[0] for c in comments] == ["person 0", "person 1", "person 2", "two"]
        assert server.errors == []
