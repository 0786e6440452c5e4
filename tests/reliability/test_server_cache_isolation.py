"""The response cache never answers one tenant with another's entry, nor a sampled request at all.

Against a real Redis: several tenants (API-key identities and tenant headers) send the same
greedy prompts; each tenant's first request must miss and its repeat must hit. Sampled requests
(temperature above 0, no seed), repeated, must never hit.
"""

from __future__ import annotations

import httpx

from tests.harness.redis import RedisServer
from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import AREA, NAME, server_settings, serving

TENANTS = {
    "key alice": {"Authorization": "Bearer alice-key"},
    "key bob": {"Authorization": "Bearer bob-key"},
    "header team-a": {"x-kubellm-tenant": "team-a"},
    "header team-b": {"x-kubellm-tenant": "team-b"},
    "anonymous": {},
}
PROMPTS = [f"shared prompt {index}" for index in range(4)]
SAMPLED_REPEATS = 2


def _ask(client: httpx.Client, body: dict[str, object], headers: dict[str, str]) -> tuple[str, str]:
    response = client.post("/v1/completions", json={"model": NAME, "max_tokens": 4, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["x-kubellm-cache"], response.json()["choices"][0]["text"]


def test_no_cross_tenant_hits_and_no_hits_on_sampled_requests(redis_server: RedisServer, figure: RecordFigure) -> None:
    cross_tenant_hits = own_repeat_misses = sampled_hits = sampled = 0
    with serving(server_settings(redis_server.url)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for prompt in PROMPTS:
            for headers in TENANTS.values():
                greedy = {"prompt": prompt, "temperature": 0}
                first, text = _ask(client, greedy, headers)
                repeat, cached_text = _ask(client, greedy, headers)
                cross_tenant_hits += first == "hit"
                own_repeat_misses += repeat != "hit" or cached_text != text
                for temperature, top_p in ((0.7, 1.0), (1.3, 0.9)):
                    body = {"prompt": prompt, "temperature": temperature, "top_p": top_p}
                    outcomes = [_ask(client, body, headers)[0] for _ in range(SAMPLED_REPEATS)]
                    sampled += SAMPLED_REPEATS
                    sampled_hits += outcomes.count("hit")
    figure(AREA, "cache: cross-tenant hits", cross_tenant_hits, target="0", ok=cross_tenant_hits == 0)
    figure(AREA, f"cache: hits on sampled requests (of {sampled})", sampled_hits, target="0", ok=sampled_hits == 0)
    figure(AREA, "cache: a tenant's own repeat not a hit", own_repeat_misses, target="0", ok=own_repeat_misses == 0)
    assert cross_tenant_hits == 0
    assert sampled_hits == 0
    assert own_repeat_misses == 0, "the cache does not work at all, so isolation proves nothing"
