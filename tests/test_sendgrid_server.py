"""The local SendGrid-compatible server, driven by the official sendgrid client over real HTTP."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import python_http_client.exceptions as phc
import sendgrid
from sendgrid_fixtures import API_KEY, SHOP, make_mail

from nachfass.core.mail.sendgrid_payload import build_payload
from nachfass.devtools.sendgrid_server import run_sandbox


@pytest.fixture(scope="module")
def sandbox():
    with run_sandbox(api_key=API_KEY) as handle:
        yield handle


@pytest.fixture
def sb(sandbox):
    sandbox.clear()
    sandbox.set_faults(
        latency_ms=0,
        fail_rate_429=0,
        fail_rate_500=0,
        drop_rate=0,
        drop_after_accept_rate=0,
        timeout_rate=0,
        rate_limit_per_s=0,
    )
    return sandbox


def client(url: str, key: str = API_KEY) -> sendgrid.SendGridAPIClient:
    return sendgrid.SendGridAPIClient(api_key=key, host=url)


def payload(i: int = 0) -> dict:
    return build_payload(make_mail(i), SHOP)


def test_accepts_and_stores(sb):
    resp = client(sb.url).send(payload(1))
    assert resp.status_code == 202
    mid = resp.headers["X-Message-Id"]
    assert mid
    [msg] = sb.messages()
    assert msg["message_id"] == mid and msg["payload"] == payload(1)
    with urllib.request.urlopen(sb.url + "/_sandbox/messages") as r:
        over_http = json.loads(r.read())
    assert over_http[0]["message_id"] == mid and "received_at" in over_http[0]
    assert sb.stats()["accepted"] >= 1
    req = urllib.request.Request(sb.url + "/_sandbox/messages", method="DELETE")
    with urllib.request.urlopen(req) as r:
        assert r.status == 204
    assert sb.messages() == []


def test_sandbox_mode_answers_200_and_stores_nothing(sb):
    p = build_payload(make_mail(2), SHOP, sandbox_mode=True)
    resp = client(sb.url).send(p)
    assert resp.status_code == 200
    assert sb.messages() == []


@pytest.mark.parametrize("key", [None, "SG.wrong"])
def test_401_for_missing_or_wrong_key(sb, key):
    c = client(sb.url, key or "x")
    if key is None:
        c.client.request_headers.pop("Authorization")
    with pytest.raises(phc.UnauthorizedError) as info:
        c.send(payload())
    assert json.loads(info.value.body)["errors"][0]["message"]
    assert sb.messages() == []


def _mutations():
    def p():
        return payload(3)

    many = p()
    many["personalizations"] = [{"to": [{"email": f"k{i}@beispiel.example"}]} for i in range(1001)]
    recipients = p()
    recipients["personalizations"][0]["to"] = [{"email": f"k{i}@beispiel.example"} for i in range(1001)]
    dup = p()
    dup["personalizations"][0]["bcc"] = [{"email": dup["personalizations"][0]["to"][0]["email"].upper()}]
    arg_int = p()
    arg_int["custom_args"]["n"] = 1
    arg_big = p()
    arg_big["custom_args"]["big"] = "x" * 10_001
    cats = p()
    cats["categories"] = [f"c{i}" for i in range(11)]
    long_cat = p()
    long_cat["categories"] = ["x" * 256]
    reserved = p()
    reserved["headers"] = {"Reply-To": "x@evil.test"}
    empty_value = p()
    empty_value["content"][1]["value"] = ""
    no_subject = p()
    del no_subject["subject"]
    no_from = p()
    del no_from["from"]
    bad_from = p()
    bad_from["from"] = {"email": "not-an-address"}
    send_at = p()
    send_at["send_at"] = int(time.time()) + 73 * 3600
    html_first = p()
    html_first["content"].reverse()
    no_to = p()
    no_to["personalizations"][0]["to"] = []
    return {
        "personalizations>1000": (many, "personalizations"),
        "recipients>1000": (recipients, "personalizations"),
        "duplicate recipient": (dup, "personalizations.0.bcc.0.email"),
        "custom_arg not string": (arg_int, "custom_args.n"),
        "custom_args>10000 bytes": (arg_big, "custom_args"),
        "11 categories": (cats, "categories"),
        "category>255": (long_cat, "categories.0"),
        "reserved header": (reserved, "headers.Reply-To"),
        "empty content": (empty_value, "content.1.value"),
        "no subject": (no_subject, "subject"),
        "no from": (no_from, "from.email"),
        "bad from": (bad_from, "from.email"),
        "send_at>72h": (send_at, "send_at"),
        "html first": (html_first, "content.0.type"),
        "no to": (no_to, "personalizations.0.to"),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_400_for_rule_violations(sb, case):
    body, field = _mutations()[case]
    with pytest.raises(phc.BadRequestsError) as info:
        client(sb.url).send(copy.deepcopy(body))
    err = json.loads(info.value.body)["errors"][0]
    assert err["field"] == field and err["message"]
    assert "help" in err
    assert sb.messages() == []


def test_send_at_within_72h_accepted(sb):
    p = payload(4)
    p["send_at"] = int(time.time()) + 71 * 3600
    assert client(sb.url).send(p).status_code == 202


def test_413_for_more_than_30mb(sb):
    p = payload(5)
    p["content"][1]["value"] = "x" * (30 * 1024 * 1024 + 10)
    with pytest.raises(phc.PayloadTooLargeError):
        client(sb.url).send(p)


def test_429_carries_rate_limit_headers(sb):
    sb.set_faults(fail_rate_429=1.0)
    with pytest.raises(phc.TooManyRequestsError) as info:
        client(sb.url).send(payload())
    headers = info.value.headers
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Limit"]) > 0
    assert 0 <= int(headers["X-RateLimit-Reset"]) - time.time() <= 2


def test_real_rate_limit_window(sb):
    sb.set_faults(rate_limit_per_s=3)
    statuses = []
    for i in range(6):
        try:
            statuses.append(client(sb.url).send(payload(i)).status_code)
        except phc.TooManyRequestsError:
            statuses.append(429)
    assert 202 in statuses and 429 in statuses


def test_500_and_faults_endpoint(sb):
    req = urllib.request.Request(
        sb.url + "/_sandbox/faults",
        data=json.dumps({"fail_rate_500": 1}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        assert json.loads(r.read())["fail_rate_500"] == 1.0
    with pytest.raises(phc.InternalServerError):
        client(sb.url).send(payload())
    bad = urllib.request.Request(sb.url + "/_sandbox/faults", data=b'{"nope": 1}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad)
    assert info.value.code == 400


@pytest.mark.parametrize("fault,stored", [("drop_rate", 0), ("drop_after_accept_rate", 1)])
def test_dropped_connection(sb, fault, stored):
    sb.set_faults(**{fault: 1.0})
    with pytest.raises((ConnectionError, OSError)):
        client(sb.url).send(payload(6))
    assert len(sb.messages()) == stored


def test_timeout_fault_stores_then_never_answers(sb):
    sb.set_faults(timeout_rate=1.0, timeout_s=1.0)
    c = client(sb.url)
    c.client.timeout = 0.2
    with pytest.raises(TimeoutError):
        c.send(payload(7))
    assert len(sb.messages()) == 1


def test_keep_alive(sb):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=5)
    for i in range(3):
        body = json.dumps(payload(i)).encode()
        conn.request(
            "POST",
            "/v3/mail/send",
            body=body,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202 and not resp.will_close
    conn.close()


def test_command_line_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nachfass.cli.main",
            "sandbox",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--latency-ms",
            "1",
            "--store",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stdout.readline()
        assert client(f"http://127.0.0.1:{port}").send(payload(8)).status_code == 202
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats") as r:
            assert json.loads(r.read())["accepted"] == 1
        lines = (tmp_path / "messages.ndjson").read_text().splitlines()
        assert json.loads(lines[0])["payload"]["custom_args"]["send_id"] == make_mail(8).send_id
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v3/mail/send HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v3/mail/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 60000\r\n\r\n"
        + b"[" * 60000,
        b"POST /_sandbox/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /_sandbox/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"[" * 5000,
        b"POST /v3/recipients/erasejob HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        + b"Content-Length: 4\r\n\r\n\xff\xfe[]",
        b"GET /%C3%A4 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /v3/mail/send HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_malformed_requests_get_4xx(raw):
    with run_sandbox() as handle, socket.create_connection(("127.0.0.1", handle.port), timeout=5) as sock:
        sock.sendall(raw)
        answer = sock.recv(4096)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
