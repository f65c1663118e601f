"""Per-voice LoRA adapters: the directory format, the MLflow registry, the local store.

Modules: `format` (write/read/verify), `apply` (merge or load into a bank), `base` (base pin),
`peft_import`, `svd_import`, `registry` (AdapterRegistry), `store`, `gate`, `consent`,
`feed` (change feed for servers), `cli` (`tritone adapters ...`). See docs/ADAPTERS.md.
"""
