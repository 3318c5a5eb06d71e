"""Admission for memsidecar (DESIGN.md sections 6 and 7), imported as memsidecar.webhooks.

- injection: `inject(pod, store, settings)` → JSON patch, the pure injection function.
- admission: `review(admission_review, lookup_store, settings)` → AdmissionReview response.
- store: `render_sidecar_config(store)`, `store_env(store)`, `sidecar_config_map(store)`.
- crds: the MemoryStore / MemoryPolicy CRDs (crds/*.yaml are generated from it).
- configuration: the Mutating/ValidatingWebhookConfiguration objects.
- certs: a self-signed CA and serving certificate, made with `cryptography`.
- contract: the annotation names, paths and env var names of the injection contract.
"""
