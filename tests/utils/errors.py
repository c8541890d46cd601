"""Assertions on OpenAI-shaped error responses."""

from __future__ import annotations


def assert_openai_error(response, status: int, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in error["message"]
    if status < 500:
        assert error["type"] in {"invalid_request_error", "not_found_error", "rate_limit_error"}
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error
