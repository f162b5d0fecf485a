import dagster as dg
from pydantic import Field

from gh_pipeline import settings
from gh_pipeline.defs.warehouse.resources import env_or
from gh_pipeline.live.github_client import GitHubEventsClient


class GitHubApiResource(dg.ConfigurableResource):
    """GitHub's REST API; the token arrives only through dg.EnvVar("GITHUB_TOKEN")."""

    api_url: str = settings.DEFAULT_API_URL
    token: str | None = Field(default=None, description="Bearer token; never logged.")
    timeout_s: float = 10.0
    repos: str = Field(
        default="",
        description="GH_PIPELINE_REPOS: owner/name of the repositories to watch, comma- or "
        "whitespace-separated.",
    )

    def client(self) -> GitHubEventsClient:
        return GitHubEventsClient(api_url=self.api_url, token=self.token, timeout_s=self.timeout_s)

    def watch_list(self) -> settings.WatchList:
        return settings.watched_repos(self.repos)

    @property
    def authenticated(self) -> bool:
        return bool(self.token)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "github": GitHubApiResource(
                api_url=env_or(settings.ENV_API_URL, settings.DEFAULT_API_URL),
                token=env_or(settings.ENV_TOKEN, None),
                repos=env_or(settings.ENV_REPOS, ""),
            )
        }
    )
