"""The egress guard: tenant-aimed URLs never reach internal addresses, whatever their form;
calls connect to the address checked and never follow redirects."""

from __future__ import annotations

import httpx
import pytest

from orchestration import egress
from orchestration.egress import Allowlist, EgressRefused, check_url
from tests.local_http import LocalServer, Reply
from tests.test_integrations_api import LOCAL, tenant  # noqa: F401, F811  (fixture)

NOTHING = Allowlist.parse("")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/hook",  # 127.0.0.1 as one decimal number
        "http://0177.0.0.1/hook",  # octal
        "http://0x7f.1/hook",  # hex, short form
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, mapped
        "http://localhost:9000/hook",  # a name resolving to loopback
        "http://10.0.0.8/hook",
        "http://192.168.1.1/hook",
        "http://172.16.5.4/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "http://0.0.0.0/hook",
        "http://[::]/hook",
        "http://224.0.0.1/hook",
        "http://[fd00:ec2::254]/",  # AWS metadata over IPv6 (unique local)
        "http://[fe80::1]/",
    ],
)
def test_internal_destinations_are_refused(url):
    with pytest.raises(EgressRefused):
        check_url(url, allowlist=NOTHING)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://127.0.0.1/", "javascript:alert(1)"],
)
def test_other_schemes_are_refused(url):
    with pytest.raises(EgressRefused, match="http"):
        check_url(url, allowlist=NOTHING)


def test_credentials_and_hostless_urls_are_refused():
    for url in ("http://user:pw@example.com/", "http:///path", "http://[::1/"):
        with pytest.raises(EgressRefused):
            check_url(url, allowlist=NOTHING)


def test_a_public_address_passes_and_is_pinned():
    target = check_url("https://93.184.215.14:8443/x", allowlist=NOTHING)
    assert (target.address, target.port, target.scheme) == ("93.184.215.14", 8443, "https")


def test_the_allowlist_matches_literal_hosts_or_cidrs():
    literal = Allowlist.parse("127.0.0.1, build.internal")
    assert check_url("http://127.0.0.1:5000/", allowlist=literal).address == "127.0.0.1"
    # Allowing the literal 127.0.0.1 allows no other spelling of it.
    for url in ("http://localhost:5000/", "http://2130706433/", "http://0177.0.0.1/"):
        with pytest.raises(EgressRefused):
            check_url(url, allowlist=literal)
    cidr = Allowlist.parse("127.0.0.0/8")
    assert check_url("http://localhost:5000/", allowlist=cidr).address.startswith("127.")
    with pytest.raises(EgressRefused):
        check_url("http://[::1]:5000/", allowlist=cidr)


def test_the_setting_is_the_default_allowlist():
    # conftest sets BATON_ALLOWED_PRIVATE_HOSTS=127.0.0.1 for the local fake servers.
    assert check_url("http://127.0.0.1:1/").address == "127.0.0.1"
    with pytest.raises(EgressRefused):
        check_url("http://localhost:1/")


def test_the_pinned_client_refuses_at_send_and_keeps_the_host_header():
    server = LocalServer(lambda r: Reply(200, {"host": r.headers.get("host")}))
    try:
        with egress.pinned_client(timeout=5, allowlist=Allowlist.parse("127.0.0.0/8")) as client:
            answer = client.get(f"http://localhost:{server.port}/x")
            assert answer.status_code == 200
            assert answer.json()["host"] == f"localhost:{server.port}"
        refused = pytest.raises(httpx.ConnectError, match="egress refused")
        with egress.pinned_client(timeout=5, allowlist=NOTHING) as client, refused:
            client.get(f"{server.url}/x")
        assert len(server.received) == 1
    finally:
        server.close()


def test_a_redirect_is_not_followed():
    target = LocalServer()
    redirector = LocalServer(lambda _r: Reply(302, {}, {"Location": f"{target.url}/inside"}))
    try:
        with egress.pinned_client(timeout=5) as client:
            answer = client.post(f"{redirector.url}/hook", json={})
        assert answer.status_code == 302
        assert target.received == []
    finally:
        redirector.close()
        target.close()


@pytest.mark.parametrize(
    "base_url", ["http://localhost:9/v1", "http://169.254.169.254/v1", "http://[::1]:9/v1"]
)
def test_an_integration_aimed_inside_is_refused_at_registration(client, tenant, base_url):  # noqa: F811
    response = client.post(
        "/api/v1/integrations", json={**LOCAL, "base_url": base_url}, headers=tenant["headers"]
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "base_url"
