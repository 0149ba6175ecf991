"""GET /v1/status/daily: pushes per county and server day, counted by the
server in the push's own transaction (and GET /v1/status?all_counties=1). Replayed batches are not counted
again, the counts survive a restart, coordinators see their counties only,
phones are refused, and a bad query gets a clear body.

The day is the server's UTC day. To see a county over two days without
waiting for midnight or a test-only flag in the server, one test writes an
earlier day's row into the stopped server's "days" table with the key
layout written at the top of server/core/store.c, and checks where the
endpoint puts it."""
import json
import struct
import time

import lmdb

from harness import (APPLIED, DUPLICATE, REJECTED, Device, Server, batch, push, report, request,
                     run_tests)

DAY_MS = 86400000


def get_json(port, path, token):
    st, h, b = request(port, "GET", path, headers={"Authorization": f"Bearer {token}"})
    return st, json.loads(b)


def pushed(s, dev, changes, expect, seq=None):
    body = batch(dev, changes, seq)
    st, r = push(s.port, dev, body)
    assert st == 200, r
    assert [x.status for x in r.results] == expect, r
    return body


def today():
    return int(time.time() * 1000) // DAY_MS


def row(j, county):
    return next((c for c in j["counties"] if c["county"] == county), None)


def test_pushes_are_counted_once_per_county_and_day():
    with Server() as s:
        n1, n2 = Device(s.data, "Nairobi 1", "047"), Device(s.data, "Nairobi 2", "047")
        k1 = Device(s.data, "Kisumu 1", "042")
        admin = Device(s.data, "admin", "", role="admin")
        coord = Device(s.data, "Kisumu coordinator", "042", role="coordinator")
        day0 = today()
        pushed(s, n1, [report(n1, "047"), report(n1, "047")], [APPLIED, APPLIED])
        pushed(s, n1, [report(n1, "047")], [APPLIED])
        pushed(s, n2, [report(n2, "047")], [APPLIED])
        bad = report(k1, "042")
        bad.fields[0].value.choice = "not_a_status"
        body = pushed(s, k1, [report(k1, "042"), bad], [APPLIED, REJECTED])
        # the same batch again (a phone that lost the answer): answered
        # from its memo, not counted again
        st, r = push(s.port, k1, body)
        assert st == 200 and [x.status for x in r.results] == [APPLIED, REJECTED], r
        # a change sent again in a new batch: a push, with nothing applied
        again = report(k1, "042")
        pushed(s, k1, [again], [APPLIED])
        pushed(s, k1, [again], [DUPLICATE])

        st, j = get_json(s.port, "/v1/status/daily", admin.token)
        assert st == 200, j
        assert j["days"] == 30 and len(j["counties"]) == 2, j
        if today() != day0:
            return  # midnight passed during the test: the shape below is a day off
        assert j["to"] == time.strftime("%Y-%m-%d", time.gmtime(day0 * 86400)), j
        c47, c42 = row(j, "047"), row(j, "042")
        for c in (c47, c42):
            assert len(c["batches"]) == len(c["applied"]) == len(c["rejected"]) == 30, c
            assert all(x == 0 for x in c["batches"][:-1]), c
        assert (c47["batches"][-1], c47["applied"][-1], c47["rejected"][-1], c47["total"]) == \
            (3, 4, 0, 3), c47
        assert (c42["batches"][-1], c42["applied"][-1], c42["rejected"][-1], c42["total"]) == \
            (3, 2, 1, 3), c42

        # a coordinator: its counties only; the window can be shorter
        st, j = get_json(s.port, "/v1/status/daily?days=7", coord.token)
        assert st == 200 and [c["county"] for c in j["counties"]] == ["042"], j
        assert j["days"] == 7 and len(j["counties"][0]["batches"]) == 7, j
        # a phone may not; bad queries are refused with a body that says why
        st, j = get_json(s.port, "/v1/status/daily", n1.token)
        assert st == 403 and j["error"] == "role_not_allowed", j
        for q in ["0", "367", "x", "-1", "3.5", ""]:
            st, j = get_json(s.port, f"/v1/status/daily?days={q}", admin.token)
            assert st == 400 and j["error"] == "bad_query", (q, j)
            assert "1 to 366" in j["message"], j
        st, j = get_json(s.port, "/v1/status/daily", "shd_" + "A" * 43)
        assert st == 401, j

        # GET /v1/status?all_counties=1 (the page's "show empty counties"):
        # every county in the token's scope, the empty ones too
        st, j = get_json(s.port, "/v1/status", admin.token)
        assert st == 200 and [c["county"] for c in j["counties"]] == ["042", "047"], j["counties"]
        st, j = get_json(s.port, "/v1/status?all_counties=1", admin.token)
        assert st == 200 and [c["county"] for c in j["counties"]] == [f"{i:03d}" for i in range(1, 48)]
        empty = next(c for c in j["counties"] if c["county"] == "001")
        assert (empty["devices"], empty["records"], empty["batches"]) == (0, 0, 0), empty
        st, j = get_json(s.port, "/v1/status?all_counties=1", coord.token)
        assert st == 200 and [c["county"] for c in j["counties"]] == ["042"], j["counties"]

        # the counts are in the store: a restart keeps them
        assert s.stop() == 0
        s.start()
        st, j = get_json(s.port, "/v1/status/daily", admin.token)
        assert st == 200 and row(j, "047")["total"] == 3 and row(j, "042")["total"] == 3, j


def test_an_earlier_day_and_the_window():
    """A row written for 3 days ago lands at index -4; one from 40 days
    ago is outside 30 days and inside 60."""
    with Server() as s:
        n1 = Device(s.data, "Nairobi 1", "047")
        m1 = Device(s.data, "Mombasa 1", "001")
        admin = Device(s.data, "admin", "", role="admin")
        pushed(s, n1, [report(n1, "047")], [APPLIED])
        assert s.stop() == 0
        day0 = today()
        env = lmdb.open(s.data, max_dbs=32, subdir=True)
        days = env.open_db(b"days")
        with env.begin(write=True, db=days) as t:
            for county, ago, n in [(b"047", 3, 5), (b"047", 40, 7), (b"001", 2, 2)]:
                t.put(county + struct.pack(">I", day0 - ago), struct.pack(">QQQ", n, 2 * n, 0))
        env.close()
        s.start()
        pushed(s, m1, [report(m1, "001")], [APPLIED])
        st, j = get_json(s.port, "/v1/status/daily", admin.token)
        assert st == 200, j
        if today() != day0:
            return
        c47, c01 = row(j, "047"), row(j, "001")
        assert c47["batches"][-1] == 1 and c47["batches"][-4] == 5 and c47["total"] == 6, c47
        assert c47["applied"][-4] == 10, c47
        assert c01["batches"][-1] == 1 and c01["batches"][-3] == 2 and c01["total"] == 3, c01
        assert [c["county"] for c in j["counties"]] == ["001", "047"], j
        st, j = get_json(s.port, "/v1/status/daily?days=60", admin.token)
        assert row(j, "047")["batches"][-41] == 7 and row(j, "047")["total"] == 13, j


if __name__ == "__main__":
    run_tests(globals())
