"""Push and pull over real HTTP: two phones, merge and conflicts, retries
and deduplication, tokens and roles, encodings, keep-alive and pipelining."""
import os
import re
import socket
import threading
import time

from harness import (APPLIED, DUPLICATE, REJECTED, Device, Server, assign, batch, cli, deflate,
                     edit, iolog_env, metric, pb, pull, push, read_response, report, request,
                     run_tests, store_state)


def test_two_phones_push_pull_and_conflict():
    with Server() as s:
        a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
        rec = report(a)
        st, r = push(s.port, a, batch(a, [rec, report(a)]))
        assert st == 200 and [x.status for x in r.results] == [APPLIED, APPLIED], r
        assert r.server_hlc > 0

        # B is assigned nothing and wrote nothing: it pulls nothing. A's
        # own changes do not come back to A.
        assert len(pull(s.port, b).changes) == 0
        assert len(pull(s.port, a).changes) == 0
        # B may not change a record it does not hold...
        st, r = push(s.port, b, batch(b, [edit(b, rec.record_id, 140, "choice", "low")]))
        assert st == 200 and r.results[0].status == REJECTED, r
        assert r.results[0].code == "not_assigned", r
        # ...until a coordinator assigns it (B then pulls the report).
        assign(s.data, rec.record_id, b)
        p = pull(s.port, b)
        assert len(p.changes) == 1 and p.changes[0].change.create
        b_cursor = p.next_cursor

        # Both edit the risk level having seen only the report: a conflict.
        seen = [(rec.hlc, a.id)]
        high = edit(a, rec.record_id, 140, "choice", "high", seen)
        st, r = push(s.port, a, batch(a, [high]))
        assert st == 200 and r.results[0].status == APPLIED
        # B's stamp later than A's, even in the same millisecond (two
        # phones' clocks then give equal stamps, and the device ids, random
        # here, would decide which value is shown first)
        b.clock = max(b.clock, high.hlc)
        st, r = push(s.port, b, batch(b, [edit(b, rec.record_id, 140, "choice", "urgent", seen)]))
        assert st == 200 and r.results[0].status == APPLIED

        # A now pulls B's edit of its record: the server's merge is what both see.
        p = pull(s.port, a)
        assert len(p.changes) == 1 and p.changes[0].device == b.id
        assert p.changes[0].change.fields[0].value.choice == "urgent"
        assert p.next_cursor > 0 and not p.more
        assert len(pull(s.port, a, cursor=p.next_cursor).changes) == 0
        # B, a writer of the record now, gets A's later edits.
        st, r = push(s.port, a, batch(a, [edit(a, rec.record_id, 142, "text", "Wanjiru")]))
        pb_ = pull(s.port, b, cursor=b_cursor)
        assert [c.change.fields[0].field for c in pb_.changes] == [140, 142]

        # The CLI sees the conflict while the server runs.
        _, out, _ = cli("conflicts", "--data", s.data)
        assert "risk_level" in out and "CONFLICT: 2 values" in out, out
        assert "Urgent" in out and "High" in out
        # the value shown (first) is the one with the later stamp: B's
        lines = out.splitlines()
        at = next(i for i, ln in enumerate(lines) if "risk_level" in ln)
        assert "Urgent" in lines[at + 1] and "High" in lines[at + 2], out
        assert "1 record with open conflicts" in out
        assert s.stop() == 0


def test_retry_after_lost_response_dedupes():
    with Server() as s:
        a = Device(s.data, "phone")
        body = deflate(batch(a, [report(a) for _ in range(20)], seq=1))
        # Send the batch and drop the connection before the answer arrives.
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(("POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                       "Authorization: Bearer %s\r\nContent-Encoding: deflate\r\n\r\n"
                       % (len(body), a.token)).encode() + body)
            c.close()
        # The server finishes a push whose phone went away: the batch is
        # committed (once) before the phone retries.
        deadline = time.time() + 10
        while store_state(s.data)[2] < 20:
            assert time.time() < deadline, "the dropped sends were never committed"
            time.sleep(0.05)
        assert store_state(s.data)[:3:2] == (20, 20)
        # The phone retries: same results, nothing stored twice.
        st, h, b = request(s.port, "POST", "/v1/push", body, {
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "deflate"})
        assert st == 200, b
        r = pb.PushResponse()
        r.ParseFromString(b)
        assert [x.status for x in r.results] == [APPLIED] * 20
        st, h, b2 = request(s.port, "POST", "/v1/push", body, {
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "deflate"})
        r2 = pb.PushResponse()
        r2.ParseFromString(b2)
        assert [x.status for x in r2.results] == [APPLIED] * 20  # the same answer
        entries, _, records, _ = store_state(s.data)
        assert (entries, records) == (20, 20)
        admin = Device(s.data, "admin", role="admin")
        st, _, m = request(s.port, "GET", "/metrics",
                           headers={"Authorization": f"Bearer {admin.token}"})
        m = m.decode()
        # five sends of one batch: applied once, answered from memory after
        assert metric(m, 'shahidi_changes_total{outcome="applied"}') == 20, m
        assert metric(m, "shahidi_batches_total") == 5, m
        assert metric(m, "shahidi_batches_replayed_total") == 4, m

        # A phone that lost an answer may send its changes again in a new
        # batch: each is recognised by (device, change id), stored once.
        b2 = pb.PushBatch()
        b2.ParseFromString(__import__("zlib").decompress(body))
        b2.batch_seq = 2
        fresh = report(a)
        b2.changes.append(fresh)
        st, r3 = push(s.port, a, b2.SerializeToString())
        assert st == 200 and [x.status for x in r3.results] == [DUPLICATE] * 20 + [APPLIED], r3
        assert store_state(s.data)[:3:2] == (21, 21)
        a.next_batch = 3

        # The same batch number with other content: 409, nothing stored.
        before = store_state(s.data)
        st, err = push(s.port, a, batch(a, [report(a)], seq=1))
        assert st == 409 and err["error"] == "batch_seq_reused", err
        assert store_state(s.data) == before


def test_tokens_roles_and_devices():
    with Server() as s:
        a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
        coord = Device(s.data, "coordinator", role="coordinator")
        assert push(s.port, a, batch(a, [report(a)]))[0] == 200
        # A device pushing under another device's id.
        body = batch(b, [report(b)])
        st, err = push(s.port, a, body)
        assert st == 403 and err["error"] == "device_mismatch"
        # Coordinators may not use device routes (yet).
        st, err = push(s.port, coord, batch(coord, [report(coord)]))
        assert st == 403 and err["error"] == "role_not_allowed"
        # Missing, wrong and revoked tokens all get the same 401.
        answers = set()
        for hdrs in [{}, {"Authorization": "Bearer shd_" + "A" * 43},
                     {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer " + "x" * 500}]:
            st, h, b_ = request(s.port, "GET", "/v1/pull", headers=hdrs)
            answers.add((st, b_))
        cli("device", "revoke", "--data", s.data, a.hex)   # while the server runs
        st, h, b_ = request(s.port, "GET", "/v1/pull",
                            headers={"Authorization": f"Bearer {a.token}"})
        answers.add((st, b_))
        assert len(answers) == 1 and list(answers)[0][0] == 401, answers
        st, _ = push(s.port, a, batch(a, [report(a)]))
        assert st == 401
        # healthz needs no token; forms need one.
        assert request(s.port, "GET", "/healthz")[0] == 200
        assert request(s.port, "GET", "/v1/forms")[0] == 401
        st, h, body = request(s.port, "GET", "/v1/forms",
                              headers={"Authorization": f"Bearer {b.token}"})
        forms = pb.FormList()
        forms.ParseFromString(body)
        assert st == 200 and forms.forms[0].form_id == "incident_report"
        assert any(f.name == "incident_county" and len(f.choices) == 47
                   for f in forms.forms[0].fields)


def test_revocation_by_cli_with_the_token_cache():
    """The server checks tokens against a cache its writer builds; the CLI
    writes to the store itself. A revocation by the CLI still takes effect
    on the next request, even when the server's writer has committed on top
    of it in between, and an enrolment by the CLI works at once."""
    def pull_st(s, dev):
        return request(s.port, "GET", "/v1/pull",
                       headers={"Authorization": f"Bearer {dev.token}"})[0]

    with Server() as s:
        a, b = Device(s.data, "phone A"), Device(s.data, "phone B")
        for _ in range(3):  # the cache is built and in use
            assert pull_st(s, a) == 200 and pull_st(s, b) == 200
        assert push(s.port, a, batch(a, [report(a)]))[0] == 200
        cli("device", "revoke", "--data", s.data, a.hex)
        assert push(s.port, b, batch(b, [report(b)]))[0] == 200  # a commit on top
        assert pull_st(s, a) == 401
        assert push(s.port, a, batch(a, [report(a)]))[0] == 401
        for _ in range(3):  # and after the cache has been built again
            assert pull_st(s, b) == 200
            assert pull_st(s, a) == 401
        c = Device(s.data, "phone C")
        assert pull_st(s, c) == 200
        assert push(s.port, c, batch(c, [report(c)]))[0] == 200


def test_routes_and_methods():
    with Server() as s:
        st, h, b = request(s.port, "GET", "/nowhere")
        assert st == 404 and b"not_found" in b
        st, h, b = request(s.port, "GET", "/v1/push")
        assert st == 405 and h["allow"] == "POST" and b"method_not_allowed" in b
        st, h, b = request(s.port, "DELETE", "/healthz")
        assert st == 405 and h["allow"].startswith("GET")
        a = Device(s.data, "phone")
        st, h, b = request(s.port, "GET", "/v1/pull?cursor=abc",
                           headers={"Authorization": f"Bearer {a.token}"})
        assert st == 400 and b"bad_query" in b
        st, h, b = request(s.port, "POST", "/v1/push", b"x", headers={
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "br"})
        assert st == 415


def test_encodings():
    with Server() as s:
        a = Device(s.data, "phone")
        for enc in ["deflate", "gzip", "identity"]:
            for accept in ["deflate", "gzip", "identity"]:
                st, r = push(s.port, a, batch(a, [report(a) for _ in range(5)]), enc, accept)
                assert st == 200 and all(x.status == APPLIED for x in r.results), (enc, r)
        st, h, b = request(s.port, "POST", "/v1/push", deflate(batch(a, [report(a)])), {
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "deflate",
            "Accept-Encoding": "gzip"})
        assert st == 200
        # garbage that claims to be deflate: refused, nothing stored
        before = store_state(s.data)
        st, h, b = request(s.port, "POST", "/v1/push", b"\x78\x9c garbage", {
            "Authorization": f"Bearer {a.token}", "Content-Encoding": "deflate"})
        assert st == 400 and b"bad_compression" in b
        assert store_state(s.data) == before

        # A pull (compressed off the event loop) comes in what the phone
        # accepts, the same changes whatever that is.
        b_ = Device(s.data, "phone B")
        rec = report(a)
        push(s.port, a, batch(a, [rec]))
        assign(s.data, rec.record_id, b_)
        edits = [edit(b_, rec.record_id, 142, "text", f"Wanjiru {i}") for i in range(20)]
        st, r = push(s.port, b_, batch(b_, edits))
        assert st == 200 and all(x.status == APPLIED for x in r.results)
        got = {}
        for accept in ["gzip", "deflate", "identity"]:
            st, h, body = request(s.port, "GET", "/v1/pull?cursor=0", headers={
                "Authorization": f"Bearer {a.token}", "Accept-Encoding": accept})
            assert st == 200
            assert h.get("content-encoding") == (None if accept == "identity" else accept), h
            p = pb.PullResponse()
            p.ParseFromString(body)
            got[accept] = [(c.cursor, c.log_seq, c.change.SerializeToString()) for c in p.changes]
        assert len(got["identity"]) == 20
        assert got["gzip"] == got["deflate"] == got["identity"]


def test_keepalive_and_pipelining():
    with Server() as s:
        a = Device(s.data, "phone")
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        rest = b""
        # a keep-alive sequence: several requests on one connection
        for i in range(3):
            body = deflate(batch(a, [report(a)]))
            sock.sendall(("POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                          "Authorization: Bearer %s\r\nContent-Encoding: deflate\r\n\r\n"
                          % (len(body), a.token)).encode() + body)
            st, h, b, rest = read_response(sock, rest)
            assert st == 200 and h["connection"] == "keep-alive"
        # pipelined: three requests in one write, three answers in order
        bodies = [deflate(batch(a, [report(a)])) for _ in range(2)]
        data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for body in bodies:
            data += ("POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     "Authorization: Bearer %s\r\nContent-Encoding: deflate\r\n\r\n"
                     % (len(body), a.token)).encode() + body
        sock.sendall(data)
        st1, _, b1, rest = read_response(sock, rest)
        st2, _, b2, rest = read_response(sock, rest)
        st3, _, b3, rest = read_response(sock, rest)
        assert (st1, st2, st3) == (200, 200, 200) and b1 == b'{"status":"ok"}\n'
        r = pb.PushResponse()
        r.ParseFromString(b3)
        assert r.batch_seq == 5
        sock.close()
        assert store_state(s.data)[2] == 5


def test_concurrent_pushes_group_commit():
    # The shim holds each commit 20 ms after its meta page is written, so
    # batches arriving meanwhile queue: the writer must take them together.
    metrics = concurrent_pushes([], stall_ms=20)
    commits = metric(metrics, "shahidi_commit_seconds_count")
    batches = metric(metrics, "shahidi_batches_total")
    most = metric(metrics, "shahidi_group_commit_jobs_max")
    print(f"   {batches:.0f} batches in {commits:.0f} commits, at most {most:.0f} in one")
    assert batches == 40 and commits < batches / 2 and most > 1, (batches, commits, most)


def test_backpressure_pauses_instead_of_failing():
    # One batch may wait for the writer and 1 KiB of bodies may be held:
    # reading pauses and resumes, and every push still gets its answer.
    metrics = concurrent_pushes(["--max-queue", "1", "--max-inflight", "1K"], reports=400)
    paused = re.search(r"^shahidi_reads_paused_total (\d+)$", metrics, re.M)
    assert paused and int(paused.group(1)) > 0, metrics


def concurrent_pushes(args, reports=20, stall_ms=0):
    srv = Server(quiet=True, args=args)
    if stall_ms:
        srv.env = iolog_env(os.path.join(srv.tmp.name, "iolog"), stall_ms=stall_ms)
    with srv as s:
        devs = [Device(s.data, f"phone {i}") for i in range(8)]
        errors = []

        def run(d):
            try:
                for _ in range(5):
                    st, r = push(s.port, d, batch(d, [report(d) for _ in range(reports)]))
                    assert st == 200 and all(x.status == APPLIED for x in r.results)
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=run, args=(d,)) for d in devs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert store_state(s.data)[2] == 8 * 5 * reports
        _, out, _ = cli("verify", "--data", s.data)
        assert "hash chain intact" in out
        admin = Device(s.data, "admin", role="admin")
        st, _, m = request(s.port, "GET", "/metrics",
                           headers={"Authorization": f"Bearer {admin.token}"})
        assert st == 200
        return m.decode()


if __name__ == "__main__":
    run_tests(globals())
