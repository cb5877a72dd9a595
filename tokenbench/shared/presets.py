"""Provider presets: a *mode* is a default base URL, model, API-key variable and headers, any of which
a flag can override (shared/endpoint.py). Nothing here holds a secret: API keys are looked up by the
worker in its own environment (``api_key_from_env``) and never written to Redis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tokenbench.shared.errors import UsageProblem

# Checked first by every worker, whatever the mode; `tokenbench run --api-key` sets it for the
# worker processes it starts.
GENERIC_API_KEY_ENV = "TOKENBENCH_API_KEY"


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str | None
    model: str | None
    api_key_env: str | None
    api_key_required: bool = False
    headers: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "openrouter": Preset(
        name="openrouter",
        base_url="https://openrouter.ai/api/v1",
        model="openrouter/auto",
        api_key_env="OPENROUTER_API_KEY",
        api_key_required=True,
        # OpenRouter's app attribution headers (X-Title is the older name of X-OpenRouter-Title).
        headers={
            "HTTP-Referer": "https://github.com/tokenbench/tokenbench",
            "X-OpenRouter-Title": "tokenbench",
            "X-Title": "tokenbench",
        },
    ),
    "minimax": Preset(
        name="minimax",
        base_url="http://localhost:8000/v1",
        model="MiniMaxAI/MiniMax-M2.5",
        api_key_env="MINIMAX_API_KEY",
    ),
    "openai": Preset(name="openai", base_url=None, model=None, api_key_env="OPENAI_API_KEY"),
    # The base URL of the mock is only known once `run` has started it on a free port.
    "mock": Preset(name="mock", base_url=None, model="mock-model", api_key_env=None),
}
MODES = tuple(PRESETS)


def api_key_env_names(mode: str) -> list[str]:
    """Environment variables a worker reads for the API key, in order."""
    preset_env = PRESETS[mode].api_key_env if mode in PRESETS else None
    return [GENERIC_API_KEY_ENV] + ([preset_env] if preset_env else [])


def api_key_from_env(mode: str, environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in api_key_env_names(mode):
        if env.get(name):
            return env[name]
    return None


def require_api_key(mode: str, api_key: str | None) -> None:
    """Fail before anything starts when the mode needs a key and none is given."""
    if PRESETS[mode].api_key_required and not api_key:
        names = " or ".join(api_key_env_names(mode))
        raise UsageProblem(f"--mode {mode} needs an API key: pass --api-key or set {names}")
