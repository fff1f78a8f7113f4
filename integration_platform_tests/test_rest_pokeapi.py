"""REST source against the PokeAPI mirror served the way the live API pages it.

List endpoints (offset/limit, total count, absolute next URLs), list -> detail fan-out by
URL, parent id -> sub-resource, nested records kept as structs or JSON text; what lands is
compared with the mirror's files.
"""

import json
import re
from pathlib import Path

import dagster as dg
import pytest

from integration_platform_tests.rest_servers import pokeapi_server
from integration_platform_tests.services import SHARED_DATA
from sandbox.harness import failure_messages, latest_metadata, platform

MIRROR = SHARED_DATA / "pokeapi-subset" / "data" / "api" / "v2"


def _detail_ids(endpoint: str) -> set[int]:
    return {int(p.name) for p in (MIRROR / endpoint).iterdir() if p.is_dir() and (p / "index.json").is_file()}


def _yaml(url: str, limit: int = 20, paginator: str = "offset") -> str:
    lister = {
        "offset": f"{{type: offset, limit: {limit}, total_path: count}}",
        "next_url": "{type: next_url, next_url_path: next}",
        "page_number": f"{{type: page_number, limit: {limit}, limit_param: page_size, total_path: total_pages}}",
    }[paginator]
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: poke
  base_url: {url}
  concurrency: 8
  defaults:
    paginator: {lister}
    records: results
  streams:
    - name: pokemon
      path: /api/v2/pokemon/
      primary_key: [name]
    - name: pokemon_details
      path: "{{url}}"
      parent: {{stream: pokemon, include: [name]}}
      records: $
      paginator: {{type: single_page}}
      primary_key: [id]
    - name: encounters
      path: /api/v2/pokemon/{{id}}/encounters
      parent: {{stream: pokemon_details, include: [id]}}
      records: $
      paginator: {{type: single_page}}
    - name: berries
      path: /api/v2/berry
      primary_key: [name]
    - name: berry_details
      path: "{{url}}"
      parent: {{stream: berries}}
      records: $
      paginator: {{type: single_page}}
      primary_key: [id]
      nested: json
"""


@pytest.mark.parametrize("paginator", ["offset", "next_url", "page_number"])
def test_lists_and_fan_out_land_every_record_of_the_mirror(
    paginator: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    with pokeapi_server() as server:
        p = platform(_yaml(server.url, limit=7, paginator=paginator), tmp_path, instance)
        result = p.materialize()
        requests = server.stats()["requests"]
    assert result.success
    pokemon_ids, berry_ids = _detail_ids("pokemon"), _detail_ids("berry")
    assert len(pokemon_ids) == 50 and len(berry_ids) == 68
    # every list page was fetched once: ceil(50 / 7) pages of 7 by offset or page number;
    # following the server's own next URLs from the first page (default limit 20): ceil(50 / 20)
    list_pages = [r["path"] for r in requests if r["path"].split("?")[0] == "/api/v2/pokemon/"]
    assert len(list_pages) == len(set(list_pages)) == {"offset": 8, "next_url": 3, "page_number": 8}[paginator]
    assert {r[0] for r in p.query("SELECT id FROM poke.pokemon_details")} == pokemon_ids
    assert {r[0] for r in p.query("SELECT id FROM poke.berry_details")} == berry_ids
    first = json.loads((MIRROR / "pokemon" / "1" / "index.json").read_text())
    row = p.query(
        "SELECT name, _pokemon_name, height, weight, len(abilities), abilities[1].ability.name "
        "FROM poke.pokemon_details WHERE id = 1"
    )[0]
    assert row == (
        first["name"],
        first["name"],
        first["height"],
        first["weight"],
        len(first["abilities"]),
        first["abilities"][0]["ability"]["name"],
    )
    # nested: json keeps objects as JSON text, equal to the source's
    firmness = p.query("SELECT firmness FROM poke.berry_details WHERE id = 1")[0][0]
    assert json.loads(firmness) == json.loads((MIRROR / "berry" / "1" / "index.json").read_text())["firmness"]
    # parent id -> sub-resource: every encounter of every pokemon, tagged with its pokemon
    expected = sum(
        len(json.loads((MIRROR / "pokemon" / str(i) / "encounters" / "index.json").read_text())) for i in pokemon_ids
    )
    assert p.query("SELECT count(*) FROM poke.encounters")[0][0] == expected
    assert p.query("SELECT count(DISTINCT _pokemon_details_id) FROM poke.encounters")[0][0] > 10
    details = latest_metadata(instance, dg.AssetKey(["poke", "pokemon_details"]))
    assert details["parent_records"] == 50 and details["requests"] == 50 and details["pages"] == 50
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def test_a_child_fails_clearly_when_its_parent_never_landed(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    with pokeapi_server() as server:
        p = platform(_yaml(server.url), tmp_path, instance)
        result = p.materialize([dg.AssetKey(["poke", "berry_details"])], raise_on_error=False)
    assert not result.success
    assert failure_messages(result) == [
        "ValueError: stream poke/berry_details: its parent poke/berries has not landed yet; materialise it first\n"
    ]


def test_missing_details_are_skipped_only_when_declared(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """The mirror's pokemon-species list names ids up to 1,025 but holds 50 detail files."""
    source = """
type: integration_platform.components.RestSource
attributes:
  source: species
  base_url: {url}
  streams:
    - name: ids
      path: /api/v2/pokemon-species/{id}/
      parent: {{stream: seed}}
      records: $
      primary_key: [id]
      skip_statuses: {skip}
    - name: seed
      path: /api/v2/berry/
      records: results
      paginator: {{type: offset, limit: 100, total_path: count}}
"""
    with pokeapi_server() as server:
        # berries' "name" values are not species ids: every detail request is a 404
        text = source.replace("{id}", "{{name}}")
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        strict = platform(text.format(url=server.url, skip="[]"), tmp_path / "a", instance)
        failed = strict.materialize(raise_on_error=False)
        lenient = platform(text.format(url=server.url, skip="[404]"), tmp_path / "b", instance)
        passed = lenient.materialize()
    assert not failed.success
    errors = failure_messages(failed)
    assert any(re.search(r"GET http://127.0.0.1:\d+/api/v2/pokemon-species/[a-z-]+/: HTTP 404", e) for e in errors)
    assert passed.success
    assert latest_metadata(instance, dg.AssetKey(["species", "ids"]))["requests_skipped"] == 68
