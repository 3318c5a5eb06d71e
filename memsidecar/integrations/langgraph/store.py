"""A LangGraph `BaseStore` on the sidecar: items in the kv block, search vectors in semantic.

    from memsidecar.integrations.langgraph.store import MemSidecarStore

    with MemSidecarStore.from_env(index={"dims": 256, "fields": ["text"]}) as store:
        graph = builder.compile(store=store)

Mapping (docs/integrations/langgraph-store.md has the full story):

- Every item is one kv key in one sidecar namespace (`namespace=`, default
  "langgraph-store"). The key is each namespace label escaped and followed by `/`, then
  `/` and the escaped item key: ("users", "a/b"), "k%1" -> "users/a%2Fb//k%251". Escaping
  `%`, `/` and NUL keeps labels free of `/`, so a namespace prefix is a kv key prefix and
  the first `//` always ends the namespace.
- The kv value is a JSON string (exact JSON numbers, unlike the Struct-based json type)
  holding the item's value, created_at, TTL and the ids of its semantic records.
- With an index, each indexed text is a semantic record in the same-named semantic
  namespace, embedded by the sidecar; its metadata names the kv key, and its tags (one
  hash per namespace prefix) let a search stay under a namespace prefix on the server.

This module is the `BaseStore` itself (validation, batching, writes, search, listing);
the key layout is in `store_keys.py`, the kv envelope and TTL in `store_items.py`,
and filter semantics in `store_filters.py`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import grpc
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from memsidecar.client import (
    AsyncMemSidecar,
    ConflictError,
    InvalidArgumentError,
    MemSidecar,
)
from memsidecar.client.blocks.kv import Entry
from memsidecar.integrations.bridge import Adapter, ClientBridge, on_own_client
from memsidecar.integrations.langgraph.store_filters import (
    FILTER_OPERATORS,
    _check_count,
    _check_filter,
    _does_match,
    _matches,
)
from memsidecar.integrations.langgraph.store_items import (
    _check_ttl,
    _envelope,
    _seconds,
    _Stored,
)
from memsidecar.integrations.langgraph.store_keys import (
    _after,
    _prefix,
    _prefix_tags,
    _tag,
    decode_key,
    encode_key,
)

__all__ = ["FILTER_OPERATORS", "MemSidecarStore", "decode_key", "encode_key"]

DEFAULT_NAMESPACE = "langgraph-store"
# The sidecar's defaults (blocks.kv.max_key_bytes, blocks.semantic.max_top_k / max_tags);
# pass the configured values when a sidecar changes them.
DEFAULT_MAX_KEY_BYTES = 512
DEFAULT_MAX_CANDIDATES = 1000
MAX_INDEXED_DEPTH = 64
# Per-RPC caps of the kv block (blocks.kv.max_scan_limit / max_multiget_keys defaults).
_PAGE = 1000
# A compare-and-set write re-reads and retries on conflict. Every conflict means another
# write went through, so N writers of one item all finish within N rounds; this bounds it.
_CAS_ATTEMPTS = 100
_PROBE_ID = "langgraph-store-dims-probe"


class MemSidecarStore(Adapter, BaseStore):
    """A LangGraph store whose items live in a memsidecar sidecar.

    `client` is a `MemSidecar` (sync; `batch` and `abatch` both work) or an
    `AsyncMemSidecar` (`abatch` on its event loop; `batch` from other threads, as LangGraph
    does for sync nodes of an async run). `index={"dims": N, "fields": [...]}` turns on
    semantic search, embedded by the sidecar's semantic block: `dims` must be the dimension
    of the embedder the sidecar binds `namespace` to. `ttl` is LangGraph's TTLConfig
    (minutes; `refresh_on_read`, `default_ttl`); expiry itself is the sidecar's.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        client: MemSidecar | AsyncMemSidecar,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        self._bridge = ClientBridge(client)
        self._client = self._bridge.aio
        self.namespace = namespace
        self.ttl_config = ttl
        self.max_key_bytes = max_key_bytes
        self.max_candidates = max_candidates
        self.index_config = index
        self._fields: list[tuple[str, str | list[str]]] = []
        self._dims_checked = False
        if index is not None:
            if "embed" in index:
                raise ValueError(
                    "index['embed'] is not used: the sidecar embeds with the embedder its "
                    f"config binds the semantic namespace {namespace!r} to "
                    "(blocks.semantic.namespaces); give only 'dims' and 'fields'"
                )
            dims = index.get("dims")
            if not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0:
                raise ValueError(f"index['dims'] must be a positive int, not {dims!r}")
            self._fields = [
                (p, p if p == "$" else tokenize_path(p)) for p in (index.get("fields") or ["$"])
            ]
        if ttl is not None:
            _check_ttl(ttl.get("default_ttl"))

    @classmethod
    def from_env(cls, **kwargs: Any) -> MemSidecarStore:
        """A store on a new sync client connected where MEMSIDECAR_SOCKET (or _TARGET) says;
        close() (or `with`) closes the client."""
        return on_own_client(lambda client: cls(client, **kwargs))

    # -- running on the client's event loop

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._bridge.call(self._run(self._validate(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self._bridge.acall(self._run(self._validate(ops)))

    # -- validation (before anything is sent, so a bad op changes nothing)

    def _validate(self, ops: Iterable[Op]) -> list[Op]:
        checked = list(ops)
        for op in checked:
            if isinstance(op, GetOp | PutOp):
                validate_op_namespace(op)
                self._check_key(op.namespace, op.key)
                if isinstance(op, PutOp):
                    self._check_put(op)
            elif isinstance(op, SearchOp):
                validate_op_namespace(op)
                _check_count("limit", op.limit)
                _check_count("offset", op.offset)
                _check_filter(op.filter)
            elif isinstance(op, ListNamespacesOp):
                validate_op_namespace(op)
                _check_count("limit", op.limit)
                _check_count("offset", op.offset)
                if op.max_depth is not None and (
                    not isinstance(op.max_depth, int) or op.max_depth < 1
                ):
                    raise ValueError(f"max_depth must be an int >= 1, not {op.max_depth!r}")
                for condition in op.match_conditions or ():
                    if condition.match_type not in ("prefix", "suffix"):
                        raise ValueError(
                            f"match_type must be 'prefix' or 'suffix', not {condition.match_type!r}"
                        )
            else:
                raise ValueError(f"unknown store operation {op!r}")
        return checked

    def _check_key(self, namespace: tuple[str, ...], key: str) -> None:
        if not isinstance(key, str):
            raise ValueError(f"item keys must be strings, not {key!r}")
        size = len(encode_key(namespace, key).encode())
        if size > self.max_key_bytes:
            raise ValueError(
                f"namespace {namespace!r} with key {key[:40]!r} encodes to a {size}-byte kv key, "
                f"over the sidecar's limit of {self.max_key_bytes} (blocks.kv.max_key_bytes): "
                "use shorter labels or keys"
            )

    def _check_put(self, op: PutOp) -> None:
        if not op.namespace:
            raise InvalidNamespaceError("Namespace cannot be empty.")
        if op.value is None:
            return
        if not isinstance(op.value, Mapping):
            raise TypeError(f"item values must be dicts, not {type(op.value).__name__}")
        try:
            json.dumps(dict(op.value))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the value of {op.namespace!r}/{op.key!r} is not JSON-serialisable: {exc}"
            ) from exc
        _check_ttl(op.ttl)
        if not (op.index is None or op.index is False or isinstance(op.index, list)):
            raise ValueError(f"index must be None, False or a list of paths, not {op.index!r}")
        if self._indexes(op) and len(op.namespace) > MAX_INDEXED_DEPTH:
            raise InvalidNamespaceError(
                f"an indexed item's namespace may have at most {MAX_INDEXED_DEPTH} labels "
                f"(one semantic tag each, blocks.semantic.max_tags); got {len(op.namespace)}"
            )

    def _indexes(self, op: PutOp) -> bool:
        return self.index_config is not None and op.index is not False

    # -- execution

    async def _run(self, ops: list[Op]) -> list[Result]:
        # Like langgraph's InMemoryStore: reads see the state before this batch's writes,
        # and of several writes to one item the last wins.
        reads: list[Coroutine[Any, Any, Result]] = []
        read_at: list[int] = []
        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        results: list[Result] = [None] * len(ops)
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                reads.append(self._search(op))
                read_at.append(i)
            elif isinstance(op, ListNamespacesOp):
                reads.append(self._list_namespaces(op))
                read_at.append(i)
        got, searched = await asyncio.gather(
            self._get_all([op for _, op in gets]), asyncio.gather(*reads)
        )
        for (i, _), item in zip(gets, got, strict=True):
            results[i] = item
        for i, result in zip(read_at, searched, strict=True):
            results[i] = result
        puts = {(op.namespace, op.key): op for op in ops if isinstance(op, PutOp)}
        if puts:
            current = await self._fetch([encode_key(*k) for k in puts])
            await asyncio.gather(
                *(self._write(op, current.get(encode_key(*k))) for k, op in puts.items())
            )
        return results

    async def _fetch(self, kv_keys: Sequence[str]) -> dict[str, Entry]:
        unique = list(dict.fromkeys(kv_keys))
        pages = await asyncio.gather(
            *(
                self._client.kv.get_many(self.namespace, unique[i : i + _PAGE])
                for i in range(0, len(unique), _PAGE)
            )
        )
        return {k: e for page in pages for k, e in page.items()}

    async def _get_all(self, ops: Sequence[GetOp]) -> list[Item | None]:
        if not ops:
            return []
        entries = await self._fetch([encode_key(op.namespace, op.key) for op in ops])
        stored = {k: _Stored.decode(e) for k, e in entries.items()}
        found = [stored.get(encode_key(op.namespace, op.key)) for op in ops]
        await self._refresh(s for s, op in zip(found, ops, strict=True) if op.refresh_ttl and s)
        return [s.item() if s else None for s in found]

    async def _refresh(self, items: Iterable[_Stored]) -> None:
        """Restart the TTL of items that were read (LangGraph: TTL counts from last access)."""
        refreshed = {s.kv_key: s for s in items if s.ttl is not None}

        async def one(s: _Stored) -> None:
            try:
                await self._client.kv.put(
                    self.namespace,
                    s.kv_key,
                    s.envelope(pinned=True),
                    ttl=_seconds(s.ttl),
                    if_version=s.version,
                )
            except ConflictError:
                pass  # written (or deleted) since the read: that write set the TTL

        await asyncio.gather(*(one(s) for s in refreshed.values()))

    async def _write(self, op: PutOp, entry: Entry | None) -> None:
        for _ in range(_CAS_ATTEMPTS):
            old = _Stored.decode(entry) if entry else None
            try:
                if op.value is None:
                    if old is not None:
                        await self._client.kv.delete(
                            self.namespace, old.kv_key, if_version=old.version
                        )
                    new_ids: list[str] = []
                    texts: list[str] = []
                else:
                    texts = self._texts(op)
                    if texts:
                        await self._check_dims()
                    # Record ids are chosen before the kv write that references them, so a
                    # semantic record that no live item references is always stale.
                    new_ids = [uuid.uuid4().hex for _ in texts]
                    await self._client.kv.put(
                        self.namespace,
                        encode_key(op.namespace, op.key),
                        _envelope(
                            op.value,
                            created_at=old.created_at if old else None,
                            updated_at=None,
                            ttl=op.ttl,
                            vectors=new_ids,
                        ),
                        ttl=_seconds(op.ttl),
                        if_version=old.version if old else 0,
                    )
                break
            except ConflictError:
                entry = await self._client.kv.get(self.namespace, encode_key(op.namespace, op.key))
        else:
            raise ConflictError(
                grpc.StatusCode.ABORTED,
                f"{op.namespace!r}/{op.key!r} kept changing under {_CAS_ATTEMPTS} attempts "
                "to write it; retry",
            )
        tags = _prefix_tags(op.namespace)
        await asyncio.gather(
            *(
                self._client.semantic.upsert(
                    self.namespace,
                    text,
                    id=rid,
                    metadata={"item": encode_key(op.namespace, op.key)},
                    tags=tags,
                )
                for rid, text in zip(new_ids, texts, strict=True)
            )
        )
        await self._forget(old.vectors if old else ())

    async def _forget(self, record_ids: Iterable[str]) -> None:
        await asyncio.gather(
            *(self._client.semantic.delete(self.namespace, rid, hard=True) for rid in record_ids)
        )

    def _texts(self, op: PutOp) -> list[str]:
        """The texts to embed, as langgraph's stores pick them (`index` paths or defaults)."""
        if not self._indexes(op) or op.value is None:
            return []
        paths = (
            [(p, tokenize_path(p)) for p in op.index]
            if isinstance(op.index, list)
            else self._fields
        )
        texts: list[str] = []
        for _, path in paths:
            texts.extend(t for t in get_text_at_path(op.value, path) if t)
        return texts

    async def _check_dims(self) -> None:
        """Check once that index['dims'] is the dimension the sidecar embeds this namespace
        with: a caller vector of the wrong dimension is refused, naming both."""
        if self._dims_checked or self.index_config is None:
            return
        dims = self.index_config["dims"]
        try:
            await self._client.semantic.upsert(
                self.namespace, "", id=_PROBE_ID, vector=[1.0] * dims
            )
        except InvalidArgumentError as exc:
            raise ValueError(
                f"index['dims'] is {dims}, but the sidecar's semantic namespace "
                f"{self.namespace!r} refuses vectors of that size: {exc.message}"
            ) from exc
        await self._client.semantic.delete(self.namespace, _PROBE_ID, hard=True)
        self._dims_checked = True

    # -- search

    async def _search(self, op: SearchOp) -> list[SearchItem]:
        if self.index_config is not None and op.query:
            found = await self._ranked(op)
        else:
            # Without a query (or an index, where langgraph's stores ignore it): key order.
            found = [(s, None) async for s in self._scan(op, lambda s: True, op.offset + op.limit)]
        page = found[op.offset : op.offset + op.limit]
        if op.refresh_ttl:
            await self._refresh(s for s, _ in page)
        return [s.search_item(score) for s, score in page]

    async def _scan(
        self, op: SearchOp, keep: Callable[[_Stored], bool], want: int
    ) -> AsyncIterator[_Stored]:
        """Items under the namespace prefix that pass the filter and `keep`, in key order."""
        prefix = _prefix(op.namespace_prefix)
        if want <= 0 or len(prefix.encode()) > self.max_key_bytes:
            return
        count = 0
        async for entry in self._client.kv.scan_all(self.namespace, prefix, page=_PAGE):
            stored = _Stored.decode(entry)
            if keep(stored) and _matches(stored.value, op.filter):
                yield stored
                count += 1
                if count >= want:
                    return

    async def _ranked(self, op: SearchOp) -> list[tuple[_Stored, float | None]]:
        """Best-first items for a query: each item scores its best vector (max pooling)."""
        want = op.offset + op.limit
        if want == 0:
            return []
        await self._check_dims()
        assert op.query is not None
        tags = [_tag(_prefix(op.namespace_prefix))] if op.namespace_prefix else []
        # The sidecar ranks and narrows to the prefix; the filter is applied here, so ask
        # for more candidates until enough pass, all were seen, or the cap is reached.
        top_k = min(self.max_candidates, max(10, 2 * want))
        while True:
            hits = await self._client.semantic.search(
                self.namespace, op.query, top_k=top_k, tags_all=tags
            )
            exhausted = len(hits) < top_k
            entries = await self._fetch(
                [h.record.metadata["item"] for h in hits if "item" in h.record.metadata]
            )
            items = {k: _Stored.decode(e) for k, e in entries.items()}
            ranked: list[tuple[_Stored, float | None]] = []
            seen: set[str] = set()
            stale: list[str] = []
            for hit in hits:
                stored = items.get(hit.record.metadata.get("item", ""))
                if stored is None or hit.record.id not in stored.vectors:
                    stale.append(hit.record.id)
                elif stored.kv_key not in seen:
                    seen.add(stored.kv_key)
                    if _matches(stored.value, op.filter):
                        ranked.append((stored, hit.score))
            # Records of deleted, expired or rewritten items: no live item will refer to them.
            await self._forget(stale)
            if len(ranked) >= want or exhausted or top_k >= self.max_candidates:
                # The sidecar breaks ties by (random) record id; key order is reproducible.
                ranked.sort(key=lambda pair: (-(pair[1] or 0.0), pair[0].kv_key))
                break
            top_k = min(self.max_candidates, top_k * 4)
        if exhausted and len(ranked) < want:
            # Every vector was ranked: items without any (index=False, no text at the
            # paths) follow, unscored, as in langgraph's InMemoryStore.
            async for stored in self._scan(op, lambda s: not s.vectors, want - len(ranked)):
                ranked.append((stored, None))
        return ranked

    # -- namespaces

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        # Literal leading labels of a prefix condition narrow the scan on the server.
        literal: list[str] = []
        for condition in conditions:
            if condition.match_type == "prefix":
                lead: list[str] = []
                for label in condition.path:
                    if label == "*":
                        break
                    lead.append(label)
                literal = max(literal, lead, key=len)
        prefix = _prefix(literal)
        if len(prefix.encode()) > self.max_key_bytes:
            return []
        found: set[tuple[str, ...]] = set()
        cursor = ""
        while True:
            group = ""
            count = 0
            async for entry in self._client.kv.scan(
                self.namespace, prefix, start_after=cursor, limit=_PAGE, keys_only=True
            ):
                count += 1
                if group and entry.key.startswith(group):
                    continue
                namespace, _ = decode_key(entry.key)
                matched = all(_does_match(c, namespace) for c in conditions)
                depth = op.max_depth
                if matched and depth is not None and len(namespace) >= depth:
                    # Everything under this truncated namespace lists as the same one.
                    group = _prefix(namespace[:depth])
                    found.add(namespace[:depth])
                else:
                    group = _prefix(namespace) + "/"
                    if matched:
                        found.add(namespace)
            if count < _PAGE:
                break
            cursor = _after(group)
        return sorted(found)[op.offset : op.offset + op.limit]
