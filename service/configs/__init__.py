"""Configs: the rules and the storage of configuration documents, written once
below both API dialects (service/api/configs.py, service/api/sdk/configs.py,
service/api/sdk/discovery.py).

- items.py: typed items, the rule that a value matches its type and that a
  type never changes, and the sizes of items;
- chains.py: the configs above and below one, and one type per item key on a
  parent chain;
- resolution.py: a config resolved for an environment (the SDK's rule);
- events.py: the SDK's events, sent by NOTIFY in the write's transaction;
- store.py: reads, the one create path, updates, deletes, the tree lock and
  the checks of a parent (exists, no cycle, depth);
- discovery.py: configs an SDK declares, registered in batches.

Nothing here knows HTTP: refusals are service.problems."""
