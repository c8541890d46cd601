"""A real PACS for tests and benchmarks: Orthanc with its DICOMweb plugin, on loopback.

Debian's `orthanc` and `orthanc-dicomweb` packages (scripts/install-test.sh installs them).
Each instance gets a generated configuration, its own storage folder and free ports; data is
loaded through Orthanc's REST API (`POST /instances`), as a modality or another PACS would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.utils.server import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STARTUP_TIMEOUT_S = 60


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int
    directory: Path
    users: dict[str, str]  # empty: no authentication

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self) -> httpx.Client:
        auth = next(iter(self.users.items()), None)
        return httpx.Client(base_url=self.url, auth=auth, timeout=30, trust_env=False)

    def upload(self, files: list[bytes]) -> None:
        with self.client() as http:
            for data in files:
                response = http.post("/instances", content=data)
                response.raise_for_status()
                if response.json().get("Status") not in ("Success", "AlreadyStored"):
                    raise RuntimeError(f"Orthanc refused an instance: {response.text}")

    def stop(self) -> None:
        # Its storage is a temporary folder nothing reads afterwards: no need for Orthanc's
        # graceful stop, which takes seconds.
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if binary is None or not DICOMWEB_PLUGIN.exists():
        raise RuntimeError(
            "Orthanc with its DICOMweb plugin is not installed: run scripts/install-test.sh "
            "(Debian packages orthanc and orthanc-dicomweb)"
        )
    return binary


def start_orthanc(
    directory: Path,
    users: dict[str, str] | None = None,
    port: int | None = None,
    lua: str | None = None,
) -> Orthanc:
    """Orthanc on 127.0.0.1 (`port`, else a free one); basic auth on when `users` are given;
    `lua`: a script of Orthanc's Lua callbacks (its access policy, say)."""
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "storage"
    port = port or free_port()
    config = {
        "Name": f"lingshu-test-{port}",
        "HttpPort": port,
        "DicomPort": free_port(),
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    if lua is not None:
        script = directory / "policy.lua"
        script.write_text(lua)
        config["LuaScripts"] = [str(script)]
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (directory / "orthanc.log").open("ab")
    process = subprocess.Popen(
        [orthanc_binary(), str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=directory
    )
    orthanc = Orthanc(process, port, directory, dict(users or {}))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with orthanc.client() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {directory / 'orthanc.log'}")
            try:
                if http.get("/system").status_code == 200:
                    return orthanc
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not start; see {directory / 'orthanc.log'}")
