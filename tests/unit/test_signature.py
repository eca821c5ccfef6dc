"""Signature checks against the public vector from Sinch's SDK tests."""

from __future__ import annotations

import pytest

from api import signature
from tests import payloads as p

VECTOR_SECRET = "foo_secret1234"
VECTOR_NONCE = "01FJA8B4A7BM43YGWSG9GBV067"
VECTOR_TIMESTAMP = "1634579353"
VECTOR_SIGNATURE = "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        signature.SIGNATURE: VECTOR_SIGNATURE,
        signature.NONCE: VECTOR_NONCE,
        signature.TIMESTAMP: VECTOR_TIMESTAMP,
        signature.ALGORITHM: "HmacSHA256",
    }
    return {**headers, **changes}


def test_sign_reproduces_the_sdk_vector() -> None:
    body = p.seed("sdk_signature_vector_body.json")
    assert signature.sign(VECTOR_SECRET, body, VECTOR_NONCE, VECTOR_TIMESTAMP) == VECTOR_SIGNATURE


def test_verify_accepts_the_vector_at_its_time_with_any_configured_secret() -> None:
    body = p.seed("sdk_signature_vector_body.json")
    now = int(VECTOR_TIMESTAMP) + 10
    signature.verify([VECTOR_SECRET], body, vector_headers(), now, 300)
    signature.verify(["new-secret", VECTOR_SECRET], body, vector_headers(), now, 300)


@pytest.mark.parametrize(
    ("body_change", "headers", "now_offset", "message"),
    [
        (b" ", {}, 0, "does not match"),  # one byte more: re-serialised JSON would fail the same
        (b"", {signature.NONCE: "01FJA8B4A7BM43YGWSG9GBV068"}, 0, "does not match"),
        (b"", {signature.ALGORITHM: "HmacSHA512"}, 0, "unsupported"),
        (b"", {}, 301, "from our clock"),
        (b"", {}, -301, "from our clock"),
        (b"", {signature.SIGNATURE: ""}, 0, "missing"),
    ],
)
def test_verify_refuses(body_change: bytes, headers: dict, now_offset: int, message: str) -> None:
    body = p.seed("sdk_signature_vector_body.json") + body_change
    with pytest.raises(signature.SignatureError, match=message):
        signature.verify(
            [VECTOR_SECRET],
            body,
            vector_headers(**headers),
            int(VECTOR_TIMESTAMP) + now_offset,
            300,
        )


def test_algorithm_header_is_optional_and_case_insensitive() -> None:
    body = p.seed("sdk_signature_vector_body.json")
    headers = vector_headers()
    del headers[signature.ALGORITHM]
    signature.verify([VECTOR_SECRET], body, headers, int(VECTOR_TIMESTAMP), 300)
    signature.verify(
        [VECTOR_SECRET],
        body,
        vector_headers(**{signature.ALGORITHM: "hmacsha256"}),
        int(VECTOR_TIMESTAMP),
        300,
    )
