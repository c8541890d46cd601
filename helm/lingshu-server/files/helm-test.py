"""`helm test`: the release answers /health and lists its model on /v1/models with an API key.

Runs in the server's image (Python's standard library only). Environment: LINGSHU_TEST_URL (the
Service), LINGSHU_TEST_MODEL (the name clients use), LINGSHU_TEST_KEY_FILE (the mounted key file,
when API keys are on; its first key is used, never printed)."""

import json
import os
import sys
import urllib.error
import urllib.request


def get(url: str, headers: dict[str, str]) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()[:500].decode("utf-8", "replace")


def first_key(path: str) -> str:
    with open(path, encoding="utf-8") as keys:
        for line in keys:
            key = line.strip()
            if key and not key.startswith("#"):
                return key
    raise SystemExit(f"no API key in {path}")


def main() -> int:
    base = os.environ["LINGSHU_TEST_URL"].rstrip("/")
    model = os.environ["LINGSHU_TEST_MODEL"]
    key_file = os.environ.get("LINGSHU_TEST_KEY_FILE")
    failures = []

    status, body = get(f"{base}/health", {})
    print(f"GET /health: {status} {body}")
    if status != 200:
        failures.append(f"/health answered {status}")

    headers = {"Authorization": f"Bearer {first_key(key_file)}"} if key_file else {}
    status, body = get(f"{base}/v1/models", headers)
    served = [entry["id"] for entry in body["data"]] if status == 200 else []
    print(f"GET /v1/models: {status} {served if status == 200 else body}")
    if model not in served:
        failures.append(f"/v1/models answered {status} without {model!r}")

    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
