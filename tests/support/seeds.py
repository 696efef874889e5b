"""Data a database holds before the cognito_sub migration (revisions 0005-0008)."""

from __future__ import annotations

# The last revision before the identity migration: users still carry cognito_sub.
BEFORE_IDENTITY = "0004_api_keys_configs"


def seed_users_sql(users: int) -> str:
    """SQL that fills a database at BEFORE_IDENTITY with `users` users in 50
    accounts, with every kind of cognito_sub the backfill must handle."""
    return f"""
INSERT INTO accounts (name) SELECT 'account ' || n FROM generate_series(1, 50) AS n;
WITH numbered AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS position FROM accounts)
INSERT INTO users (account_id, email, role, cognito_sub)
SELECT numbered.id,
       CASE WHEN n % 11 = 0 THEN 'Mixed.Case' || n || '@Example.TEST'
            WHEN n % 13 = 0 THEN 'émile' || n || '@exemple.test'
            ELSE 'user' || n || '@example.test' END,
       'MEMBER',
       CASE WHEN n % 3 = 0 THEN NULL
            WHEN n % 3 = 1 THEN 'us-east-1:' || md5(n::text)
            ELSE 'Sub-With-Case-' || n END
  FROM generate_series(1, {users - 4}) AS n
  JOIN numbered ON numbered.position = n % 50;
-- Edge cases: blank subjects, and the same email in two accounts.
INSERT INTO users (account_id, email, role, cognito_sub)
SELECT id, 'Shared@Example.test', 'OWNER', NULL FROM accounts ORDER BY id LIMIT 2;
INSERT INTO users (account_id, email, role, cognito_sub)
SELECT id, 'blank@example.test', 'VIEWER', '' FROM accounts ORDER BY id LIMIT 1;
INSERT INTO users (account_id, email, role, cognito_sub)
SELECT id, 'spaces@example.test', 'VIEWER', '   ' FROM accounts ORDER BY id DESC LIMIT 1;
"""
