"""Turn the Hillstrom e-mail experiment into Clientela's import files.

    python campaigns/hillstrom/prepare.py ../shared/datasets/hillstrom/hillstrom.csv OUT_DIR

writes ``customers.csv`` (one customer per row, the dataset's columns as attributes),
``members.csv`` (the two e-mail arms as treated, the no-e-mail third as the shared control:
a split made elsewhere, given as an explicit list) and ``events.csv`` (each visit, and each
conversion with its spend, as responses to the campaign ``hillstrom``). See README,
"Real data: the Hillstrom experiment".
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

CAMPAIGN = "hillstrom"
ARMS = {"Mens E-Mail": ("mens", "treated"), "Womens E-Mail": ("womens", "treated")}
CONTROL = "No E-Mail"
ATTRIBUTES = [
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
]


def prepare(source: Path, out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {"customers": 0, "events": 0}
    with (
        source.open(newline="") as fh,
        (out / "customers.csv").open("w", newline="") as customers,
        (out / "members.csv").open("w", newline="") as members,
        (out / "events.csv").open("w", newline="") as events,
    ):
        c = csv.writer(customers)
        c.writerow(["external_id", *(f"attr_{a}" for a in ATTRIBUTES)])
        m = csv.writer(members)
        m.writerow(["customer_id", "arm", "group"])
        e = csv.writer(events)
        e.writerow(["type", "customer_id", "campaign", "value"])
        for i, row in enumerate(csv.DictReader(fh), start=1):
            cid = f"H{i:05d}"
            c.writerow([cid, *(row[a] for a in ATTRIBUTES)])
            if row["segment"] == CONTROL:
                m.writerow([cid, "", "control"])
            else:
                arm, group = ARMS[row["segment"]]
                m.writerow([cid, arm, group])
            if row["visit"] == "1":
                e.writerow(["visit", cid, CAMPAIGN, ""])
                counts["events"] += 1
            if row["conversion"] == "1":
                e.writerow(["conversion", cid, CAMPAIGN, row["spend"]])
                counts["events"] += 1
            counts["customers"] += 1
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: prepare.py HILLSTROM_CSV OUT_DIR")
    print(prepare(Path(sys.argv[1]), Path(sys.argv[2])))
