"""Server settings: one validated class; CLI flags and LINGSHU_* variables derive from it."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lingshu_server.core.identity_settings import (
    ASYMMETRIC_ALGORITHMS,
    check_identity_settings,
    tenant_quotas_value,
)
from lingshu_server.core.image_budget import IMAGE_FACTOR, QWEN_MIN_PIXELS
from lingshu_server.core.quotas import TenantQuota


def _list_value(value: Any) -> Any:
    """A list setting from the environment: a JSON list, a comma-separated list or one value.

    (Kubernetes users write `LINGSHU_SERVED_MODEL_NAME=Lingshu-7B`, not a JSON list.)
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):  # one JSON object (a --lora-modules entry), commas and all
        return [text]
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass  # not JSON after all: let the comma rule and validation speak
    return [item.strip() for item in text.split(",") if item.strip()]


class LoraModule(BaseModel):
    """One LoRA adapter: the name clients put in `model`, its directory, and the base model it
    is listed under (default: the first served name)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^\S+$")
    path: Path
    base_model_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """`name=path` or a JSON object, as vLLM's --lora-modules takes them."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError(f"lora_modules entry {text!r} is not valid JSON") from None
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise ValueError(
                f"lora_modules entry {text!r} must be NAME=PATH or a JSON object with "
                '"name" and "path"'
            )
        return {"name": name, "path": path}


class Settings(BaseSettings):
    """Everything the server can be told. Each field is a `--flag` and a `LINGSHU_FLAG` variable."""

    # enable_decoding=False: list values from the environment go through _list_value, not JSON only
    model_config = SettingsConfigDict(
        env_prefix="LINGSHU_", extra="ignore", protected_namespaces=(), enable_decoding=False
    )

    model: str | None = Field(
        default=None,
        description="Model directory or Hugging Face id of a Qwen2.5-VL checkpoint "
        "(Lingshu-7B, Lingshu-32B). Required for `serve`; `demo` builds its own.",
    )
    served_model_name: list[str] | None = Field(
        default=None,
        description="Name(s) clients use in the `model` field. The first is reported by "
        "/v1/models. Default: the model directory's name, or the id as given.",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="GPUs per model replica that split each layer (tensor parallel).",
    )
    pipeline_parallel_size: int = Field(
        default=1, ge=1, description="Pipeline stages (use with the ray backend across nodes)."
    )
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        default=None,
        description="vLLM's executor for parallel workers: 'mp' on one host, 'ray' across nodes. "
        "Default: vLLM chooses.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weight and activation dtype; 'auto' uses the checkpoint's."
    )
    max_model_len: int | None = Field(
        default=None,
        ge=256,
        description="Context length (prompt + image tokens + completion). Default: the model's.",
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Fraction of each GPU's memory vLLM may use for weights and KV cache.",
    )
    max_num_seqs: int | None = Field(
        default=None, ge=1, description="Most sequences batched at once. Default: vLLM's."
    )
    enforce_eager: bool = Field(
        default=False, description="Disable CUDA graphs (less memory, slower decode)."
    )
    # ---- engine knobs GPU operators tune (vLLM's flags of the same names)
    quantization: str | None = Field(
        default=None,
        description="Weight quantization method (vLLM's: awq, gptq, fp8, bitsandbytes, ...). "
        "Default: what the checkpoint's config says.",
    )
    kv_cache_dtype: str = Field(
        default="auto",
        description="KV cache data type (vLLM's: auto, fp8, fp8_e4m3, fp8_e5m2, ...); fp8 "
        "halves the cache's memory. 'auto': the model's dtype.",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens the engine processes in one step (prefill chunks included). "
        "Default: vLLM's.",
    )
    enable_prefix_caching: bool | None = Field(
        default=None,
        description="Reuse the KV cache of prompt prefixes shared between requests. "
        "Default: vLLM's (on).",
    )
    enable_chunked_prefill: bool | None = Field(
        default=None,
        description="Split long prompts into chunks batched with decoding. Default: vLLM's (on).",
    )
    swap_space: float | None = Field(
        default=None,
        gt=0,
        description="GiB of CPU memory for KV cache blocks moved off the GPU (vLLM 0.32's KV "
        "offloading, `kv_offloading_size`, which replaced the old swap space). Default: none.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        description="Random seed of the engine (requests without a `seed`). Default: vLLM's (0).",
    )
    mm_processor_cache_gb: float | None = Field(
        default=None,
        ge=0,
        description="GiB of processed images and videos cached for reuse by repeated inputs "
        "(0: off). Default: vLLM's (4).",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vLLM AsyncEngineArgs field, as a JSON object, e.g. "
        "'{\"max_logprobs\": 40}'. Checked before the engine loads: an unknown field, a wrong "
        "type, or a field a flag above sets is refused.",
        json_schema_extra={"metavar": "JSON"},
    )
    lora_modules: list[LoraModule] = Field(
        default_factory=list,
        description="LoRA adapters served beside the base model, chosen by `model`: "
        "NAME=PATH, or vLLM's JSON form "
        '\'{"name": NAME, "path": PATH, "base_model_name": BASE}\'. Checked at start-up.',
        json_schema_extra={"metavar": "NAME=PATH"},
    )
    max_images_per_request: int = Field(
        default=4, ge=0, description="Most images accepted in one request, across all turns."
    )
    min_pixels: int | None = Field(
        default=None,
        ge=QWEN_MIN_PIXELS,
        description="Smallest pixel count the model's processor brings an image to (28x28 "
        "pixels make one image token). Default: the checkpoint's (preprocessor_config.json).",
    )
    max_pixels: int | None = Field(
        default=None,
        ge=QWEN_MIN_PIXELS,
        description="Largest pixel count the model's processor brings an image to; this bounds "
        "image tokens. Default and upper bound: the checkpoint's (preprocessor_config.json).",
    )
    low_detail_max_pixels: int = Field(
        default=256 * IMAGE_FACTOR * IMAGE_FACTOR,
        ge=QWEN_MIN_PIXELS,
        description="Pixel budget of images sent with `detail: low` (default 256 image tokens).",
    )
    max_image_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest encoded image (after base64 decoding) accepted, in bytes.",
    )
    max_request_image_bytes: int = Field(
        default=96 * 1024 * 1024,
        ge=1024,
        description="Largest total of encoded image bytes in one request.",
    )
    max_image_pixels: int = Field(
        default=150_000_000,
        ge=QWEN_MIN_PIXELS,
        description="Largest decoded image (width x height) accepted; larger ones are refused "
        "from their header, before decoding (decompression bombs).",
    )
    prepared_image_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory (MiB) for recent images, decoded and resized: a follow-up question "
        "re-sends its conversation's images, and an image seen recently is not decoded again. "
        "0 turns it off.",
    )
    dicom_default_ct_window: Literal["lung", "mediastinum", "bone", "brain", "abdomen"] = Field(
        default="mediastinum",
        description="CT window used when a DICOM file names none and the request asks none.",
    )
    max_videos_per_request: int = Field(
        default=1,
        ge=0,
        description="Most videos (video_url parts) accepted in one request, across all turns. "
        "0 turns video input off.",
    )
    max_video_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest encoded video (after base64 decoding; for a DICOMweb series, its "
        "chosen slices together) accepted, in bytes.",
    )
    max_video_frames: int = Field(
        default=256,
        ge=2,
        description="Most frames of one video the model sees (a request's nframes, and the "
        "frames sampled at its fps, are clamped to this; qwen-vl-utils' own cap is 768).",
    )
    max_video_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest video accepted, in seconds of source time (longer ones get a 400).",
    )
    video_decode_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds allowed to probe and decode one video in the worker pool; beyond "
        "it the request gets a 400.",
    )
    allowed_image_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (host or host:port) whose http(s) image URLs may be fetched. Empty: "
        "http(s) image URLs are refused.",
    )
    image_fetch_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to fetch one http(s) image URL."
    )
    local_image_dir: Path | None = Field(
        default=None,
        description="Directory that file:// image URLs may read from (nothing outside it). "
        "Unset: file:// URLs are refused.",
    )
    # ---- DICOMweb (PACS) image sources
    dicomweb_urls: list[str] = Field(
        default_factory=list,
        description="DICOMweb base URLs (e.g. https://pacs.example/dicom-web) whose WADO-RS "
        "series and instance URLs may be sent as image URLs. Empty: DICOMweb is off.",
    )
    dicomweb_auth: list[str] = Field(
        default_factory=lambda: ["none"],
        description="How to sign in to the PACS: one entry for all --dicomweb-urls, or one per "
        "URL in the same order. 'none'; 'basic:FILE' (FILE holds user:password); 'bearer:FILE' "
        "(FILE holds a token); 'forward' (the caller's X-DICOMweb-Authorization header is sent "
        "as Authorization, so the PACS decides what each user may see). Files are re-read "
        "when they change.",
    )
    dicomweb_timeout: float = Field(
        default=30.0, gt=0, description="Seconds allowed for one PACS request (metadata or image)."
    )
    dicomweb_connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds allowed to connect to the PACS."
    )
    dicomweb_cache_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=0,
        description="Bytes of fetched DICOM instances and series metadata kept in memory, so "
        "follow-up questions do not refetch (per caller: API key and forwarded credential). "
        "0: no cache.",
    )
    dicomweb_cache_entries: int = Field(
        default=2048, ge=0, description="Most entries in the DICOMweb cache."
    )
    dicomweb_cache_ttl: float = Field(
        default=600.0, gt=0, description="Seconds a DICOMweb cache entry is served."
    )
    # Reports (/v1/reports)
    report_patient_id_system: str | None = Field(
        default=None,
        description="FHIR identifier system (a URI, e.g. urn:oid:1.2.3 of the hospital's "
        "medical record numbers) of the DICOM PatientID, for a report's subject when the "
        "request names none. Unset: the identifier has the PatientID and its type (MR) only.",
    )
    report_draft_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a drafted report (with its SR) is kept in the database of stored "
        "state for its explicit second step (POST /v1/reports/{id}/store), on any replica.",
    )
    fhir_urls: list[str] = Field(
        default_factory=list,
        description="FHIR R4 base URLs (e.g. https://ehr.example/fhir) a report's Bundle may be "
        "POSTed to, as a transaction (a request's `fhir_url` names one). Empty: reports are "
        "posted nowhere.",
    )
    fhir_auth: list[str] = Field(
        default_factory=lambda: ["none"],
        description="How to sign in to the FHIR servers: one entry for all --fhir-urls, or one "
        "per URL in the same order, as --dicomweb-auth: 'none', 'basic:FILE', 'bearer:FILE', or "
        "'forward' (the caller's X-FHIR-Authorization header is sent as Authorization).",
    )
    fhir_timeout: float = Field(
        default=30.0, gt=0, description="Seconds allowed for posting one Bundle to a FHIR server."
    )

    @model_validator(mode="after")
    def _remote_bases_checked(self) -> Settings:
        _check_bases("dicomweb", self.dicomweb_urls, self.dicomweb_auth)
        _check_bases("fhir", self.fhir_urls, self.fhir_auth)
        return self

    max_tokens_cap: int = Field(
        default=4096,
        ge=1,
        description="Most completion tokens one choice may ask for; larger `max_tokens` get a 400.",
    )
    image_workers: int = Field(
        default=2,
        ge=1,
        description="Threads for a request's CPU work, off the event loop: image decoding and "
        "resizing, chat template and tokenization, structured-output grammars.",
    )
    api_keys: str | None = Field(
        default=None,
        description="Comma-separated API keys accepted as `Authorization: Bearer <key>`.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="File with one API key per line (blank lines and # comments ignored); "
        "re-read when it changes, so keys rotate without a restart.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve /v1 without API keys on a non-loopback address (refused otherwise).",
    )
    # ---- Identity: OpenID Connect tokens, tenants and quotas, mutual TLS, /metrics
    oidc_issuers: list[str] = Field(
        default_factory=list,
        description="OpenID Connect issuers whose JWT access tokens are accepted as "
        "`Authorization: Bearer` beside the API keys: each token's `iss`, exactly (e.g. "
        "https://keycloak.example/realms/hospital). Signing keys come from the issuer's "
        "/.well-known/openid-configuration. https, or http on a loopback address. Empty: no "
        "tokens.",
        json_schema_extra={"metavar": "URL"},
    )
    oidc_audiences: list[str] = Field(
        default_factory=list,
        description="`aud` values a token must name one of (required with --oidc-issuers).",
    )
    oidc_roles_claim: str = Field(
        default="scope",
        description="Dotted path of the claim holding a token's roles or scopes: `scope` (a "
        "space-separated string), `roles` (Entra ID), `realm_access.roles` (Keycloak).",
    )
    oidc_required_roles: list[str] = Field(
        default_factory=list,
        description="Roles (or scopes) a token must all hold, at --oidc-roles-claim; without "
        "them the answer is 403. Empty: any valid token.",
    )
    oidc_tenant_claim: str | None = Field(
        default=None,
        description="Dotted path of the claim naming a token's tenant (`azp`, `client_id`, "
        "`tid`, `groups`: a list gives its first entry); a token without it is refused (403). "
        "Unset: each token subject is its own tenant.",
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: list(ASYMMETRIC_ALGORITHMS),
        description="JWS algorithms accepted, asymmetric only (RS*, PS*, ES*, EdDSA); `none` "
        "and HS* are always refused.",
    )
    oidc_leeway: float = Field(
        default=30.0, ge=0, le=300, description="Seconds of clock skew allowed for exp/nbf/iat."
    )
    oidc_jwks_refresh: float = Field(
        default=600.0,
        ge=1,
        description="Seconds between fetches of each issuer's signing keys (JWKS).",
    )
    oidc_jwks_min_refresh: float = Field(
        default=10.0,
        ge=0,
        description="A token signed by an unknown key (`kid`) fetches the issuer's keys again, "
        "at most once per this many seconds (forged kids cannot hammer the provider).",
    )
    oidc_http_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds allowed for one request to an issuer (discovery, keys); a provider "
        "that does not answer in time leaves the cached keys in use.",
    )
    oidc_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) trusted for the issuers' https. Default: the system's.",
    )
    oidc_playground_client_id: str | None = Field(
        default=None,
        description="A public client of the first issuer for the playground's 'Sign in' "
        "(authorization code with PKCE; redirect URI: this server's /playground). Unset: the "
        "playground takes a pasted key or token only.",
    )
    oidc_playground_scope: str = Field(
        default="openid",
        description="Scopes the playground asks for when it signs in (Entra ID: "
        "`openid api://APP-ID/.default`).",
    )
    oidc_playground_resource: str | None = Field(
        default=None,
        description="`resource` (RFC 8707) the playground asks a token for, for providers that "
        "pick the audience that way. Unset: none sent.",
    )
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict,
        description="Quotas per tenant, as a JSON object: tenant -> {requests_per_minute, "
        "tokens_per_minute, tokens_per_day, concurrent_requests}; `*` applies to every other "
        "tenant. Counted in the --database-url database, shared by every replica, when one "
        "is set (concurrent_requests per replica); else in this replica's memory. Over quota: "
        "429 with Retry-After and OpenAI's x-ratelimit-* headers.",
        json_schema_extra={"metavar": "JSON"},
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="Serve HTTPS with this certificate chain (PEM); re-read when it changes.",
    )
    tls_key_file: Path | None = Field(
        default=None, description="Private key (PEM) of --tls-cert-file; re-read with it."
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that client certificates must chain to (mutual TLS); "
        "re-read when it changes.",
    )
    tls_client_auth: Literal["none", "optional", "required"] = Field(
        default="none",
        description="Client certificates: 'required' (no TLS connection without one), "
        "'optional' (checked when sent), or 'none'. A verified certificate identifies the "
        "caller without a key or token.",
    )
    tls_tenant_attribute: Literal["CN", "O", "OU"] | None = Field(
        default=None,
        description="Subject attribute of a client certificate that names its tenant. Unset: "
        "each certificate subject is its own tenant.",
    )
    metrics_auth: Literal["open", "key", "token"] = Field(
        default="open",
        description="Who may read /metrics: 'open' (anyone), 'key' (any credential the API "
        "accepts: key, token or client certificate), 'token' (a token holding --metrics-role).",
    )
    metrics_role: str | None = Field(
        default=None,
        description="Role (at --oidc-roles-claim) a token needs for /metrics with "
        "--metrics-auth token.",
    )

    @field_validator("tenant_quotas", mode="before")
    @classmethod
    def _tenant_quotas_json(cls, value: Any) -> Any:
        return tenant_quotas_value(value)

    @field_validator(
        "oidc_tenant_claim",
        "oidc_playground_client_id",
        "oidc_playground_resource",
        "metrics_role",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """`LINGSHU_OIDC_TENANT_CLAIM=` (Compose's empty default) means unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _identity_checked(self) -> Settings:
        check_identity_settings(self)
        return self

    max_request_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted, enforced while reading (413 beyond).",
    )
    max_file_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Largest upload accepted by POST /v1/files (the whole multipart body), "
        "enforced while it streams to the database (413 beyond); it replaces "
        "--max-request-bytes for that route only.",
    )
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Requests generating in the engine at once."
    )
    max_queued_requests: int = Field(
        default=256,
        ge=0,
        description="Requests waiting for a generation slot; beyond this, 503 with Retry-After.",
    )
    rate_limit_per_key: float | None = Field(
        default=None,
        gt=0,
        description="Requests per minute allowed per API key, token subject or client "
        "certificate (429 with Retry-After beyond). Default: unlimited.",
    )
    request_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a request may generate before it is cut short (finish_reason "
        "'length' for what was generated). Default: no deadline.",
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, seconds in-flight requests get to finish before exit.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (browser apps). Default: none (CORS closed).",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Log line format: 'text' (lines for a person), 'json' (one JSON object a "
        "line, for log collectors), or 'auto': text when standard error is a terminal, JSON "
        "otherwise.",
    )
    audit_log_file: Path | None = Field(
        default=None,
        description="Append one JSON line per request (ids, key id, status, tokens, SHA-256 of "
        "each image) to this file. Never prompt text or image bytes.",
    )
    # Stored state: stored responses and conversations (and what later builds on them).
    store_responses: bool = Field(
        default=False,
        description="Store each /v1/responses answer when the request does not say (OpenAI's "
        "`store`). Off by default: a stored prompt is patient data. A request's own `store` "
        "always wins; `previous_response_id` and conversations need stored responses.",
    )
    store_ttl: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="Seconds a stored response or conversation is kept after it was last "
        "written; a background sweeper deletes it, and its images, after that.",
    )
    file_ttl: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="Seconds an uploaded file (and a batch's output and error files) is kept "
        "after it was created; a background sweeper deletes it after that.",
    )
    state_dir: Path = Field(
        default=Path("~/.local/state/lingshu-server"),
        description="Folder of the embedded database (SQLite, `lingshu.db`) when no "
        "--database-url is given. One replica only: give it a persistent volume.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database for stored state, shared by every replica: "
        "postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB. Unset: SQLite in --state-dir. "
        "Migrations run at start-up; never logged.",
    )
    # The Batch API: lines of a batch run below people, a bounded number at a time.
    batch_max_in_flight: int = Field(
        default=8,
        ge=1,
        description="Lines of a batch this replica runs at once (at most half of "
        "--max-concurrent-requests). Each is an engine request at --batch-priority: interactive "
        "requests overtake the waiting ones, and the running ones share each engine step with "
        "them.",
    )
    batch_priority: int = Field(
        default=10,
        ge=1,
        description="vLLM scheduling priority of a batch's lines (interactive requests run at "
        "0; a lower value is served first). Needs the engine's `priority` scheduling policy, "
        "the server's default.",
    )
    batch_lease_s: float = Field(
        default=30.0,
        gt=1,
        description="Seconds a replica's claim on a running batch lasts without a heartbeat; "
        "a batch whose replica died is taken over by another after this.",
    )
    # Connections: what a slow, careless or hostile client may hold before the app sees it.
    body_read_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request body may take to arrive in full (408 beyond).",
    )
    header_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request line and headers may take to arrive, and a connection "
        "may stay idle before its first request (closed beyond). As nginx's default: a client "
        "busy in its own event loop (encoding large images) is not cut off; --max-connections "
        "bounds what slow clients may hold.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request line plus headers accepted (431 beyond).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open client connections served at once; requests on connections beyond "
        "get 503 with Retry-After.",
    )
    docs: bool | None = Field(
        default=None,
        description="Serve /openapi.json, /docs and /redoc (public, no key). Default: on when "
        "listening on a loopback address, off otherwise.",
    )
    playground: bool = Field(
        default=True,
        description="Serve the playground page at /playground: try images, windows and "
        "questions in a browser. The page is static and public; its API calls carry the key "
        "typed into it.",
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server and the engine."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _lists_from_text(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if list in {typing.get_origin(arg) for arg in (annotation, *typing.get_args(annotation))}:
            return _list_value(value)
        return value

    @field_validator("engine_args", mode="before")
    @classmethod
    def _engine_args_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"engine_args is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("engine_args must be a JSON object, e.g. '{\"max_logprobs\": 40}'")
        return value

    @model_validator(mode="after")
    def _pixels_ordered(self) -> Settings:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self

    @property
    def served_model_names(self) -> list[str]:
        if self.served_model_name:
            return list(self.served_model_name)
        if self.model is None:
            return []
        path = Path(self.model)
        return [path.name] if path.is_dir() else [self.model]


def _check_bases(name: str, urls: list[str], auth: list[str]) -> None:
    """Base URLs of remote systems (PACS, FHIR servers) and how to sign in to each."""
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError(f"{name}_urls entry {url!r} must be http(s)://host[:port]/path")
        if parts.query or parts.fragment:
            raise ValueError(f"{name}_urls entry {url!r} must not have a query")
    if len(auth) != 1 and len(auth) != len(urls):
        raise ValueError(f"{name}_auth needs one entry, or one per {name}_urls entry")
    for entry in auth:
        mode, _, path = entry.partition(":")
        if mode in ("none", "forward") and not path:
            continue
        if mode not in ("basic", "bearer") or not path:
            raise ValueError(
                f"{name}_auth entry {entry!r} must be none, forward, basic:FILE or bearer:FILE"
            )
