"""OpenAI-compatible API at /v1: the official SDKs and tools built on them talk to this platform unchanged.

Every call is an ordinary job of the caller's tenant (same key, scopes, quotas, rate limits, queue and engine,
visible in /api/v1/jobs); only the request and response shapes are OpenAI's.
"""
