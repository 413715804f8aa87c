"""Finding a customer and why they are in their tier, through the API."""

from __future__ import annotations

from temporalio.client import Client

from clientela.settings import Settings
from tests.factories import make_customer
from tests.serving import api
from tests.test_rules_apply import apply_directly


async def test_search_by_id_email_phone_and_name_start(client: Client, settings: Settings) -> None:
    ana = make_customer(
        settings.db_url,
        first_name="Ana",
        last_name="Zubiría",
        email="ana.z@example.com",
        phone="+34600111222",
    )
    make_customer(settings.db_url, first_name="Anabel", last_name="Ortiz")
    make_customer(settings.db_url, first_name="Bruno", last_name="Anaya")
    apply_directly(settings.db_url)
    async with api(client, settings) as http:

        async def ids(q: str) -> list[str]:
            r = await http.get("/customers", params={"q": q})
            assert r.status_code == 200, r.text
            return [hit["id"] for hit in r.json()]

        assert await ids(ana) == [ana]
        assert await ids("ANA.Z@example.com") == [ana]
        assert await ids("+34 600 111 222") == [ana]
        by_name = await ids("ana")  # Anaya (last name), then Ana and Anabel (first names)
        assert len(by_name) == 3 and ana in by_name
        assert await ids("zub") == [ana]
        assert await ids("nobody-like-this") == []
        assert (await http.get("/customers", params={"q": ""})).status_code == 422
        why = await http.get(f"/customers/{ana}/explanation")
        assert why.status_code == 200, why.text
        body = why.json()
        assert body["tier"] in ("A", "B", "C") and body["tier_rules_tried"]
        missing = await http.get("/customers/NOBODY-1/explanation")
        assert missing.status_code == 404
