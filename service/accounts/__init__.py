"""Accounts, their users, API keys and environments: the rules and the
storage, below every door into them.

`accounts` creates an account with its OWNER, default environments and
first key, and reads and renames it; `users` inserts users and keeps the
account's last OWNER (and its last OWNER key) when one is demoted or
removed; `keys` issues, lists and revokes API keys and caps a key's role;
`key_secrets` makes a key's secret and its digest; `environments` creates,
changes and deletes environments (never one still in use, unless cascaded).
The routers (service/api/accounts.py, users.py, api_keys.py,
environments.py, and service/api/sdk/account.py, environments.py) and the
operator's command line (service/operator.py) only parse, authorise, call
these and shape the answer. Refusals are service.problems.
"""
